"""Build fastmomentum's Cython modules (see docs/architecture.md).

Only the numeric cores are built per CPU target, from one source (src/cores/):

* ``fastmomentum._cores_portable``: the compiler's default target, any x86-64 or arm64 CPU;
* ``fastmomentum._cores_avx2`` (x86-64 only): the same loops built with ``-mavx2 -mfma``.

Every other module is compiled once, for the default target: the CPU check (``_cpu``), the
threads, the multi-tensor driver and NumPy entry points, ewm_mean's plan and drivers, the
torch bridge, the reference loop. ``fastmomentum/_target.py`` checks the CPU, then loads the
AVX2 cores when it has AVX2+FMA, once at import. Both targets give bit-identical results:
every multiply-add is an explicit ``fma()`` and ``-ffp-contract=off`` forbids the compiler
from fusing anything else.

Environment switches:

* ``FASTMOMENTUM_DEBUG=1``: bounds and wrap-around checks on, ``-O0 -g``.
* ``FASTMOMENTUM_NO_OPENMP=1``: build serial kernels even if the compiler has OpenMP.
* ``FASTMOMENTUM_NO_AVX2=1``: skip the AVX2 build (portable kernels only).
* ``FASTMOMENTUM_SANITIZE=1``: AddressSanitizer and UndefinedBehaviorSanitizer (``-O1 -g``;
  run Python with the compiler's libasan in ``LD_PRELOAD``, see ``.ci/run``).
"""
import glob
import os
import platform
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools._distutils import ccompiler, sysconfig

DEBUG = os.environ.get("FASTMOMENTUM_DEBUG") == "1"
SANITIZE = os.environ.get("FASTMOMENTUM_SANITIZE") == "1"
SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                  "-fno-omit-frame-pointer"]


def _log(msg):
    print(f"fastmomentum build: {msg}", file=sys.stderr)


def _compiler_errors(compiler):
    """The CompileError and LinkError classes ``compiler`` raises, as its own modules name
    them (a vendored distutils may be loaded under two names, ``distutils`` and
    ``setuptools._distutils``, whose classes differ), and OSError (no compiler at all)."""
    classes = [OSError]
    for cls in type(compiler).__mro__:
        module = sys.modules.get(cls.__module__)
        classes += [getattr(module, name) for name in ("CompileError", "LinkError")
                    if isinstance(getattr(module, name, None), type)]
    return tuple(classes)


def compiler_accepts(code, compile_args, link_args=()):
    """True when the C compiler builds and links ``code`` with these flags."""
    compiler = ccompiler.new_compiler()
    sysconfig.customize_compiler(compiler)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(code)
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=list(compile_args))
            compiler.link_executable(objs, os.path.join(tmp, "probe"),
                                     extra_postargs=list(link_args))
        except _compiler_errors(compiler):
            return False
    return True


OPENMP_PROBE = """
#include <omp.h>
int main(void) { int n = 0;
#pragma omp parallel reduction(+:n)
n += 1;
return n > 0 && omp_get_max_threads() > 0 ? 0 : 1; }
"""
AVX2_PROBE = """
#include <immintrin.h>
int main(void) { __m256d a = _mm256_set1_pd(1.0);
a = _mm256_fmadd_pd(a, a, a); return (int)_mm256_cvtsd_f64(a) == 2 ? 0 : 1; }
"""

if os.environ.get("FASTMOMENTUM_NO_OPENMP") == "1":
    openmp_flags = []
    _log("OpenMP disabled by FASTMOMENTUM_NO_OPENMP=1: kernels run on one thread")
elif compiler_accepts(OPENMP_PROBE, ["-fopenmp"], ["-fopenmp"]):
    openmp_flags = ["-fopenmp"]
    _log("OpenMP found: large buffers are split across threads")
else:
    openmp_flags = []
    _log("WARNING: the C compiler has no OpenMP; building serial kernels (one thread)")

opt_flags = ["-O0", "-g"] if DEBUG else ["-O1", "-g"] if SANITIZE else ["-O3"]
sanitize_flags = SANITIZE_FLAGS if SANITIZE else []
if SANITIZE:
    _log("sanitizers on: " + " ".join(SANITIZE_FLAGS))
# -fno-trapping-math changes no value (IEEE results stay exact; only FP exception flags are
# not preserved): it lets the compiler evaluate both sides of a select, so loops with a
# division on one side (ewm_mean's row step) vectorise.
common_flags = opt_flags + ["-ffp-contract=off", "-fno-strict-aliasing", "-fno-trapping-math"]

variants = {"portable": []}
is_x86_64 = platform.machine().lower() in ("x86_64", "amd64")
if is_x86_64 and os.environ.get("FASTMOMENTUM_NO_AVX2") != "1":
    if compiler_accepts(AVX2_PROBE, ["-mavx2", "-mfma"]):
        variants["avx2"] = ["-mavx2", "-mfma"]
    else:
        _log("the C compiler cannot target AVX2/FMA: portable kernels only")

# src/<layer>/: the C headers and the inline-only .pxd files of each layer (cimported by
# name); the .pxd of a compiled module sits in fastmomentum/ under the module's name.
LAYERS = ["src/cores", "src/validation", "src/driver", "src/ewm", "src/torch",
          "src/reference"]
