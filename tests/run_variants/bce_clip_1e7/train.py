"""Zeros against ones: logistic regression on the 8x8 digits (a nearly separable problem)."""
from sklearn.datasets import load_digits

from EDF import *

np.random.seed(10)
X, t = load_digits(n_class=2, return_X_y=True)
X = X / 16.0
Y = t.reshape(-1, 1).astype(float)
n_train = 280
X_train, Y_train, X_test, Y_test = X[:n_train], Y[:n_train], X[n_train:], Y[n_train:]

x_node, y_node = Input(), Input()
A = Parameter(np.random.randn(64, 1) * 0.01)
b = Parameter(np.zeros((1, 1)))
sigmoid = Sigmoid(Linear(x_node, A, b))
loss = BCE(y_node, sigmoid)
graph = [x_node, y_node, A, b, sigmoid.inputs[0], sigmoid, loss]

learning_rate = 8.0
batch_size = 14
for epoch in range(40):
    total = 0.0
    for i in range(0, n_train, batch_size):
        x_node.value = X_train[i:i + batch_size]
        y_node.value = Y_train[i:i + batch_size]
        for n in graph:
            n.forward()
        for n in reversed(graph):
            n.backward()
        A.value -= learning_rate * A.gradients[A]
        b.value -= learning_rate * b.gradients[b]
        total += loss.value
    if epoch % 5 == 4:
        confidence = np.where(Y_train[-14:] == 1, sigmoid.value, 1 - sigmoid.value)
        print(f"epoch {epoch + 1}: loss {total / (n_train // batch_size):.15g}  "
              f"p(true class) min {confidence.min():.15g} max {confidence.max():.15g}")

x_node.value, y_node.value = X_test, Y_test
for n in graph:
    n.forward()
print(f"test loss {loss.value:.15g} accuracy {np.mean((sigmoid.value > 0.5) == Y_test):.4f}")
print(f"A[20:24] {' '.join(f'{v:.15g}' for v in A.value[20:24, 0])}  b {b.value[0, 0]:.15g}")
