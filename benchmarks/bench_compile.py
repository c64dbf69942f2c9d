"""Compile time of fastedf.fit by depth: a cold first call (empty caches), a new graph, a warm call, each in a fresh process.

For an MLP of L hidden Linear + Sigmoid layers (L = 0 is the study's logistic
regression), prints fit's compile_time_s (the first-row check, which
compiles the graph kernels it calls, plus compiling or loading the training
program), the process's wall time, and `import fastedf` alone.  "warm fit
start" is the whole first fit call of a warm process but its training: the
compile time plus what fit does once per process (the BLAS binding's import
of scipy.linalg, Numba initialising its compiler at the first cache load);
"second fit start" the same for a second model's fit in that process.
"new graph" is a graph whose kernels Numba's cache already holds but whose
program it does not (a fresh FASTEDF_CACHE_DIR): what a second course script
costs.
Usage:  python benchmarks/bench_compile.py [--layers 0,1,2,4,8] [--runs 1]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

from fastedf.compiler import MAX_INLINED_OPERATIONS

CHILD = """
import sys, time
start = time.perf_counter()
import fastedf
imported = time.perf_counter() - start
fastedf.compiler.MAX_INLINED_OPERATIONS = int(sys.argv[2])
import numpy as np
from fastedf.models import mlp
from fastedf.study.data import study_data
d = study_data(0)
fits = []  # (compile_time_s, wall time but training) of a first fit and of a new model's second fit
for _ in range(2):
    m = mlp(2, (8,) * int(sys.argv[1]))
    start = time.perf_counter()
    h = fastedf.fit(m.loss, {m.x: d.X_train, m.y: d.y_train.reshape(-1, 1)}, batch_size=32, epochs=1,
                    engine="compiled")
    fits.append((h.compile_time_s, time.perf_counter() - start - h.train_time_s))
print(fits[0][0], fits[0][1], fits[1][1], imported)
"""


class Run:
    """One child process: the first fit's compile_time_s and start (its wall time but training), the second
    fit's start, `import fastedf`, and the process's wall time."""

    def __init__(self, env, layers, max_inlined):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CHILD, str(layers), str(max_inlined)], env=env,
                             capture_output=True, text=True, check=True)
        self.compile_s, self.start_s, self.second_start_s, self.import_s = map(float, out.stdout.split()[-4:])
        self.process_s = time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default="0,1,2,4,8")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--max-inlined", type=int, default=MAX_INLINED_OPERATIONS,
                        help="programs of at most this many operations inline their kernels (0: none)")
    args = parser.parse_args()
    print(f"{'layers':>6} {'cold compile s':>15} {'cold process s':>15} {'new graph s':>12} {'warm compile s':>15}"
          f" {'warm fit start s':>17} {'second fit start s':>19} {'warm process s':>15} {'import s':>9}")
    for layers in map(int, args.layers.split(",")):
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as cache:
                env = dict(os.environ, NUMBA_CACHE_DIR=cache, FASTEDF_CACHE_DIR=os.path.join(cache, "programs"))
                cold = Run(env, layers, args.max_inlined)
                warm = Run(env, layers, args.max_inlined)
                new = Run(dict(env, FASTEDF_CACHE_DIR=os.path.join(cache, "other")), layers, args.max_inlined)
            print(f"{layers:>6} {cold.compile_s:>15.2f} {cold.process_s:>15.2f} {new.compile_s:>12.2f}"
                  f" {warm.compile_s:>15.3f} {warm.start_s:>17.3f} {warm.second_start_s:>19.4f}"
                  f" {warm.process_s:>15.2f} {warm.import_s:>9.2f}")


if __name__ == "__main__":
    main()
