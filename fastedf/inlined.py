"""Every kernel again, compiled to be inlined into the programs of small graphs (fastedf.compiler).

Same source, another compile flag (fastedf.config.inlined): a program of a few
operations with its kernels inlined runs the study's steps faster than one
that calls them (130 -> 118 ns per sample at batch size 1, 75 -> 49 at 2:
benchmarks/bench_fit.py, docs/benchmarks.md) for 0.3 s more cold compile; deep graphs
call the kernels instead, so their compile time stays linear in depth.
"""
from numba.core.registry import CPUDispatcher

from . import kernels
from .config import inlined
from .ops import MODULES

__all__ = []
for _module in (kernels, *MODULES):
    for _name, _kernel in list(vars(_module).items()):
        if isinstance(_kernel, CPUDispatcher) and _kernel.py_func.__module__ == _module.__name__:
            globals()[_name] = inlined(_kernel)
            __all__.append(_name)
