"""`fastedf sweep`: the batch-size study in one command, and the batch-size science past it.

For every (lr_scaling, batch_size, seed) the sweep trains a model (logistic
regression by default, `--model mlp` for an MLP; fastedf.experiment.ModelSpec)
with fastedf.fit and records one row: SGD updates, training time (median of
`repeats` runs, compilation excluded), compile time, the final mean loss over
the whole training set, test accuracy and, with --memory, the peak memory of
training at that batch size.  Options add runs, each one more row:

- `--lrs a,b,c` (or `--target-loss L`): every batch size and seed is trained
  at every learning rate of the grid, its training loss measured at
  geometrically spaced update counts (fastedf.experiment.train_with_checkpoints);
  rows gain the columns min_loss and diverged_at_update, runs.jsonl the
  checkpoints, and the report counts the updates each batch size needs to
  reach a target loss (fastedf.report_science); a reference run measures the
  gradient noise scale during training (noise.csv);
- `--engine compiled,graph` and `--with-edf`: the fixed-lr runs again on the
  other engines and on the course's NumPy EDF loop, for the time comparison.

A run is a RunSpec; `execute(spec)` trains it and returns its row and curve, a
pure function of the spec (it could run on another worker).

Files in --out (default results/):
  results.csv   one row per run, appended and flushed as each run finishes
                (columns ROW_FIELDS, then TARGET_FIELDS when the lr grid runs)
  runs.jsonl    per run: the epoch loss curve, the trained parameters and,
                for grid runs, the checkpoints [[updates, training loss], ...]
                (written before the row, so every row has its curve)
  noise.csv     with the lr grid: B_simple along the reference run (NOISE_FIELDS)
  steps_to_target.csv  with the lr grid: every grid run's updates, epochs,
                examples and seconds to the target, and which lr was best
  results.json  configuration, environment and rows (rewritten at the start,
                on Ctrl-C and at the end; "complete" says which)
  *.png         the figures (fastedf.plots); report.md (fastedf.report)
  .fastedf.lock the lock: the pid of the sweep writing the directory

Guarantees:
- one writer per --out: a second sweep on the same directory refuses (cli.DirectoryLock);
- a finished run survives Ctrl-C and a kill: its row is flushed to disk before
  the next run starts; Ctrl-C while a run trains stops it (that run is redone
  by --resume), Ctrl-C at any other moment waits until the current row is
  written; results.json then says complete: false, and the exit code is 130;
- --resume reads rows back through the same checks as rows produced
  (`row_problem`, `run_problem`, `noise_problem`): a hand-edited or damaged row
  is refused with one line naming the file and the line; only a last line cut
  short by a kill is dropped and its run redone;
- options this machine cannot finish (memory, disk, or a week at fastedf's
  fastest speed) are refused before anything runs, naming what fits.

On a Dask cluster (`--workers N`: a LocalCluster of N single-threaded worker
processes; `--scheduler ADDRESS`: a running cluster; fastedf.distributed):
the workers execute the runs and this process writes each row as it arrives,
in the same files, under the same lock, resumable the same way; the files
are put in the serial order at the end.  Times stay honest (the rule in
fastedf.distributed): with `--timing serial` (the default) a worker trains a
run once, for its loss, accuracy and curves, and this process times it with
--repeats runs while the workers have nothing to run; `--timing concurrent`
keeps the workers' own times, measured side by side.  The `timing` column
says which: serial (a sweep in one process), serial-client or
worker-concurrent.  A worker that dies loses only its run, which is redone
elsewhere and written once; Ctrl-C cancels what is still running and keeps
every row already written.
"""
import argparse
import csv
import dataclasses
import functools
import io
import json
import math
import os
import signal
import sys
import threading
from array import array
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from .cli import (EXIT_INTERRUPTED, SECONDS_PER_ELEMENT, SECONDS_PER_FIT, SECONDS_PER_PROCESS, SECONDS_PER_UPDATE,
                  ArgumentParser, Cost, DirectoryLock, UsageError, available_memory_bytes, environment, format_bytes,
                  float_list, int_list, make_output_dir, nonnegative_int, path_error, positive_float, positive_int,
                  refuse_unless_it_fits, write_atomically)
from .distributed import TIMING_CLIENT, TIMING_SERIAL, TIMING_WORKERS
from .experiment import (CHECKPOINTS_PER_DOUBLING, EXACT_NOISE_ROWS, NOISE_B_BIG, NOISE_B_SMALL, NOISE_STEPS,
                         ModelSpec, checkpoint_schedule, noise_epochs)
from .models import ACTIVATIONS
from .science import updates_per_epoch
from .trainer import ENGINES

LR_SCALINGS = ("none", "linear", "sqrt")
EDF_ENGINE = "numpy_edf"  # --with-edf: the course loop on fastedf.numpy_edf, timed like an engine
ROW_FIELDS = ("lr_scaling", "batch_size", "seed", "lr", "engine", "epochs", "updates",
              "train_time_s", "compile_time_s", "final_loss", "test_accuracy", "peak_memory_bytes", "timing")
# timing: how train_time_s was measured (fastedf.distributed.TIMINGS): serial (one run at a time, in the sweep's
# process), serial-client (the same, the run's other fields from a Dask worker), worker-concurrent (on a worker,
# beside other runs: --timing concurrent).  Files from before the column read as serial.
ALLOWED_TIMINGS = {"serial": (TIMING_SERIAL, TIMING_CLIENT), "concurrent": (TIMING_WORKERS,)}  # per --timing
_LATER_COLUMNS = {"timing": TIMING_SERIAL}  # results.csv columns added later: their value in files without them
# With the lr grid (--lrs or --target-loss), after ROW_FIELDS:
#   min_loss            the lowest whole-training-set loss at any checkpoint after the first update
#                       (empty for runs without checkpoints: other engines);
#   diverged_at_update  empty, or the checkpoint the run did not reach because the loss became NaN/inf
#                       (then train_time_s, final_loss and test_accuracy are empty).
TARGET_FIELDS = ("min_loss", "diverged_at_update")
# noise.csv: B_simple = tr(Sigma) / |G|^2 after `epoch` epochs (`updates` SGD updates) of the reference run;
# train_loss the whole-training-set loss there; trace_sigma, g_sq, b_simple McCandlish's two-batch estimates
# (fastedf.science.measure_noise_scale); b_simple_exact from every per-sample gradient (empty above
# fastedf.experiment.EXACT_NOISE_ROWS training rows).
NOISE_FIELDS = ("epoch", "updates", "train_loss", "trace_sigma", "g_sq", "b_simple", "b_simple_exact")
_INT_FIELDS = {"batch_size", "seed", "epochs", "updates", "peak_memory_bytes", "diverged_at_update"}
_STR_FIELDS = {"lr_scaling", "engine", "timing"}
_OPTIONAL_FIELDS = {"peak_memory_bytes", "min_loss", "diverged_at_update",  # "" reads as None
                    "train_time_s", "final_loss", "test_accuracy"}  # (these three: only in a diverged run)
# Configuration entries that must match for --resume to reuse rows.
_RESUME_KEYS = ("data", "label_column", "batch_sizes", "seeds", "epochs", "lr", "lr_scaling",
                "engine", "repeats", "shuffle", "memory", "n_train", "n_test", "features",
                "engines", "hidden", "activation", "classes", "digit", "lrs", "checkpoints_per_doubling", "noise",
                "timing")
_RESUME_DEFAULTS = {"timing": "serial"}  # configuration entries added later: their value in older results.json
DIGITS = ("digits", "digits-binary")  # --data names of scikit-learn's 8x8 digits
DEFAULT_NOISE_BATCH = 32  # the reference run's batch size for the noise scale (clipped to the training rows)


def row_fields(config):
    """The columns of results.csv for this sweep: ROW_FIELDS, plus TARGET_FIELDS when the lr grid runs."""
    return ROW_FIELDS + (TARGET_FIELDS if config.get("lrs") else ())


# ---------------------------------------------------------------- data

