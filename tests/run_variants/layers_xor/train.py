"""XOR with a two-hidden-layer MLP (Layer / MLP helpers from my_nodes)."""
import numpy as np
from my_nodes import Input, BCE, MLP, build_graph

np.random.seed(7)

# four noisy blobs: XOR of the signs
centers = np.array([[0, 0], [1, 1], [0, 1], [1, 0]], dtype=float)
labels = np.array([0, 0, 1, 1])
X = np.concatenate([c + 0.15 * np.random.randn(100, 2) for c in centers])
Y = np.repeat(labels, 100).reshape(-1, 1).astype(float)

x = Input()
y = Input()
net = MLP(x, [2, 16, 16, 1])
loss = BCE(y, net.out)
graph = build_graph(loss)
params = net.parameters()

lr = 0.5
batch = 20
for epoch in range(120):
    order = np.random.permutation(len(X))
    losses = []
    for start in range(0, len(X), batch):
        idx = order[start:start + batch]
        x.value, y.value = X[idx], Y[idx]
        for node in graph:
            node.forward()
        for node in reversed(graph):
            node.backward()
        for p in params:
            p.value = p.value - lr * p.gradients[p]
        losses.append(loss.value)
    if epoch % 20 == 0 or epoch == 119:
        print("epoch %d loss %.15g" % (epoch, np.mean(losses)))

x.value = X
for node in graph[:-1]:
    node.forward()
pred = (net.out.value > 0.5).astype(float)
print("accuracy", np.mean(pred == Y))
print("W1[0]", " ".join("%.15g" % v for v in params[0].value[0]))
print("b3", "%.15g" % params[-1].value[0])
