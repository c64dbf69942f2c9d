"""fastedf: a Numba-accelerated, drop-in core for the EDF teaching autodiff framework.

`from fastedf import *` gives the EDF names, the course's later nodes and
their other spellings, and `np` (the course module hands it over too);
fastedf.fit trains a graph in one compiled call.
"""
import numpy as np

from .graph import backward_pass, forward_pass, sgd_update, topological_sort
from .node import Input, Node, Parameter
from .ops import ALIASES, NODES
from .trainer import History, fit

globals().update(NODES)
globals().update(ALIASES)

__version__ = "0.2.0"  # the one place the version is written (setup.cfg reads it)

__all__ = ["np", "Node", "Input", "Parameter", *NODES, *ALIASES, "topological_sort", "forward_pass", "backward_pass",
           "sgd_update"]