@dataclass
class Dataset:
    """The data a sweep trains on: X (n, d) float64 and labels y (n,) float64, or None for the study's.

    classes = 1: y holds 0/1 labels (sigmoid/BCE head); classes > 1: y holds
    class indices 0..classes-1 (softmax/CE head, accuracy by argmax).
    """

    source: str  # "study", "digits", "digits-binary" or the CSV path
    X: np.ndarray | None = None
    y: np.ndarray | None = None
    feature_names: tuple = ("x1", "x2")
    classes: int = 1

    def split(self, seed):
        """The train/test Split for one seed (the study draws fresh data per seed; other data are re-split)."""
        from .study import study_data, train_test_split
        if self.X is None:
            return study_data(seed)
        return train_test_split(self.X, self.y, seed=seed + 1)  # seed + 1: study_data's convention


def load_digits_dataset(binary_digit=None):
    """scikit-learn's 8x8 digits as a Dataset: 10 classes, or one digit against the rest (binary_digit=k)."""
    from .datasets import load_digits
    try:
        X, y = load_digits(binary_digit)
    except ImportError as error:
        raise UsageError(str(error)) from None
    source = "digits" if binary_digit is None else "digits-binary"
    return Dataset(source, X, y, tuple(f"pixel{i}" for i in range(X.shape[1])), 10 if binary_digit is None else 1)


def describe_data(config):
    """One phrase naming the data of a sweep, for the report."""
    if config["data"] == "study":
        return "the study’s two Gaussian classes (700 + 700)"
    if config["data"] == "digits":
        return "scikit-learn’s 8x8 digits, all 10 classes (1797 images, pixels / 16)"
    if config["data"] == "digits-binary":
        return f"scikit-learn’s 8x8 digits, digit {config['digit']} against the rest (1797 images, pixels / 16)"
    return config["data"]


def load_csv(path, label_column="label"):
    """A Dataset from a CSV file: a header row, numeric feature columns and a 0/1 label column.

    UTF-8, with or without a byte-order mark.  Raises UsageError naming the
    file, line and column of the first problem; a header naming a column twice
    is one (the second copy would be trained as a feature).
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [name.strip() for name in next(reader, None) or []]
            label_at, features = _check_header(path, header, label_column)
            values, rows, line = array("d"), 0, 1
            budget = available_memory_bytes()
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                line = reader.line_num
                values.extend(_parse_data_row(path, line, row, header, label_at, label_column))
                rows += 1
                # The parsed values, then X and y made from them: 3 copies of 8 bytes each.
                if budget is not None and rows % 65536 == 0 and 24 * len(values) > budget:
                    raise UsageError(f"{path} is too large for this machine: {rows} rows of {len(header)} "
                                     f"columns already need {format_bytes(24 * len(values))} and "
                                     f"{format_bytes(budget)} of memory is available")
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise UsageError(f"{path} is not a readable UTF-8 CSV file: {error}") from None
    if rows < 2:
        raise UsageError(f"{path} has {rows} data rows; a train/test split needs at least 2")
    table = np.frombuffer(values, dtype=np.float64).reshape(rows, len(header))
    X = np.ascontiguousarray(np.delete(table, label_at, axis=1))
    y = np.ascontiguousarray(table[:, label_at])
    return Dataset(str(path), X, y, tuple(features))


def _check_header(path, header, label_column):
    """(index of the label column, feature names), or a UsageError: no header, a nameless or repeated column."""
    if not header:
        raise UsageError(f"{path} is empty: expected a header row and data rows")
    nameless = [str(j + 1) for j, name in enumerate(header) if not name]
    if nameless:
        raise UsageError(f"{path}: header column(s) {', '.join(nameless)} have no name")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise UsageError(f"{path}: the header names column(s) {', '.join(map(repr, repeated))} more than once; "
                         "every column needs its own name")
    if label_column not in header:
        raise UsageError(f"{path} has no column {label_column!r} (columns: {', '.join(header)}); "
                         "name the label column with --label-column")
    features = [name for name in header if name != label_column]
    if not features:
        raise UsageError(f"{path} has no feature columns besides {label_column!r}")
    return header.index(label_column), features


def _parse_data_row(path, line, row, header, label_at, label_column):
    """The floats of one data row, checked: as many fields as the header, finite numbers, a 0/1 label."""
    if len(row) != len(header):
        raise UsageError(f"{path} line {line}: {len(row)} fields, but the header has {len(header)}")
    values = []
    for j, cell in enumerate(row):
        try:
            value = float(cell)
        except ValueError:
            raise UsageError(f"{path} line {line}, column {header[j]!r}: not a number: {cell.strip()!r}") from None
        if not math.isfinite(value):
            raise UsageError(f"{path} line {line}, column {header[j]!r}: {cell.strip()} "
                             "(NaN and infinity are not allowed)")
        values.append(value)
    if values[label_at] not in (0.0, 1.0):
        raise UsageError(f"{path} line {line}: label column {label_column!r} must hold 0 or 1, "
                         f"got {row[label_at].strip()}")
    return values


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


def target_value(text):
    """An argparse type: ("loss", L) for a number L > 0, or ("factor", F) for 'Fx' with F >= 1 (e.g. '1.05x')."""
    text = text.strip()
    if text.lower().endswith("x"):
        factor = positive_float(text[:-1])
        if factor < 1:
            raise argparse.ArgumentTypeError(f"a relative target needs a factor >= 1, got {text!r}")
        return ("factor", factor)
    return ("loss", positive_float(text))


def engine_list(text):
    """An argparse type: fit's engines, comma-separated, each once, e.g. 'compiled,graph' (the first is primary)."""
    names = [name.strip() for name in text.split(",")]
    for name in names:
        if name not in ENGINES:
            raise argparse.ArgumentTypeError(f"unknown engine {name!r} (choose from {', '.join(ENGINES)})")
    return list(dict.fromkeys(names))


def build_parser():
    parser = ArgumentParser(
        prog="fastedf sweep",
        description="Train logistic regression (or an MLP) at batch sizes 1, 2, 4, ... and test the study's claims "
                    "(time ~ 1/B, memory grows with B, loss and accuracy worsen with B); with --lrs, also count "
                    "the updates each batch size needs to reach a target loss and measure the gradient noise scale.")
    study = parser.add_argument_group("study")
    study.add_argument("--batch-sizes", type=int_list, metavar="B,B,...",
                       help="batch sizes (default: 1, 2, 4, ... up to the training-set size, which is included)")
    study.add_argument("--epochs", type=nonnegative_int, default=100, help="epochs per run (default 100)")
    study.add_argument("--lr", type=positive_float, default=None,
                       help="learning rate (default 0.1; with --lrs, the grid's middle value)")
    study.add_argument("--lr-scaling", type=lr_scalings, default=["none"], metavar="none|linear|sqrt",
                       help="also run with lr * B/B0 (linear) or lr * sqrt(B/B0) (sqrt), B0 the smallest "
                            "batch size; comma-separated; the fixed lr is always run (default none)")
    study.add_argument("--seeds", type=positive_int, default=5,
                       help="data/initialisation seeds 0..K-1 (default 5)")
    study.add_argument("--shuffle", action="store_true", help="reshuffle the training rows every epoch")
    study.add_argument("--data", metavar="study|digits|digits-binary|CSV",
                       help="the study's two Gaussians (default); scikit-learn's 8x8 digits, 10 classes "
                            "(softmax/CE) or one digit against the rest (--digit); or a CSV with a header, "
                            "numeric features and a 0/1 label column")
    study.add_argument("--digit", type=int, choices=range(10), metavar="K",
                       help="with --data digits-binary: the digit labelled 1 (default 0)")
    study.add_argument("--label-column", metavar="NAME", help="the label column of --data CSV (default 'label')")
    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=("logistic", "mlp"), default="logistic",
                       help="logistic regression (default; softmax regression on 10 classes) or an MLP")
    model.add_argument("--hidden", type=int_list, metavar="H,H,...",
                       help="with --model mlp: hidden layer widths (default 64)")
    model.add_argument("--activation", choices=tuple(ACTIVATIONS), default=None,
                       help="with --model mlp: the hidden layers' activation (default sigmoid)")
    target = parser.add_argument_group("steps to a target loss")
    target.add_argument("--lrs", type=float_list, metavar="LR,LR,...",
                        help="learning-rate grid: every batch size and seed is trained at each, its training "
                             "loss measured at update counts 2**(k/8); the best lr per batch size and seed is "
                             "kept for the steps to target")
    target.add_argument("--target-loss", type=target_value, metavar="L|Fx",
                        help="the training loss to reach: a loss L, or Fx for F times the lowest training loss "
                             "any run of the same seed reaches (default: per seed, the highest of the batch sizes' "
                             "lowest losses, which every batch size reaches); without --lrs, the grid is --lr alone")
    target.add_argument("--noise-batch", type=positive_int, metavar="B",
                        help=f"batch size of the reference run whose gradient noise scale is measured "
                             f"(default {DEFAULT_NOISE_BATCH})")
    target.add_argument("--no-noise", dest="noise", action="store_false",
                        help="skip the gradient noise scale measurement")
    measure = parser.add_argument_group("measurement")
    measure.add_argument("--engine", type=engine_list, default=["compiled"], metavar="compiled|graph",
                         help="training engine(s), comma-separated; the first runs every run, the others the "
                              "fixed-lr runs for the time comparison (default compiled)")
    measure.add_argument("--with-edf", action="store_true",
                         help="also time the course's NumPy EDF loop (fastedf.numpy_edf) on the fixed-lr runs")
    measure.add_argument("--repeats", type=positive_int, default=3,
                         help="timing repeats per run; the median is kept (default 3)")
    measure.add_argument("--memory", action="store_true",
                         help="measure peak memory per batch size under memray (fastedf.memory)")
    cluster = parser.add_argument_group("on a Dask cluster (pip install -e '.[dask]')")
    where = cluster.add_mutually_exclusive_group()
    where.add_argument("--workers", type=positive_int, metavar="N",
                       help="train on a local Dask cluster of N single-threaded worker processes")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="train on a running Dask cluster, e.g. tcp://10.0.0.5:8786")
    cluster.add_argument("--timing", choices=tuple(ALLOWED_TIMINGS), default="serial",
                         help="serial (default): time every run here, one at a time, while the workers wait; "
                              "concurrent: keep the workers' times, measured side by side (faster, distorted)")
    output = parser.add_argument_group("output")
    output.add_argument("--out", default="results", metavar="DIR",
                        help="output directory, written by one sweep at a time (default results/)")
    output.add_argument("--resume", action="store_true",
                        help="keep the finished rows in --out (checked as if just made) and run the rest")
    output.add_argument("--no-figures", dest="figures", action="store_false", help="skip the PNG figures")
    output.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def load_dataset(args):
    """The Dataset that --data names (the study's by default); UsageError for options that do not fit it."""
    data = args.data or "study"
    if args.label_column is not None and data in ("study", *DIGITS):
        raise UsageError("--label-column needs --data CSV")
    if args.digit is not None and data != "digits-binary":
        raise UsageError("--digit needs --data digits-binary")
    if data == "study":
        return Dataset("study")
    if data == "digits":
        return load_digits_dataset()
    if data == "digits-binary":
        return load_digits_dataset(0 if args.digit is None else args.digit)
    return load_csv(data, args.label_column or "label")


