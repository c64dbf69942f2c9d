import pathlib
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))  # bench_graph (profiling helpers) and the numpy_edf re-export
sys.path.insert(0, str(ROOT / "tests"))  # naive.py


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
