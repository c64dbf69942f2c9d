# Lab 1: 1-D logistic regression, one sample at a time, every value a plain Python float.
import random

from edf_lab1 import BCE, Addition, Input, Multiply, Parameter, Sigmoid

random.seed(1)
data = [(random.gauss(-1.5, 1.0), 0.0) for _ in range(200)] + [(random.gauss(1.0, 1.0), 1.0) for _ in range(200)]
random.shuffle(data)
train, test = data[:300], data[300:]

x = Input()
y = Input()
w = Parameter(0.1)
b = Parameter(0.0)
p = Sigmoid(Addition(Multiply(w, x), b))
loss = BCE(y, p)
graph = [x, y, w, b, p.inputs[0].inputs[0], p.inputs[0], p, loss]

lr = 0.05
for epoch in range(120):
    total = 0.0
    for xi, yi in train:
        x.value = xi
        y.value = yi
        for n in graph:
            n.forward()
        for n in graph[::-1]:
            n.backward()
        w.value -= lr * w.gradients[w]
        b.value -= lr * b.gradients[b]
        total += loss.value
    if epoch % 20 == 19:
        print(f"epoch {epoch + 1} average loss {total / len(train):.15g}")

correct = 0
for xi, yi in test:
    x.value = xi
    for n in graph[:-1]:
        n.forward()
    correct += (p.value > 0.5) == (yi == 1.0)
print(f"test accuracy {correct / len(test):.4f}")
print(f"w {w.value:.15g} b {b.value:.15g} types {type(w.value).__name__} {type(loss.value).__name__}")
