"""`fastedf sweep`: the batch-size study in one command.

For every (lr_scaling, batch_size, seed) the sweep trains logistic regression
(fastedf.models) with fastedf.fit and records one row: SGD updates, training
time (median of `repeats` runs, compilation excluded), compile time, the final
mean BCE over the whole training set, test accuracy and, with --memory, the
peak memory of training at that batch size.

Files in --out (default results/):
  results.csv   one row per run, appended and flushed as each run finishes
  runs.jsonl    per run: the epoch loss curve and the trained parameters
                (written before the row, so every row has its curve)
  results.json  configuration, environment and rows (rewritten at the end)
  *.png         the figures (fastedf.plots); report.md (fastedf.report)

An interrupted sweep keeps every finished row; --resume reads them back and
runs only the missing ones, after checking the configuration is the same.
"""
import argparse
import csv
import json
import math
import os
import sys
from dataclasses import dataclass

import numpy as np

from .cli import ArgumentParser, UsageError, environment, int_list, nonnegative_int, positive_float, positive_int
from .trainer import ENGINES

LR_SCALINGS = ("none", "linear", "sqrt")
ROW_FIELDS = ("lr_scaling", "batch_size", "seed", "lr", "engine", "epochs", "updates",
              "train_time_s", "compile_time_s", "final_loss", "test_accuracy", "peak_memory_bytes")
_INT_FIELDS = {"batch_size", "seed", "epochs", "updates", "peak_memory_bytes"}
_STR_FIELDS = {"lr_scaling", "engine"}
# Configuration entries that must match for --resume to reuse rows.
_RESUME_KEYS = ("data", "label_column", "batch_sizes", "seeds", "epochs", "lr", "lr_scaling",
                "engine", "repeats", "shuffle", "memory", "n_train", "n_test", "features")


# ---------------------------------------------------------------- data

@dataclass
class Dataset:
    """The data a sweep trains on: X (n, d) float64, 0/1 labels y (n,) float64, or None for the study's."""

    source: str  # "study" or the CSV path
    X: np.ndarray | None = None
    y: np.ndarray | None = None
    feature_names: tuple = ("x1", "x2")

    def split(self, seed):
        """The train/test Split for one seed (the study draws fresh data per seed; a CSV is re-split)."""
        from .study import study_data, train_test_split
        if self.X is None:
            return study_data(seed)
        return train_test_split(self.X, self.y, seed=seed + 1)  # seed + 1: study_data's convention


