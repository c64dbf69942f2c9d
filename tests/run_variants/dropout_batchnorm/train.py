# Final project: digits with an MLP using BatchNorm and Dropout.
from sklearn.datasets import load_digits

from EDF import *

np.random.seed(569)
X, labels = load_digits(return_X_y=True)
X = X / 16.0
Y = np.eye(10)[labels]
idx = np.random.permutation(len(X))
train_idx, test_idx = idx[:1200], idx[1200:]

x, y = Input(), Input()
model = MLP(x, [64, 64, 32, 10], dropout=0.2)
loss = CE(y, model.output)
graph = topological_sort(loss)

LR, BATCH = 0.05, 32
for epoch in range(12):
    model.train(True)
    np.random.shuffle(train_idx)
    losses = []
    for i in range(0, len(train_idx), BATCH):
        rows = train_idx[i:i + BATCH]
        x.value, y.value = X[rows], Y[rows]
        forward_pass(graph)
        backward_pass(graph)
        sgd_update(model.parameters, LR)
        losses.append(loss.value)
    model.train(False)
    x.value, y.value = X[test_idx], Y[test_idx]
    forward_pass(graph)
    acc = np.mean(model.output.value.argmax(axis=1) == labels[test_idx])
    print(f"epoch {epoch + 1:2d} train loss {np.mean(losses):.15g} test loss {loss.value:.15g} acc {acc:.4f}")

bn = model.switchable[0]
print("running mean[:3]", " ".join(f"{v:.15g}" for v in bn.running_mean[:3]))
print("gamma[:3]", " ".join(f"{v:.15g}" for v in model.parameters[2].value[:3]))