def model_spec(args):
    """The ModelSpec of --model, --hidden and --activation."""
    if args.model == "logistic":
        if args.hidden is not None or args.activation is not None:
            raise UsageError("--hidden and --activation need --model mlp")
        return ModelSpec()
    return ModelSpec(tuple(args.hidden or (64,)), args.activation or "sigmoid")


def middle_lr(lrs):
    """The grid's middle value (the lower of the two middle ones for an even count)."""
    grid = sorted(lrs)
    return grid[(len(grid) - 1) // 2]


def build_config(args, dataset, n_train, n_test):
    """The sweep's configuration as a JSON-ready dict; the batch sizes checked against n_train."""
    sizes = sorted(set(args.batch_sizes)) if args.batch_sizes else default_batch_sizes(n_train)
    too_big = [b for b in sizes if b > n_train]
    if too_big:
        raise UsageError(f"batch size {too_big[0]} exceeds the {n_train} training rows")
    grid = sorted(set(args.lrs)) if args.lrs else None
    lr = args.lr if args.lr is not None else (middle_lr(grid) if grid else 0.1)
    if grid is None and args.target_loss is not None:
        grid = [lr]
    kind, value = args.target_loss or (None, None)
    if grid is not None:
        if args.lr_scaling != ["none"]:
            raise UsageError("--lrs and --target-loss tune the lr per batch size; --lr-scaling fixes how it "
                             "depends on B: use one or the other")
        if not any(math.isclose(lr, g, rel_tol=1e-12) for g in grid):
            raise UsageError(f"--lr {lr:g} is not in --lrs ({', '.join(f'{g:g}' for g in grid)}); the study's "
                             "fixed-lr analyses use the runs at --lr")
    for scaling in args.lr_scaling:
        scaled = scaled_lr(lr, scaling, sizes[-1], sizes[0])
        if not math.isfinite(scaled):
            raise UsageError(f"--lr {lr!r} with --lr-scaling {scaling} gives lr = {scaled} at batch size "
                             f"{sizes[-1]}; use a smaller --lr")
    spec = model_spec(args)
    if args.memory and (spec.hidden or dataset.classes > 1):
        raise UsageError("--memory measures logistic regression on 0/1 labels (fastedf memory); drop --memory "
                         "for this model")
    engines = list(args.engine) + ([EDF_ENGINE] if args.with_edf else [])
    noise = None
    if grid is not None and args.noise:
        b = min(args.noise_batch or DEFAULT_NOISE_BATCH, n_train)
        noise = {"batch_size": b, "lr": lr, "seed": 0, "at_epochs": noise_epochs(args.epochs),
                 "b_small": NOISE_B_SMALL, "b_big": NOISE_B_BIG, "steps": NOISE_STEPS,
                 "exact": n_train <= EXACT_NOISE_ROWS}
    elif args.noise_batch is not None:
        raise UsageError("--noise-batch needs --lrs or --target-loss")
    return {
        "data": dataset.source, "label_column": (args.label_column or "label") if dataset.X is not None
        and dataset.source not in DIGITS else None,
        "features": list(dataset.feature_names), "n_train": n_train, "n_test": n_test,
        "batch_sizes": sizes, "seeds": args.seeds, "epochs": args.epochs, "lr": lr,
        "lr_scaling": args.lr_scaling, "base_batch_size": sizes[0], "engine": engines[0],
        "repeats": args.repeats, "shuffle": args.shuffle, "memory": args.memory,
        "model": spec.describe(len(dataset.feature_names), dataset.classes),
        "engines": engines, "hidden": list(spec.hidden), "activation": spec.activation,
        "classes": dataset.classes, "digit": (0 if args.digit is None else args.digit)
        if dataset.source == "digits-binary" else None,
        "lrs": grid, "target_loss": value if kind == "loss" else None,
        "target_factor": value if kind == "factor" else None,
        "checkpoints_per_doubling": CHECKPOINTS_PER_DOUBLING if grid is not None else None, "noise": noise,
        "timing": args.timing,
    }


def model_of(config):
    """The ModelSpec a configuration trains."""
    return ModelSpec(tuple(config.get("hidden") or ()), config.get("activation") or "sigmoid")


# Memory and disk per unit of the sweep, measured (peak RSS and file sizes, CPython 3.11) and rounded up.
BYTES_PER_EPOCH_KEPT = 112  # a loss value of every run's curve, held by the report and the figures (measured 60-100)
BYTES_PER_EPOCH_LIVE = 128  # the run being recorded: fit's float64 array, its list and its JSON line
BYTES_PER_EPOCH_ON_DISK = 24  # a loss value in runs.jsonl: up to 22 characters and ", " (measured 21)
BYTES_PER_RUN = 4096  # a row and its key in memory, in results.csv, results.json and runs.jsonl
DATA_COPIES = 4  # the data set, one seed's split, a shuffled copy of it, the evaluation's buffers
EDF_SECONDS_PER_UPDATE = 1e-6  # the NumPy EDF course loop's fixed cost per step, a lower bound (measured 3e-5)


def sweep_cost(config, data_bytes, epochs, seeds, repeats):
    """The Cost of a sweep with `config` but these epochs, seeds and repeats.

    Time is a lower bound (cli.SECONDS_PER_*): per fit a fixed cost, per SGD
    step the engine's step cost, per epoch every parameter's work for every
    training row once (for logistic regression, every training value).
    Checkpointed runs (the lr grid) train once more and make about two fit
    calls per checkpoint.  Memory: DATA_COPIES of the data, one run's curve
    being written, and every run's curve and row, which the report holds at
    the end.  Disk: runs.jsonl and the rows.
    """
    n, sizes = config["n_train"], config["batch_sizes"]
    work = model_of(config).n_parameters(len(config["features"]), config.get("classes", 1))
    engines = config.get("engines") or [config["engine"]]
    grid = len(config.get("lrs") or ()) or 1
    runs = seconds = 0.0
    for scaling in config["lr_scaling"]:
        for engine in engines if scaling == "none" else engines[:1]:
            lrs = grid if engine == engines[0] and scaling == "none" else 1
            trainings = repeats + (1 if config.get("lrs") and engine == engines[0] else 0)
            step = SECONDS_PER_UPDATE.get(engine, EDF_SECONDS_PER_UPDATE)
            steps = sum(updates_per_epoch(n, b) for b in sizes)
            runs += lrs * len(sizes) * seeds
            seconds += lrs * seeds * (len(sizes) * trainings * SECONDS_PER_FIT
                                      + trainings * epochs * (steps * step + len(sizes) * n * work
                                                              * SECONDS_PER_ELEMENT))
    if config.get("lrs"):  # two fit calls per checkpoint, about 8 per doubling of the updates
        seconds += runs * 2 * CHECKPOINTS_PER_DOUBLING * math.log2(max(2, epochs * n)) * SECONDS_PER_FIT
    seconds += SECONDS_PER_FIT  # the warm-up
    if config["memory"]:
        seconds += len(sizes) * SECONDS_PER_PROCESS
    memory = DATA_COPIES * data_bytes + BYTES_PER_EPOCH_LIVE * epochs + runs * (BYTES_PER_RUN
                                                                               + BYTES_PER_EPOCH_KEPT * epochs)
    disk = runs * (BYTES_PER_RUN + BYTES_PER_EPOCH_ON_DISK * epochs)
    return Cost(seconds, memory, disk)


def refuse_what_cannot_finish(config, data_bytes, out):
    """A UsageError naming the option to lower when the sweep cannot fit this machine's memory, disk or a week."""
    default = build_parser().get_default
    options = {"--epochs": (config["epochs"], default("epochs"), 0),
               "--seeds": (config["seeds"], default("seeds"), 1),
               "--repeats": (config["repeats"], default("repeats"), 1)}
    refuse_unless_it_fits(
        lambda v: sweep_cost(config, data_bytes, v["--epochs"], v["--seeds"], v["--repeats"]),
        options, "the sweep", out)


# ---------------------------------------------------------------- one run

class InterruptGuard:
    """Ctrl-C during the sweep: at once while a run trains, otherwise once the row being recorded is on disk.

    Inside `training()` SIGINT raises KeyboardInterrupt as usual (fit stops;
    that run was not finished and --resume redoes it).  Outside, between the
    end of training and the row reaching results.csv, it is only noted, and
    `check()` raises it after the row is written: a run whose training
    finished is never thrown away.  Installed only in the main thread and only
    over Python's default handler (a SIGINT ignored by the caller stays ignored).
    """

    def __init__(self):
        self.pending = False
        self._training = False
        self._previous = None

    def __enter__(self):
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum, frame):
        if self._training:
            raise KeyboardInterrupt
        self.pending = True

    @contextmanager
    def training(self):
        self.check()
        self._training = True
        try:
            yield
        finally:
            self._training = False

    def check(self):
        """Raise the KeyboardInterrupt held since the last check, if any."""
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


