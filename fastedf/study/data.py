"""The study's data: the two-Gaussian set of the course's first assignment, a CSV file or scikit-learn's digits,
split into training and test rows by seed."""
import csv
import hashlib
import io
import math
from array import array
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..datasets import load_digits
from ..guardrails import UsageError, available_memory_bytes
from ..text import format_bytes

CLASS_MEANS = ((3.0, -2.0), (-1.0, 3.0))
CLASS_VARIANCES = ((6.0, 3.0), (2.0, 8.0))  # diagonal covariances
SAMPLES_PER_CLASS = 700
TEST_FRACTION = 0.25


@dataclass
class Split:
    """Features X (n, d) float64 and 0/1 labels y (n,) float64, for training and test."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


def two_gaussians(seed=0, samples_per_class=SAMPLES_PER_CLASS):
    """X (2 * samples_per_class, 2) and labels y, class 0 first, drawn with `seed`."""
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(mean, np.sqrt(var), size=(samples_per_class, 2))
                        for mean, var in zip(CLASS_MEANS, CLASS_VARIANCES)])
    y = np.repeat([0.0, 1.0], samples_per_class)
    return X, y


def train_test_split(X, y, seed=0, test_fraction=TEST_FRACTION):
    """A random split; the test set gets round(test_fraction * n) samples."""
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    order = np.random.default_rng(seed).permutation(len(X))
    n_test = int(round(test_fraction * len(X)))
    test, train = order[:n_test], order[n_test:]
    return Split(np.ascontiguousarray(X[train]), np.ascontiguousarray(y[train]),
                 np.ascontiguousarray(X[test]), np.ascontiguousarray(y[test]))


def study_data(seed=0):
    """The study's data for one seed: 1050 training and 350 test samples."""
    X, y = two_gaussians(seed)
    return train_test_split(X, y, seed=seed + 1)


# ---------------------------------------------------------------- the data set of a sweep

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
    sha256: str | None = None  # of a CSV file's bytes, as read

    def identity(self):
        """What makes these data these data, saved with a sweep so --resume can tell them from edited ones.

        A CSV file by the SHA-256 of its bytes; generated data and scikit-learn's
        digits by the parameters that make them.
        """
        if self.sha256 is not None:
            return {"sha256": self.sha256}
        if self.X is None:
            return {"generator": "two_gaussians", "class_means": [list(m) for m in CLASS_MEANS],
                    "class_variances": [list(v) for v in CLASS_VARIANCES],
                    "samples_per_class": SAMPLES_PER_CLASS, "test_fraction": TEST_FRACTION}
        return {"loader": "scikit-learn load_digits, pixels / 16", "classes": self.classes,
                "rows": len(self.X), "features": len(self.feature_names), "test_fraction": TEST_FRACTION}

    def split(self, seed):
        """The train/test Split for one seed (the study draws fresh data per seed; other data are re-split)."""
        if self.X is None:
            return study_data(seed)
        return train_test_split(self.X, self.y, seed=seed + 1)  # seed + 1: study_data's convention


def load_digits_dataset(binary_digit=None):
    """scikit-learn's 8x8 digits as a Dataset: 10 classes, or one digit against the rest (binary_digit=k)."""
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


# Bounds on what a CSV may hold, so that no file (or endless input such as /dev/zero) is read without limit:
# a feature vector of MAX_COLUMNS float64 values is far beyond what the sweep's models train on, and a line
# holds MAX_COLUMNS numbers of up to 40 characters each.
MAX_COLUMNS = 100_000
MAX_LINE_CHARS = 40 * MAX_COLUMNS
BYTES_PER_VALUE = 24  # the parsed values, then X and y made from them: 3 copies of 8 bytes each


