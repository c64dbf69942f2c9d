"""HW2: is the digit a 3 or an 8?  Hidden sigmoid layer, samples as columns."""
from mylib import *
from sklearn.datasets import load_digits

np.random.seed(3)
data = load_digits()
keep = (data.target == 3) | (data.target == 8)
X = data.data[keep] / 16.0
t = (data.target[keep] == 8).astype(float)
idx = np.random.permutation(len(X))
X, t = X[idx], t[idx]
split = 260
Xtr, ttr = X[:split].T, t[:split].reshape(1, -1)
Xte, tte = X[split:].T, t[split:].reshape(1, -1)

x = Input()
y = Input()
A1 = Parameter(np.random.randn(64, 12) * 0.2)
b1 = Parameter(np.zeros((12, 1)))
A2 = Parameter(np.random.randn(12, 1) * 0.2)
b2 = Parameter(np.zeros((1, 1)))
hidden = Sigmoid(Linear(x, A1, b1))
out = Sigmoid(Linear(hidden, A2, b2))
loss = BCE(y, out)

nodes = [x, y, A1, b1, A2, b2, hidden.inputs[0], hidden, out.inputs[0], out, loss]
params = [A1, b1, A2, b2]

lr = 0.01
bs = 10
for epoch in range(40):
    total = 0.0
    for s in range(0, split, bs):
        x.value = Xtr[:, s:s + bs]
        y.value = ttr[:, s:s + bs]
        forward_pass(nodes)
        backward_pass(nodes)
        for p in params:
            for i in range(p.value.shape[0]):  # row by row, as in the lab's update loop
                p.value[i] -= lr * p.gradients[p][i]
        total += loss.value
    if epoch % 8 == 7:
        print("epoch", epoch + 1, "loss", format(total / split, ".15g"))

x.value = Xte
forward_pass(nodes[:-1])
print("test accuracy", np.mean((out.value > 0.5) == tte))
print("A2 =", [float(format(v, ".15g")) for v in A2.value[:4, 0]])
print("b2 =", format(b2.value[0, 0], ".15g"))
