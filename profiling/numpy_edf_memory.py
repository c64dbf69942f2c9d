"""Peak memory of the plain NumPy EDF's training loop against batch size, under memray: docs/memory.md's baseline.

    python profiling/numpy_edf_memory.py --features 64 --samples 16384 \
        --batch-sizes 256,512,1024,2048,4096,8192 --epochs 3 --out results/memory_numpy_edf_d64

The loop is the course loop of benchmarks/bench_graph.py (`course_loop`) over
fastedf/numpy_edf.py: Linear -> Sigmoid -> BCE, parameters from zeros, lr 0.1,
batches in order, on fastedf.study.memory.training_data(n, d).  The method is that of
`fastedf memory`, with fastedf.study.memory's pieces: one fresh process per point run
with PYTHONMALLOC=malloc (run_child), the data built first, one untracked warm-up
epoch, then only the loop tracked (track).  Writes DIR/memory.csv (engine
"numpy_edf"), memory.json (with the fitted slope) and memory_vs_batch.png.
"""
import argparse
import csv
import json
import os
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from fastedf.guardrails import environment, int_list, nonnegative_int, positive_int  # noqa: E402
from fastedf.study.memory import (CSV_FIELDS, DEFAULT_BATCH_SIZES, fits_by_engine, plot, run_child, track,  # noqa: E402
                                  training_data)

ENGINE = "numpy_edf"


def _child(batch_size, features, samples, epochs, seed):
    """In the child: data, one untracked warm-up epoch, then the tracked loop; prints one JSON line."""
    import bench_graph
    from fastedf import numpy_edf

    X, Y = training_data(samples, features, seed)
    bench_graph.course_loop(numpy_edf, X, Y, batch_size, 1)
    with tempfile.TemporaryDirectory(prefix="numpy-edf-memray-") as tmp:
        result = track(lambda: bench_graph.course_loop(numpy_edf, X, Y, batch_size, epochs),
                       os.path.join(tmp, "loop.bin"))
    print(json.dumps(result))
    return 0


def measure(batch_size, features, samples, epochs, seed=0):
    """One point in a fresh process: {"peak_bytes": int, "largest": [{bytes, count, site}, ...]}."""
    command = [sys.executable, os.path.abspath(__file__), "--child", *map(str, (batch_size, features, samples,
                                                                                epochs, seed))]
    return run_child(command, f"NumPy EDF, batch size {batch_size}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int_list, default=list(DEFAULT_BATCH_SIZES))
    parser.add_argument("--features", type=positive_int, default=64)
    parser.add_argument("--samples", type=positive_int, default=16384)
    parser.add_argument("--epochs", type=nonnegative_int, default=3)
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument("--out", default=os.path.join("results", "memory_numpy_edf"))
    args = parser.parse_args(argv)
    if any(b > args.samples for b in args.batch_sizes):
        parser.error("every batch size must be at most --samples")
    os.makedirs(args.out, exist_ok=True)
    rows = []
    with open(os.path.join(args.out, "memory.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for batch_size in args.batch_sizes:
            result = measure(batch_size, args.features, args.samples, args.epochs, args.seed)
            top = result["largest"][0] if result["largest"] else {"bytes": 0, "site": ""}
            row = {"engine": ENGINE, "batch_size": batch_size, "features": args.features,
                   "samples": args.samples, "epochs": args.epochs, "peak_bytes": result["peak_bytes"],
                   "largest_bytes": top["bytes"], "largest_site": top["site"]}
            writer.writerow(row)
            handle.flush()
            rows.append(row)
            print(f"  {ENGINE} B={batch_size:6d}  peak {row['peak_bytes']:>12,d} B   largest live: "
                  f"{row['largest_bytes']:,d} B at {row['largest_site']}", flush=True)
    fits = fits_by_engine(rows)
    summary = {"config": {**vars(args), "loop": "benchmarks/bench_graph.py course_loop over fastedf/numpy_edf.py",
                          "command": "python profiling/numpy_edf_memory.py "
                                     + " ".join(sys.argv[1:] if argv is None else argv)},
               "environment": environment(), "fits": fits}
    with open(os.path.join(args.out, "memory.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
        handle.write("\n")
    for engine, f in fits.items():
        print(f"  {engine}: {f['slope_bytes_per_sample']:.1f} bytes per extra sample")
    plot(rows, fits, args.features, os.path.join(args.out, "memory_vs_batch.png"),
         title=f"Peak memory of the NumPy EDF loop, d={args.features}, n={args.samples}, "
               f"{args.epochs} epochs (memray)")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        sys.exit(_child(*map(int, sys.argv[2:])))
    sys.exit(main())
