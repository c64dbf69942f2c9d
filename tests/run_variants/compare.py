"""Running a variant's script under plain python or `fastedf run`, and comparing what they print.

Shared by tests/test_run_variants.py and benchmarks/bench_run.py so both judge "same output" alike.
"""
import math
import os
import re
import sys

from manifest import HERE

# Lines that report a duration: their numbers differ from run to run, so they are not compared.
TIMING_LINE = re.compile(r"time|sec|ms", re.IGNORECASE)
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)\b")
RTOL = 1e-10
ATOL = 1e-12  # numbers printed as exactly zero on one side may be round-off on the other

PINNED_THREADS = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                         "NUMBA_NUM_THREADS")}


def command(name, variant, runner_options=None):
    """(argv, cwd) running the variant's script: plain python if runner_options is None, else `fastedf run`."""
    prefix = [sys.executable] if runner_options is None else [sys.executable, "-m", "fastedf", "run",
                                                              *runner_options]
    return [*prefix, variant.script, *variant.args], HERE / (variant.directory or name)


def environment():
    """This process's environment with BLAS, OpenMP and Numba pinned to one thread."""
    return {**os.environ, **PINNED_THREADS}


def _masked(text):
    return [NUMBER.sub("#", line) if TIMING_LINE.search(line) else line for line in text.splitlines()]


def first_difference(plain, fast):
    """None if the two stdouts agree (timing lines masked, numbers to RTOL), else a description of the first
    line that differs."""
    plain_lines, fast_lines = _masked(plain), _masked(fast)
    for number, (want, got) in enumerate(zip(plain_lines, fast_lines), 1):
        if NUMBER.sub("#", want) != NUMBER.sub("#", got) or not all(
                _close(float(w), float(g)) for w, g in zip(NUMBER.findall(want), NUMBER.findall(got))):
            return f"line {number}: plain python printed {want!r}, fastedf run printed {got!r}"
    if len(plain_lines) != len(fast_lines):
        return f"plain python printed {len(plain_lines)} lines, fastedf run printed {len(fast_lines)}"
    return None


def _close(want, got):
    if math.isnan(want) or math.isnan(got):
        return math.isnan(want) and math.isnan(got)
    return math.isclose(want, got, rel_tol=RTOL, abs_tol=ATOL)
