"""A small CNN on the 8x8 digits: Conv 3x3 (8 filters) -> ReLU -> MaxPool 2 -> Linear -> Softmax."""
import time

from sklearn.datasets import load_digits

from EDF import *

np.random.seed(0)
digits = load_digits()
images = digits.images[:600, :, :, None] / 16.0  # (N, 8, 8, 1)
targets = np.eye(10)[digits.target[:600]]
X_train, Y_train = images[:480], targets[:480]
X_test, Y_test = images[480:], targets[480:]

x = Input()
y = Input()
K = Parameter(np.random.randn(3, 3, 1, 8) * 0.3)
kb = Parameter(np.zeros(8))
A = Parameter(np.random.randn(4 * 4 * 8, 10) * 0.1)
b = Parameter(np.zeros(10))
features = Flatten(MaxPooling(ReLU(Conv(x, K, kb)), 2))
probs = Softmax(Linear(features, A, b))
loss = CE(y, probs)
graph = topological_sort(loss)
trainables = [K, kb, A, b]

BATCH = 16
LR = 0.1
EPOCHS = 90
tic = time.time()
for epoch in range(EPOCHS):
    order = np.random.permutation(len(X_train))
    epoch_loss = 0.0
    for i in range(0, len(X_train), BATCH):
        batch = order[i:i + BATCH]
        x.value, y.value = X_train[batch], Y_train[batch]
        forward_pass(graph)
        backward_pass(graph)
        sgd_update(trainables, LR)
        epoch_loss += loss.value * len(batch)
    if epoch % 15 == 0 or epoch == EPOCHS - 1:
        print(f"epoch {epoch:2d} loss {epoch_loss / len(X_train):.15g}")
print(f"time per epoch: {(time.time() - tic) / EPOCHS * 1000:.1f} ms")

x.value, y.value = X_test, Y_test
forward_pass(graph)
print(f"test loss {loss.value:.15g}")
print(f"test accuracy {np.mean(probs.value.argmax(1) == Y_test.argmax(1)):.4f}")
print("K[:, :, 0, 0] =", " ".join(f"{v:.15g}" for v in K.value[:, :, 0, 0].ravel()))
print("kb =", " ".join(f"{v:.15g}" for v in kb.value))
