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
  (`row_problem`): a hand-edited or damaged row is refused with one line naming
  results.csv and the line; only a last line cut short by a kill is dropped
  and its run redone;
- options this machine cannot finish (memory, disk, or a week at fastedf's
  fastest speed) are refused before anything runs, naming what fits.
"""
import argparse
import csv
import io
import json
import math
import os
import signal
import sys
import threading
from array import array
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .cli import (SECONDS_PER_ELEMENT, SECONDS_PER_FIT, SECONDS_PER_PROCESS, SECONDS_PER_UPDATE, ArgumentParser,
                  Cost, DirectoryLock, UsageError, available_memory_bytes, environment, format_bytes, int_list,
                  make_output_dir, nonnegative_int, path_error, positive_float, positive_int, refuse_unless_it_fits)
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
    output.add_argument("--out", default="results", metavar="DIR",
                        help="output directory, written by one sweep at a time (default results/)")
    output.add_argument("--resume", action="store_true",
                        help="keep the finished rows in --out (checked as if just made) and run the rest")
    output.add_argument("--no-figures", dest="figures", action="store_false", help="skip the PNG figures")
    output.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def build_config(args, dataset, n_train, n_test):
    """The sweep's configuration as a JSON-ready dict; the batch sizes checked against n_train."""
    sizes = sorted(set(args.batch_sizes)) if args.batch_sizes else default_batch_sizes(n_train)
    too_big = [b for b in sizes if b > n_train]
    if too_big:
        raise UsageError(f"batch size {too_big[0]} exceeds the {n_train} training rows")
    for scaling in args.lr_scaling:
        lr = scaled_lr(args.lr, scaling, sizes[-1], sizes[0])
        if not math.isfinite(lr):
            raise UsageError(f"--lr {args.lr!r} with --lr-scaling {scaling} gives lr = {lr} at batch size "
                             f"{sizes[-1]}; use a smaller --lr")
    return {
        "data": dataset.source, "label_column": (args.label_column or "label") if args.data else None,
        "features": list(dataset.feature_names), "n_train": n_train, "n_test": n_test,
        "batch_sizes": sizes, "seeds": args.seeds, "epochs": args.epochs, "lr": args.lr,
        "lr_scaling": args.lr_scaling, "base_batch_size": sizes[0], "engine": args.engine,
        "repeats": args.repeats, "shuffle": args.shuffle, "memory": args.memory,
        "model": "logistic regression: sigmoid(x @ A + b), BCE, weights N(0, 0.1^2) from the seed, bias 0",
    }


# Memory and disk per unit of the sweep, measured (peak RSS and file sizes, CPython 3.11) and rounded up.
BYTES_PER_EPOCH_KEPT = 112  # a loss value of every run's curve, held by the report and the figures (measured 60-100)
BYTES_PER_EPOCH_LIVE = 128  # the run being recorded: fit's float64 array, its list and its JSON line
BYTES_PER_EPOCH_ON_DISK = 24  # a loss value in runs.jsonl: up to 22 characters and ", " (measured 21)
BYTES_PER_RUN = 4096  # a row and its key in memory, in results.csv, results.json and runs.jsonl
DATA_COPIES = 4  # the data set, one seed's split, a shuffled copy of it, the evaluation's buffers


def sweep_cost(config, data_bytes, epochs, seeds, repeats):
    """The Cost of a sweep with `config` but these epochs, seeds and repeats.

    Time is a lower bound (cli.SECONDS_PER_*): per fit a fixed cost, per SGD
    step the engine's step cost, per epoch every training value touched once.
    Memory: DATA_COPIES of the data, one run's curve being written, and every
    run's curve and row, which the report holds at the end.  Disk: runs.jsonl
    and the rows.
    """
    n, d = config["n_train"], len(config["features"])
    scalings, sizes = len(config["lr_scaling"]), config["batch_sizes"]
    runs = scalings * len(sizes) * seeds
    steps_per_epoch = scalings * sum(math.ceil(n / b) for b in sizes)  # per seed
    fits = runs * repeats + 1  # and the warm-up
    seconds = (fits * SECONDS_PER_FIT
               + seeds * repeats * epochs * (steps_per_epoch * SECONDS_PER_UPDATE[config["engine"]]
                                             + scalings * len(sizes) * n * (d + 1) * SECONDS_PER_ELEMENT))
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


