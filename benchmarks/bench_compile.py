"""Compile time of fastedf.fit: a cold first call (empty caches) and a warm one, each in a fresh process.

Prints fit's compile_time_s (the warm-up pass that compiles the graph
engine's kernels, plus compiling or loading the training program) and the
process's wall time.  Usage:  python benchmarks/bench_compile.py [--runs 3]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

CHILD = """
import fastedf
from fastedf.models import logistic_regression
from fastedf.study import study_data
d = study_data(0)
m = logistic_regression(2)
h = fastedf.fit(m.loss, {m.x: d.X_train, m.y: d.y_train.reshape(-1, 1)}, batch_size=32, epochs=1, engine="compiled")
print(h.compile_time_s)
"""


def run(env):
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1]), time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"{'run':>4} {'cold compile s':>15} {'cold process s':>15} {'warm compile s':>15} {'warm process s':>15}")
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, NUMBA_CACHE_DIR=cache, FASTEDF_CACHE_DIR=os.path.join(cache, "programs"))
            cold = run(env)
            warm = run(env)
        print(f"{i:>4} {cold[0]:>15.2f} {cold[1]:>15.2f} {warm[0]:>15.3f} {warm[1]:>15.2f}")


if __name__ == "__main__":
    main()
