"""The course loop per update: fastedf's nodes (fused, and node by node) against the NumPy EDF reference.

Graphs (same node types on both sides, trained by the loops of course_loop.py):
  per-sample   the instructor's graph: (1, 1) inputs x1, x2, Multiply, Addition, Sigmoid, BCE (B = 1)
  logistic     Linear(2->1), Sigmoid, BCE on the study's two Gaussians (B = 1 and 32)
  mlp64        Linear(64->64), Sigmoid, Linear(64->1), Sigmoid, BCE on the digits, "is it a 0" (B = 32)
  digits       Linear(64->64), ReLU, Linear(64->10), Softmax, CE on the digits, one-hot labels (B = 32)
Each side first trains from the same initial parameters for the same steps and its parameters must equal the
reference's to 1e-9, or the script stops before timing anything.  Then the sides alternate, --repeats times each;
the table gives the median wall and CPU (process_time) microseconds per update and the speed-ups over numpy_edf.
Single thread (BLAS, OpenMP and Numba pinned to 1 before NumPy is imported).  "fastedf nodes" is the same loop
with fusing switched off (fastedf.fused.node_by_node()).

--numpy-tier times fastedf's nodes and the fused loop's NumPy step (fastedf.numpy_step) on the NumPy tier's twins
(fastedf.config; Numba never loaded) against numpy_edf: the per-update cost of a script too short to switch to
Numba.

--first-step instead times, in fresh processes sharing a new cache directory (the first cold, the second warm):
the first step (node by node, the kernels compiled or loaded) and the step at which the loop fuses (its
program compiled or loaded from Numba's cache), with fusing made to start at once.

Usage:  python benchmarks/bench_course_loop.py [--repeats 5] [--epochs 2] [--graphs per-sample,logistic,mlp64,digits]
        [--numpy-tier]
        python benchmarks/bench_course_loop.py --first-step [--graphs ...]
"""
import os
import sys

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
             "FASTEDF_BLAS_THREADS"):
    os.environ[_var] = "1"
# Read by fastedf.config at its import: Numba from the first kernel call (the Numba paths' steady state, fused from
# a graph's third step on), or the NumPy tier's twins throughout
os.environ["FASTEDF_NUMPY_TIER_SECONDS"] = "1e9" if "--numpy-tier" in sys.argv else "0"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import pathlib  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import course_loop  # noqa: E402
from fastedf import numpy_edf  # noqa: E402

import fastedf  # noqa: E402
from fastedf import fused  # noqa: E402
from fastedf.datasets import load_digits  # noqa: E402
from fastedf.study.data import study_data  # noqa: E402

LR = 0.1


def per_sample(edf, init):
    x1, x2, y = edf.Input(), edf.Input(), edf.Input()
    w1, w2, b = (edf.Parameter(v.copy()) for v in init)
    m1, m2 = edf.Multiply(x1, w1), edf.Multiply(x2, w2)
    s = edf.Addition(m1, m2)
    z = edf.Addition(s, b)
    p = edf.Sigmoid(z)
    loss = edf.BCE(y, p)
    return [x1, x2, y], [x1, x2, y, w1, w2, b, m1, m2, s, z, p, loss], [w1, w2, b]


def layers(edf, init, activations, loss_class):
    """x -> Linear -> activation -> ... -> loss: one Linear per (A, b) pair of init."""
    x, y = edf.Input(), edf.Input()
    params = [edf.Parameter(v.copy()) for v in init]
    graph, h = [x, y, *params], x
    for (A, b), activation in zip(zip(params[::2], params[1::2]), activations):
        h = edf.Linear(h, A, b)
        graph.append(h)
        h = activation(edf)(h)
        graph.append(h)
    graph.append(loss_class(edf)(y, h))
    return [x, y], graph, params


def graphs():
    """{name: (build(edf), X, Y, init, batch sizes)}."""
    rng = np.random.default_rng(0)
    study = study_data(seed=0)
    Xs, Ys = study.X_train, study.y_train.reshape(-1, 1)
    Xd, labels = load_digits()
    zero = (labels == 0).astype(np.float64).reshape(-1, 1)
    onehot = np.eye(10)[labels.astype(int)]
    sigmoid, relu, softmax = (lambda e: e.Sigmoid), (lambda e: e.ReLU), (lambda e: e.Softmax)
    bce, ce = (lambda e: e.BCE), (lambda e: e.CE)
    return {
        "per-sample": (lambda e, i: per_sample(e, i), Xs, Ys, [np.full((1, 1), 0.1), np.full((1, 1), -0.2),
                                                                np.zeros((1, 1))], [1]),
        "logistic": (lambda e, i: layers(e, i, [sigmoid], bce), Xs, Ys, [rng.normal(0, 0.5, (2, 1)), np.zeros(1)],
                     [1, 32]),
        "mlp64": (lambda e, i: layers(e, i, [sigmoid, sigmoid], bce), Xd, zero,
                  [rng.normal(0, 0.1, (64, 64)), np.zeros(64), rng.normal(0, 0.1, (64, 1)), np.zeros(1)], [32]),
        "digits": (lambda e, i: layers(e, i, [relu, softmax], ce), Xd, onehot,
                   [rng.normal(0, 0.1, (64, 64)), np.zeros(64), rng.normal(0, 0.1, (64, 10)), np.zeros(10)], [32]),
    }


