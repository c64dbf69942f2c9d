"""fastedf: a Numba-accelerated, drop-in core for the EDF teaching autodiff framework.

`from fastedf import *` gives the EDF names; fastedf.fit trains a graph in one
compiled call.
"""
from .graph import backward_pass, forward_pass, sgd_update, topological_sort
from .trainer import History, fit
from .node import Input, Node, Parameter
from .ops import BCE, Addition, Linear, Multiply, Sigmoid

__version__ = "0.1.0"

__all__ = ["Node", "Input", "Parameter", "Multiply", "Addition", "Linear", "Sigmoid", "BCE",
           "topological_sort", "forward_pass", "backward_pass", "sgd_update"]
