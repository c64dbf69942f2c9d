"""Digits: two ReLU layers and a softmax with its full Jacobian; total cross-entropy per batch."""
from sklearn.datasets import load_digits

from nodes import *

np.random.seed(2)
X, labels = load_digits(return_X_y=True)
X = X / 16.0
Y = np.zeros((len(labels), 10))
Y[np.arange(len(labels)), labels] = 1.0
p = np.random.permutation(len(X))[:900]
X_train, Y_train = X[p[:600]], Y[p[:600]]
X_val, Y_val = X[p[600:]], Y[p[600:]]

x = Input()
y = Input()
l1 = Linear(x, 32, 64)
l2 = Linear(ReLU(l1), 32, 32)
out = Softmax(Linear(ReLU(l2), 10, 32))
loss = CrossEntropy(y, out)
graph = topological_sort(loss)
trainables = [n for n in graph if isinstance(n, Parameter)]
print("parameters:", sum(t.value.size for t in trainables))

learning_rate = 0.005  # the loss is a sum, so this is per sample
batch_size = 25
for epoch in range(25):
    total = 0
    for start in range(0, len(X_train), batch_size):
        x.value = X_train[start:start + batch_size]
        y.value = Y_train[start:start + batch_size]
        forward_pass(graph)
        backward_pass(graph)
        sgd_update(trainables, learning_rate)
        total += loss.value
    if epoch % 5 == 0 or epoch == 24:
        x.value, y.value = X_val, Y_val
        forward_pass(graph)
        val_acc = np.mean(np.argmax(out.value, 1) == np.argmax(Y_val, 1))
        print(f"epoch {epoch} train loss {total / len(X_train):.15g} val loss {loss.value / len(X_val):.15g} "
              f"val acc {val_acc:.4f}")

print("W2[:2, :2]", " ".join("%.15g" % v for v in l2.W.value[:2, :2].ravel()))
print("b1 sum %.15g" % l1.b.value.sum())
