"""Every kernel again, compiled to be inlined into the programs of small graphs (fastedf.compiler).

Same source, another compile flag (fastedf.config.inlined): a program of a few
operations with its kernels inlined runs the study's steps faster than one
that calls them (159 -> 108 ns per sample at batch size 1, 93 -> 65 at 2:
`benchmarks/bench_fit.py` against `--max-inlined 0`) for ~0.3 s more cold compile
(`bench_compile.py --layers 0`, 2.9 -> 3.2 s); deep graphs call the kernels
instead, so their compile time stays linear in depth.  The kernels a program
runs once per epoch are called by address (fastedf.compiler.PER_EPOCH).
"""
from . import kernels
from .calls import kernels_of
from .compiler import PER_EPOCH
from .config import inlined
from .ops import MODULES

__all__ = []
for _name, _kernel in kernels_of((kernels, *MODULES), exclude=PER_EPOCH).items():
    globals()[_name] = inlined(_kernel)
    __all__.append(_name)
