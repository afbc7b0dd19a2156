"""``python -m fastmomentum COMMAND ...`` (also the ``fastmomentum`` console script)."""
import argparse
import importlib
import os
import sys

from ._version import __version__

#: command -> (module with main(argv), one-line summary)
COMMANDS = {
    "bench": ("fastmomentum.bench", "benchmark report against the NumPy baseline and peers"),
    "demo": ("fastmomentum.demos", "why momentum works: runnable demos with plots"),
}


def build_parser():
    """The top-level parser; each command parses its own arguments (``COMMAND --help``)."""
    parser = argparse.ArgumentParser(
        prog="fastmomentum",
        usage=f"fastmomentum [-h] [--version] {{{','.join(COMMANDS)}}} ...",
        description="Fast, bit-faithful momentum-SGD and EMA kernels: the benchmark report "
                    "and the demos.",
        epilog="commands:\n" + "\n".join(f"  {name:<8}{summary}"
                                         for name, (_, summary) in COMMANDS.items())
               + "\n\nRun 'fastmomentum COMMAND --help' for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"fastmomentum {__version__}")
    parser.add_argument("command", nargs="?", metavar="COMMAND",
                        help=f"one of: {', '.join(COMMANDS)}")
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def _quiet_broken_pipe():
    """The reader went away (``... | head``): exit quietly, as a Unix tool does."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
    return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by the broken pipe


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 0
    # only what comes before the command belongs to this parser (--help, --version)
    if argv[0].startswith("-"):
        parser.parse_args(argv[:1])   # --help and --version exit here
        parser.error(f"unknown option {argv[0]!r}; a command comes first: "
                     f"{', '.join(COMMANDS)}")
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        parser.error(f"unknown command {name!r}; choose from {', '.join(COMMANDS)}")
    module = importlib.import_module(COMMANDS[name][0])
    try:
        status = module.main(rest)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        return _quiet_broken_pipe()


if __name__ == "__main__":
    sys.exit(main())
