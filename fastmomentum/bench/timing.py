"""Timing for the benchmark report: interleaved samples, thread counts, where it ran."""
import contextlib
import gc
import importlib.metadata
import os
import platform
import sys
import time

from .. import BUILD_TARGET, HAS_OPENMP, __version__, get_num_threads, set_num_threads

#: (repeats, seconds per sample) for the quick and the full run.
TIMING = {True: (5, 0.002), False: (9, 0.01)}


def _seconds_per_call(fn, number):
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def calls_per_sample(fn, target):
    """How many calls of ``fn`` take about ``target`` seconds (after warming it up)."""
    fn()  # warm-up: page faults, caches, lazy initialisation
    number = 1
    while True:
        per_call = _seconds_per_call(fn, number)
        if per_call * number >= target / 4 or number >= 1 << 20:
            return max(1, min(1 << 20, round(target / max(per_call, 1e-9))))
        number = min(1 << 20, number * 8)


def time_interleaved(fns, repeats, target, threads=None):
    """Seconds per call of each function: ``repeats`` samples each, taken in rotating order
    (A B C, B C A, ...) so that drift and position in the round hit every function alike.

    ``threads[j]``, when given and not None, is fastmomentum's thread count for function j:
    set before each of its samples, outside the timed calls."""
    threads = threads or [None] * len(fns)
    default = get_num_threads()

    def prepare(j):
        set_num_threads(threads[j] or default)

    numbers = []
    for j, fn in enumerate(fns):
        prepare(j)
        numbers.append(calls_per_sample(fn, target))
    samples = [[] for _ in fns]
    gc_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(repeats):
            for k in range(len(fns)):
                j = (r + k) % len(fns)
                prepare(j)
                samples[j].append(_seconds_per_call(fns[j], numbers[j]))
    finally:
        set_num_threads(default)
        if gc_enabled:
            gc.enable()
    return samples, numbers


@contextlib.contextmanager
def thread_count(threads):
    """Run fastmomentum, and torch when the cases imported it, on ``threads`` threads (default:
    fastmomentum's current count); restores both afterwards. Yields the count used."""
    previous = get_num_threads()
    threads = threads or previous
    torch = sys.modules.get("torch")
    torch_previous = torch.get_num_threads() if torch else None
    set_num_threads(threads)
    if torch:
        torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        set_num_threads(previous)
        if torch:
            torch.set_num_threads(torch_previous)


def cpu_model():
    """The CPU's marketing name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model", "Hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_versions():
    """Versions of fastmomentum, NumPy and every optional peer (None when not installed),
    read from package metadata so nothing is imported."""
    versions = {"fastmomentum": __version__, "python": platform.python_version()}
    for dist in ("numpy", "torch", "pandas", "scipy", "matplotlib", "tqdm", "Cython"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def usable_cores():
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def load_average():
    """The 1-minute load average (None where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def machine_info(threads):
    """Where the report ran: CPU, cores, build and thread count."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": usable_cores(),
            "platform": platform.platform(), "build_target": BUILD_TARGET,
            "openmp": HAS_OPENMP, "threads": threads}