def run_one(split, batch_size, seed, lr, epochs, engine, repeats, shuffle, guard=_NO_GUARD):
    """Train `repeats` times from the same initialisation; returns (row fields, epoch loss curve, parameters).

    train_time_s is the median over repeats of fit's training-loop time, which
    excludes compilation; compile_time_s is the largest compile time seen (the
    first run pays it, unless Numba's cache holds the program).  Only the fit
    calls are interruptible (`guard`, an InterruptGuard).  fit's ValueError
    (the data or the lr make training fail) is a UsageError naming the run.
    """
    from . import fit
    from .models import logistic_regression
    times, compiles = [], []
    y_train = split.y_train.reshape(-1, 1)
    for _ in range(repeats):
        model = logistic_regression(split.X_train.shape[1], seed=seed)
        try:
            with guard.training():
                history = fit(model.loss, {model.x: split.X_train, model.y: y_train}, batch_size=batch_size,
                              epochs=epochs, lr=lr, shuffle=shuffle, seed=seed, engine=engine)
        except ValueError as error:
            raise UsageError(f"batch size {batch_size}, seed {seed}, lr {lr:g}: {error}") from None
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


def warm_up(config, split, guard=_NO_GUARD):
    """One untimed one-epoch run, so compilation and first-call costs land before the timed runs.

    Returns its compile time in seconds (0 when Numba's on-disk cache held the program).
    """
    fields, _, _ = run_one(split, config["batch_sizes"][0], 0, config["lr"], min(config["epochs"], 1),
                           config["engine"], 1, config["shuffle"], guard=guard)
    return fields["compile_time_s"]


def measure_memory(engine, batch_size, features, samples):
    """Peak bytes of one epoch of training at `batch_size`, from fastedf.memory (memray, in a fresh process)."""
    from .memory import measure_peaks
    try:
        rows = measure_peaks(engine, [batch_size], features=features, samples=samples, epochs=1, seed=0)
    except ValueError as error:  # the child rejected the arguments
        raise UsageError(f"--memory: {error}") from None
    return int(rows[0]["peak_bytes"])


# ---------------------------------------------------------------- files

def _key(row):
    return row["lr_scaling"], int(row["batch_size"]), int(row["seed"])


def _parse_row(raw):
    """A results.csv row ({field: text}) with typed values; ValueError naming the first field that is not."""
    row = {}
    for name in ROW_FIELDS:
        text = raw.get(name)
        if text is None:
            raise ValueError(f"no {name} field")
        text = text.strip()
        if name == "peak_memory_bytes" and text == "":
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


def row_problem(row, config):
    """What is wrong with a row of this sweep (one line), or None: the same checks for rows made and rows read back."""
    scaling, b, seed = row["lr_scaling"], row["batch_size"], row["seed"]
    if scaling not in config["lr_scaling"]:
        return f"lr_scaling {scaling!r} is not one of this sweep's ({', '.join(config['lr_scaling'])})"
    if row["engine"] != config["engine"]:
        return f"engine {row['engine']!r} is not this sweep's ({config['engine']})"
    if b not in config["batch_sizes"]:
        return f"batch_size {b} is not one of this sweep's"
    if not 0 <= seed < config["seeds"]:
        return f"seed {seed} is outside this sweep's 0..{config['seeds'] - 1}"
    if row["epochs"] != config["epochs"]:
        return f"epochs {row['epochs']} is not this sweep's ({config['epochs']})"
    lr = scaled_lr(config["lr"], scaling, b, config["base_batch_size"])
    if not math.isclose(row["lr"], lr, rel_tol=1e-12):
        return f"lr {row['lr']!r} is not the {scaling!r} learning rate at batch size {b} ({lr!r})"
    updates = config["epochs"] * math.ceil(config["n_train"] / b)
    if row["updates"] != updates:
        return f"updates {row['updates']} is not {config['epochs']} epochs of batch size {b} ({updates})"
    for name in ("train_time_s", "compile_time_s", "final_loss"):
        if not (math.isfinite(row[name]) and row[name] >= 0):
            return f"{name} {row[name]!r} is not a finite number >= 0"
    if not 0 <= row["test_accuracy"] <= 1:
        return f"test_accuracy {row['test_accuracy']!r} is outside [0, 1]"
    peak = row["peak_memory_bytes"]
    if config["memory"] and not (isinstance(peak, int) and peak > 0):
        return f"peak_memory_bytes {peak!r} is not a byte count (this sweep measures memory)"
    if not config["memory"] and peak is not None:
        return f"peak_memory_bytes {peak!r} should be empty (this sweep does not measure memory)"
    return None


