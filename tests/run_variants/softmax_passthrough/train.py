# MNIST-like digits, 10 classes: 64 -> 48 LeakyReLU -> 10 softmax, cross-entropy.
import time

from sklearn.datasets import load_digits

from EDF import *

np.random.seed(1)
digits = load_digits()
X = digits.data / 16.0
Y = np.eye(10)[digits.target]
shuffle = np.random.permutation(len(X))
X, Y = X[shuffle], Y[shuffle]
X_train, Y_train, X_test, Y_test = X[:1400], Y[:1400], X[1400:], Y[1400:]


def topological_sort(node, visited=None, order=None):
    if visited is None:
        visited, order = set(), []
    if node not in visited:
        visited.add(node)
        for i in node.inputs:
            topological_sort(i, visited, order)
        order.append(node)
    return order


x = Input()
y = Input()
W1 = Parameter(np.random.randn(64, 48) * np.sqrt(2 / 64))
b1 = Parameter(np.zeros(48))
W2 = Parameter(np.random.randn(48, 10) * np.sqrt(1 / 48))
b2 = Parameter(np.zeros(10))
h = LeakyReLU(Linear(x, [W1, b1]))
probs = Softmax(Linear(h, [W2, b2]))
loss = CE(y, probs)
graph = topological_sort(loss)
trainable = [W1, b1, W2, b2]

lr = 0.05
batch_size = 8
epochs = 160
t = time.time()
for epoch in range(epochs):
    losses = []
    for i in range(0, len(X_train), batch_size):
        x.value = X_train[i:i + batch_size]
        y.value = Y_train[i:i + batch_size]
        for n in graph:
            n.forward()
        for n in graph[::-1]:
            n.backward()
        for p in trainable:
            p.value -= lr * p.gradients[p]
        losses.append(loss.value)
    if (epoch + 1) % 40 == 0:
        print("Epoch %d: loss = %.15g" % (epoch + 1, np.mean(losses)))
print("training took %.2f seconds" % (time.time() - t))

x.value = X_test
for n in graph[:-1]:
    n.forward()
print("Test accuracy: %.4f" % np.mean(probs.value.argmax(axis=1) == Y_test.argmax(axis=1)))
print("b2:", " ".join("%.15g" % v for v in b2.value[:5]))
print("W1[0,0] = %.15g, W2[5,3] = %.15g" % (W1.value[0, 0], W2.value[5, 3]))
