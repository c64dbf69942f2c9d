"""The operations, one module per family: each node class beside its kernels and its compile rule.

RULES maps a node class to the rule that writes its step in a compiled
program (fastedf.compiler); MODULES are the modules whose kernels those
programs call.
"""
from . import activations, elementwise, linear, losses
from .activations import Sigmoid, _sigmoid
from .elementwise import Addition, Multiply, _broadcasting
from .linear import Linear, _linear
from .losses import BCE, _bce

MODULES = (elementwise, linear, activations, losses)

RULES = {
    Linear: _linear,
    Sigmoid: _sigmoid,
    BCE: _bce,
    Multiply: _broadcasting(multiply=True),
    Addition: _broadcasting(multiply=False),
}
