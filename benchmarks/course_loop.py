"""The course's training loop (docs/conventions.md), the one every benchmark that times it runs."""
import time


def train(graph, trainable, x, y, X, Y, batch_size, epochs, lr):
    """Forward every node in order, backward in reverse, t.value -= lr * t.gradients[t]; returns seconds.

    Rows in order, batches X[i:i + batch_size] (the last one short); the nodes
    may be any EDF module's (fastedf's or the NumPy reference's).
    """
    start = time.perf_counter()
    for _ in range(epochs):
        for i in range(0, len(X), batch_size):
            x.value, y.value = X[i:i + batch_size], Y[i:i + batch_size]
            for n in graph:
                n.forward()
            for n in reversed(graph):
                n.backward()
            for t in trainable:
                t.value -= lr * t.gradients[t]
    return time.perf_counter() - start
