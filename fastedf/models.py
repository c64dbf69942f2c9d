"""Ready-made graphs: logistic regression and MLPs with a sigmoid/BCE or softmax/CE head, built from fastedf nodes."""
from dataclasses import dataclass, field

import numpy as np

from .graph import forward_pass, rows_as_samples, topological_sort
from .node import Input, Parameter
from .ops import BCE, CE, Linear, ReLU, Sigmoid, Softmax, Tanh

ACTIVATIONS = {"sigmoid": Sigmoid, "relu": ReLU, "tanh": Tanh}


@dataclass
class Model:
    """A graph with its data inputs x (B, d) and y, its prediction node and its loss.

    y is (B, 1) 0/1 labels under a sigmoid/BCE head, one-hot (B, classes)
    under a softmax/CE head (`classes` > 1).
    """

    x: Input
    y: Input
    prediction: object
    loss: object
    parameters: list = field(default_factory=list)
    classes: int = 1

    def labels(self, y):
        """Labels as the loss wants them: (n, 1) for BCE, one-hot (n, classes) for CE from class indices."""
        y = np.asarray(y, dtype=np.float64)
        if self.classes == 1:
            return y.reshape(-1, 1)
        if y.ndim == 2 and y.shape[1] == self.classes:
            return y
        return np.eye(self.classes)[y.astype(np.int64).ravel()]

    def predict(self, X):
        """Probabilities (n, 1) or (n, classes) for the rows of X, by a forward pass over the prediction graph."""
        self.x.value = np.asarray(X, dtype=np.float64)
        return self._forward(self.prediction).copy()

    def mean_loss(self, X, y):
        """Mean per-sample loss over all of X at the current parameters."""
        self.x.value = np.asarray(X, dtype=np.float64)
        self.y.value = self.labels(y)
        value = float(self._forward(self.loss))
        return value / len(X) if self.loss.reduction == "sum" else value

    @staticmethod
    def _forward(node):
        graph = topological_sort(node)
        with rows_as_samples(graph):  # x's rows are samples by this class's contract
            return forward_pass(graph)

    def accuracy(self, X, y):
        """Fraction of rows predicted right: p >= 0.5 against 0/1 labels, or the argmax class."""
        p = self.predict(X)
        if self.classes == 1:
            return float(np.mean((p.ravel() >= 0.5) == (np.asarray(y).ravel() >= 0.5)))
        return float(np.mean(p.argmax(axis=1) == self.labels(y).argmax(axis=1)))


def mlp(n_features, hidden=(), seed=0, init_scale=0.1, activation="sigmoid", classes=1):
    """Linear + activation layers of the given hidden widths, then the head and its loss.

    classes=1: a Linear + Sigmoid output under BCE (hidden=() is logistic
    regression); classes > 1: Linear + Softmax under CE.  Weights are drawn
    N(0, init_scale^2) from `seed`; biases start at zero.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    if int(classes) < 1:
        raise ValueError(f"classes must be >= 1, got {classes!r}")
    rng = np.random.default_rng(seed)
    x, y = Input(), Input()
    layer, parameters = x, []
    widths = (n_features, *hidden, classes)
    for i, (width_in, width_out) in enumerate(zip(widths[:-1], widths[1:])):
        A = Parameter(rng.normal(0.0, init_scale, size=(width_in, width_out)))
        b = Parameter(np.zeros(width_out))
        last = i == len(widths) - 2
        head = (Softmax if classes > 1 else Sigmoid) if last else ACTIVATIONS[activation]
        layer = head(Linear(layer, A, b))
        parameters += [A, b]
    loss = CE(y, layer) if classes > 1 else BCE(y, layer)
    return Model(x, y, layer, loss, parameters, int(classes))


def logistic_regression(n_features, seed=0, init_scale=0.1):
    """sigmoid(x @ A + b) with BCE: the study's model."""
    return mlp(n_features, (), seed, init_scale)
