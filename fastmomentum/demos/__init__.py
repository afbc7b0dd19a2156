"""``python -m fastmomentum demo [NAME ...] [--out DIR] [--list]``: the momentum tutorial as
runnable demos, each computed with fastmomentum's own kernels.

Every demo module has ``compute(...)`` (the numbers, no plotting), ``summary(result)`` (the
printed account) and ``plot(result, path)`` (a PNG; needs matplotlib, an optional extra).
Without matplotlib the demos still print their numbers and say how to get the plots.
"""
import argparse
import importlib
from pathlib import Path

from ..benchcases import optional_import
from . import _plotting

#: Demo name -> module, in the order ``demo`` runs them.
DEMOS = {
    "ema": "fastmomentum.demos.ema",
    "zigzag": "fastmomentum.demos.zigzag",
    "least-squares": "fastmomentum.demos.least_squares",
    "steepest": "fastmomentum.demos.steepest",
}

DEFAULT_OUT = "fastmomentum-demos"


def load(name):
    """The module of demo ``name`` (a key of :data:`DEMOS`)."""
    if name not in DEMOS:
        raise ValueError(f"unknown demo {name!r}; choose from {', '.join(DEMOS)}")
    return importlib.import_module(DEMOS[name])


def describe(name):
    """The one-line description of demo ``name``: the first line of its module docstring."""
    return load(name).__doc__.strip().splitlines()[0].split(": ", 1)[1]


def run(name, out_dir=DEFAULT_OUT):
    """Run demo ``name``: print its numbers and, when matplotlib is available, write
    ``out_dir/NAME.png``. Returns ``(result, png_path or None)``."""
    module = load(name)
    result = module.compute()
    print(module.summary(result))
    if optional_import("matplotlib") is None:
        print(_plotting.INSTALL_HINT)
        return result, None
    path = Path(out_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    module.plot(result, path)
    print(f"wrote {path}")
    return result, path


def main(argv=None):
    """Command-line entry point of ``python -m fastmomentum demo``."""
    parser = argparse.ArgumentParser(
        prog="python -m fastmomentum demo",
        description="Why momentum works, shown with fastmomentum's kernels: each demo prints "
                    "its numbers and writes a PNG.")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"demos to run (default: all): {', '.join(DEMOS)}")
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help=f"directory for the PNGs (default: ./{DEFAULT_OUT})")
    parser.add_argument("--list", action="store_true", help="list the demos and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name in DEMOS:
            print(f"{name:<15}{describe(name)}")
        return 0
    unknown = [name for name in args.names if name not in DEMOS]
    if unknown:
        parser.error(f"unknown demo {', '.join(unknown)}; choose from {', '.join(DEMOS)}")
    for i, name in enumerate(args.names or DEMOS):
        print(("\n" if i else "") + f"== {name}: {describe(name)}")
        run(name, args.out)
    return 0
