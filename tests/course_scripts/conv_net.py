"""Digits with a small convolutional net, channels last.

(B, 8, 8, 1) -> Conv 3x3, 1 -> 4 -> ReLU -> MaxPooling 2 -> (B, 4, 4, 4)
-> Flatten (B, 64) -> Linear 64 -> 10 -> Softmax -> CE with one-hot labels.
"""
from EDF import *
import numpy as np
from sklearn.datasets import load_digits

digits = load_digits()
images = digits.images[:100].reshape(-1, 8, 8, 1) / 16.0
labels = digits.target[:100]
Y = np.eye(10)[labels]

rng = np.random.default_rng(5)
x, y = Input(), Input()
K, c = Parameter(rng.normal(scale=0.5, size=(3, 3, 1, 4))), Parameter(np.zeros(4))
A, b = Parameter(rng.normal(scale=0.2, size=(64, 10))), Parameter(np.zeros(10))
conv = Conv(x, K, c)
relu = ReLU(conv)
pool = MaxPooling(relu, 2)
flat = Flatten(pool)
logits = Linear(flat, A, b)
probs = Softmax(logits)
loss = CE(y, probs)
graph = [x, y, K, c, A, b, conv, relu, pool, flat, logits, probs, loss]
trainable = [K, c, A, b]


def forward_pass(graph):
    for n in graph:
        n.forward()


def backward_pass(graph):
    for n in reversed(graph):
        n.backward()


def sgd_update(trainable, lr):
    for t in trainable:
        t.value -= lr * t.gradients[t]


n, batch_size = len(images), 20
losses = []
for epoch in range(2):
    total = 0.0
    for i in range(0, n, batch_size):
        x.value, y.value = images[i:i + batch_size], Y[i:i + batch_size]
        forward_pass(graph)
        backward_pass(graph)
        sgd_update(trainable, 0.5)
        total += loss.value * len(x.value)
    losses.append(total / n)
    print(f"epoch {epoch}: loss {losses[-1]:.6f}")

x.value, y.value = images, Y
forward_pass(graph)
accuracy = np.mean(np.argmax(probs.value, axis=1) == labels)
print(f"training accuracy {accuracy:.3f}")

result = {"params": [t.value.copy() for t in trainable], "losses": losses,
          "probs": probs.value.copy(), "accuracy": accuracy}
