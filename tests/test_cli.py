"""The top-level command line: help, version, unknown commands, broken pipes, bad options
refused before any measurement."""
import os
import subprocess
import sys

import pytest

import fastmomentum
from fastmomentum import __main__ as cli
from fastmomentum import bench
from fastmomentum.bench import cli as bench_cli


def run_main(capsys, *argv):
    try:
        status = cli.main(list(argv))
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


def test_bare_command_prints_help_and_runs_nothing(capsys, monkeypatch):
    monkeypatch.setattr(bench_cli, "run_report", pytest.fail)
    status, out, _ = run_main(capsys)
    assert status == 0
    assert out.startswith("usage: fastmomentum")
    for name in cli.COMMANDS:
        assert f"  {name} " in out


def test_version(capsys):
    status, out, _ = run_main(capsys, "--version")
    assert (status, out.strip()) == (0, f"fastmomentum {fastmomentum.__version__}")


@pytest.mark.parametrize("argv", [["frobnicate"], ["--bogus"]])
def test_unknown_command_or_option_lists_the_commands(capsys, argv):
    status, _, err = run_main(capsys, *argv)
    assert status == 2
    assert "bench" in err and "demo" in err


@pytest.mark.parametrize("name", ["bench", "demo"])
def test_command_help(capsys, name):
    status, out, _ = run_main(capsys, name, "--help")
    assert status == 0
    assert out.startswith(f"usage: python -m fastmomentum {name}")


@pytest.mark.parametrize("sizes", ["16,,4k", "16,", ",16", "4q"])
def test_bad_size_lists_are_refused(capsys, sizes, monkeypatch):
    monkeypatch.setattr(bench_cli, "run_report", pytest.fail)
    status, _, err = run_main(capsys, "bench", "--sizes", sizes)
    assert status == 2
    assert "--sizes" in err


@pytest.mark.parametrize("option", ["--json", "--plot", "--markdown"])
def test_output_paths_are_checked_before_the_run(tmp_path, capsys, monkeypatch, option):
    monkeypatch.setattr(bench_cli, "run_report", pytest.fail)  # no measurement may start
    missing = tmp_path / "no-such-folder" / "out.file"
    status, _, err = run_main(capsys, "bench", "--quick", option, str(missing))
    assert status == 2
    assert f"{option} {missing}" in err and "does not exist" in err
    status, _, err = run_main(capsys, "bench", "--quick", option, str(tmp_path))
    assert status == 2 and "is a directory" in err


def test_broken_pipe_ends_quietly():
    """``fastmomentum demo --list | head -1``: the reader is gone before anything is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails with EPIPE
    try:
        result = subprocess.run([sys.executable, "-m", "fastmomentum", "demo", "--list"],
                                stdout=write_end, stderr=subprocess.PIPE, text=True,
                                timeout=120)
    finally:
        os.close(write_end)
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr
    assert result.returncode == 141


def test_console_script_entry_point_is_main():
    from importlib.metadata import entry_points
    scripts = entry_points(group="console_scripts")
    (script,) = [ep for ep in scripts if ep.name == "fastmomentum"]
    assert script.load() is cli.main


def test_bench_is_the_package_main():
    assert bench.main is bench_cli.main
