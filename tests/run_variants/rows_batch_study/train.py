# Batch-size study: logistic regression on two Gaussians, one run per batch size.
import os
import tempfile
import time

from EDF import *

np.random.seed(42)
n_per_class = 700
X = np.vstack([np.random.multivariate_normal([3, -2], np.diag([6, 3]), n_per_class),
               np.random.multivariate_normal([-1, 3], np.diag([2, 8]), n_per_class)])
y = np.concatenate([np.zeros(n_per_class), np.ones(n_per_class)]).reshape(-1, 1)
perm = np.random.permutation(len(X))
X, y = X[perm], y[perm]
n_test = len(X) // 4
X_test, y_test = X[:n_test], y[:n_test]
X_train, y_train = X[n_test:], y[n_test:]

epochs = 35
learning_rate = 0.05
batch_sizes = [2 ** k for k in range(11)] + [len(X_train)]
A0 = np.random.randn(2, 1) * 0.01

results = []
for batch_size in batch_sizes:
    x_node = Input()
    y_node = Input()
    A = Parameter(A0.copy())
    b = Parameter(np.zeros(1))
    prob = Sigmoid(Linear(x_node, A, b))
    loss = BCE(y_node, prob)
    graph = topological_sort(loss)
    trainable = [A, b]

    start = time.time()
    for epoch in range(epochs):
        total = 0.0
        # the last batch may be empty: it adds nothing to the loss and nothing to the parameters
        for i in range(len(X_train) // batch_size + 1):
            x_node.value = X_train[i * batch_size:(i + 1) * batch_size]
            y_node.value = y_train[i * batch_size:(i + 1) * batch_size]
            forward_pass(graph)
            backward_pass(graph)
            sgd_update(trainable, learning_rate)
            total += loss.value
    elapsed = time.time() - start

    x_node.value = X_test
    forward_pass(graph[:-1] if graph[-1] is loss else graph)
    accuracy = np.mean((prob.value > 0.5) == y_test)
    train_loss = total / len(X_train)
    results.append((batch_size, elapsed, train_loss, accuracy))
    print(f"batch {batch_size:5d} loss {train_loss:.15g} accuracy {accuracy:.4f} "
          f"A {A.value[0, 0]:.15g} {A.value[1, 0]:.15g} b {b.value[0]:.15g}")
    print(f"  time {elapsed:.3f} s")

fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
sizes = [r[0] for r in results]
for ax, column, title in zip(axes, (1, 2, 3), ("training time (s)", "final loss", "test accuracy")):
    ax.plot(sizes, [r[column] for r in results], marker="o")
    ax.set_xscale("log", base=2)
    ax.set_title(title)
out_dir = tempfile.mkdtemp()
fig.savefig(os.path.join(out_dir, "batch_study.png"))
plt.close(fig)
print("best batch size", max(results, key=lambda r: r[3])[0])