_NO_GUARD = InterruptGuard()  # never entered: training() and check() only, SIGINT left as it is


@dataclass(frozen=True)
class RunSpec:
    """Everything one run needs: the data (split by seed in the run), the model, its key and how to train.

    checkpoints: None, or checkpoints per doubling of the update count for a
    run whose training loss is measured along the way (the lr grid).
    Picklable: a worker elsewhere can execute it.
    """

    dataset: Dataset = field(repr=False, compare=False)
    model: ModelSpec
    lr_scaling: str
    batch_size: int
    seed: int
    lr: float
    engine: str
    epochs: int
    repeats: int
    shuffle: bool
    checkpoints: int | None = None

    @property
    def key(self):
        return self.lr_scaling, self.batch_size, self.seed, self.lr, self.engine


@dataclass
class Trained:
    """What run_one returns: the row's measured fields, fit's epoch losses, the trained parameters, checkpoints."""

    fields: dict
    epoch_loss: list
    parameters: list
    checkpoints: list | None = None


def execute(spec, guard=_NO_GUARD):
    """Train one RunSpec; returns (row, run): the results.csv row and the runs.jsonl entry.

    A pure function of the spec (apart from the timings): the data are split
    by seed here, the model is built here.  peak_memory_bytes is left None
    (memory is measured per batch size, by the caller).
    """
    trained = run_one(spec.dataset.split(spec.seed), spec.batch_size, spec.seed, spec.lr, spec.epochs, spec.engine,
                      spec.repeats, spec.shuffle, guard=guard, model=spec.model, classes=spec.dataset.classes,
                      checkpoints=spec.checkpoints)
    names = {"lr_scaling": spec.lr_scaling, "batch_size": spec.batch_size, "seed": spec.seed, "lr": spec.lr,
             "engine": spec.engine}
    row = {**names, "epochs": spec.epochs, **trained.fields, "peak_memory_bytes": None, "timing": TIMING_SERIAL}
    run = {**names, "epoch_loss": trained.epoch_loss, "parameters": trained.parameters}
    if trained.checkpoints is not None:
        run["checkpoints"] = trained.checkpoints
    return row, run


def execute_on_worker(dataset, timing, spec):
    """execute(spec) on a Dask worker (fastedf.distributed), the spec sent without its data (`dataset`, sent once).

    timing "serial": one training run, for the row's losses, accuracy and
    curves (the sweep's process times the run afterwards, `time_here`);
    "concurrent": spec.repeats runs, and the worker's times stand.
    """
    return execute(dataclasses.replace(spec, dataset=dataset, repeats=spec.repeats if timing == "concurrent" else 1))


def time_here(spec, row):
    """The time fields of a run a worker trained, from spec.repeats runs in this process (None: it diverged)."""
    if row["train_time_s"] is None:
        return None
    timed, _ = execute(dataclasses.replace(spec, checkpoints=None))
    return {"train_time_s": timed["train_time_s"], "compile_time_s": timed["compile_time_s"]}


def warm_up_worker(config, dataset):
    """warm_up on a Dask worker, before its first run."""
    warm_up(config, dataset.split(0))


def run_one(split, batch_size, seed, lr, epochs, engine, repeats, shuffle, guard=_NO_GUARD, model=ModelSpec(),
            classes=1, checkpoints=None):
    """Train `repeats` times from the same initialisation; returns a Trained.

    train_time_s is the median over repeats of fit's training-loop time, which
    excludes compilation; compile_time_s is the largest compile time seen (the
    first run pays it, unless Numba's cache holds the program).  engine
    EDF_ENGINE runs the course loop on the NumPy EDF instead of fit
    (compile_time_s 0).  With `checkpoints` (per doubling), one more run first
    measures the whole-training-set loss at update counts 2**(k/checkpoints)
    (fastedf.experiment.train_with_checkpoints): fields gain min_loss and
    diverged_at_update, and a run that diverges there is recorded as such
    (no timed runs).  Only the training calls are interruptible (`guard`, an
    InterruptGuard).  A ValueError from training (the data or the lr make it
    fail) is a UsageError naming the run.
    """
    from . import fit
    from .experiment import train_numpy_edf, train_with_checkpoints
    X, y = split.X_train, split.y_train
    where = f"batch size {batch_size}, seed {seed}, lr {lr:g}"
    trajectory = None
    total = epochs * updates_per_epoch(len(X), min(batch_size, len(X)))  # the updates of this run
    if checkpoints:
        probe = model.build(X.shape[1], classes, seed)
        try:
            with guard.training():
                trajectory = train_with_checkpoints(
                    probe, X, probe.labels(y), batch_size, epochs, lr, shuffle, seed, engine,
                    checkpoint_schedule(total, checkpoints), lambda m, _: m.mean_loss(X, y))
        except ValueError as error:
            raise UsageError(f"{where}: {error}") from None
        curve = [[int(u), float(v)] for u, v in trajectory.checkpoints]
        after_first = [v for u, v in curve if u > 0]
        extra = {"min_loss": min(after_first) if after_first else None, "diverged_at_update": trajectory.diverged_at}
        if trajectory.diverged_at is not None:
            fields = {"updates": total, "train_time_s": None, "compile_time_s": 0.0, "final_loss": None,
                      "test_accuracy": None, **extra}
            return Trained(fields, [float(v) for v in trajectory.epoch_loss], [], curve)
    times, compiles = [], []
    for _ in range(repeats):
        trained = model.build(X.shape[1], classes, seed)
        labels = trained.labels(y)
        try:
            with guard.training():
                if engine == EDF_ENGINE:
                    epoch_loss, seconds, values = train_numpy_edf(trained, X, labels, batch_size, epochs, lr,
                                                                  shuffle, seed)
                    for p, value in zip(trained.parameters, values):
                        p.value = value
                    times.append(seconds)
                    compiles.append(0.0)
                    updates = total
                else:
                    history = fit(trained.loss, {trained.x: X, trained.y: labels}, batch_size=batch_size,
                                  epochs=epochs, lr=lr, shuffle=shuffle, seed=seed, engine=engine)
                    epoch_loss, updates = history.epoch_loss, history.updates
                    times.append(history.train_time_s)
                    compiles.append(history.compile_time_s)
        except ValueError as error:
            raise UsageError(f"{where}: {error}") from None
    fields = {
        "updates": int(updates),
        "train_time_s": float(np.median(times)),
        "compile_time_s": float(max(compiles)),
        "final_loss": trained.mean_loss(split.X_train, split.y_train),
        "test_accuracy": trained.accuracy(split.X_test, split.y_test),
    }
    if trajectory is not None:
        fields.update(extra)
    parameters = [p.value.tolist() for p in trained.parameters]
    return Trained(fields, np.asarray(epoch_loss, dtype=float).tolist(), parameters,
                   curve if trajectory is not None else None)


