"""The course's data: scikit-learn's 8x8 digits (an optional extra: pip install -e ".[digits]")."""
import numpy as np


def load_digits(binary_digit=None, scale=True):
    """Digits X (1797, 64) float64 and labels y (1797,).

    binary_digit=None: y is the class 0..9 (float64); binary_digit=k: y is 1.0
    where the digit is k, else 0.0 (one-vs-rest).  scale=True divides pixels by
    16, so features lie in [0, 1].  Raises ImportError saying how to install
    scikit-learn when it is missing.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise ImportError("the digits data needs scikit-learn: pip install scikit-learn "
                          "(or pip install -e \".[digits]\" in a fastedf checkout)") from None
    data = sklearn_digits()
    X = data.data.astype(np.float64) / (16.0 if scale else 1.0)
    y = data.target.astype(np.float64)
    if binary_digit is not None:
        if not 0 <= int(binary_digit) <= 9:
            raise ValueError(f"binary_digit must be 0..9 or None, got {binary_digit!r}")
        y = (y == int(binary_digit)).astype(np.float64)
    return np.ascontiguousarray(X), y