def run(edf, build, X, Y, init, batch, epochs):
    """Train a fresh graph; returns (wall seconds, CPU seconds, updates, final parameters)."""
    inputs, graph, params = build(edf, init)
    wall, cpu = time.perf_counter(), time.process_time()
    if len(inputs) == 3:
        course_loop.train_per_sample(graph, params, *inputs, X, Y, epochs, LR)
    else:
        course_loop.train(graph, params, *inputs, X, Y, batch, epochs, LR)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall, cpu, epochs * -(-len(X) // batch), [p.value.copy() for p in params]


SIDES = {"numpy_edf": (numpy_edf, contextlib.nullcontext),
         "fastedf nodes": (fastedf, fused.node_by_node),
         "fastedf fused": (fastedf, contextlib.nullcontext)}


def step_times(name, batch):
    """(wall, CPU) seconds of each of the first steps of the course loop on graph `name` (this process); it fuses at
    the second or third (the Watch leaves out the first step's long interval)."""
    fused.WARM_SECONDS = fused.COLD_SECONDS = 0.0
    build, X, Y, init, _ = graphs()[name]
    inputs, graph, params = build(fastedf, init)
    times = []
    for i in range(0, 6 * batch, batch):
        start, cpu = time.perf_counter(), time.process_time()
        if len(inputs) == 3:
            course_loop.train_per_sample(graph, params, *inputs, X[i:i + 1], Y[i:i + 1], 1, LR)
        else:
            course_loop.train(graph, params, *inputs, X[i:i + batch], Y[i:i + batch], batch, 1, LR)
        times.append((time.perf_counter() - start, time.process_time() - cpu))
    assert fused.stats["fused_steps"] > 0, fused.stats["refused"]
    return times


def first_steps(names):
    import json
    import subprocess
    import tempfile
    print(f"{'graph':>10} {'B':>3} {'cache':>5} {'first step ms':>14} {'cpu':>7} {'fusing step ms':>15} {'cpu':>7} "
          f"{'fused step ms':>14}")
    for name in names:
        for batch in graphs()[name][4]:
            with tempfile.TemporaryDirectory() as cache:
                for state in ("cold", "warm"):
                    code = (f"import sys, json; sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r}); "
                            f"import bench_course_loop as b; print(json.dumps(b.step_times({name!r}, {batch})))")
                    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                         env=dict(os.environ, FASTEDF_CACHE_DIR=cache)).stdout
                    t = json.loads(out.splitlines()[-1])
                    fusing = max(t[1:4])
                    print(f"{name:>10} {batch:>3} {state:>5} {t[0][0] * 1e3:>14.1f} {t[0][1] * 1e3:>7.1f} "
                          f"{fusing[0] * 1e3:>15.1f} {fusing[1] * 1e3:>7.1f} {t[-1][0] * 1e3:>14.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2, help="at least; more where an epoch has few updates")
    parser.add_argument("--graphs", default="per-sample,logistic,mlp64,digits")
    parser.add_argument("--first-step", action="store_true")
    parser.add_argument("--numpy-tier", action="store_true", help="fastedf's nodes and NumPy step on NumPy twins")
    args = parser.parse_args()
    if args.first_step:
        return first_steps(args.graphs.split(","))
    # the steady state: fused from a graph's third step on (as the NumPy step under --numpy-tier)
    fused.WARM_SECONDS = fused.COLD_SECONDS = fused.NUMPY_SECONDS = 0.0
    sides = SIDES
    table = graphs()
    print(f"{'graph':>10} {'B':>3} " + " ".join(f"{s + ' wall':>19} {'cpu':>7}" for s in sides)
          + "".join(f" {s.split()[1] + '/numpy':>11} {'(cpu)':>6}" for s in sides if s != "numpy_edf")
          + f"   us per update, median of {args.repeats}")
    for name in args.graphs.split(","):
        build, X, Y, init, batches = table[name]
        for batch in batches:
            epochs = max(args.epochs, -(-1000 * batch // len(X)))  # >= 1000 updates: a graph's capture is amortised
            reference = None
            for side, (edf, context) in sides.items():  # the check run, which also warms up
                with context():
                    params = run(edf, build, X, Y, init, batch, epochs)[3]
                reference = reference or params
                if side == "fastedf fused" and not fused.stats["fused_steps"]:
                    sys.exit(f"FAIL: {name} B={batch}: no step was fused ({fused.stats['refused']})")
                worst = max(float(np.max(np.abs(a - b))) for a, b in zip(params, reference))
                if worst > 1e-9:
                    sys.exit(f"FAIL: {name} B={batch} {side}: max |param - numpy_edf's| = {worst:.3e}")
            times = {side: ([], []) for side in sides}
            for _ in range(args.repeats):
                for side, (edf, context) in sides.items():
                    with context():
                        wall, cpu, updates, _ = run(edf, build, X, Y, init, batch, epochs)
                    times[side][0].append(wall / updates * 1e6)
                    times[side][1].append(cpu / updates * 1e6)
            med = {side: (statistics.median(w), statistics.median(c)) for side, (w, c) in times.items()}
            ref = med["numpy_edf"]
            print(f"{name:>10} {batch:>3} " + " ".join(f"{w:>19.2f} {c:>7.2f}" for w, c in med.values())
                  + "".join(f" {ref[0] / w:>10.2f}x {ref[1] / c:>5.2f}x" for side, (w, c) in med.items()
                            if side != "numpy_edf"))
    if args.numpy_tier and "numba" in sys.modules:
        sys.exit("FAIL: Numba was loaded: not the NumPy tier")


if __name__ == "__main__":
    main()
