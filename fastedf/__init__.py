"""fastedf: a Numba-accelerated, drop-in core for the EDF teaching autodiff framework.

`from fastedf import *` gives the EDF names, the course's later nodes and
their other spellings, `np` and `plt` (the course modules hand them over too;
matplotlib is imported at plt's first use);
fastedf.fit trains a graph in one compiled call.
"""
import numpy as np

from .graph import backward_pass, forward_pass, sgd_update, topological_sort
from .node import Input, Node, Parameter
from .ops import ALIASES, NODES
from .trainer import History, fit

globals().update(NODES)
globals().update(ALIASES)


class _Pyplot:
    """matplotlib.pyplot, imported at the first attribute read: the course's module hands scripts `plt`
    through its star import, and importing matplotlib for it would slow every `import fastedf`."""

    def __getattr__(self, name):
        import matplotlib.pyplot
        return getattr(matplotlib.pyplot, name)

    def __dir__(self):
        import matplotlib.pyplot
        return dir(matplotlib.pyplot)

    def __repr__(self):
        return "<matplotlib.pyplot, imported at first use>"


plt = _Pyplot()

__version__ = "0.2.0"  # the one place the version is written (setup.cfg reads it)

__all__ = ["np", "plt", "Node", "Input", "Parameter", *NODES, *ALIASES, "topological_sort", "forward_pass",
           "backward_pass", "sgd_update"]