def warm_up(config, split, guard=_NO_GUARD):
    """One untimed one-epoch run per engine, so compilation and first-call costs land before the timed runs.

    Returns the primary engine's compile time in seconds (0 when Numba's
    on-disk cache held the program).
    """
    seconds = None
    for engine in config["engines"]:
        trained = run_one(split, config["batch_sizes"][0], 0, config["lr"], min(config["epochs"], 1),
                          engine, 1, config["shuffle"], guard=guard, model=model_of(config),
                          classes=config["classes"])
        seconds = trained.fields["compile_time_s"] if seconds is None else seconds
    return seconds


@dataclass(frozen=True)
class NoiseSpec:
    """The reference run of the noise-scale measurement (config["noise"]), as a unit a worker can execute."""

    dataset: Dataset = field(repr=False, compare=False)
    model: ModelSpec
    batch_size: int
    lr: float
    seed: int
    at_epochs: tuple
    engine: str
    shuffle: bool
    b_small: int
    b_big: int
    steps: int
    exact: bool


def noise_spec(config, dataset):
    """The NoiseSpec of a configuration, or None when it measures no noise scale."""
    noise = config.get("noise")
    if not noise:
        return None
    return NoiseSpec(dataset, model_of(config), noise["batch_size"], noise["lr"], noise["seed"],
                     tuple(noise["at_epochs"]), config["engine"], config["shuffle"], noise["b_small"],
                     noise["b_big"], noise["steps"], noise["exact"])


def execute_noise(spec, guard=_NO_GUARD):
    """B_simple along the reference run: a list of noise.csv rows (dicts with NOISE_FIELDS), one per epoch asked."""
    from .experiment import noise_trajectory
    split = spec.dataset.split(spec.seed)
    model = spec.model.build(split.X_train.shape[1], spec.dataset.classes, spec.seed)
    try:
        with guard.training():
            points = noise_trajectory(model, split.X_train, split.y_train, spec.batch_size,
                                      max(spec.at_epochs), spec.lr, spec.shuffle, spec.seed, spec.engine,
                                      list(spec.at_epochs), spec.b_small, spec.b_big, spec.steps, spec.exact)
    except ValueError as error:
        raise UsageError(f"noise-scale run (batch size {spec.batch_size}, lr {spec.lr:g}): {error}") from None
    return [{name: point[name] for name in NOISE_FIELDS} for point in points]


def measure_memory(engine, batch_size, features, samples):
    """Peak bytes of one epoch of training at `batch_size`, from fastedf.memory (memray, in a fresh process)."""
    from .memory import measure_peaks
    try:
        rows = measure_peaks(engine, [batch_size], features=features, samples=samples, epochs=1, seed=0)
    except ValueError as error:  # the child rejected the arguments
        raise UsageError(f"--memory: {error}") from None
    return int(rows[0]["peak_bytes"])


# ---------------------------------------------------------------- files

def _key(entry):
    """(lr_scaling, batch_size, seed, lr, engine): what names a run, in results.csv and in runs.jsonl."""
    return (entry["lr_scaling"], int(entry["batch_size"]), int(entry["seed"]), float(entry["lr"]),
            entry["engine"])


def _parse_row(raw, fields=ROW_FIELDS):
    """A results.csv row ({field: text}) with typed values; ValueError naming the first field that is not.

    An empty optional field (_OPTIONAL_FIELDS) reads as None; row_problem says where None is allowed.
    """
    row = {}
    for name in fields:
        text = raw.get(name, _LATER_COLUMNS.get(name))
        if text is None:
            raise ValueError(f"no {name} field")
        text = text.strip()
        if name in _OPTIONAL_FIELDS and text == "":
            row[name] = None
        elif name in _STR_FIELDS:
            row[name] = text
        else:
            try:
                row[name] = int(text) if name in _INT_FIELDS else float(text)
            except ValueError:
                kind = "an integer" if name in _INT_FIELDS else "a number"
                raise ValueError(f"{name} {text!r} is not {kind}") from None
    return row


def checkpointed(config, scaling, engine):
    """Whether the run (lr_scaling, engine) of this sweep measures its loss at checkpoints (the lr grid)."""
    return bool(config.get("lrs")) and scaling == "none" and engine == config["engine"]


def planned_lrs(config, scaling, batch_size, engine):
    """The learning rates this sweep runs at (scaling, batch_size, engine)."""
    if checkpointed(config, scaling, engine):
        return list(config["lrs"])
    return [scaled_lr(config["lr"], scaling, batch_size, config["base_batch_size"])]


def _finite(value, minimum=None):
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and (minimum is None or value >= minimum))


def row_problem(row, config):
    """What is wrong with a row of this sweep (one line), or None: the same checks for rows made and rows read back."""
    scaling, b, seed, engine = row["lr_scaling"], row["batch_size"], row["seed"], row["engine"]
    engines = config.get("engines") or [config["engine"]]
    if scaling not in config["lr_scaling"]:
        return f"lr_scaling {scaling!r} is not one of this sweep's ({', '.join(config['lr_scaling'])})"
    if engine not in engines or (scaling != "none" and engine != engines[0]):
        return f"engine {engine!r} is not this sweep's ({', '.join(engines)})"
    if b not in config["batch_sizes"]:
        return f"batch_size {b} is not one of this sweep's"
    if not 0 <= seed < config["seeds"]:
        return f"seed {seed} is outside this sweep's 0..{config['seeds'] - 1}"
    if row["epochs"] != config["epochs"]:
        return f"epochs {row['epochs']} is not this sweep's ({config['epochs']})"
    lrs = planned_lrs(config, scaling, b, engine)
    if not any(math.isclose(row["lr"], lr, rel_tol=1e-12) for lr in lrs):
        if len(lrs) > 1:
            return f"lr {row['lr']!r} is not in this sweep's grid ({', '.join(map(repr, lrs))})"
        return f"lr {row['lr']!r} is not the {scaling!r} learning rate at batch size {b} ({lrs[0]!r})"
    updates = config["epochs"] * updates_per_epoch(config["n_train"], b)
    if row["updates"] != updates:
        return f"updates {row['updates']} is not {config['epochs']} epochs of batch size {b} ({updates})"
    diverged = row.get("diverged_at_update")
    if config.get("lrs"):
        problem = _target_problem(row, checkpointed(config, scaling, engine), updates)
        if problem:
            return problem
    for name in ("train_time_s", "compile_time_s", "final_loss"):
        if not (diverged is not None and name != "compile_time_s" and row[name] is None) and not _finite(row[name], 0):
            return f"{name} {row[name]!r} is not a finite number >= 0"
    accuracy = row["test_accuracy"]
    if not (diverged is not None and accuracy is None) and not (_finite(accuracy) and 0 <= accuracy <= 1):
        return f"test_accuracy {accuracy!r} is outside [0, 1]"
    peak = row["peak_memory_bytes"]
    if config["memory"] and not (isinstance(peak, int) and peak > 0):
        return f"peak_memory_bytes {peak!r} is not a byte count (this sweep measures memory)"
    if not config["memory"] and peak is not None:
        return f"peak_memory_bytes {peak!r} should be empty (this sweep does not measure memory)"
    allowed = ALLOWED_TIMINGS[config.get("timing", "serial")]
    if row["timing"] not in allowed:
        return f"timing {row['timing']!r} is not how this sweep measures time ({' or '.join(allowed)})"
    return None


