"""Choose this CPU's numeric cores, once, at import, BEFORE loading any target-specific module.

Only the numeric cores are built per CPU target (``fastmomentum._cores_portable``, and
``_cores_avx2`` on x86-64); each hands its loops over in one table (a PyCapsule, see
src/cores/fm_core_table.pxd). Everything else is compiled once and ``attach``es here to get
the chosen table. The CPU check runs in ``fastmomentum._cpu``, built for the default target,
so an x86-64 CPU without AVX2 never loads code it cannot run.

``FASTMOMENTUM_KERNELS=portable`` (or ``avx2``) forces a target, e.g. to compare them: both
give bit-identical results (every multiply-add is an explicit fma, ``-ffp-contract=off``).
"""
import contextlib
import importlib
import importlib.util
import os

try:
    from . import _cpu
except ImportError as exc:  # e.g. a source checkout without compiled kernels
    raise ImportError(
        f"fastmomentum: the compiled kernels are missing next to {__file__} ({exc}). "
        "Build them with `pip install -e .` (or `python setup.py build_ext --inplace`); "
        "from a source checkout, a non-editable install is shadowed by the source folder."
    ) from exc

#: The targets this installation was built with (whether or not this CPU can run them).
BUILT = tuple(name for name in ("portable", "avx2")
              if importlib.util.find_spec(f"{__package__}._cores_{name}") is not None)


def runnable(name):
    """Whether this CPU can run the ``name`` target's cores."""
    return name in BUILT and (name == "portable" or _cpu.cpu_has_avx2_fma())


#: The targets this installation has and this CPU can run.
TARGETS = tuple(name for name in BUILT if runnable(name))


def _choose():
    forced = os.environ.get("FASTMOMENTUM_KERNELS", "").strip().lower()
    if forced:
        if forced not in TARGETS:
            raise ImportError(f"FASTMOMENTUM_KERNELS={forced!r}: this installation and CPU "
                              f"can run the targets {list(TARGETS)}")
        return forced
    return "avx2" if "avx2" in TARGETS else "portable"


def core_table(name):
    """The ``name`` target's core table (imports its module: check ``runnable`` first)."""
    return importlib.import_module(f"{__package__}._cores_{name}").CORE_TABLE


#: "avx2" or "portable": the target whose cores run here.
BUILD_TARGET = _choose()
_table = core_table(BUILD_TARGET)
_users = []


def attach(use_core_table):
    """Called by each compiled-once module at import: ``use_core_table(capsule)`` copies
    the table; it is called again when ``using`` switches targets."""
    _users.append(use_core_table)
    use_core_table(_table)


@contextlib.contextmanager
def using(name):
    """Run the block on another target's cores (tests compare targets in one process)."""
    if name not in TARGETS:
        raise ValueError(f"using: target {name!r} is not runnable here; have {list(TARGETS)}")
    table = core_table(name)
    try:
        for use in _users:
            use(table)
        yield
    finally:
        for use in _users:
            use(_table)
