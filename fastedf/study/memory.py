"""Peak memory of training against batch size, measured with memray, one fresh process per point.

One point (measure_peak) is measured in a child process (`python -m fastedf.study.memory
--child ...`), because memray allows one Tracker per process and a fresh process
starts with nothing left over from earlier points:

1. the data are built first: X (n, d) and Y (n, 1), float64 and C-contiguous, so
   fit converts and copies nothing;
2. a warm-up fit on a separate model (same engine, same batch size, 1 epoch):
   Numba compiles or loads its cache, NumPy sets up its buffers, all untracked;
3. a fresh model is built, then only `fit(...)` runs inside
   `memray.Tracker(path, native_traces=False)`, so the buffers that this model's
   training allocates are all seen; arrays made by Numba's runtime (NRT), if a
   kernel makes any, are seen too (NRT allocates with malloc, which memray
   intercepts);
4. the child runs with PYTHONMALLOC=malloc (`run_child`): pymalloc would take
   memory in 1 MiB arenas, and a new arena whenever the tracked region happens
   to need one is a 1 MiB step unrelated to batch size; with malloc every Python
   object is counted at its own size, and the peak repeats from run to run
   within about 100 bytes (compiled engine) or a few KiB (graph engine, which
   makes Python objects every step);
5. the peak is memray's high-water mark of that region (`track`),
   `FileReader(path).metadata.peak_memory`: the most bytes live at once, counting
   only allocations made inside the Tracker.  The largest allocations live at
   that moment (`get_high_watermark_allocation_records`) name the culprit.

`fastedf memory` (main) measures every batch size of every engine, fits a line
peak = intercept + slope * batch_size by least squares, and writes memory.csv,
memory.json and memory_vs_batch.png.  With `--micro-batch m` every point is
measured a second time with fit(..., micro_batch=m), which computes each
batch's gradient m rows at a time: the same updates, and buffers sized for m,
so that line stays flat beyond B = m beside the one that grows.  Like `fastedf sweep` it locks its --out
(one writer per directory), writes each row as it is measured, stops on Ctrl-C
with the measured rows kept (memory.json says complete: false), and refuses
sizes this machine cannot finish before measuring anything.
"""
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile

import numpy as np

from ..errors import EXIT_INTERRUPTED
from ..guardrails import (SECONDS_PER_ELEMENT, SECONDS_PER_PROCESS, SECONDS_PER_UPDATE,
                          ArgumentParser, Cost, DirectoryLock, UsageError, environment, existing_files,
                          fresh_output_dir, int_list, make_output_dir, nonnegative_int, open_output, path_error,
                          positive_int, refuse_earlier_results, refuse_other_commands_files, refuse_unless_it_fits,
                          remove_files, seed_int, write_atomically)
from ..models import logistic_regression
from ..trainer import ENGINES, fit
from .batch_scaling import updates_per_epoch

DEFAULT_BATCH_SIZES = (256, 512, 1024, 2048, 4096, 8192)
OUTPUT_FILES = ("memory.csv", "memory.json", "memory_vs_batch.png")  # what `fastedf memory` writes in --out
MEMORY_ROOT = os.path.join("results", "memory")  # where its default output directories are made
# micro_batch: empty for whole-batch steps, else fit's micro_batch (the rows held at once)
CSV_FIELDS = ("engine", "batch_size", "features", "samples", "epochs", "peak_bytes",
              "largest_bytes", "largest_site", "micro_batch")
BYTES_PER_FLOAT = 8
# The float64 buffers each engine keeps per sample in the batch (per output) for a Linear -> Sigmoid -> BCE
# step.  The graph engine keeps every node's value and gradient: z, p, dL/dp, dL/dz.  The compiled engine
# computes Sigmoid and BCE in one kernel from the logits (sigmoid_bce writes dL/dz = (p - y) / N, p only
# passing through that buffer), so it keeps z and dL/dz.
PER_SAMPLE_BUFFERS = {"graph": ("z", "p", "dL/dp", "dL/dz"), "compiled": ("z", "dL/dz")}


