"""The course's training loops (docs/conventions.md), the ones every benchmark that times them runs."""
import time

from fastedf.numpy_edf import course_step as step  # the course's update, one copy for all


def train(graph, trainable, x, y, X, Y, batch_size, epochs, lr):
    """Forward every node in order, backward in reverse, t.value -= lr * t.gradients[t]; returns seconds.

    Rows in order, batches X[i:i + batch_size] (the last one short); the nodes
    may be any EDF module's (fastedf's or the NumPy reference's).
    """
    start = time.perf_counter()
    for _ in range(epochs):
        for i in range(0, len(X), batch_size):
            x.value, y.value = X[i:i + batch_size], Y[i:i + batch_size]
            step(graph, trainable, lr)
    return time.perf_counter() - start


def train_per_sample(graph, trainable, x1, x2, y, X, Y, epochs, lr):
    """The instructor's per-sample loop: each feature of one row fed as a (1, 1) array to its own Input."""
    start = time.perf_counter()
    for _ in range(epochs):
        for i in range(len(X)):
            x1.value, x2.value, y.value = X[i:i + 1, 0:1], X[i:i + 1, 1:2], Y[i:i + 1]
            step(graph, trainable, lr)
    return time.perf_counter() - start