HEADERS = sorted(glob.glob("src/*/*.h") + glob.glob("src/*/*.pxd") + glob.glob("fastmomentum/*.pxd"))


def extension(name, source, flags=(), openmp=False, c_sources=()):
    return Extension(
        f"fastmomentum.{name}",
        [source, *c_sources],
        depends=HEADERS,   # rebuilt when a header or .pxd changes
        include_dirs=[np.get_include()] + LAYERS,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
        extra_compile_args=(common_flags + list(flags) + (openmp_flags if openmp else [])
                            + sanitize_flags),
        extra_link_args=(openmp_flags if openmp else []) + sanitize_flags,
    )


# gcc 12 limits inlining by the unit's growth (default 40%); loops whose helpers stay out
# of line do not vectorise. _ewm_family's steady loops (see _steady_run) needed 80% once
# times' factor loops moved to the cores; the cores (many entries in one unit) needed 400%
# to inline float16's conversions into the 16-bit steps (at 40%: a call per element, 16M
# float16 momentum steps 10x slower; docs/mixed-precision.md). Since the "once" loops are
# specialised per flag like the "torch" ones, float16's half_step_range outgrew gcc's
# large-function limit (2700 insns, then 100% growth): its weight decay + nesterov
# torch_loop stayed out of line (tests/test_cpu_targets.py), and raising the growth moved
# the miss to once_loop; a large function's size is not what these loops need bounded.
INLINE_PROBE = "int main(void) { return 0; }\n"


def inline_growth_flags(percent, large_function_insns=None):
    flags = [f"--param=inline-unit-growth={percent}"]
    if large_function_insns is not None:
        flags.append(f"--param=large-function-insns={large_function_insns}")
    return flags if compiler_accepts(INLINE_PROBE, flags) else []


FAMILY_FLAGS = inline_growth_flags(80)
CORES_INLINE_FLAGS = inline_growth_flags(400, large_function_insns=100000)
# The cores never read errno: without -fno-math-errno gcc keeps a libm call beside every
# sqrt (for errno on a negative input), and the ewm family's std and corr row steps stayed
# scalar ("control flow in loop", -fopt-info-vec). It changes no value.
# gcc versions a vectorised loop with run-time overlap checks of its arrays, at most 10 by
# default: the family's cov and corr row steps (x, y, out and 3-5 state rows) needed more
# and stayed scalar (-fopt-info-vec: 16 of 23 loops vectorised at 10, 22 at 40).
ALIAS_CHECK_FLAGS = ["--param=vect-max-version-for-alias-checks=40"]
CORES_FLAGS = [*CORES_INLINE_FLAGS, "-fno-math-errno",
               *(ALIAS_CHECK_FLAGS if compiler_accepts(INLINE_PROBE, ALIAS_CHECK_FLAGS) else [])]

extensions = [
    # per CPU target: the numeric cores only (no threads in them)
    *(extension(f"_cores_{name}", f"src/cores/_cores_{name}.pyx",
                [*flags, *CORES_FLAGS])
      for name, flags in variants.items()),
    # compiled once, for the default target
    extension("_cpu", "src/cores/_cpu.pyx"),
    # the thread pool (plain C), and OpenMP only for its thread-count setting
    extension("_threads", "src/driver/_threads.pyx", openmp=True,
              c_sources=["src/driver/fm_pool.c"]),
    extension("_spans", "src/driver/_spans.pyx"),
    extension("_multi", "src/driver/_multi.pyx"),
    # steps with state in other bytes: fewer-byte momentum, split-bfloat16 master weights
    extension("_state", "src/driver/_state.pyx"),
    extension("_ewm", "src/ewm/_ewm.pyx"),
    extension("_torch_multi", "src/torch/_torch_multi.pyx"),
    extension("_reference", "src/reference/_reference.pyx"),
    # the exponentially weighted family (var, std, cov, corr, sum, times, streams), compiled
    # once: its per-value loops are latency-bound recurrences (no fma: the same bits
    # everywhere); its row step across series is a core (fm_ewm_moments.pxd)
    extension("_ewm_family", "src/ewm_family/_ewm_family.pyx", FAMILY_FLAGS),
]

compiler_directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
}

setup(
    # Explicit: with src/ and fastmomentum/ side by side setuptools would guess a src-layout
    # and ship a wheel without __init__.py.
    packages=["fastmomentum", "fastmomentum.bench", "fastmomentum.benchcases",
              "fastmomentum.demos"],
    # The packages live at the top of the clone. Said explicitly, an editable install puts the
    # clone on sys.path by a plain .pth file, which type checkers follow (mypy cannot see
    # through the import hook setuptools writes otherwise).
    package_dir={"": "."},
    # kernels.pxd: the public C API for other Cython code; the other .pxd files: the compiled
    # modules' interfaces it builds on; the type stubs (.pyi) and their marker
    package_data={"fastmomentum": ["*.pxd", "*.pyi", "py.typed"]},
    ext_modules=cythonize(
        extensions,
        compiler_directives=compiler_directives,
        include_path=["."] + LAYERS,
    ),
    zip_safe=False,
)