def _target_problem(row, with_checkpoints, updates):
    """What is wrong with a row's TARGET_FIELDS (one line), or None."""
    least, diverged = row.get("min_loss"), row.get("diverged_at_update")
    if not with_checkpoints:
        if least is not None or diverged is not None:
            return "min_loss and diverged_at_update should be empty (this run has no checkpoints)"
        return None
    if diverged is not None:
        if not (isinstance(diverged, int) and 1 <= diverged <= updates):
            return f"diverged_at_update {diverged!r} is not an update count in 1..{updates}"
        unmeasured = [name for name in ("train_time_s", "final_loss", "test_accuracy") if row[name] is not None]
        if unmeasured:
            return f"{unmeasured[0]} should be empty: the run diverged at update {diverged}"
    if least is None and diverged is None and updates > 0:
        return "min_loss is empty but the run made updates and did not diverge"
    if least is not None and not _finite(least, 0):
        return f"min_loss {least!r} is not a finite number >= 0"
    return None


def run_problem(run, config):
    """What is wrong with a runs.jsonl entry of this sweep (one line), or None."""
    if not isinstance(run, dict):
        return "not a JSON object"
    for name, kind in (("lr_scaling", str), ("batch_size", int), ("seed", int), ("lr", float), ("engine", str),
                       ("epoch_loss", list), ("parameters", list)):
        value = run.get(name)
        ok = isinstance(value, (int, float) if kind is float else kind) and not isinstance(value, bool)
        if not ok:
            return f"{name} is missing or not a{'n' if kind is int else ''} {kind.__name__}"
    curve = run["epoch_loss"]
    complete = True
    if checkpointed(config, run["lr_scaling"], run["engine"]):
        problem, complete = _checkpoints_problem(run, config)
        if problem:
            return problem
    if (len(curve) != config["epochs"]) if complete else (len(curve) > config["epochs"]):
        return f"epoch_loss has {len(curve)} values, not this sweep's {config['epochs']} epochs"
    if not all(_finite(v, 0) for v in curve):
        return "epoch_loss holds a value that is not a finite number >= 0"
    return None


def _checkpoints_problem(run, config):
    """(problem or None, whether the checkpoints reach the last update) for a grid run's checkpoints."""
    points = run.get("checkpoints")
    if not isinstance(points, list) or not points:
        return "checkpoints is missing or empty (a grid run records its loss at checkpoints)", False
    total = config["epochs"] * updates_per_epoch(config["n_train"], max(1, int(run["batch_size"])))
    last = -1
    for point in points:
        if not (isinstance(point, list) and len(point) == 2 and isinstance(point[0], int)
                and not isinstance(point[0], bool) and last < point[0] <= total and _finite(point[1], 0)):
            return (f"checkpoints holds {str(point)[:40]}, not [updates, loss >= 0] with updates increasing "
                    f"up to {total}"), False
        last = point[0]
    if points[0][0] != 0:
        return "checkpoints must start at update 0 (the loss before training)", False
    return None, last == total


def noise_problem(point, config):
    """What is wrong with a noise.csv row of this sweep (one line), or None."""
    noise = config["noise"]
    epoch = point["epoch"]
    if epoch not in noise["at_epochs"]:
        return f"epoch {epoch!r} is not one this sweep measures ({', '.join(map(str, noise['at_epochs']))})"
    updates = epoch * updates_per_epoch(config["n_train"], noise["batch_size"])
    if point["updates"] != updates:
        return f"updates {point['updates']!r} is not {epoch} epochs of batch size {noise['batch_size']} ({updates})"
    for name in ("train_loss", "trace_sigma", "g_sq"):
        if not _finite(point[name], 0 if name == "train_loss" else None):
            return f"{name} {point[name]!r} is not a finite number"
    if not isinstance(point["b_simple"], float) or math.isnan(point["b_simple"]) and point["g_sq"] > 0:
        return f"b_simple {point['b_simple']!r} is not a number"
    exact = point["b_simple_exact"]
    if noise["exact"] != (exact is not None) or (exact is not None and not _finite(exact)):
        return f"b_simple_exact {exact!r} should be {'a finite number' if noise['exact'] else 'empty'}"
    return None


def _parse_noise(raw):
    """A noise.csv row with typed values (b_simple may be inf or nan; b_simple_exact may be empty)."""
    point = {}
    for name in NOISE_FIELDS:
        text = (raw.get(name) or "").strip()
        if name == "b_simple_exact" and text == "":
            point[name] = None
            continue
        try:
            point[name] = int(text) if name in ("epoch", "updates") else float(text)
        except ValueError:
            kind = "an integer" if name in ("epoch", "updates") else "a number"
            raise ValueError(f"{name} {text!r} is not {kind}") from None
    return point


