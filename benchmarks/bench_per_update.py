"""Per-update time of a variant's training loop: plain python against `fastedf run`, startup and warm-up cancelled.

Each variant's script is copied twice with a short and a long training loop (its epoch count rewritten); the
per-update time is (time of the long copy - time of the short copy) / (updates of the long - of the short), so
the interpreter's start, imports, verification and the program's load cancel out. One untimed run per copy and
side (warms fastedf's caches; the long copies' outputs are compared as tests/test_run_variants.py does), then
--runs runs of each, alternating the sides; the smallest wall and CPU (user + system of the child) time count.
BLAS, OpenMP and Numba are pinned to one thread in the children.

Usage:  python benchmarks/bench_per_update.py [--variants conv_channels_last,dropout_batchnorm] [--runs 3]
"""
import argparse
import pathlib
import re
import shutil
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "run_variants"))
from bench_run import timed  # noqa: E402
from compare import HERE, environment, first_difference  # noqa: E402

# variant: (the epoch count's text in train.py, its replacement with {epochs}, updates an epoch, short, long)
LOOPS = {
    "conv_channels_last": ("EPOCHS = 90", "EPOCHS = {epochs}", 30, 10, 60),
    "dropout_batchnorm": ("for epoch in range(12):", "for epoch in range({epochs}):", 38, 3, 60),
}


def copies(name, folder):
    """{epochs: the copied script's path} for the variant's short and long loops."""
    text, replacement, _, short, long = LOOPS[name]
    source = (HERE / name / "train.py").read_text()
    if text not in source:
        raise SystemExit(f"{name}/train.py no longer contains {text!r}: update LOOPS")
    paths = {}
    for epochs in (short, long):
        target = folder / f"{name}_{epochs}"
        shutil.copytree(HERE / name, target)
        (target / "train.py").write_text(source.replace(text, replacement.format(epochs=epochs)))
        paths[epochs] = target
    return paths


def measure(name, folder, runs):
    """({side: (per-update wall, per-update CPU)}, difference of the long copies' outputs or None)."""
    _, _, per_epoch, short, long = LOOPS[name]
    paths, env = copies(name, folder), environment()
    sides = {"python": [sys.executable, "train.py"],
             "fastedf run": [sys.executable, "-m", "fastedf", "run", "train.py"]}
    outputs = {side: {e: timed(argv, paths[e], env)[0] for e in paths} for side, argv in sides.items()}
    best = {(side, e): [float("inf"), float("inf")] for side in sides for e in paths}
    for _ in range(runs):
        for e in paths:
            for side, argv in sides.items():
                _, _, wall, cpu = timed(argv, paths[e], env)
                best[side, e] = [min(best[side, e][0], wall), min(best[side, e][1], cpu)]
    updates = (long - short) * per_epoch
    per_update = {side: tuple((best[side, long][i] - best[side, short][i]) / updates for i in (0, 1))
                  for side in sides}
    return per_update, first_difference(outputs["python"][long], outputs["fastedf run"][long])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=",".join(LOOPS), help="comma-separated, of: " + ", ".join(LOOPS))
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each copy and side (default 3)")
    args = parser.parse_args(argv)
    names = args.variants.split(",")
    if any(name not in LOOPS for name in names):
        parser.error(f"choose variants from {', '.join(LOOPS)}")
    print(f"{'variant':20s} {'python us':>10} {'run us':>9} {'wall x':>7} {'py cpu us':>10} {'run cpu us':>10} "
          f"{'cpu x':>6}  same output")
    status = 0
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            times, difference = measure(name, pathlib.Path(folder), args.runs)
            (pw, pc), (rw, rc) = times["python"], times["fastedf run"]
            print(f"{name:20s} {pw * 1e6:10.1f} {rw * 1e6:9.1f} {pw / rw:6.2f}x {pc * 1e6:10.1f} {rc * 1e6:10.1f} "
                  f"{pc / rc:5.2f}x  {'yes' if difference is None else 'NO: ' + difference}")
            status |= difference is not None
    return status


if __name__ == "__main__":
    sys.exit(main())
