"""Per-sample logistic regression built from Multiply and Addition: one sample per update.

x1 is fed as a plain float, x2 as a (1, 1) array, the label as a plain float;
the weights are (1, 1) arrays.  The epoch loss is the sum of loss.value over
the samples divided by their number (BCE is a sum: one sample's loss here).
"""
from EDF import *
import numpy as np

rng = np.random.default_rng(0)
X = rng.normal(size=(60, 2))
Y = (X[:, 0] - X[:, 1] > 0.3).astype(float)

x1, x2, y = Input(), Input(), Input()
w1, w2, b = Parameter(np.array([[0.1]])), Parameter(np.array([[-0.2]])), Parameter(np.array([[0.0]]))
m1 = Multiply(x1, w1)
m2 = Multiply(x2, w2)
s = Addition(m1, m2)
z = Addition(s, b)
p = Sigmoid(z)
loss = BCE(y, p)

graph = [x1, x2, y, w1, w2, b, m1, m2, s, z, p, loss]
trainable = [w1, w2, b]


def forward_pass(graph):
    for n in graph:
        n.forward()


def backward_pass(graph):
    for n in graph[::-1]:
        n.backward()


def sgd_update(trainable, learning_rate=0.1):
    for t in trainable:
        t.value -= learning_rate * t.gradients[t]


losses = []
for epoch in range(4):
    total = 0.0
    for i in range(len(X)):
        x1.forward(float(X[i, 0]))
        x2.value = X[i:i + 1, 1:2]
        y.value = float(Y[i])
        forward_pass(graph)
        backward_pass(graph)
        sgd_update(trainable, learning_rate=0.2)
        total += loss.value
    losses.append(total / len(X))
    print(f"epoch {epoch}: loss {losses[-1]:.6f}, dL/dw1 of the last sample {w1.gradients[w1][0][0]:.6f}")

# predictions for every sample, one at a time, as the scripts plot them
predictions = []
for i in range(len(X)):
    x1.value, x2.value, y.value = float(X[i, 0]), X[i:i + 1, 1:2], float(Y[i])
    forward_pass(graph)
    predictions.append(p.value[0, 0])
accuracy = np.mean((np.array(predictions) > 0.5) == (Y > 0.5))
print(f"accuracy {accuracy:.3f}")

result = {"params": [t.value.copy() for t in trainable], "losses": losses,
          "predictions": predictions, "accuracy": accuracy,
          "last_label_gradient": y.gradients[y]}
