"""Digits with an MLP: 64 -> 32 ReLU -> 10 Softmax, CE against one-hot labels, mini-batch SGD.

CE is a mean over rows, so the epoch loss weights each batch's loss.value by
its rows before dividing by the number of samples.
"""
from EDF import *
import numpy as np
from sklearn.datasets import load_digits

digits = load_digits()
X = digits.data[:300] / 16.0
labels = digits.target[:300]
Y = np.eye(10)[labels]

rng = np.random.default_rng(4)
x, y = Input(), Input()
A1, b1 = Parameter(rng.normal(scale=np.sqrt(2 / 64), size=(64, 32))), Parameter(np.zeros(32))
A2, b2 = Parameter(rng.normal(scale=np.sqrt(1 / 32), size=(32, 10))), Parameter(np.zeros(10))
h = ReLU(Linear(x, A1, b1))
probs = Softmax(Linear(h, A2, b2))
loss = CE(y, probs)
graph = [x, y, A1, b1, h.inputs[0], h, A2, b2, probs.inputs[0], probs, loss]
trainable = [A1, b1, A2, b2]


def forward_pass(graph):
    for n in graph:
        n.forward()


def backward_pass(graph):
    for n in reversed(graph):
        n.backward()


def sgd_update(trainable, lr):
    for t in trainable:
        t.value -= lr * t.gradients[t]


n, batch_size = len(X), 32
losses = []
for epoch in range(5):
    total = 0.0
    for i in range(0, n, batch_size):
        x.value, y.value = X[i:i + batch_size], Y[i:i + batch_size]
        forward_pass(graph)
        backward_pass(graph)
        sgd_update(trainable, 0.5)
        total += loss.value * len(x.value)
    losses.append(total / n)
    print(f"epoch {epoch}: loss {losses[-1]:.6f}")

x.value, y.value = X, Y
forward_pass(graph)
accuracy = np.mean(np.argmax(probs.value, axis=1) == labels)
print(f"training accuracy {accuracy:.3f}, loss {loss.value:.4f}")

result = {"params": [t.value.copy() for t in trainable], "losses": losses,
          "probs": probs.value.copy(), "final_loss": loss.value, "accuracy": accuracy}
