"""A digits-MLP grid run serially and on a Dask LocalCluster (fastedf.study.distributed): wall time, speed-up, timing.

The grid: scikit-learn's digits (75% train), an MLP 64-64-10 (ReLU, softmax/CE),
batch sizes 1, 2, 4, ... and the training-set size, x seeds x learning rates,
shuffled, each run trained `repeats` times (median time kept) as fastedf sweep
does.  Four ways, in this order:
  serial             every run in this process, one after another;
  concurrent         the workers train every run `repeats` times; their times were measured side by side;
  serial-client      the workers train each run once; this process times it (`repeats` runs) while they wait;
  untimed            the workers train each run once, nothing timed: the quality part alone.
Wall times include starting the cluster (also shown apart) and the workers' warm-up.  Every way's
curves are checked against the serial ones; the timing columns compare each
run's train_time_s with the serial one's (median and largest ratio).
Usage:  python benchmarks/bench_dask.py [--workers 2] [--epochs 20] [--seeds 3] [--lrs 0.01,0.03,0.1,0.3] [--repeats 3]
"""
import argparse
import functools
import time

import numpy as np

import fastedf
from fastedf.datasets import load_digits
from fastedf.models import mlp
from fastedf.study.data import train_test_split
from fastedf.study.distributed import Grid


@functools.cache
def digits_split(seed):
    """The digits, split with the study's convention (seed + 1); cached per process."""
    X, y = load_digits()
    return train_test_split(X, y, seed=seed + 1)


def train(spec, repeats):
    """One run: spec = (batch_size, seed, lr, epochs); the curve, final loss, accuracy and median training time."""
    batch_size, seed, lr, epochs = spec
    split = digits_split(seed)
    times = []
    for _ in range(repeats):
        model = mlp(64, (64,), seed=seed, activation="relu", classes=10)
        history = fastedf.fit(model.loss, {model.x: split.X_train, model.y: model.labels(split.y_train)},
                              batch_size=batch_size, epochs=epochs, lr=lr, shuffle=True, seed=seed,
                              engine="compiled")
        times.append(history.train_time_s)
    return {"curve": history.epoch_loss.tolist(), "final_loss": model.mean_loss(split.X_train, split.y_train),
            "accuracy": model.accuracy(split.X_test, split.y_test), "train_time_s": float(np.median(times))}


def warm_up():
    """Compile (or load from Numba's cache) the MLP's program before the first timed run."""
    train((len(digits_split(0).y_train), 0, 0.1, 1), 1)


def on_cluster(workers, specs, repeats, timed_here):
    """(wall seconds, seconds to start the cluster, {spec: result}) of the grid on a fresh LocalCluster."""
    results = {}

    def keep(spec, result, timed):
        results[spec] = {**result, "train_time_s": timed.value} if timed_here else result

    start = time.perf_counter()
    with Grid(workers=workers) as grid:
        started = time.perf_counter() - start
        grid.run(functools.partial(train, repeats=1 if timed_here is not None else repeats), specs, on_result=keep,
                 time_one=(lambda spec, _: train(spec, repeats)["train_time_s"]) if timed_here else None,
                 warm_up=warm_up)
    return time.perf_counter() - start, started, results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--lrs", default="0.01,0.03,0.1,0.3")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n = len(digits_split(0).y_train)
    sizes = [2**k for k in range(n.bit_length()) if 2**k < n] + [n]
    specs = [(b, seed, float(lr), args.epochs) for b in sizes for lr in args.lrs.split(",")
             for seed in range(args.seeds)]
    print(f"{len(specs)} runs: batch sizes {sizes[0]}..{sizes[-1]} x {args.seeds} seeds x lrs {args.lrs}, "
          f"{args.epochs} epochs, {args.repeats} timed repeats; MLP 64-64-10 on {n} digits")

    warm_up()
    start = time.perf_counter()
    serial = {spec: train(spec, args.repeats) for spec in specs}
    walls = {"serial": (time.perf_counter() - start, 0.0, serial)}
    walls["concurrent"] = on_cluster(args.workers, specs, args.repeats, timed_here=None)
    walls["serial-client"] = on_cluster(args.workers, specs, args.repeats, timed_here=True)
    walls["untimed"] = on_cluster(args.workers, specs, args.repeats, timed_here=False)

    print(f"{'way':15s} {'wall s':>8s} {'(start s)':>9s} {'speed-up':>9s} {'max |curve diff|':>17s} "
          f"{'time / serial time: median':>27s} {'max':>6s}")
    for way, (wall, started, results) in walls.items():
        diff = max(float(np.max(np.abs(np.subtract(results[s]["curve"], serial[s]["curve"])))) for s in specs)
        if way == "untimed":
            ratios = "-", "-"
        else:
            ratio = [results[s]["train_time_s"] / serial[s]["train_time_s"] for s in specs]
            ratios = f"{np.median(ratio):.2f}", f"{np.max(ratio):.2f}"
        print(f"{way:15s} {wall:8.2f} {started:9.2f} {walls['serial'][0] / wall:8.2f}x {diff:17.1e} {ratios[0]:>27s} {ratios[1]:>6s}")


if __name__ == "__main__":
    import bench_dask  # the workers unpickle bench_dask.train by name (this directory is on their sys.path)
    bench_dask.main()
