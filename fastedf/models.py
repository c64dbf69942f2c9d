"""Ready-made graphs for the study: logistic regression and a small MLP, built from fastedf nodes."""
from dataclasses import dataclass, field

import numpy as np

from .graph import forward_pass, topological_sort
from .node import Input, Parameter
from .ops import BCE, Linear, Sigmoid


@dataclass
class Model:
    """A graph with its data inputs x (B, d) and y (B, 1), its prediction node and its loss."""

    x: Input
    y: Input
    prediction: Sigmoid
    loss: BCE
    parameters: list = field(default_factory=list)

    def predict(self, X):
        """Probabilities (n, 1) for the rows of X, by a forward pass over the prediction graph."""
        self.x.value = np.asarray(X, dtype=np.float64)
        return forward_pass(topological_sort(self.prediction)).copy()

    def mean_loss(self, X, y):
        """Mean BCE over all of X at the current parameters."""
        self.x.value = np.asarray(X, dtype=np.float64)
        self.y.value = np.asarray(y, dtype=np.float64).reshape(-1, 1)
        return float(forward_pass(topological_sort(self.loss)))

    def accuracy(self, X, y):
        """Fraction of rows whose thresholded prediction (p >= 0.5) equals the 0/1 label."""
        p = self.predict(X).ravel()
        return float(np.mean((p >= 0.5) == (np.asarray(y).ravel() >= 0.5)))


def mlp(n_features, hidden=(), seed=0, init_scale=0.1):
    """Linear + Sigmoid layers of the given hidden widths, then a Linear + Sigmoid output and BCE.

    hidden=() is logistic regression.  Weights are drawn N(0, init_scale^2) from
    `seed`; biases start at zero.
    """
    rng = np.random.default_rng(seed)
    x, y = Input(), Input()
    layer, parameters = x, []
    for width_in, width_out in zip((n_features, *hidden), (*hidden, 1)):
        A = Parameter(rng.normal(0.0, init_scale, size=(width_in, width_out)))
        b = Parameter(np.zeros(width_out))
        layer = Sigmoid(Linear(layer, A, b))
        parameters += [A, b]
    return Model(x, y, layer, BCE(y, layer), parameters)


def logistic_regression(n_features, seed=0, init_scale=0.1):
    """sigmoid(x @ A + b) with BCE: the study's model."""
    return mlp(n_features, (), seed, init_scale)
