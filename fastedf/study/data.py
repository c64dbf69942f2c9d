"""The study's data: the two-Gaussian set of the course's first assignment, a CSV file or scikit-learn's digits,
split into training and test rows by seed."""
import csv
import math
from array import array
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
