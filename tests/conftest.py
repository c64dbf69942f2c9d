import os
import pathlib
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))  # bench_graph (profiling helpers) and the numpy_edf re-export
sys.path.insert(0, str(ROOT / "tests"))  # naive.py
# Numba from the first kernel call, in this process and the ones tests start, so that which code computes a
# number does not depend on how long the tests before it ran; FASTEDF_NUMPY_TIER_SECONDS=1e9 runs the suite on
# the NumPy tier's twins instead.  tests/test_numpy_tier.py and test_course_scripts.py set it per process.
os.environ.setdefault("FASTEDF_NUMPY_TIER_SECONDS", "0")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def fastedf_cache(tmp_path, monkeypatch):
    """An empty cache directory of fastedf's own (FASTEDF_CACHE_DIR), with caching on."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("FASTEDF_CACHE_DIR", str(folder))
    monkeypatch.delenv("FASTEDF_CACHE", raising=False)
    return folder
