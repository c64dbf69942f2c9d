"""A fused course-loop step run as Python over the kernels' NumPy twins, for a process without Numba.

fastedf.fused lowers a graph to one step program: kernel calls over views of
one arena.  Numba compiles it only once the loop has repaid loading Numba and
the program (fastedf.fused.Plan), a fifth of a second at best, which most
course scripts never reach.  Until then the same lines run as Python, each
kernel replaced by its NumPy twin (fastedf.config.numpy_twin), so the loop is
fused within its first milliseconds and its node calls only say where it
stands: 1.3x-2.2x the NumPy EDF per update on the course graphs, where node by
node on the twins is 1.03x-1.7x (benchmarks/bench_course_loop.py --numpy-tier).

The arena, its table and the calls are the compiled program's, so a plan moves
to the compiled step between two steps with every buffer where it is, and the
numbers are the twins', which the node-by-node path calls too.  What differs
from the compiled step: the views of the arena are made once per arena and
row count, not at every call (each costs about what a small twin does), and
the step runs under one np.errstate instead of one per twin.
"""
import importlib.util
import marshal
import os
import re
import sys
import types
import zlib

import numpy as np

from . import config
from .cachedir import cache_dir, write_atomic
from .env import env_flag

FOLDER = "numpy_steps"  # in the cache directory
MOST_BATCHES = 64  # row counts whose views a step keeps

TEMPLATE = '''\
def bind(arena, iarena, table):
{stored}
    batches = {{}}

    def step({args}, arena, iarena, table, backward):
{body}
    return np.errstate(all="ignore")(step)
'''

_CALLED = re.compile(r"(?<![\w.])([A-Za-z_]\w*)\(")
_BUILTINS = {"max": max, "min": min, "range": range, "int": int, "float": float, "len": len}


def view1(arena, table, i):
    return arena[table[i]:table[i + 1]]


def view2(arena, table, i):
    return arena[table[i]:table[i + 1]].reshape((table[i + 2], table[i + 3]))


def view4(arena, table, i):
    return arena[table[i]:table[i + 1]].reshape((table[i + 2], table[i + 3], table[i + 4], table[i + 5]))


def batch_views(sliced):
    """The lines that give a step its views of this batch's rows (`sliced`: the compiled step's "name = expression"
    lines), made once per row count and kept in the `batches` of its bind()."""
    if not sliced:
        return []
    names = "".join(line.split(" = ", 1)[0] + ", " for line in sliced)
    expressions = "".join(line.split(" = ", 1)[1] + ", " for line in sliced)
    return ["views = batches.get(n)", "if views is None:",
            f"    if len(batches) >= {MOST_BATCHES}:  # a script whose batches keep changing size: views are cheap",
            "        batches.clear()", f"    views = batches[n] = ({expressions})", f"{names}= views"]


def source(args, stored, body):
    """The Python step's source: `stored`, the lines of the arena's views, run once per arena by bind(); `body`,
    the step's body (fastedf.fused._body), with batch_views in its prologue."""
    return TEMPLATE.format(stored="\n".join("    " + line for line in stored) or "    pass", args=args, body=body)


def binder(text):
    """(bind, None) for a step source made by `source`, or (None, why): a call with no NumPy twin.

    bind(arena, iarena, table) gives the step over that arena, called as the compiled step is.
    """
    namespace = {"np": np, "view1": view1, "view2": view2, "view4": view4, **_BUILTINS}
    namespace.update((kernel.__name__, twin.__wrapped__) for kernel, twin in config.twins.items())
    missing = sorted({name for name in _CALLED.findall(text) if name not in namespace} - {"bind", "step"})
    if missing:
        return None, f"no NumPy twin for {', '.join(missing)}"
    exec(_code(text), namespace)
    return namespace["bind"], None


def _code(text):
    """The code of a step's source, kept in the cache directory between processes: compiling one took 0.5-1 ms,
    a third of what fusing a short loop costs, and loading it 0.1 ms.  The entry holds the source it was
    compiled from and is used only for that source and this Python's bytecode."""
    header = importlib.util.MAGIC_NUMBER + text.encode() + b"\0"
    folder = cache_dir() if env_flag("FASTEDF_CACHE", True) else None
    entry = folder and os.path.join(folder, FOLDER, f"{zlib.crc32(header):08x}.{sys.implementation.cache_tag}")
    if entry:
        try:
            with open(entry, "rb") as kept:
                data = kept.read()
            code = marshal.loads(data[len(header):]) if data.startswith(header) else None
            if isinstance(code, types.CodeType):  # a damaged payload may load as another object
                return code
        except (OSError, ValueError, EOFError, TypeError):  # none yet, or damaged: compiled again below
            pass
    code = compile(text, "<fastedf NumPy step>", "exec", dont_inherit=True)
    if entry:
        try:
            write_atomic(entry, header + marshal.dumps(code))
        except OSError:  # a read-only or full cache: compiling it again is all that costs
            pass
    return code