def run_problem(run, config):
    """What is wrong with a runs.jsonl entry of this sweep (one line), or None."""
    if not isinstance(run, dict):
        return "not a JSON object"
    for name, kind in (("lr_scaling", str), ("batch_size", int), ("seed", int), ("epoch_loss", list),
                       ("parameters", list)):
        if not isinstance(run.get(name), kind) or isinstance(run.get(name), bool):
            return f"{name} is missing or not a{'n' if kind is int else ''} {kind.__name__}"
    curve = run["epoch_loss"]
    if len(curve) != config["epochs"]:
        return f"epoch_loss has {len(curve)} values, not this sweep's {config['epochs']} epochs"
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
               for v in curve):
        return "epoch_loss holds a value that is not a finite number >= 0"
    return None


class ResultsDir:
    """The --out directory: results.csv and runs.jsonl appended run by run, results.json at the end.

    `claim` locks the directory (cli.DirectoryLock) until `close`: one sweep
    writes it at a time.  Every OSError at these paths is a UsageError naming the path.
    """

    def __init__(self, path):
        self.path = path
        self.csv_path = os.path.join(path, "results.csv")
        self.runs_path = os.path.join(path, "runs.jsonl")
        self.json_path = os.path.join(path, "results.json")
        self.lock = DirectoryLock(path, "fastedf sweep")
        self._csv = self._runs = None

    def claim(self):
        """Create the directory and lock it: a second sweep on it refuses from now until `close`."""
        make_output_dir(self.path)
        self.lock.acquire()

    def start(self, config, env, resume):
        """Open the files for appending (after `claim`); returns {key: row} of the rows kept from an earlier sweep."""
        rows, runs = (self._read_previous(config) if resume else ({}, {}))
        # Rewrite both files with the complete entries only, then append.
        self._csv = self._open(self.csv_path, "w")
        self._writer = csv.DictWriter(self._csv, ROW_FIELDS)
        self._writer.writeheader()
        self._writer.writerows(_csv_row(row) for row in rows.values())
        self._csv.flush()
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
            if previous.get(name) != config[name]:
                raise UsageError(f"--resume: {self.path} holds a sweep with {name} = {previous.get(name)!r}, "
                                 f"not {config[name]!r}; use the same options or another --out")
        runs = self._read_runs(config)
        rows = {}
        text = self._read_text(self.csv_path)
        reader = csv.reader(io.StringIO(text))
        try:
            header = [name.strip() for name in next(reader, [])]
            missing = [name for name in ROW_FIELDS if name not in header]
            if missing or len(set(header)) != len(header):
                raise self._refuse(self.csv_path, 1, f"the header must name the columns {', '.join(ROW_FIELDS)} "
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
                row = _parse_row(dict(zip(header, cells)))
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
            self._writer.writerow(_csv_row(row))
            self._csv.flush()
        except OSError as error:
            raise path_error(error, self.path, "write to") from None

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
        tmp = self.json_path + ".tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump(document, handle, indent=1)
            os.replace(tmp, self.json_path)  # never a half-written results.json
        except OSError as error:
            raise path_error(error, self.json_path, "write") from None


def _csv_row(row):
    return {name: ("" if row[name] is None else row[name]) for name in ROW_FIELDS}


# ---------------------------------------------------------------- the sweep

def sweep_batch_sizes(config, dataset, out, done, quiet=False, guard=_NO_GUARD):
    """Run every (lr_scaling, batch_size, seed) not in `done` ({key: row}, updated in place).

    Batch sizes run in order, so an interrupted sweep has its small batches
    complete; each seed's split is made when its run starts (dataset.split),
    never all at once.  Returns all rows in sweep order.
    """
    from tqdm import tqdm
    todo = _todo(config)
    peaks = {key[1]: row["peak_memory_bytes"] for key, row in done.items()}
    remaining = [key for key in todo if key not in done]
    bar = tqdm(total=len(todo), initial=len(todo) - len(remaining), desc="sweep", unit="run",
               file=sys.stderr, disable=quiet or not sys.stderr.isatty(), leave=False)
    try:
        for scaling, batch_size, seed in remaining:
            bar.set_postfix_str(f"B={batch_size} seed={seed} lr={scaling}")
            if config["memory"] and peaks.get(batch_size) is None:
                with guard.training():
                    peaks[batch_size] = measure_memory(config["engine"], batch_size, len(config["features"]),
                                                       config["n_train"])
            lr = scaled_lr(config["lr"], scaling, batch_size, config["base_batch_size"])
            fields, curve, parameters = run_one(dataset.split(seed), batch_size, seed, lr, config["epochs"],
                                                config["engine"], config["repeats"], config["shuffle"],
                                                guard=guard)
            row = {"lr_scaling": scaling, "batch_size": batch_size, "seed": seed, "lr": lr,
                   "engine": config["engine"], "epochs": config["epochs"], **fields,
                   "peak_memory_bytes": peaks.get(batch_size) if config["memory"] else None}
            run = {"lr_scaling": scaling, "batch_size": batch_size, "seed": seed,
                   "epoch_loss": curve, "parameters": parameters}
            problem = row_problem(row, config) or run_problem(run, config)
            if problem:
                raise RuntimeError(f"fastedf made a row it would not read back: {problem}")
            out.append(row, run)
            done[(scaling, batch_size, seed)] = row
            bar.update()
            guard.check()  # a Ctrl-C that came after training stops the sweep here, its row safe
    finally:
        bar.close()
    return [done[key] for key in todo]


def _todo(config):
    return [(scaling, b, seed) for b in config["batch_sizes"] for scaling in config["lr_scaling"]
            for seed in range(config["seeds"])]


def _total_runs(config):
    return len(config["lr_scaling"]) * len(config["batch_sizes"]) * config["seeds"]


def main(argv=None):
    """`fastedf sweep [options]`; returns the exit code.  Bad input raises UsageError (exit 2 in fastedf.__main__)."""
    args = build_parser().parse_args(argv)
    if args.label_column is not None and args.data is None:
        raise UsageError("--label-column needs --data")
    dataset = load_csv(args.data, args.label_column or "label") if args.data else Dataset("study")
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
        with InterruptGuard() as guard:
            try:
                warmup_compile_s = (warm_up(config, first, guard) if resumed < _total_runs(config) else 0.0)
                rows = sweep_batch_sizes(config, dataset, out, done, quiet=args.quiet, guard=guard)
            except KeyboardInterrupt:
                kept = [done[key] for key in _todo(config) if key in done]
                out.write_json(config, env, kept, complete=False, extra={"interrupted": True,
                                                                         "resumed_rows": resumed})
                print(f"fastedf sweep: interrupted; {len(kept)} of {_total_runs(config)} runs kept in "
                      f"{out.csv_path}; rerun with --resume to finish", file=sys.stderr)
                return 130
        runs = out.runs()
        figures = []
        if args.figures:
            from . import plots
            figures = plots.make_figures(rows, runs, config, first, args.out)
        from . import report
        report_path = os.path.join(args.out, "report.md")
        text = report.render(rows, runs, config, env, figures, warmup_compile_s)
        try:
            with open(report_path, "w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as error:
            raise path_error(error, report_path, "write") from None
        out.write_json(config, env, rows, complete=True,
                       extra={"figures": figures, "resumed_rows": resumed, "warmup_compile_time_s": warmup_compile_s})
    finally:
        out.close()  # every finished row is already on disk; this releases the files and the lock
    if not args.quiet:
        print(f"{len(rows)} runs ({resumed} resumed) -> {out.csv_path}, {report_path}", file=sys.stderr)
    return 0
