"""LeNet-ish on the 8x8 digits with channels-first conv layers that make their own kernels."""
import numpy as np
from sklearn.datasets import load_digits

from cnn_edf import Conv, CrossEntropy, Flatten, Input, Linear, MaxPooling, Parameter, ReLU, Softmax

np.random.seed(5)
X, t = load_digits(return_X_y=True)
X = X.reshape(-1, 1, 8, 8) / 16.0
T = np.zeros((len(t), 10))
T[np.arange(len(t)), t] = 1
X_train, T_train = X[:400], T[:400]
X_test, T_test = X[1500:1700], T[1500:1700]

x = Input()
y = Input()
conv1 = Conv(x, 1, 4, 3, stride=1, padding=1)        # 4 x 8 x 8
pool1 = MaxPooling(ReLU(conv1), pool_size=2)        # 4 x 4 x 4
conv2 = Conv(pool1, 4, 8, 3, stride=1, padding=1)   # 8 x 4 x 4
pool2 = MaxPooling(ReLU(conv2), pool_size=2)        # 8 x 2 x 2
flat = Flatten(pool2)
A = Parameter(np.random.randn(32, 10) * 0.2)
b = Parameter(np.zeros(10))
probs = Softmax(Linear(flat, A, b))
loss = CrossEntropy(y, probs)

graph = [x, y, conv1.kernels, conv1.bias, conv1, conv1.outputs[0], pool1, conv2.kernels, conv2.bias, conv2,
         conv2.outputs[0], pool2, flat, A, b, probs.inputs[0], probs, loss]
params = [conv1.kernels, conv1.bias, conv2.kernels, conv2.bias, A, b]

lr = 0.2
for epoch in range(1, 21):
    tot = 0
    for i in range(0, 400, 20):
        x.value = X_train[i:i + 20]
        y.value = T_train[i:i + 20]
        for node in graph:
            node.forward()
        for node in graph[::-1]:
            node.backward()
        for p in params:
            p.value = p.value - lr * p.gradients[p]
        tot += loss.value
    if epoch % 4 == 0:
        print(f"[{epoch}] loss {tot / 20:.15g}")

x.value = X_test
for node in graph[:-1]:
    node.forward()
print("test acc", np.mean(np.argmax(probs.value, axis=1) == t[1500:1700]))
print("conv1 kernel 0:", " ".join(f"{v:.15g}" for v in conv1.kernels.value[0, 0].ravel()))
print("conv2 bias:", " ".join(f"{v:.15g}" for v in conv2.bias.value))
