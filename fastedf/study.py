"""The batch-size study's data set: two Gaussian classes, a random 25% held out for test."""
from dataclasses import dataclass

import numpy as np

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
