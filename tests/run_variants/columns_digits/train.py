# Digits (10 classes) with one hidden tanh layer, samples as columns.
import time

import numpy as np
from sklearn.datasets import load_digits

import edf

rng = np.random.RandomState(0)
digits = load_digits()
X = digits.data / 16.0
labels = digits.target
perm = rng.permutation(len(X))
X, labels = X[perm], labels[perm]
onehot = np.eye(10)[labels]

n_train = 1200
X_train, X_test = X[:n_train].T, X[n_train:].T          # (64, n)
Y_train, Y_test = onehot[:n_train].T, onehot[n_train:].T  # (10, n)

H = 32
W1 = edf.Parameter(rng.randn(H, 64) * 0.1)
b1 = edf.Parameter(np.zeros((H, 1)))
W2 = edf.Parameter(rng.randn(10, H) * 0.1)
b2 = edf.Parameter(np.zeros((10, 1)))

x = edf.Input()
y = edf.Input()
h = edf.Tanh(edf.Linear(W1, x, b1))
probs = edf.Softmax(edf.Linear(W2, h, b2))
loss = edf.CrossEntropy(y, probs)

graph = [x, y, W1, b1, W2, b2]
graph += [h.inputs[0], h, probs.inputs[0], probs, loss]
params = [W1, b1, W2, b2]

lr = 0.1
batch = 16
epochs = 30
t0 = time.perf_counter()
for epoch in range(epochs):
    cols = rng.permutation(n_train)
    epoch_loss = 0.0
    for k in range(0, n_train, batch):
        c = cols[k:k + batch]
        x.value = X_train[:, c]
        y.value = Y_train[:, c]
        for n in graph:
            n.forward()
        for n in graph[::-1]:
            n.backward()
        for p in params:
            p.value -= lr * p.gradients[p]
        epoch_loss += loss.value * len(c)
    if epoch % 5 == 4:
        print(f"epoch {epoch + 1:2d}  train loss {epoch_loss / n_train:.15g}")
print(f"elapsed time {time.perf_counter() - t0:.2f} sec")

x.value = X_test
for n in graph[:-1]:
    n.forward()
acc = np.mean(np.argmax(probs.value, axis=0) == np.argmax(Y_test, axis=0))
print(f"test accuracy {acc:.4f}")
print(f"W2[0,:3] {W2.value[0, 0]:.15g} {W2.value[0, 1]:.15g} {W2.value[0, 2]:.15g}")
print(f"b2[:,0] {' '.join(f'{v:.15g}' for v in b2.value[:4, 0])}")
