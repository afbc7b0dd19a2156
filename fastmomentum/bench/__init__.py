"""``python -m fastmomentum bench``: the benchmark report.

Times fastmomentum against the NumPy baseline and, when installed, torch, pandas and scipy,
on the cases of :mod:`fastmomentum.benchcases` (the same ones ``benchmarks/`` runs).

* :mod:`.timing`: interleaved samples, thread counts, the machine's description;
* :mod:`.run`: cases grouped, timed and compared (with the reference C stream loop);
* :mod:`.report`, :mod:`.plot`: the terminal and Markdown tables, the verdict, the PNG;
* :mod:`.contention`: the busy process of ``--contention``;
* :mod:`.cli`: the options and where the output goes.
"""
from .cli import build_parser, main, parse_size, run_report
from .report import format_size
from .run import PROVIDERS, STREAM_MIN_SIZE, is_ours, measure_group
from .timing import TIMING, thread_count

__all__ = ["PROVIDERS", "STREAM_MIN_SIZE", "TIMING", "build_parser", "format_size",
           "is_ours", "main", "measure_group", "parse_size", "run_report", "thread_count"]