def theoretical_bytes_per_sample(engine="graph", n_out=1):
    """Bytes one extra batch sample must cost `engine`: its per-sample buffers, float64, n_out each.

    32 for the graph engine (z, p, dL/dp, dL/dz), 16 for the compiled engine
    (z, dL/dz: its fused sigmoid-BCE kernel keeps neither p nor dL/dp).  Assumes the
    data stay where they are (a batch is a view of X and Y, not a copy) and that
    dL/dx, which training never reads, is not computed.  It is the least for
    each engine's design, which keeps every per-sample value it computes; a
    kernel fusing the whole step could keep less.
    """
    if engine not in PER_SAMPLE_BUFFERS:
        raise ValueError(f"engine must be one of {', '.join(PER_SAMPLE_BUFFERS)}, got {engine!r}")
    return len(PER_SAMPLE_BUFFERS[engine]) * BYTES_PER_FLOAT * n_out


def theoretical_peak(batch_size, features, engine="graph", n_out=1):
    """Least bytes a step of `engine` must hold: the per-sample buffers plus dL/dA (d, n_out) and dL/db (n_out,)."""
    return (theoretical_bytes_per_sample(engine, n_out) * batch_size
            + BYTES_PER_FLOAT * (features + 1) * n_out)


def fit_slope(batch_sizes, peak_bytes):
    """Least-squares line peak = intercept + slope * batch_size; returns (slope, intercept).

    slope is in bytes per extra sample in the batch.  Needs two distinct batch sizes.
    """
    b = np.asarray(batch_sizes, dtype=np.float64)
    p = np.asarray(peak_bytes, dtype=np.float64)
    if b.shape != p.shape or len(np.unique(b)) < 2:
        raise ValueError("fit_slope needs peaks for at least two distinct batch sizes")
    slope, intercept = np.polyfit(b, p, 1)
    return float(slope), float(intercept)


def training_data(samples, features, seed=0):
    """X (samples, features) ~ N(0, 1) and 0/1 labels Y (samples, 1) from a noisy random hyperplane.

    Both float64 and C-contiguous.  Memory does not depend on the values; the
    labels only keep the loss meaningful.
    """
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(samples, features))
    w = rng.normal(size=features)
    Y = ((X @ w + rng.normal(size=samples)) > 0).astype(np.float64).reshape(samples, 1)
    return np.ascontiguousarray(X), np.ascontiguousarray(Y)


def _site(record):
    """'fastedf/trainer.py:65 (validate_feeds)': the innermost frame in fastedf, else the innermost frame.

    This module's own frames (the measuring code) do not count as fastedf; files
    under the project root are named relative to it.
    """
    frames = record.stack_trace()
    if not frames:
        return "?"
    here = os.path.abspath(__file__)
    package = os.path.dirname(here)
    root = os.path.dirname(package)
    inside = [f for f in frames if os.path.abspath(f[1]).startswith(package + os.sep)
              and os.path.abspath(f[1]) != here]
    function, filename, line = (inside or frames)[0]
    if os.path.abspath(filename).startswith(root + os.sep):
        filename = os.path.relpath(os.path.abspath(filename), root)
    return f"{filename}:{line} ({function})"


def track(run, path):
    """Call run() inside memray.Tracker(path, native_traces=False): {"peak_bytes", "largest"} of that call.

    Step 5 of the module docstring: peak_bytes is memray's high-water mark of
    the call, counting only allocations made inside it; "largest" lists the
    five biggest allocation sites live at that moment, {bytes, count, site}.
    """
    import memray

    with memray.Tracker(path, native_traces=False):
        run()
    reader = memray.FileReader(path)
    try:
        peak = int(reader.metadata.peak_memory)
        live = sorted(reader.get_high_watermark_allocation_records(), key=lambda r: r.size, reverse=True)
        largest = [{"bytes": int(r.size), "count": int(r.n_allocations), "site": _site(r)} for r in live[:5]]
    finally:
        reader.close()
    return {"peak_bytes": peak, "largest": largest}


def _measure_here(engine, batch_size, features, samples, epochs, seed, path, micro_batch=None):
    """Steps 1-3 and 5 of the module docstring, in this process; returns the child's result dict."""

    X, Y = training_data(samples, features, seed)
    warm = logistic_regression(features, seed)
    fit(warm.loss, {warm.x: X, warm.y: Y}, batch_size=batch_size, epochs=1, lr=0.1, engine=engine,
        micro_batch=micro_batch)
    model = logistic_regression(features, seed)
    feeds = {model.x: X, model.y: Y}
    return track(lambda: fit(model.loss, feeds, batch_size=batch_size, epochs=epochs, lr=0.1, engine=engine,
                             micro_batch=micro_batch), path)




