import numpy as np


class Node:
    """A graph node: value computed by forward(), gradients w.r.t. its inputs by backward()."""

    def __init__(self, *parents):
        self.inputs = list(parents)
        self.outputs = []
        self.value = None
        self.gradients = {}
        for p in parents:
            p.outputs.append(self)

    def incoming_gradient(self):
        grads = [child.gradients[self] for child in self.outputs]
        total = grads[0]
        for g in grads[1:]:
            total = total + g
        return total

    def forward(self):
        raise NotImplementedError(type(self).__name__)

    def backward(self):
        raise NotImplementedError(type(self).__name__)


class Input(Node):
    def forward(self, value=None):
        if value is not None:
            self.value = np.asarray(value, dtype=float)

    def backward(self):
        self.gradients[self] = self.incoming_gradient()


class Parameter(Node):
    def __init__(self, value):
        super().__init__()
        self.value = np.asarray(value, dtype=float)

    def forward(self):
        pass

    def backward(self):
        self.gradients[self] = self.incoming_gradient()


def topological_sort(*outputs):
    order, state = [], {}
    for out in outputs:
        stack = [out]
        while stack:
            node = stack[-1]
            if state.get(node) is None:
                state[node] = "open"
                stack.extend(p for p in node.inputs if state.get(p) is None)
            else:
                stack.pop()
                if state[node] == "open":
                    state[node] = "done"
                    order.append(node)
    return order
