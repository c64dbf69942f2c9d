"""The numerical tests again with every array access bounds-checked (FASTEDF_BOUNDSCHECK=1).

Kernels normally run without bounds checks, trusting the shape checks made in
Python before each call.  This run makes any out-of-range access the tests
reach an IndexError instead of silent memory corruption.  A subprocess, since
the JIT flags are read once at import; its own cache directories, since the
flags change the compiled code.

The tests chosen run every kernel (checked below) and the training
programs of every kind of graph (inlined and called by address, rolled,
micro-batched, convolutional, elementwise); what they leave out runs the
same kernels and programs again, at more batch sizes or in new programs
that each cost a cold compile under the flag (the course scripts, the rest
of test_trainer, the random MLPs of test_properties).
"""
import json
import os
import pathlib
import subprocess
import sys
import textwrap

TESTS = pathlib.Path(__file__).parent
TESTS_RUN = ["test_kernels.py", "test_nodes.py", "test_course_nodes.py", "test_conv.py", "test_rolling.py",
             "test_trainer.py::test_inlined_kernels_give_the_numbers_of_kernels_called_by_address",  # the study's
             "test_trainer.py::test_multiply_addition_graph_compiles_and_matches"]
# Left out there: the same conv net programs at more batch sizes, the net with one conv (the two-conv net runs
# every conv kernel), and the rolled MLPs but the mixed one (its rolled 9-wide layers take Linear's fused SGD step).
LEFT_OUT = "not test_engines_agree_on_conv_nets and not one_conv and not three_4 and not thirty_9"
TIMEOUT_S = 600  # about 40 s on a quiet machine; a hang must not stall the suite

RUN = textwrap.dedent("""
    import json, sys
    import pytest
    code = pytest.main(sys.argv[1:])
    from fastedf import kernels
    from fastedf.calls import kernels_of
    from fastedf.ops import MODULES
    every = kernels_of((kernels, *MODULES))
    print(json.dumps({"exit": int(code), "kernels": sorted(every),
                      "ran": sorted(name for name, kernel in every.items() if kernel.signatures)}))
""")


def test_numerical_suite_passes_with_bounds_checks(tmp_path):
    env = dict(os.environ, FASTEDF_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path / "numba"),
               FASTEDF_CACHE_DIR=str(tmp_path / "programs"))
    probe = ("import numpy as np; from fastedf.ops.linear import linear_forward; "
             "linear_forward(np.zeros((2, 3)), np.zeros((2, 1)), np.zeros(1), np.zeros((2, 1)))")
    checked = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert "IndexError" in checked.stderr  # the flag is on: an out-of-range read raises
    done = subprocess.run([sys.executable, "-c", RUN, "-q", "-p", "no:cacheprovider", "-k", LEFT_OUT,
                           *[str(TESTS / t) for t in TESTS_RUN]], env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["exit"] == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout
    assert report["kernels"] and report["ran"] == report["kernels"]  # every kernel ran (compiled) bounds-checked
