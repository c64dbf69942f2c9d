# Logistic regression on two Gaussians, one sample at a time (the first assignment).
import time

from EDF import *

np.random.seed(569)

CLASS1_SIZE = 700
CLASS2_SIZE = 700
N_FEATURES = 2
LEARNING_RATE = 0.02
EPOCHS = 80
TEST_SIZE = 0.25

MEAN1 = np.array([3, -2])
COV1 = np.array([[6, 0], [0, 3]])
MEAN2 = np.array([-1, 3])
COV2 = np.array([[2, 0], [0, 8]])

X1 = np.random.multivariate_normal(MEAN1, COV1, CLASS1_SIZE)
X2 = np.random.multivariate_normal(MEAN2, COV2, CLASS2_SIZE)
X = np.vstack((X1, X2))
y = np.hstack((np.zeros(CLASS1_SIZE), np.ones(CLASS2_SIZE)))

indices = np.arange(X.shape[0])
np.random.shuffle(indices)
test_set_size = int(len(X) * TEST_SIZE)
test_indices = indices[:test_set_size]
train_indices = indices[test_set_size:]
X_train, X_test = X[train_indices], X[test_indices]
y_train, y_test = y[train_indices], y[test_indices]

x1_node = Input()
x2_node = Input()
y_node = Input()

w1 = Parameter(np.random.randn(1, 1) * 0.1)
w2 = Parameter(np.random.randn(1, 1) * 0.1)
b = Parameter(np.zeros((1, 1)))

u1 = Multiply(w1, x1_node)
u2 = Multiply(w2, x2_node)
u = Addition(u1, u2)
v = Addition(u, b)
sigmoid = Sigmoid(v)
loss = BCE(y_node, sigmoid)


def topological_sort(entry):
    visited = set()
    order = []

    def visit(node):
        if node not in visited:
            visited.add(node)
            for n in node.inputs:
                visit(n)
            order.append(node)

    visit(entry)
    return order


graph = topological_sort(loss)
trainable = [n for n in graph if isinstance(n, Parameter)]


def forward_pass(graph):
    for n in graph:
        n.forward()


def backward_pass(graph):
    for n in graph[::-1]:
        n.backward()


def sgd_update(trainables, learning_rate=1e-2):
    for t in trainables:
        t.value -= learning_rate * t.gradients[t]


start = time.time()
for epoch in range(EPOCHS):
    loss_value = 0
    for i in range(X_train.shape[0]):
        x1_node.value = X_train[i, 0].reshape(1, -1)
        x2_node.value = X_train[i, 1].reshape(1, -1)
        y_node.value = y_train[i].reshape(1, -1)

        forward_pass(graph)
        backward_pass(graph)
        sgd_update(trainable, LEARNING_RATE)

        loss_value += loss.value
    if epoch % 10 == 0 or epoch == EPOCHS - 1:
        print(f"Epoch {epoch + 1}, Loss: {loss_value / X_train.shape[0]:.15g}")
print(f"Training time: {time.time() - start:.3f} s")

correct_predictions = 0
for i in range(X_test.shape[0]):
    x1_node.value = X_test[i, 0].reshape(1, -1)
    x2_node.value = X_test[i, 1].reshape(1, -1)
    forward_pass(graph[:-1])  # no label needed for the prediction
    if round(sigmoid.value[0, 0]) == y_test[i]:
        correct_predictions += 1

accuracy = correct_predictions / X_test.shape[0]
print(f"Accuracy: {accuracy * 100:.2f}%")

# the whole test set at once through the same graph; y_node still holds the last training label
x1_node.value = X_test[:, 0:1]
x2_node.value = X_test[:, 1:2]
forward_pass(graph)
print(f"Vectorised accuracy: {np.mean(np.round(sigmoid.value[:, 0]) == y_test) * 100:.2f}%, "
      f"loss against the last label {loss.value:.15g}")
print(f"w1 {w1.value[0, 0]:.15g} w2 {w2.value[0, 0]:.15g} b {b.value[0, 0]:.15g}")
