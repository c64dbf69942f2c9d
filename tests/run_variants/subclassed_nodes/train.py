"""XOR with a classmate's Linear for the hidden layer and my own subclassed nodes on top."""
import numpy as np

from my_edf import BCE, Input, Linear, Parameter, ReLU, SafeSigmoid, TransposedLinear

rng = np.random.default_rng(31)
X = rng.normal(size=(240, 2))
Y = (X[:, :1] * X[:, 1:] > 0).astype(float)

x, y = Input(), Input()
A1, b1 = Parameter(rng.normal(0, 0.7, (2, 12))), Parameter(np.zeros(12))
A2, b2 = Parameter(rng.normal(0, 0.3, (1, 12))), Parameter(np.zeros(1))  # (n_out, n_in)
hidden = ReLU(Linear(x, A1, b1))
out = SafeSigmoid(TransposedLinear(hidden, A2, b2))
loss = BCE(y, out)
graph = [x, y, A1, b1, A2, b2, hidden.inputs[0], hidden, out.inputs[0], out, loss]

for epoch in range(150):
    total = 0.0
    for i in range(0, 240, 24):
        x.value, y.value = X[i:i + 24], Y[i:i + 24]
        for n in graph:
            n.forward()
        for n in graph[::-1]:
            n.backward()
        for t in (A1, b1, A2, b2):
            t.value -= 0.2 * t.gradients[t]
        total += loss.value
    if epoch % 30 == 29:
        print(f"epoch {epoch + 1} loss {total / 240:.15g}")
x.value = X
for n in graph[:-1]:
    n.forward()
print(f"accuracy {np.mean((out.value > 0.5) == Y):.4f}")
print("A2", " ".join(f"{v:.15g}" for v in A2.value[0, :4]))