def run_child(command, where):
    """Run a child process with PYTHONMALLOC=malloc (step 4); the JSON on the last line of its output.

    The child exits with 2 when it rejects its arguments (raised here as
    ValueError, with the child's last line of stderr); Ctrl-C in the child is
    a KeyboardInterrupt here; any other failure is a RuntimeError.  `where`
    names the point in the messages.
    """
    env = dict(os.environ, PYTHONMALLOC="malloc")
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)  # Ctrl-C kills the child
    if done.returncode in (EXIT_INTERRUPTED, -signal.SIGINT):
        raise KeyboardInterrupt  # Ctrl-C reached the child first (the terminal signals both)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["(no output)"]
        if done.returncode == 2:
            raise ValueError(f"{where}: {lines[-1]}")
        raise RuntimeError(f"memory measurement failed ({where}, exit {done.returncode}):\n"
                           + "\n".join(lines[-20:]))
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(engine, batch_size, features, samples, epochs, seed=0, micro_batch=None):
    """One point, measured in a fresh process: {"peak_bytes": int, "largest": [{bytes, count, site}, ...]}.

    "largest" lists the biggest allocation sites live at the peak.  micro_batch:
    fit's option (None: the whole batch at once).  Raises ValueError when fit
    rejects the arguments (for example an engine that cannot run), RuntimeError
    when the child fails otherwise.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    for name, value in (("batch_size", batch_size), ("features", features), ("samples", samples)):
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value!r}")
    if int(epochs) < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs!r}")
    if micro_batch is not None and int(micro_batch) < 1:
        raise ValueError(f"micro_batch must be >= 1, got {micro_batch!r}")
    command = [sys.executable, "-m", "fastedf.study.memory", "--child", engine, str(int(batch_size)),
               str(int(features)), str(int(samples)), str(int(epochs)), str(int(seed)), str(int(micro_batch or 0))]
    where = f"{engine} engine, batch size {batch_size}" + (f", micro-batch {micro_batch}" if micro_batch else "")
    return run_child(command, where)


def measure_peak(engine, batch_size, features, samples, epochs, seed=0, micro_batch=None):
    """Peak bytes of `fit` for logistic regression on (samples, features) data, in a fresh process."""
    return measure(engine, batch_size, features, samples, epochs, seed, micro_batch)["peak_bytes"]


def measure_peaks(engine, batch_sizes, features, samples, epochs, seed=0, on_row=None, micro_batch=None):
    """measure_peak for every batch size; a list of rows, each a dict with the keys of CSV_FIELDS.

    on_row(row) is called as soon as each row is measured (to write it out at once).
    """
    rows = []
    for batch_size in batch_sizes:
        result = measure(engine, batch_size, features, samples, epochs, seed, micro_batch)
        top = result["largest"][0] if result["largest"] else {"bytes": 0, "site": ""}
        row = {"engine": engine, "batch_size": int(batch_size), "features": int(features),
               "samples": int(samples), "epochs": int(epochs), "peak_bytes": result["peak_bytes"],
               "largest_bytes": top["bytes"], "largest_site": top["site"],
               "micro_batch": int(micro_batch) if micro_batch else None}
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def _child(argv):
    """`python -m fastedf.study.memory --child ENGINE B D N EPOCHS SEED [MICRO]`: one JSON line (MICRO 0: none)."""
    engine, batch_size, features, samples, epochs, seed, *micro = argv
    micro_batch = int(micro[0]) if micro and int(micro[0]) > 0 else None
    try:
        with tempfile.TemporaryDirectory(prefix="fastedf-memray-") as tmp:
            try:
                result = _measure_here(engine, int(batch_size), int(features), int(samples), int(epochs),
                                       int(seed), os.path.join(tmp, "fit.bin"), micro_batch)
            except ValueError as error:
                print(" ".join(str(error).split()), file=sys.stderr)
                return 2
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    print(json.dumps(result))
    return 0


# ---- fastedf memory: the command line ---------------------------------------------------------

def _parser():
    parser = ArgumentParser(prog="fastedf memory",
                            description="Peak memory of fit against batch size, each point measured "
                                        "under memray in a fresh process.")
    what = parser.add_argument_group("what to measure")
    what.add_argument("--engine", default=",".join(ENGINES),
                      help="engines, comma-separated: compiled, graph (default: both)")
    what.add_argument("--batch-sizes", type=int_list, default=list(DEFAULT_BATCH_SIZES),
                      help="comma-separated batch sizes (default: %(default)s)")
    what.add_argument("--features", type=positive_int, default=64, help="d, features per sample (default: 64)")
    what.add_argument("--samples", type=positive_int, default=16384, help="n, training rows (default: 16384)")
    what.add_argument("--epochs", type=nonnegative_int, default=3, help="epochs of the tracked fit (default: 3)")
    what.add_argument("--seed", type=seed_int, default=0, help="data and model seed, below 2**64 (default: 0)")
    what.add_argument("--micro-batch", type=positive_int, metavar="M",
                      help="also measure every point with fit(..., micro_batch=M): gradients accumulated over "
                           "M rows at a time, the same updates (default: whole batches only)")
    out = parser.add_argument_group("output")
    out.add_argument("--out",
                     help=f"directory for {', '.join(OUTPUT_FILES)}; one holding an earlier measurement's files is "
                          f"refused unless --overwrite (default: a new directory {MEMORY_ROOT}/<UTC time>, with "
                          f"{MEMORY_ROOT}/latest pointing at it)")
    out.add_argument("--overwrite", action="store_true",
                     help="remove the files an earlier measurement wrote in --out (no others) and start again")
    out.add_argument("--no-plot", action="store_true", help="skip memory_vs_batch.png")
    return parser


def _engines(text):
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in ENGINES]
    if not names or unknown:
        raise UsageError(f"--engine: expected a comma-separated list of {', '.join(ENGINES)}, got {text!r}")
    return list(dict.fromkeys(names))


# The child's memory: X (n, d) and Y (n, 1), and as much again while the generator draws them.
DATA_COPIES = 2
MEMRAY_BYTES_PER_GRAPH_STEP = 2  # memray's capture file per graph-engine step (measured 0.7; compiled: none)


def measurement_cost(engines, batch_sizes, features, samples, epochs, passes=1):
    """The Cost (fastedf.guardrails.Cost) of measuring every point: time a lower bound, memory per child, disk in temp.

    Per point: a process start, the data drawn, a one-epoch warm-up and the
    tracked fit, each epoch a step cost per batch and a cost per value;
    `passes` times (2 with --micro-batch).
    """
    seconds, disk = 0.0, 0.0
    for engine in engines:
        for b in batch_sizes:
            steps = updates_per_epoch(samples, b)
            seconds += (SECONDS_PER_PROCESS + samples * features * SECONDS_PER_ELEMENT
                        + (epochs + 1) * (steps * SECONDS_PER_UPDATE[engine]
                                          + samples * (features + 1) * SECONDS_PER_ELEMENT))
            if engine == "graph":
                disk += epochs * steps * MEMRAY_BYTES_PER_GRAPH_STEP
    memory = DATA_COPIES * BYTES_PER_FLOAT * samples * (features + 1) + 2 * BYTES_PER_FLOAT * (epochs + 1)
    return Cost(seconds * passes, memory, disk * passes)


def series_name(row):
    """'compiled', or 'compiled, micro-batch 64': the line a measured row belongs to."""
    micro = row.get("micro_batch")
    return row["engine"] + (f", micro-batch {micro}" if micro else "")


def fits_by_engine(rows):
    """{series: {"slope_bytes_per_sample", "intercept_bytes", "batch_sizes"}} for series with >= 2 sizes.

    A series is an engine, or an engine with a micro-batch (series_name).
    """
    fits = {}
    for engine in dict.fromkeys(map(series_name, rows)):
        mine = [row for row in rows if series_name(row) == engine]
        sizes = [row["batch_size"] for row in mine]
        if len(set(sizes)) >= 2:
            slope, intercept = fit_slope(sizes, [row["peak_bytes"] for row in mine])
            fits[engine] = {"slope_bytes_per_sample": slope, "intercept_bytes": intercept,
                            "batch_sizes": sorted(set(sizes))}
    return fits


def plot(rows, fits, features, path, title=None):
    """memory_vs_batch.png: measured peaks, each engine's fitted line (labelled with its slope), its least."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    sizes = np.array(sorted({row["batch_size"] for row in rows}), dtype=np.float64)
    line_x = np.linspace(0, sizes.max(), 200)
    colors = {}
    for engine, marker in zip(dict.fromkeys(map(series_name, rows)), "os^Dv<>p"):
        mine = [row for row in rows if series_name(row) == engine]
        points = ax.plot([r["batch_size"] for r in mine], [r["peak_bytes"] / 1024 for r in mine],
                         marker, label=f"{engine}: measured peak")
        colors[engine] = points[0].get_color()
        if engine in fits:
            f = fits[engine]
            ax.plot(line_x, (f["intercept_bytes"] + f["slope_bytes_per_sample"] * line_x) / 1024, "-",
                    color=points[0].get_color(), alpha=0.7,
                    label=f"{engine}: fit, {f['slope_bytes_per_sample']:.1f} B per extra sample")
    for engine in (engine for engine in colors if engine in PER_SAMPLE_BUFFERS):
        ax.plot(line_x, theoretical_peak(line_x, features, engine) / 1024, "--", color=colors[engine],
                label=f"{engine}: least, {theoretical_bytes_per_sample(engine)} B per sample "
                      f"({', '.join(PER_SAMPLE_BUFFERS[engine])})")
    micro = {series_name(r): (r["engine"], r["micro_batch"]) for r in rows if r.get("micro_batch")}
    for name, (engine, m) in micro.items():  # buffers for min(B, m) rows: flat beyond m
        if engine in PER_SAMPLE_BUFFERS:
            ax.plot(line_x, theoretical_peak(np.minimum(line_x, m), features, engine) / 1024, "--",
                    color=colors[name], label=f"{name}: least, the same buffers for min(B, {m}) rows")
    ax.set_xlabel("batch size B (samples)")
    ax.set_ylabel("peak memory of fit (KiB)")
    ax.set_xlim(0, sizes.max() * 1.05)
    ax.set_ylim(bottom=0)
    ax.set_title(title or f"Peak memory of fit against batch size, d={features} (memray)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    """`fastedf memory [options]`: measure, then write DIR/memory.csv, memory.json, memory_vs_batch.png."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    engines = _engines(args.engine)
    args.batch_sizes = list(dict.fromkeys(args.batch_sizes))  # a size given twice is measured once
    if args.micro_batch is not None and args.micro_batch >= max(args.batch_sizes):
        raise UsageError(f"--micro-batch {args.micro_batch} is not smaller than any batch size (the largest is "
                         f"{max(args.batch_sizes)}), so it would change nothing: choose M below it")
    too_big = [b for b in args.batch_sizes if b > args.samples]
    if too_big:
        raise UsageError(f"--batch-sizes {too_big[0]} exceeds --samples {args.samples}")
    default = parser.get_default
    refuse_unless_it_fits(
        lambda v: measurement_cost(engines, args.batch_sizes, v["--features"], v["--samples"], v["--epochs"],
                                   2 if args.micro_batch else 1),
        {"--epochs": (args.epochs, default("epochs"), 0),
         "--samples": (args.samples, default("samples"), max(args.batch_sizes)),
         "--features": (args.features, default("features"), 1)},
        "the measurement", tempfile.gettempdir())
    if args.out is None:
        args.out = fresh_output_dir(MEMORY_ROOT)
    make_output_dir(args.out)
    with DirectoryLock(args.out, "fastedf memory"):
        from .results import ResultsDir  # the sweep's files; imported only here, where they are looked for

        foreign = existing_files(args.out, ResultsDir.FILES)
        if foreign:
            raise refuse_other_commands_files(args.out, foreign, "fastedf sweep")
        earlier = existing_files(args.out, OUTPUT_FILES)
        if earlier and not args.overwrite:
            raise refuse_earlier_results(args.out, earlier, "an earlier measurement's files",
                                         "add --overwrite to replace them")
        remove_files(earlier)
        return _measure_and_write(args, argv, engines)


def micro_batch_summary(rows, fits, micro_batch):
    """Lines comparing each engine's whole-batch slope with its micro-batch slope, and the peaks beyond M."""
    lines = []
    for engine in dict.fromkeys(row["engine"] for row in rows):
        whole, micro = fits.get(engine), fits.get(f"{engine}, micro-batch {micro_batch}")
        if whole is None or micro is None:
            continue
        beyond = [r["peak_bytes"] for r in rows if r["engine"] == engine and r.get("micro_batch")
                  and r["batch_size"] >= micro_batch]
        spread = (max(beyond) - min(beyond)) if len(beyond) >= 2 else 0
        lines.append(f"  {engine}: {whole['slope_bytes_per_sample']:.1f} bytes per extra sample with whole batches, "
                     f"{micro['slope_bytes_per_sample']:.2f} with micro-batches of {micro_batch} (peaks at "
                     f"B >= {micro_batch} within {spread:,d} bytes of each other)")
    return lines


def _measure_and_write(args, argv, engines):
    """main's work once --out is locked: memory.csv row by row, memory.json, the figure."""
    csv_path, json_path, png_path = (os.path.join(args.out, name) for name in OUTPUT_FILES)
    config = {"engines": engines, "batch_sizes": args.batch_sizes, "features": args.features,
              "samples": args.samples, "epochs": args.epochs, "seed": args.seed, "micro_batch": args.micro_batch,
              "model": "logistic_regression",
              "lr": 0.1, "shuffle": False,
              "method": "one fresh process per point, PYTHONMALLOC=malloc; warm-up fit (1 epoch) untracked; "
                        "memray.Tracker(native_traces=False) around fit only; peak = metadata.peak_memory",
              "command": "fastedf memory " + " ".join(argv)}
    summary = {"config": config, "environment": environment(),
               "theory": {"bytes_per_sample": {e: theoretical_bytes_per_sample(e) for e in engines},
                          "buffers_per_sample": {e: list(PER_SAMPLE_BUFFERS[e]) for e in engines},
                          "assumes": "float64; batch is a view of the data; n_out=1; dL/dx not computed; "
                                     "plus dL/dA, dL/db"},
               "fits": {}, "complete": False}
    _write_json(json_path, summary)
    print(f"fastedf memory: d={args.features}, n={args.samples}, {args.epochs} epochs -> {args.out}")

    rows = []
    handle = open_output(csv_path, newline="")
    with handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)

        def write(row):
            try:
                writer.writerow(row)
                handle.flush()  # an interrupt loses nothing measured
            except OSError as error:
                raise path_error(error, csv_path, "write") from None
            rows.append(row)
            print(f"  {series_name(row):8s} B={row['batch_size']:6d}  peak {row['peak_bytes']:>12,d} B"
                  f"   largest live: {row['largest_bytes']:,d} B at {row['largest_site']}", flush=True)

        try:
            writer.writeheader()
            for engine in engines:
                measure_peaks(engine, args.batch_sizes, args.features, args.samples, args.epochs, args.seed,
                              on_row=write)
                if args.micro_batch:
                    measure_peaks(engine, args.batch_sizes, args.features, args.samples, args.epochs, args.seed,
                                  on_row=write, micro_batch=args.micro_batch)
        except ValueError as error:  # a child rejected its arguments
            raise UsageError(str(error)) from None
        except KeyboardInterrupt:
            _write_json(json_path, {**summary, "interrupted": True, "rows": rows})
            print(f"fastedf memory: interrupted; {len(rows)} measured points kept in {csv_path}", file=sys.stderr)
            return EXIT_INTERRUPTED

    summary["fits"] = fits_by_engine(rows)
    summary["complete"] = True
    _write_json(json_path, summary)
    for name, f in summary["fits"].items():
        engine = name.split(",")[0]
        least = (f"least for this engine {theoretical_bytes_per_sample(engine)}" if "," not in name
                 else "buffers sized for the micro-batch")
        print(f"  {name}: {f['slope_bytes_per_sample']:.1f} bytes per extra sample ({least})")
    if args.micro_batch:
        for line in micro_batch_summary(rows, summary["fits"], args.micro_batch):
            print(line)
    if not args.no_plot:
        try:
            plot(rows, summary["fits"], args.features, png_path,
                 title=f"Peak memory of fit, d={args.features}, n={args.samples}, {args.epochs} epochs (memray)"
                 + (f"\nwith and without micro-batches of {args.micro_batch}" if args.micro_batch else ""))
        except OSError as error:
            raise path_error(error, png_path, "write") from None
    print(f"wrote {csv_path}, {json_path}" + ("" if args.no_plot else f", {png_path}"))
    return 0


def _write_json(path, data):
    """Write `data` to `path` whole or not at all."""
    write_atomically(path, json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        sys.exit(_child(sys.argv[2:]))
    from ..__main__ import main as _dispatch

    sys.exit(_dispatch(["memory", *sys.argv[1:]]))
