import numpy as np
import pytest

import fastmomentum

DTYPES = [np.float32, np.float64]


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def restore_threads():
    """Tests that change the thread count put it back."""
    n = fastmomentum.get_num_threads()
    yield
    fastmomentum.set_num_threads(n)


def builds_beside_portable():
    """The compiled builds other than the portable one, each to be compared with it (not
    the dispatched build with itself). On a CPU with AVX2+FMA the AVX2 build must be among
    them; elsewhere there is nothing to compare and the calling test is skipped, saying so."""
    from fastmomentum._dispatch import BUILDS
    others = {name: build for name, build in BUILDS.items() if name != "portable"}
    if BUILDS["portable"].cpu_has_avx2_fma():
        assert "avx2" in others, f"this CPU has AVX2+FMA but only the builds {sorted(BUILDS)}"
    if not others:
        pytest.skip("one build here (portable): nothing to compare it with")
    return others
