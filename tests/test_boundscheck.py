"""The numerical tests again with every array access bounds-checked (FASTEDF_BOUNDSCHECK=1).

Kernels normally run without bounds checks, trusting the shape checks made in
Python before each call.  This run makes any out-of-range access the tests
reach an IndexError instead of silent memory corruption.  A subprocess, since
the JIT flags are read once at import; its own cache directories, since the
flags change the compiled code.
"""
import os
import pathlib
import subprocess
import sys

TESTS = pathlib.Path(__file__).parent
MODULES = ["test_kernels.py", "test_nodes.py", "test_course_scripts.py", "test_trainer.py", "test_properties.py",
           "test_conv.py", "test_course_nodes.py"]


def test_numerical_suite_passes_with_bounds_checks(tmp_path):
    env = dict(os.environ, FASTEDF_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path / "numba"),
               FASTEDF_CACHE_DIR=str(tmp_path / "programs"))
    probe = ("import numpy as np; from fastedf.ops.linear import linear_forward; "
             "linear_forward(np.zeros((2, 3)), np.zeros((2, 1)), np.zeros(1), np.zeros((2, 1)))")
    checked = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert "IndexError" in checked.stderr  # the flag is on: an out-of-range read raises
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *[str(TESTS / m) for m in MODULES]], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout
