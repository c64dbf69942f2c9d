"""The operations, one module per family: each node class beside its Numba kernels and its compile rule.

A node that compiles has a `lower(low)` method (fastedf.compiler); MODULES
are the modules whose kernels the generated programs import.  ALIASES are
the names course scripts use for the same nodes.
"""
from . import activations, conv, elementwise, linear, losses
from .activations import ReLU, Sigmoid, Softmax, Tanh
from .conv import Conv, Flatten, MaxPooling
from .elementwise import Addition, Multiply
from .linear import Linear
from .losses import BCE, CE

MODULES = (elementwise, linear, activations, losses, conv)

__all__ = ["Multiply", "Addition", "Linear", "Sigmoid", "Tanh", "ReLU", "Softmax", "BCE", "CE", "Conv", "MaxPooling",
           "Flatten", "MODULES", "ALIASES"]

ALIASES = {
    "SoftMax": Softmax, "CrossEntropy": CE, "Cross_Entropy": CE, "CrossEntropyLoss": CE,
    "ReLu": ReLU, "Relu": ReLU, "TanH": Tanh,
    "Convolution": Conv, "Conv2D": Conv, "MaxPool": MaxPooling, "MaxPool2D": MaxPooling, "MaxPooling2D": MaxPooling,
    "Flattener": Flatten, "Flatten2D": Flatten,
}
