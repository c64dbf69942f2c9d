"""fastedf's modules keep their compiled bytecode even where PYTHONDONTWRITEBYTECODE is set.

Under that setting Python reads bytecode files but never writes them, so an
editable install compiles every fastedf module from source in every process:
`import numpy; from fastedf import *` took 0.133 s against 0.088 s with the
bytecode kept (best of 7 fresh processes, by hand), longer than a short course
script's whole training.  So
fastedf's package directories get a finder whose loader writes the bytecode of
fastedf's own modules, into their own __pycache__ (or sys.pycache_prefix), as
Numba writes its cache there whatever that setting says.  Nothing else is
written; FASTEDF_CACHE=0 writes nothing.
"""
import importlib.machinery
import importlib.util
import marshal
import os
import sys

from .cachedir import write_atomic
from .env import env_flag

_BEFORE = ("__init__.py", "bytecode.py", "cachedir.py", "env.py")  # the modules that run before keep()


class _Loader(importlib.machinery.SourceFileLoader):
    """Python's source loader, writing the bytecode it compiles (in the format of PEP 552, by timestamp)."""

    def source_to_code(self, data, path, *, _optimize=-1):
        code = super().source_to_code(data, path, _optimize=_optimize)
        if sys.dont_write_bytecode:
            try:
                self._keep(code, path)
            except (OSError, ValueError):  # read-only tree, no such prefix: compiling each time is all it costs
                pass
        return code

    def _keep(self, code, path):
        stats = self.path_stats(path)
        header = importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little")
        header += (int(stats["mtime"]) & 0xFFFFFFFF).to_bytes(4, "little")
        header += (int(stats["size"]) & 0xFFFFFFFF).to_bytes(4, "little")
        write_atomic(importlib.util.cache_from_source(path), header + marshal.dumps(code))


def keep(package_dir):
    """Give `package_dir` and its subpackages' directories the writing finder, when Python would not write."""
    if not sys.dont_write_bytecode or not env_flag("FASTEDF_CACHE", True):
        return
    details = [(_Loader, importlib.machinery.SOURCE_SUFFIXES),
               (importlib.machinery.SourcelessFileLoader, importlib.machinery.BYTECODE_SUFFIXES)]
    dirs = [package_dir] + [entry.path for entry in os.scandir(package_dir)
                            if entry.is_dir() and os.path.isfile(os.path.join(entry.path, "__init__.py"))]
    for path in dirs:
        sys.path_importer_cache[path] = importlib.machinery.FileFinder(path, *details)
    for name in _BEFORE:  # loaded before the finder existed: their bytecode is written here, when stale
        source = os.path.join(package_dir, name)
        loader = _Loader("fastedf", source)
        try:
            if os.stat(importlib.util.cache_from_source(source)).st_mtime >= os.stat(source).st_mtime:
                continue
        except (OSError, ValueError):
            pass
        try:
            loader.source_to_code(loader.get_data(source), source)
        except OSError:
            pass