def load_csv(path, label_column="label"):
    """A Dataset from a CSV file: a header row, numeric feature columns and a 0/1 label column.

    UTF-8, with or without a byte-order mark.  Raises UsageError naming the
    file, line and column of the first problem; a header naming a column twice
    is one (the second copy would be trained as a feature).  A line longer than
    MAX_LINE_CHARS, more than MAX_COLUMNS columns, or more rows than this
    machine's memory can hold are refused as soon as they are met, before
    more is read.
    """
    try:
        digest = hashlib.sha256()
        with _hashed_text(path, digest) as handle:
            reader = csv.reader(_bounded_lines(path, handle))
            first = next((row for row in reader if any(cell.strip() for cell in row)), [])  # blank lines skipped
            header = [name.strip() for name in first]
            label_at, features = _check_header(path, header, label_column)
            values, rows, line = array("d"), 0, 1
            budget = available_memory_bytes()
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                line = reader.line_num
                if budget is not None and BYTES_PER_VALUE * (len(values) + len(header)) > budget:
                    raise UsageError(f"{path} is too large for this machine: {rows + 1} rows of {len(header)} "
                                     f"columns need {format_bytes(BYTES_PER_VALUE * (len(values) + len(header)))} "
                                     f"and {format_bytes(budget)} of memory is available")
                values.extend(_parse_data_row(path, line, row, header, label_at, label_column))
                rows += 1
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise UsageError(f"{path} is not a readable UTF-8 CSV file: {error}") from None
    if rows < 2:
        raise UsageError(f"{path} has {rows} data rows; a train/test split needs at least 2")
    table = np.frombuffer(values, dtype=np.float64).reshape(rows, len(header))
    X = np.ascontiguousarray(np.delete(table, label_at, axis=1))
    y = np.ascontiguousarray(table[:, label_at])
    if np.all(y == y[0]):  # a classifier of one class learns nothing, and its accuracy of 1 would say it did
        raise UsageError(f"{path}: every row's label ({label_column!r}) is {y[0]:g}; the study needs rows of "
                         "both classes, 0 and 1")
    return Dataset(str(path), X, y, tuple(features), sha256=digest.hexdigest())


class _HashingReader(io.RawIOBase):
    """A binary file's bytes, passed on unchanged and added to `digest` as they are read."""

    def __init__(self, raw, digest):
        self.raw, self.digest = raw, digest

    def readable(self):
        return True

    def readinto(self, buffer):
        count = self.raw.readinto(buffer)
        if count:
            self.digest.update(memoryview(buffer)[:count])
        return count

    def close(self):
        self.raw.close()
        super().close()


def _hashed_text(path, digest):
    """The file at `path` as UTF-8 text (a byte-order mark dropped), its bytes hashed into `digest` as read.

    The hash is of the bytes parsed, so a file edited while it is read, or
    input that cannot be read twice (a pipe), is still named by its own bytes.
    """
    raw = _HashingReader(open(path, "rb", buffering=0), digest)
    return io.TextIOWrapper(io.BufferedReader(raw), encoding="utf-8-sig", newline="")


def _bounded_lines(path, handle):
    """The lines of a text file, each read with at most MAX_LINE_CHARS characters held, or a UsageError."""
    number = 0
    while True:
        line = handle.readline(MAX_LINE_CHARS + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE_CHARS:
            raise UsageError(f"{path} line {number} is longer than {MAX_LINE_CHARS:,d} characters, more than a "
                             f"CSV line of at most {MAX_COLUMNS:,d} columns needs; not read further")
        yield line


def _listed(names, limit=8):
    """'a, b, c' for a few names, 'a, b, ... (1000000 in all)' for many: a message stays one readable line."""
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names):,d} in all)"


def _check_header(path, header, label_column):
    """(index of the label column, feature names), or a UsageError: no header, a nameless or repeated column."""
    if not header:
        raise UsageError(f"{path} is empty: expected a header row and data rows")
    if len(header) > MAX_COLUMNS:
        raise UsageError(f"{path}: the header has {len(header):,d} columns; at most {MAX_COLUMNS:,d} are read")
    nameless = [str(j + 1) for j, name in enumerate(header) if not name]
    hidden = [name for name in header if not name.isprintable()]
    if hidden and "\t" in hidden[0]:
        raise UsageError(f"{path}: the header's column {hidden[0]!r} holds tabs; --data reads comma-separated "
                         "values")
    if hidden:  # a NUL or another control character: names that print alike but do not match
        raise UsageError(f"{path}: the header's column {hidden[0]!r} holds a control character; is it a text CSV?")
    if nameless:
        raise UsageError(f"{path}: header column(s) {_listed(nameless)} have no name")
    counts = Counter(header)  # linear time, whatever the number of columns
    repeated = sorted(name for name, count in counts.items() if count > 1)
    if repeated:
        raise UsageError(f"{path}: the header names column(s) {_listed(map(repr, repeated))} more than once; "
                         "every column needs its own name")
    if label_column not in counts:
        raise UsageError(f"{path} has no column {label_column!r} (columns: {_listed(header)}); "
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
