"""Two heads on one hidden layer, and a second graph for evaluation sharing the trained Parameters.

The hidden layer feeds both heads, but its nodes read their gradient from the first consumer only, so the
second head's gradient never reaches the hidden weights (the module's known limitation, kept on purpose).
"""
import numpy as np

from EDF import BCE, Addition, Input, Linear, Parameter, Sigmoid, Tanh

rng = np.random.default_rng(17)
n = 600
X = rng.normal(size=(n, 2)) * [2.0, 1.0]
Y = ((X[:, 0] ** 2 / 4 + X[:, 1] ** 2) < 1.2).astype(float)[:, None]

A1, b1 = Parameter(rng.normal(0, 0.8, (2, 10))), Parameter(np.zeros(10))
A2, b2 = Parameter(rng.normal(0, 0.5, (10, 1))), Parameter(np.zeros(1))
A3, b3 = Parameter(rng.normal(0, 0.5, (10, 1))), Parameter(np.zeros(1))


def build(x):
    hidden = Tanh(Linear(x, A1, b1))
    logit = Addition(Linear(hidden, A2, b2), Linear(hidden, A3, b3))
    return hidden, Sigmoid(logit)


x, y = Input(), Input()
hidden, prob = build(x)
loss = BCE(y, prob)
train_graph = [x, y, A1, b1, A2, b2, A3, b3, hidden.inputs[0], hidden, prob.inputs[0].inputs[0],
               prob.inputs[0].inputs[1], prob.inputs[0], prob, loss]

# the evaluation graph is built after the training graph: its nodes are the Parameters' second consumers
x_eval = Input()
_, prob_eval = build(x_eval)
eval_graph = [x_eval, A1, b1, A2, b2, A3, b3, prob_eval.inputs[0].inputs[0].inputs[0].inputs[0],
              prob_eval.inputs[0].inputs[0].inputs[0], prob_eval.inputs[0].inputs[0], prob_eval.inputs[0].inputs[1],
              prob_eval.inputs[0], prob_eval]
params = [A1, b1, A2, b2, A3, b3]

for epoch in range(1, 151):
    total = 0.0
    for i in range(0, 480, 24):
        x.value, y.value = X[i:i + 24], Y[i:i + 24]
        for node in train_graph:
            node.forward()
        for node in reversed(train_graph):
            node.backward()
        for p in params:
            p.value -= 0.5 * p.gradients[p]
        total += loss.value
    if epoch % 30 == 0:
        x_eval.value = X[480:]
        for node in eval_graph:
            node.forward()
        acc = np.mean((prob_eval.value > 0.5) == Y[480:])
        print(f"epoch {epoch} train loss {total / 480:.15g} held-out accuracy {acc:.4f}")
print("A3", " ".join(f"{v:.15g}" for v in A3.value[:4, 0]))
print("A1[0]", " ".join(f"{v:.15g}" for v in A1.value[0, :4]))