class ResultsDir:
    """The --out directory: results.csv and runs.jsonl appended run by run, results.json at the end.

    With a noise-scale run, noise.csv holds its points, written together when
    that run finishes.  `claim` locks the directory (cli.DirectoryLock) until
    `close`: one sweep writes it at a time.  Every OSError at these paths is a
    UsageError naming the path.
    """

    def __init__(self, path):
        self.path = path
        self.csv_path = os.path.join(path, "results.csv")
        self.runs_path = os.path.join(path, "runs.jsonl")
        self.json_path = os.path.join(path, "results.json")
        self.noise_path = os.path.join(path, "noise.csv")
        self.lock = DirectoryLock(path, "fastedf sweep")
        self._csv = self._runs = None
        self.fields = ROW_FIELDS
        self.noise_points = []
        self._order = []  # the keys of the rows in results.csv, in file order

    def claim(self):
        """Create the directory and lock it: a second sweep on it refuses from now until `close`."""
        make_output_dir(self.path)
        self.lock.acquire()

    def start(self, config, env, resume):
        """Open the files for appending (after `claim`); returns {key: row} of the rows kept from an earlier sweep.

        The noise points kept (all of them, or none: the reference run is one
        unit) are in `noise_points`.
        """
        self.fields = row_fields(config)
        rows, runs = (self._read_previous(config) if resume else ({}, {}))
        self.noise_points = self._read_noise(config) if resume and config.get("noise") else []
        # Rewrite the files with the complete entries only, then append.
        self._csv = self._open(self.csv_path, "w")
        self._writer = csv.DictWriter(self._csv, self.fields)
        self._writer.writeheader()
        self._writer.writerows(_csv_row(row, self.fields) for row in rows.values())
        self._csv.flush()
        self._order = list(rows)
        if config.get("noise"):
            self.write_noise(self.noise_points)
        self._runs = self._open(self.runs_path, "w")
        self._runs.writelines(json.dumps(runs[key]) + "\n" for key in rows)
        self._runs.flush()
        self.write_json(config, env, list(rows.values()), complete=False)
        return rows

    def _open(self, path, mode):
        try:
            return open(path, mode, newline="" if path.endswith(".csv") else None, encoding="utf-8")
        except OSError as error:
            raise path_error(error, path, "write") from None

    def _read_text(self, path):
        try:
            with open(path, newline="", encoding="utf-8-sig") as handle:
                return handle.read()
        except OSError as error:
            raise path_error(error, path, "read") from None
        except UnicodeDecodeError:
            raise UsageError(f"--resume: {path} is not UTF-8 text; use a fresh --out") from None

    def _refuse(self, path, line, problem):
        return UsageError(f"--resume: {path} line {line}: {problem}; correct or delete that line, "
                          "or use a fresh --out")

    def _read_previous(self, config):
        """The rows and runs of an earlier sweep with the same configuration, each checked as if just made."""
        if not os.path.exists(self.json_path) or not os.path.exists(self.csv_path):
            return {}, {}
        try:
            previous = json.loads(self._read_text(self.json_path))["config"]
            if not isinstance(previous, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise UsageError(f"--resume: {self.json_path} is unreadable; use a fresh --out") from None
        for name in _RESUME_KEYS:
            if previous.get(name, _RESUME_DEFAULTS.get(name)) != config[name]:
                raise UsageError(f"--resume: {self.path} holds a sweep with {name} = {previous.get(name)!r}, "
                                 f"not {config[name]!r}; use the same options or another --out")
        runs = self._read_runs(config)
        rows = {}
        text = self._read_text(self.csv_path)
        reader = csv.reader(io.StringIO(text))
        try:
            header = [name.strip() for name in next(reader, [])]
            missing = [name for name in self.fields if name not in header and name not in _LATER_COLUMNS]
            if missing or len(set(header)) != len(header):
                raise self._refuse(self.csv_path, 1, f"the header must name the columns {', '.join(self.fields)} "
                                                      "once each")
            records = [(reader.line_num, cells) for cells in reader]
        except csv.Error as error:
            raise self._refuse(self.csv_path, reader.line_num, str(error)) from None
        cut = not text.endswith(("\n", "\r"))  # the last line was being written when the sweep was killed
        seen = {}
        for i, (line, cells) in enumerate(records):
            if not any(cell.strip() for cell in cells):
                continue
            try:
                if len(cells) != len(header):
                    raise ValueError(f"{len(cells)} fields, but the header has {len(header)}")
                row = _parse_row(dict(zip(header, cells)), self.fields)
                problem = row_problem(row, config)
            except ValueError as error:
                problem = str(error)
            if problem and cut and i == len(records) - 1:
                continue  # cut short: its run is redone
            if problem:
                raise self._refuse(self.csv_path, line, problem)
            key = _key(row)
            if key in seen:
                raise self._refuse(self.csv_path, line, f"the run {key} is already on line {seen[key]}")
            if key not in runs:
                raise self._refuse(self.csv_path, line, f"the run {key} has no loss curve in {self.runs_path}")
            seen[key] = line
            rows[key] = row
        return rows, runs

    def _read_runs(self, config):
        """{key: run} from runs.jsonl, each checked; a last line cut short by a kill is dropped."""
        if not os.path.exists(self.runs_path):
            return {}
        text = self._read_text(self.runs_path)
        lines = text.split("\n")
        runs = {}
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                run = json.loads(line)
                problem = run_problem(run, config)
            except ValueError:
                problem = "not valid JSON"
            if problem and number == len(lines):  # no newline after it: cut short
                continue
            if problem:
                raise self._refuse(self.runs_path, number, problem)
            runs[_key(run)] = run  # a run recorded twice (its row was lost in between): the later one
        return runs

    def append(self, row, run):
        """Record one finished run: its curve first, then its row, each flushed to disk."""
        try:
            self._runs.write(json.dumps(run) + "\n")
            self._runs.flush()
            self._writer.writerow(_csv_row(row, self.fields))
            self._csv.flush()
        except OSError as error:
            raise path_error(error, self.path, "write to") from None
        self._order.append(_key(row))

    def put_in_order(self, rows):
        """Rewrite results.csv and runs.jsonl in the order of `rows` (all rows written), each file replaced whole.

        A sweep on a cluster appends rows as they arrive; this gives its files
        the serial sweep's order.  The files are closed for appending afterwards.
        """
        keys = [_key(row) for row in rows]
        if keys == self._order:
            return
        runs = self.runs()
        for handle in (self._csv, self._runs):
            handle.close()
        self._csv = self._runs = None
        table = io.StringIO()
        writer = csv.DictWriter(table, self.fields)
        writer.writeheader()
        writer.writerows(_csv_row(row, self.fields) for row in rows)
        for path, text in ((self.runs_path, "".join(json.dumps(runs[key]) + "\n" for key in keys)),
                           (self.csv_path, table.getvalue())):
            write_atomically(path, text)  # never a half-written file: the old order or the new one

    def _read_noise(self, config):
        """The points of noise.csv when they are this sweep's complete reference run, each checked; else []."""
        if not os.path.exists(self.noise_path):
            return []
        text = self._read_text(self.noise_path)
        if not text.endswith(("\n", "\r")):
            return []  # empty, or cut short while being written: the reference run is redone
        reader = csv.DictReader(io.StringIO(text))
        points = []
        try:
            if [name.strip() for name in reader.fieldnames or []] != list(NOISE_FIELDS):
                raise self._refuse(self.noise_path, 1, f"the header must be {','.join(NOISE_FIELDS)}")
            for raw in reader:
                try:
                    point = _parse_noise(raw)
                    problem = noise_problem(point, config)
                except ValueError as error:
                    problem = str(error)
                if problem:
                    raise self._refuse(self.noise_path, reader.line_num, problem)
                points.append(point)
        except csv.Error as error:
            raise self._refuse(self.noise_path, reader.line_num, str(error)) from None
        complete = [p["epoch"] for p in points] == list(config["noise"]["at_epochs"])
        return points if complete else []  # an unfinished reference run is redone whole

    def write_noise(self, points):
        """Write noise.csv whole: its header and `points` (the reference run's, all at once), flushed."""
        try:
            with open(self.noise_path, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, NOISE_FIELDS)
                writer.writeheader()
                writer.writerows({k: ("" if v is None else v) for k, v in p.items()} for p in points)
        except OSError as error:
            raise path_error(error, self.noise_path, "write") from None
        self.noise_points = list(points)

    def close(self):
        """Close the files and release the lock (every finished row is already on disk)."""
        for handle in (self._csv, self._runs):
            if handle is not None:
                try:
                    handle.close()
                except OSError:
                    pass  # a full disk: the error was raised where the write failed
        self._csv = self._runs = None
        self.lock.release()

    def runs(self):
        """{key: run} from runs.jsonl."""
        text = self._read_text(self.runs_path)
        return {_key(run): run for run in (json.loads(line) for line in text.splitlines() if line.strip())}

    def write_json(self, config, env, rows, complete, extra=None):
        document = {"config": config, "environment": env, "complete": complete, "rows": rows, **(extra or {})}
        write_atomically(self.json_path, json.dumps(document, indent=1))  # never a half-written results.json


def _csv_row(row, fields=ROW_FIELDS):
    return {name: ("" if row[name] is None else row[name]) for name in fields}


# ---------------------------------------------------------------- the sweep

def run_specs(config, dataset):
    """The RunSpec of every run of the sweep, in sweep order (_todo)."""
    model = model_of(config)
    return [RunSpec(dataset, model, scaling, b, seed, lr, engine, config["epochs"], config["repeats"],
                    config["shuffle"], config["checkpoints_per_doubling"] if checkpointed(config, scaling, engine)
                    else None)
            for scaling, b, seed, lr, engine in _todo(config)]


def sweep_batch_sizes(config, dataset, out, done, quiet=False, guard=_NO_GUARD):
    """Run every run of the sweep not in `done` ({key: row}, updated in place).

    Batch sizes run in order, so an interrupted sweep has its small batches
    complete; each seed's split is made when its run starts (execute),
    never all at once.  Returns all rows in sweep order.
    """
    from tqdm import tqdm
    todo = _todo(config)
    peaks = {key[1]: row["peak_memory_bytes"] for key, row in done.items()}
    remaining = [spec for spec in run_specs(config, dataset) if spec.key not in done]
    bar = tqdm(total=len(todo), initial=len(todo) - len(remaining), desc="sweep", unit="run",
               file=sys.stderr, disable=quiet or not sys.stderr.isatty(), leave=False)
    try:
        for spec in remaining:
            bar.set_postfix_str(f"B={spec.batch_size} seed={spec.seed} lr={spec.lr:g} {spec.engine}")
            _measure_peak(config, spec, peaks, guard)
            row, run = execute(spec, guard)
            _record(config, out, done, spec, row, run, peaks)
            bar.update()
            guard.check()  # a Ctrl-C that came after training stops the sweep here, its row safe
    finally:
        bar.close()
    return [done[key] for key in todo]


def sweep_on_cluster(config, dataset, out, done, grid, quiet=False, guard=_NO_GUARD):
    """sweep_batch_sizes with the runs executed on a Dask cluster (grid: an open fastedf.distributed.Grid).

    Each row is written here as it arrives (timed here first with --timing
    serial, while the workers wait); memory is measured here, one batch size
    at a time; the files are put in sweep order at the end.  Returns all rows
    in sweep order.
    """
    from tqdm import tqdm
    todo = _todo(config)
    peaks = {key[1]: row["peak_memory_bytes"] for key, row in done.items()}
    remaining = [spec for spec in run_specs(config, dataset) if spec.key not in done]
    bar = tqdm(total=len(todo), initial=len(todo) - len(remaining), desc=f"sweep on {grid.threads} workers",
               unit="run", file=sys.stderr, disable=quiet or not sys.stderr.isatty(), leave=False)

    def on_result(spec, result, timed):
        row, run = result
        row.update(timed.value or {}, timing=timed.how)
        _measure_peak(config, spec, peaks, guard)
        _record(config, out, done, spec, row, run, peaks)
        bar.update()
        guard.check()  # a Ctrl-C that came while the row was written stops the sweep here, its row safe

    def time_one(spec, result):  # in this process, while the workers have nothing to run
        return time_here(dataclasses.replace(spec, dataset=dataset), result[0])

    try:
        grid.run(functools.partial(execute_on_worker, dataset, config["timing"]),
                 [dataclasses.replace(spec, dataset=None) for spec in remaining], on_result=on_result,
                 time_one=time_one if config["timing"] == "serial" else None,
                 warm_up=functools.partial(warm_up_worker, config, dataset), interruptible=guard.training)
    finally:
        bar.close()
    rows = [done[key] for key in todo]
    out.put_in_order(rows)
    return rows


def _measure_peak(config, spec, peaks, guard):
    """With --memory, the peak memory at this run's batch size, measured once per batch size (in `peaks`)."""
    if config["memory"] and peaks.get(spec.batch_size) is None:
        with guard.training():
            peaks[spec.batch_size] = measure_memory(config["engine"], spec.batch_size, len(config["features"]),
                                                    config["n_train"])


def _record(config, out, done, spec, row, run, peaks):
    """Check a finished run as --resume would, write its curve and row (out.append) and add the row to done."""
    if config["memory"]:
        row["peak_memory_bytes"] = peaks.get(spec.batch_size)
    problem = row_problem(row, config) or run_problem(run, config)
    if problem:
        raise RuntimeError(f"fastedf made a row it would not read back: {problem}")
    out.append(row, run)
    done[spec.key] = row


def measure_noise(config, dataset, out, guard=_NO_GUARD):
    """The reference run's noise points: those kept by --resume, else measured now and written to noise.csv."""
    spec = noise_spec(config, dataset)
    if spec is None:
        return []
    if out.noise_points:
        return out.noise_points
    points = execute_noise(spec, guard)
    for point in points:
        problem = noise_problem(point, config)
        if problem:
            raise RuntimeError(f"fastedf made a noise point it would not read back: {problem}")
    out.write_noise(points)
    guard.check()
    return points


def _todo(config):
    """Every run's key (lr_scaling, batch_size, seed, lr, engine): by batch size, then scaling, lr, engine, seed.

    The primary engine runs every scaling (and, with the grid, every lr); the
    other engines only the fixed lr.
    """
    engines = config.get("engines") or [config["engine"]]
    keys = []
    for b in config["batch_sizes"]:
        for scaling in config["lr_scaling"]:
            for engine in engines if scaling == "none" else engines[:1]:
                for lr in planned_lrs(config, scaling, b, engine):
                    keys += [(scaling, b, seed, lr, engine) for seed in range(config["seeds"])]
    return keys


STEPS_FIELDS = ("batch_size", "seed", "lr", "target_loss", "updates_to_target", "epochs_to_target",
                "examples_to_target", "seconds_to_target", "best")


def write_steps_to_target(path, results, targets):
    """steps_to_target.csv: every grid run's cost to the target (empty: not reached), best = 1 for the lr kept.

    results: report_science.ToTarget per run; targets: {seed: loss}; best: the fewest updates for its
    (batch_size, seed), ties to the smaller lr.
    """
    from .report_science import best_per_batch_and_seed
    best = {id(t) for t in best_per_batch_and_seed(results).values() if t is not None}
    try:
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, STEPS_FIELDS)
            writer.writeheader()
            for t in results:
                writer.writerow({"batch_size": t.batch_size, "seed": t.seed, "lr": t.lr, "target_loss": targets[t.seed],
                                 "updates_to_target": "" if t.updates is None else t.updates,
                                 "epochs_to_target": "" if t.epochs is None else t.epochs,
                                 "examples_to_target": "" if t.examples is None else t.examples,
                                 "seconds_to_target": "" if t.seconds is None else t.seconds,
                                 "best": int(id(t) in best)})
    except OSError as error:
        raise path_error(error, path, "write") from None


