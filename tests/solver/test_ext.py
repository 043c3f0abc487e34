import pytest

import meancache_kernels

_C = pytest.importorskip("meancache_kernels._C", reason="C++ extension not built (MEANCACHE_SKIP_EXT=1)")


def test_extension_version_matches_package():
    assert _C.version() == meancache_kernels.__version__