def load_csv(path, label_column="label"):
    """A Dataset from a CSV file: a header row, numeric feature columns and a 0/1 label column.

    Raises UsageError naming the file, line and column of the first problem.
    """
    try:
        with open(path, newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            body = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise UsageError(f"{path} is not a readable CSV file: {error}") from None
    if not header:
        raise UsageError(f"{path} is empty: expected a header row and data rows")
    header = [name.strip() for name in header]
    if label_column not in header:
        raise UsageError(f"{path} has no column {label_column!r} (columns: {', '.join(header)}); "
                         "name the label column with --label-column")
    label_at = header.index(label_column)
    features = [name for name in header if name != label_column]
    if not features:
        raise UsageError(f"{path} has no feature columns besides {label_column!r}")
    if len(body) < 2:
        raise UsageError(f"{path} has {len(body)} data rows; a train/test split needs at least 2")
    values = np.empty((len(body), len(header)))
    for i, (line, row) in enumerate(body):
        if len(row) != len(header):
            raise UsageError(f"{path} line {line}: {len(row)} fields, but the header has {len(header)}")
        for j, cell in enumerate(row):
            try:
                value = float(cell)
            except ValueError:
                raise UsageError(f"{path} line {line}, column {header[j]!r}: not a number: {cell.strip()!r}") from None
            if not math.isfinite(value):
                raise UsageError(f"{path} line {line}, column {header[j]!r}: {cell.strip()} "
                                 "(NaN and infinity are not allowed)")
            values[i, j] = value
    labels = values[:, label_at]
    bad = np.flatnonzero((labels != 0) & (labels != 1))
    if len(bad):
        line = body[bad[0]][0]
        raise UsageError(f"{path} line {line}: label column {label_column!r} must hold 0 or 1, "
                         f"got {body[bad[0]][1][label_at].strip()}")
    X = np.ascontiguousarray(np.delete(values, label_at, axis=1))
    return Dataset(str(path), X, np.ascontiguousarray(labels), tuple(features))


# ---------------------------------------------------------------- configuration

def default_batch_sizes(n_train):
    """1, 2, 4, ... while below n_train, then n_train itself (full-batch gradient descent)."""
    sizes = [2**k for k in range(n_train.bit_length()) if 2**k < n_train]
    return sizes + [n_train]


def scaled_lr(lr, scaling, batch_size, base_batch_size):
    """The learning rate at a batch size: lr, lr * B/B0 (linear) or lr * sqrt(B/B0) (sqrt)."""
    ratio = batch_size / base_batch_size
    return lr * {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[scaling]


def lr_scalings(text):
    """An argparse type: lr scalings, comma-separated; 'none' (the study) is always run as the reference."""
    names = [name.strip() for name in text.split(",")]
    for name in names:
        if name not in LR_SCALINGS:
            raise argparse.ArgumentTypeError(f"unknown scaling {name!r} (choose from {', '.join(LR_SCALINGS)})")
    return ["none"] + [name for name in LR_SCALINGS[1:] if name in names]


def build_parser():
    parser = ArgumentParser(
        prog="fastedf sweep",
        description="Train logistic regression at batch sizes 1, 2, 4, ... and test the study's claims "
                    "(time ~ 1/B, memory grows with B, loss and accuracy worsen with B).")
    study = parser.add_argument_group("study")
    study.add_argument("--batch-sizes", type=int_list, metavar="B,B,...",
                       help="batch sizes (default: 1, 2, 4, ... up to the training-set size, which is included)")
    study.add_argument("--epochs", type=nonnegative_int, default=100, help="epochs per run (default 100)")
    study.add_argument("--lr", type=positive_float, default=0.1, help="learning rate (default 0.1)")
    study.add_argument("--lr-scaling", type=lr_scalings, default=["none"], metavar="none|linear|sqrt",
                       help="also run with lr * B/B0 (linear) or lr * sqrt(B/B0) (sqrt), B0 the smallest "
                            "batch size; comma-separated; the fixed lr is always run (default none)")
    study.add_argument("--seeds", type=positive_int, default=5,
                       help="data/initialisation seeds 0..K-1 (default 5)")
    study.add_argument("--shuffle", action="store_true", help="reshuffle the training rows every epoch")
    study.add_argument("--data", metavar="CSV",
                       help="a CSV with a header, numeric features and a 0/1 label column "
                            "(default: the study's two Gaussians)")
    study.add_argument("--label-column", metavar="NAME", help="the label column of --data (default 'label')")
    measure = parser.add_argument_group("measurement")
    measure.add_argument("--engine", choices=ENGINES, default="compiled", help="training engine (default compiled)")
    measure.add_argument("--repeats", type=positive_int, default=3,
                         help="timing repeats per run; the median is kept (default 3)")
    measure.add_argument("--memory", action="store_true",
                         help="measure peak memory per batch size under memray (fastedf.memory)")
    output = parser.add_argument_group("output")
    output.add_argument("--out", default="results", metavar="DIR", help="output directory (default results/)")
    output.add_argument("--resume", action="store_true", help="keep the finished rows in --out and run the rest")
    output.add_argument("--no-figures", dest="figures", action="store_false", help="skip the PNG figures")
    output.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def build_config(args, dataset, n_train, n_test):
    """The sweep's configuration as a JSON-ready dict; the batch sizes checked against n_train."""
    sizes = sorted(set(args.batch_sizes)) if args.batch_sizes else default_batch_sizes(n_train)
    too_big = [b for b in sizes if b > n_train]
    if too_big:
        raise UsageError(f"batch size {too_big[0]} exceeds the {n_train} training rows")
    return {
        "data": dataset.source, "label_column": (args.label_column or "label") if args.data else None,
        "features": list(dataset.feature_names), "n_train": n_train, "n_test": n_test,
        "batch_sizes": sizes, "seeds": args.seeds, "epochs": args.epochs, "lr": args.lr,
        "lr_scaling": args.lr_scaling, "base_batch_size": sizes[0], "engine": args.engine,
        "repeats": args.repeats, "shuffle": args.shuffle, "memory": args.memory,
        "model": "logistic regression: sigmoid(x @ A + b), BCE, weights N(0, 0.1^2) from the seed, bias 0",
    }


# ---------------------------------------------------------------- one run

def run_one(split, batch_size, seed, lr, epochs, engine, repeats, shuffle):
    """Train `repeats` times from the same initialisation; returns (row fields, epoch loss curve, parameters).

    train_time_s is the median over repeats of fit's training-loop time, which
    excludes compilation; compile_time_s is the largest compile time seen (the
    first run pays it, unless Numba's cache holds the program).
    """
    from . import fit
    from .models import logistic_regression
    times, compiles = [], []
    y_train = split.y_train.reshape(-1, 1)
    for _ in range(repeats):
        model = logistic_regression(split.X_train.shape[1], seed=seed)
        history = fit(model.loss, {model.x: split.X_train, model.y: y_train}, batch_size=batch_size,
                      epochs=epochs, lr=lr, shuffle=shuffle, seed=seed, engine=engine)
        times.append(history.train_time_s)
        compiles.append(history.compile_time_s)
    fields = {
        "updates": int(history.updates),
        "train_time_s": float(np.median(times)),
        "compile_time_s": float(max(compiles)),
        "final_loss": model.mean_loss(split.X_train, split.y_train),
        "test_accuracy": model.accuracy(split.X_test, split.y_test),
    }
    parameters = [p.value.tolist() for p in model.parameters]
    return fields, history.epoch_loss.tolist(), parameters


def warm_up(config, split):
    """One untimed one-epoch run, so compilation and first-call costs land before the timed runs.

    Returns its compile time in seconds (0 when Numba's on-disk cache held the program).
    """
    fields, _, _ = run_one(split, config["batch_sizes"][0], 0, config["lr"], min(config["epochs"], 1),
                           config["engine"], 1, config["shuffle"])
    return fields["compile_time_s"]


def measure_memory(engine, batch_size, features, samples):
    """Peak bytes of one epoch of training at `batch_size`, from fastedf.memory (memray, in a fresh process)."""
    from .memory import measure_peaks
    rows = measure_peaks(engine, [batch_size], features=features, samples=samples, epochs=1, seed=0)
    return int(rows[0]["peak_bytes"])


# ---------------------------------------------------------------- files

def _key(row):
    return row["lr_scaling"], int(row["batch_size"]), int(row["seed"])


def _parse_row(raw):
    """A results.csv row with typed values, or None when the row is incomplete (an interrupted write)."""
    try:
        row = {}
        for name in ROW_FIELDS:
            text = raw[name]
            if name == "peak_memory_bytes" and text == "":
                row[name] = None
            elif name in _STR_FIELDS:
                row[name] = text
            else:
                row[name] = int(text) if name in _INT_FIELDS else float(text)
        return row
    except (KeyError, TypeError, ValueError):
        return None


class ResultsDir:
    """The --out directory: results.csv and runs.jsonl appended run by run, results.json at the end."""

    def __init__(self, path):
        self.path = path
        self.csv_path = os.path.join(path, "results.csv")
        self.runs_path = os.path.join(path, "runs.jsonl")
        self.json_path = os.path.join(path, "results.json")

    def start(self, config, env, resume):
        """Open the files for appending; returns {key: row} of the rows kept from an earlier sweep."""
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as error:
            raise UsageError(f"cannot create --out directory {self.path}: {error.strerror or error}") from None
        rows, runs = (self._read_previous(config) if resume else ({}, {}))
        # Rewrite both files with the complete entries only, then append.
        with open(self.csv_path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, ROW_FIELDS)
            writer.writeheader()
            writer.writerows(_csv_row(row) for row in rows.values())
        with open(self.runs_path, "w") as handle:
            handle.writelines(json.dumps(runs[key]) + "\n" for key in rows)
        self.write_json(config, env, list(rows.values()), complete=False)
        self._csv = open(self.csv_path, "a", newline="")
        self._writer = csv.DictWriter(self._csv, ROW_FIELDS)
        self._runs = open(self.runs_path, "a")
        return rows

    def _read_previous(self, config):
        if not os.path.exists(self.json_path) or not os.path.exists(self.csv_path):
            return {}, {}
        try:
            with open(self.json_path) as handle:
                previous = json.load(handle)["config"]
        except (OSError, ValueError, KeyError, TypeError):
            raise UsageError(f"--resume: {self.json_path} is unreadable; use a fresh --out") from None
        for name in _RESUME_KEYS:
            if previous.get(name) != config[name]:
                raise UsageError(f"--resume: {self.path} holds a sweep with {name} = {previous.get(name)!r}, "
                                 f"not {config[name]!r}; use the same options or another --out")
        runs = {}
        if os.path.exists(self.runs_path):
            with open(self.runs_path) as handle:
                for line in handle:
                    try:
                        run = json.loads(line)
                        runs[_key(run)] = run
                    except (ValueError, KeyError, TypeError):
                        continue  # a line cut short by the interruption
        rows = {}
        with open(self.csv_path, newline="") as handle:
            for raw in csv.DictReader(handle):
                row = _parse_row(raw)
                if row is not None and _key(row) in runs:
                    rows[_key(row)] = row
        return rows, runs

    def append(self, row, run):
        """Record one finished run: its curve first, then its row, each flushed to disk."""
        self._runs.write(json.dumps(run) + "\n")
        self._runs.flush()
        self._writer.writerow(_csv_row(row))
        self._csv.flush()

    def close(self):
        self._csv.close()
        self._runs.close()

    def runs(self):
        """{key: run} from runs.jsonl."""
        with open(self.runs_path) as handle:
            return {_key(run): run for run in map(json.loads, handle)}

    def write_json(self, config, env, rows, complete, extra=None):
        document = {"config": config, "environment": env, "complete": complete, "rows": rows, **(extra or {})}
        tmp = self.json_path + ".tmp"
        with open(tmp, "w") as handle:
            json.dump(document, handle, indent=1)
        os.replace(tmp, self.json_path)  # never a half-written results.json


def _csv_row(row):
    return {name: ("" if row[name] is None else row[name]) for name in ROW_FIELDS}


# ---------------------------------------------------------------- the sweep

def sweep_batch_sizes(config, splits, out, done, quiet=False):
    """Run every (lr_scaling, batch_size, seed) not in `done` ({key: row}, updated in place).

    Batch sizes run in order, so an interrupted sweep has its small batches
    complete; returns all rows in sweep order.
    """
    from tqdm import tqdm
    todo = [(scaling, b, seed) for b in config["batch_sizes"] for scaling in config["lr_scaling"]
            for seed in range(config["seeds"])]
    peaks = {key[1]: row["peak_memory_bytes"] for key, row in done.items()}
    remaining = [key for key in todo if key not in done]
    bar = tqdm(total=len(todo), initial=len(todo) - len(remaining), desc="sweep", unit="run",
               file=sys.stderr, disable=quiet or not sys.stderr.isatty(), leave=False)
    try:
        for scaling, batch_size, seed in remaining:
            bar.set_postfix_str(f"B={batch_size} seed={seed} lr={scaling}")
            if config["memory"] and peaks.get(batch_size) is None:
                peaks[batch_size] = measure_memory(config["engine"], batch_size, len(config["features"]),
                                                   config["n_train"])
            lr = scaled_lr(config["lr"], scaling, batch_size, config["base_batch_size"])
            fields, curve, parameters = run_one(splits[seed], batch_size, seed, lr, config["epochs"],
                                                config["engine"], config["repeats"], config["shuffle"])
            row = {"lr_scaling": scaling, "batch_size": batch_size, "seed": seed, "lr": lr,
                   "engine": config["engine"], "epochs": config["epochs"], **fields,
                   "peak_memory_bytes": peaks.get(batch_size) if config["memory"] else None}
            out.append(row, {"lr_scaling": scaling, "batch_size": batch_size, "seed": seed,
                             "epoch_loss": curve, "parameters": parameters})
            done[(scaling, batch_size, seed)] = row
            bar.update()
    finally:
        bar.close()
    return [done[key] for key in todo]


def _total_runs(config):
    return len(config["lr_scaling"]) * len(config["batch_sizes"]) * config["seeds"]


def main(argv=None):
    """`fastedf sweep [options]`; returns the exit code.  Bad input raises UsageError (exit 2 in fastedf.__main__)."""
    args = build_parser().parse_args(argv)
    if args.label_column is not None and args.data is None:
        raise UsageError("--label-column needs --data")
    dataset = load_csv(args.data, args.label_column or "label") if args.data else Dataset("study")
    splits = {seed: dataset.split(seed) for seed in range(args.seeds)}
    n_train, n_test = len(splits[0].y_train), len(splits[0].y_test)
    if n_train == 0 or n_test == 0:
        raise UsageError(f"{dataset.source}: too few rows for a train/test split ({n_train} train, {n_test} test)")
    config = build_config(args, dataset, n_train, n_test)
    env = environment()
    out = ResultsDir(args.out)
    done = out.start(config, env, args.resume)
    resumed = len(done)
    try:
        warmup_compile_s = warm_up(config, splits[0]) if resumed < _total_runs(config) else 0.0
        rows = sweep_batch_sizes(config, splits, out, done, quiet=args.quiet)
    except KeyboardInterrupt:
        print(f"fastedf sweep: interrupted; {len(done)} finished runs kept in {out.csv_path}; "
              "rerun with --resume to finish", file=sys.stderr)
        return 130
    finally:
        out.close()  # every finished row is already on disk; this only releases the files
    runs = out.runs()
    figures = []
    if args.figures:
        from . import plots
        figures = plots.make_figures(rows, runs, config, splits[0], args.out)
    from . import report
    report_path = os.path.join(args.out, "report.md")
    with open(report_path, "w") as handle:
        handle.write(report.render(rows, runs, config, env, figures, warmup_compile_s))
    out.write_json(config, env, rows, complete=True,
                   extra={"figures": figures, "resumed_rows": resumed, "warmup_compile_time_s": warmup_compile_s})
    if not args.quiet:
        print(f"{len(rows)} runs ({resumed} resumed) -> {out.csv_path}, {report_path}", file=sys.stderr)
    return 0
