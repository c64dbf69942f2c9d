"""The script's and its own modules' compiled code, kept in fastedf's cache directory between runs.

Python never keeps a script's bytecode, and under PYTHONDONTWRITEBYTECODE
not its modules' either: each run compiles the script and its EDF module
again, 0.4-1 ms each for the course's files (a 200-line EDF module 0.9 ms),
about what `fastedf run` adds to a short script's start.  So the runner keeps
the code it compiles for them under the cache directory, never beside the
user's files, each entry valid for the one source file (its path, its
modification time to the nanosecond, its size and its checksum) and this
Python's bytecode.
A stale, damaged or unwritable entry costs a compile, never a wrong code
object.  FASTEDF_CACHE=0 keeps nothing.
"""
import importlib.machinery
import importlib.util
import io
import marshal
import os
import sys
import zlib

from ..cachedir import cache_dir, write_atomic
from ..env import env_flag

FOLDER = "bytecode"


def code_of(path):
    """The code object of the Python source file at `path` (absolute), as `compile` gives it."""
    with io.open_code(path) as source_file:  # as python opens a script (audit hooks see it)
        source = source_file.read()
        stats = os.fstat(source_file.fileno())
    entry = _entry(path)
    # the source's checksum too: an edit that keeps the size and the modification time (a copy that keeps
    # times, a clock of coarse resolution) is not served the old code; the source is read anyway (~1 us)
    header = (importlib.util.MAGIC_NUMBER
              + f"{stats.st_mtime_ns} {stats.st_size} {zlib.crc32(source):08x} ".encode() + os.fsencode(path) + b"\0")
    if entry is not None:
        try:
            with open(entry, "rb") as kept:
                data = kept.read()
            if data.startswith(header):
                return marshal.loads(data[len(header):])
        except (OSError, ValueError, EOFError, TypeError):  # none yet, or damaged: compiled again below
            pass
    code = compile(source, path, "exec", dont_inherit=True)
    if entry is not None:
        try:
            write_atomic(entry, header + marshal.dumps(code))
        except OSError:  # a read-only or full cache: compiling it again is all that costs
            pass
    return code


def _entry(path):
    """Where the code of `path` is kept; None when nothing is kept."""
    if not env_flag("FASTEDF_CACHE", True):
        return None
    folder = cache_dir()
    if folder is None:
        return None
    name = os.path.basename(path)
    return os.path.join(folder, FOLDER, f"{name}-{zlib.crc32(os.fsencode(path)):08x}.{sys.implementation.cache_tag}")


class _Loader(importlib.machinery.SourceFileLoader):
    """Python's source loader, its code from code_of."""

    def get_code(self, fullname):
        return code_of(self.get_filename(fullname))


def keep_modules_of(folder):
    """Modules imported from `folder` (the script's directory) and its packages' directories get their code
    from code_of, where Python would not keep it."""
    if not sys.dont_write_bytecode or not env_flag("FASTEDF_CACHE", True):
        return
    details = [(importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES),  # Python's order
               (_Loader, importlib.machinery.SOURCE_SUFFIXES),
               (importlib.machinery.SourcelessFileLoader, importlib.machinery.BYTECODE_SUFFIXES)]
    try:
        dirs = [folder] + [entry.path for entry in os.scandir(folder)
                           if entry.is_dir() and os.path.isfile(os.path.join(entry.path, "__init__.py"))]
    except OSError:
        return
    for path in dirs:
        sys.path_importer_cache[path] = importlib.machinery.FileFinder(path, *details)
