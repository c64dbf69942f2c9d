"""XOR with a 2-3-1 MLP: Linear, Tanh, Linear, Sigmoid, BCE.

Uses np without importing numpy: `from EDF import *` hands it over.  The
graph is ordered by the script's own topological sort, which also picks the
trainable Parameters; the layers come from a small helper class.
"""
from EDF import *

rng = np.random.default_rng(3)
X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
Y = np.array([[0.0], [1.0], [1.0], [0.0]])


class Dense:
    """A Linear layer that makes its own Parameters."""

    def __init__(self, x, n_in, n_out):
        self.A = Parameter(rng.normal(scale=1.0, size=(n_in, n_out)))
        self.b = Parameter(np.zeros(n_out))
        self.out = Linear(x, self.A, self.b)


def topological_sort(loss):
    order, seen = [], set()

    def visit(n):
        if n not in seen:
            seen.add(n)
            for m in n.inputs:
                visit(m)
            order.append(n)

    visit(loss)
    return order, [n for n in order if isinstance(n, Parameter)]


def forward_pass(graph):
    for n in graph:
        n.forward()


def backward_pass(graph):
    for n in reversed(graph):
        n.backward()


def sgd_update(trainable, learning_rate):
    for t in trainable:
        t.value -= learning_rate * t.gradients[t]


x, y = Input(), Input()
hidden = Tanh(Dense(x, 2, 3).out)
p = Sigmoid(Dense(hidden, 3, 1).out)
loss = BCE(y, p)
graph, trainable = topological_sort(loss)

losses = []
for epoch in range(300):
    total = 0.0
    for i in range(0, 4, 2):
        x.value, y.value = X[i:i + 2], Y[i:i + 2]
        forward_pass(graph)
        backward_pass(graph)
        sgd_update(trainable, 0.5)
        total += loss.value
    if epoch % 50 == 0 or epoch == 299:
        losses.append(total / 4)
        print(f"epoch {epoch}: loss {losses[-1]:.6f}")

x.value, y.value = X, Y
forward_pass(graph)
print("XOR predictions", p.value.ravel())

result = {"params": [t.value.copy() for t in trainable], "losses": losses, "predictions": p.value.copy()}
