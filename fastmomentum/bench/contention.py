"""``--contention``: a busy process on one core while the report runs.

Trainers' cores are rarely idle (data loaders, other jobs). The busy process spins on one
core (the last one this process may use) so that a kernel's threads meet a core that is taken;
it stops by itself after ``limit_s`` seconds or as soon as its parent is gone, and the report
kills it on exit, on an error and on Ctrl-C.
"""
import os
import subprocess
import sys
import time

#: The busy loop: spins until its deadline or until its parent (the report) is gone.
_SPIN = """
import os, sys, time
deadline = time.monotonic() + float(sys.argv[1])
parent = os.getppid()
while time.monotonic() < deadline and os.getppid() == parent:
    for _ in range(100000):
        pass
"""
#: The longest a busy process lives: longer than any full report here (~5 min) with room.
DEFAULT_LIMIT_S = 1800.0


def _children_cpu_s():
    """CPU seconds of this process's children that have ended (None without ``resource``)."""
    try:
        import resource
    except ImportError:
        return None
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class BusyCore:
    """A context manager: a process spinning on one core while the block runs.

    ``info()`` (after the block) says which core, for how long, and how much of that core
    the process got (CPU time over wall time: below ~0.9, something else ran there too)."""

    def __init__(self, limit_s=DEFAULT_LIMIT_S):
        self.limit_s = limit_s
        self.process = None
        self.core = None
        self.started = self.wall_s = self.cpu_s = None

    def __enter__(self):
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.core = cores[-1] if cores else None

        def pin():   # runs in the child before exec: only the chosen core
            if self.core is not None:
                os.sched_setaffinity(0, {self.core})

        self._children_cpu = _children_cpu_s()
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SPIN, str(self.limit_s)], stdin=subprocess.DEVNULL,
            preexec_fn=pin if self.core is not None else None)
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def stop(self):
        """End the busy process (idempotent) and record how much CPU it got."""
        if self.process is None or self.wall_s is not None:
            return
        self.wall_s = time.monotonic() - self.started
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        after = _children_cpu_s()
        if after is not None:
            self.cpu_s = after - self._children_cpu

    def info(self):
        """The JSON record of the busy process."""
        share = self.cpu_s / self.wall_s if self.cpu_s is not None and self.wall_s else None
        return {"pid": self.process.pid, "core": self.core, "wall_s": self.wall_s, "cpu_s": self.cpu_s,
                "core_share": share, "limit_s": self.limit_s}