def _sweep_on_cluster(args, config, dataset, out, done, guard):
    """sweep_on_cluster on the cluster --workers or --scheduler names; a LocalCluster is stopped afterwards."""
    from .distributed import Grid
    grid = Grid(workers=args.workers, scheduler=args.scheduler)
    try:
        with guard.training():  # Ctrl-C while the cluster starts stops at once
            grid.open()
        if not args.quiet:
            print(f"fastedf sweep: {grid.threads} Dask worker threads; dashboard {grid.dashboard_link}",
                  file=sys.stderr)
        return sweep_on_cluster(config, dataset, out, done, grid, quiet=args.quiet, guard=guard)
    finally:
        grid.close()


def main(argv=None):
    """`fastedf sweep [options]`; returns the exit code.  Bad input raises UsageError (exit 2 in fastedf.__main__)."""
    args = build_parser().parse_args(argv)
    if args.timing != "serial" and not (args.workers or args.scheduler):
        raise UsageError(f"--timing {args.timing} needs --workers or --scheduler")
    if args.workers or args.scheduler:
        from .distributed import require_dask
        require_dask()  # before anything is read or written: one line saying what to install
    dataset = load_dataset(args)
    first = dataset.split(0)
    n_train, n_test = len(first.y_train), len(first.y_test)
    if n_train == 0 or n_test == 0:
        raise UsageError(f"{dataset.source}: too few rows for a train/test split ({n_train} train, {n_test} test)")
    config = build_config(args, dataset, n_train, n_test)
    refuse_what_cannot_finish(config, (n_train + n_test) * (len(config["features"]) + 1) * 8, args.out)
    out = ResultsDir(args.out)
    out.claim()
    try:
        env = environment()
        done = out.start(config, env, args.resume)
        resumed = len(done)
        todo = _todo(config)
        with InterruptGuard() as guard:
            try:
                warmup_compile_s = (warm_up(config, first, guard) if resumed < len(todo) else 0.0)
                if args.workers or args.scheduler:
                    rows = _sweep_on_cluster(args, config, dataset, out, done, guard)
                else:
                    rows = sweep_batch_sizes(config, dataset, out, done, quiet=args.quiet, guard=guard)
                noise = measure_noise(config, dataset, out, guard)
            except KeyboardInterrupt:
                kept = [done[key] for key in todo if key in done]
                out.write_json(config, env, kept, complete=False, extra={"interrupted": True,
                                                                         "resumed_rows": resumed})
                print(f"fastedf sweep: interrupted; {len(kept)} of {len(todo)} runs kept in "
                      f"{out.csv_path}; rerun with --resume to finish", file=sys.stderr)
                return EXIT_INTERRUPTED
        runs = out.runs()
        science = None
        if config.get("lrs"):
            from .report_science import analyse
            science = analyse(rows, runs, noise, config)
            write_steps_to_target(os.path.join(args.out, "steps_to_target.csv"), science.results, science.targets)
        figures = []
        if args.figures:
            from . import plots
            figures = plots.make_figures(rows, runs, config, first, args.out, science)
        from . import report
        report_path = os.path.join(args.out, "report.md")
        text = report.render(rows, runs, config, env, figures, warmup_compile_s, science)
        try:
            with open(report_path, "w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as error:
            raise path_error(error, report_path, "write") from None
        extra = {"figures": figures, "resumed_rows": resumed, "warmup_compile_time_s": warmup_compile_s}
        if science is not None:
            extra.update(science.summary())
        out.write_json(config, env, rows, complete=True, extra=extra)
    finally:
        out.close()  # every finished row is already on disk; this releases the files and the lock
    if not args.quiet:
        print(f"{len(rows)} runs ({resumed} resumed) -> {out.csv_path}, {report_path}", file=sys.stderr)
    return 0
