"""Pick the compiled kernel build for this CPU, once, at import.

``FASTMOMENTUM_KERNELS=portable`` (or ``avx2``) forces a build, e.g. to compare them; both
give bit-identical results, the AVX2 one is faster on CPUs that have AVX2 and FMA.
"""
import os

try:
    from . import _kernels_portable
except ImportError as exc:  # e.g. a source checkout without compiled kernels
    raise ImportError(
        f"fastmomentum: the compiled kernels are missing next to {__file__} ({exc}). "
        "Build them with `pip install -e .` (or `python setup.py build_ext --inplace`); "
        "from a source checkout, a non-editable install is shadowed by the source folder."
    ) from exc

try:
    from . import _kernels_avx2
except ImportError:  # not x86-64, or the compiler could not target AVX2
    _kernels_avx2 = None

BUILDS = {"portable": _kernels_portable}
if _kernels_avx2 is not None:
    BUILDS["avx2"] = _kernels_avx2


def _choose():
    forced = os.environ.get("FASTMOMENTUM_KERNELS", "").strip().lower()
    if forced:
        if forced not in BUILDS:
            raise ImportError(f"FASTMOMENTUM_KERNELS={forced!r}: this installation has the "
                              f"builds {sorted(BUILDS)}")
        return BUILDS[forced]
    if _kernels_avx2 is not None and _kernels_portable.cpu_has_avx2_fma():
        return _kernels_avx2
    return _kernels_portable


kernels = _choose()
