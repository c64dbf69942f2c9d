"""fastedf: a Numba-accelerated, drop-in core for the EDF teaching autodiff framework.

`from fastedf import *` gives the EDF names, the course's later nodes and
their other spellings, `np` and `plt` (the course modules hand them over too;
matplotlib is imported at plt's first use);
fastedf.fit trains a graph in one compiled call.

The names are loaded at their first use (PEP 562), so that `python -m fastedf
run SCRIPT.py` starts the script without fastedf's nodes, which the script's
own EDF module replaces.
"""
__version__ = "0.2.0"  # the one place the version is written (setup.cfg reads it)

from . import bytecode as _bytecode

_bytecode.keep(__path__[0])


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


def _load():
    import numpy as np

    from .graph import backward_pass, forward_pass, sgd_update, topological_sort
    from .node import Input, Node, Parameter
    from .ops import ALIASES, NODES
    names = dict(np=np, backward_pass=backward_pass, forward_pass=forward_pass, sgd_update=sgd_update,
                 topological_sort=topological_sort, Input=Input, Node=Node, Parameter=Parameter, NODES=NODES,
                 ALIASES=ALIASES, **NODES, **ALIASES)
    names["__all__"] = ["np", "plt", "Node", "Input", "Parameter", *NODES, *ALIASES, "topological_sort",
                        "forward_pass", "backward_pass", "sgd_update"]
    globals().update(names)


def __getattr__(name):
    if name.startswith("__") and name != "__all__":
        raise AttributeError(f"module 'fastedf' has no attribute {name!r}")
    import os
    here = __path__[0]
    if os.path.isfile(os.path.join(here, name + ".py")) or os.path.isdir(os.path.join(here, name)):
        import importlib  # a submodule (`from . import kernels` inside fastedf comes here): itself, nothing more
        return importlib.import_module(f"{__name__}.{name}")
    if name in ("fit", "History"):  # the trainer's module, at its first use: course loops never need it
        from . import trainer
        globals().update(fit=trainer.fit, History=trainer.History)
    if "__all__" not in globals():
        _load()
    try:
        return globals()[name]
    except KeyError:
        raise AttributeError(f"module 'fastedf' has no attribute {name!r}") from None


def __dir__():
    if "__all__" not in globals():
        _load()
    return sorted(set(globals()) | {"fit", "History"})
