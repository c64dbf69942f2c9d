"""JIT policy, in one place: every fastedf kernel is compiled with these flags.

Environment overrides (read once, at import):
  FASTEDF_CACHE=0        do not write Numba's on-disk cache (default: cache)
  FASTEDF_FASTMATH=1     allow reassociation and contraction (default: off, so
                         results do not depend on how LLVM orders sums);
                         nnan/ninf are never set, NaN checks must keep working
  FASTEDF_BOUNDSCHECK=1  bounds-check every array access (slow; for debugging)
"""
import os

from numba import njit

_SAFE_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


def env_flag(name, default):
    """True/False from an environment variable such as FASTEDF_CACHE=0."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() not in ("0", "false", "no", "off")


CACHE = env_flag("FASTEDF_CACHE", True)
FASTMATH = _SAFE_FASTMATH if env_flag("FASTEDF_FASTMATH", False) else False
BOUNDSCHECK = env_flag("FASTEDF_BOUNDSCHECK", False)


def kernel(func):
    """Compile `func` as a serial fastedf kernel with the project's JIT flags.

    Kernels are called, not inlined, by the compiled training programs: each is
    compiled once per signature and cached, so a program's own compile time
    grows with its number of calls, not with the size of the kernels it calls.
    """
    return njit(cache=CACHE, fastmath=FASTMATH, boundscheck=BOUNDSCHECK, nogil=True)(func)


def program(func):
    """Compile a generated training program (fastedf.compiler).

    With Numba's runtime (NRT) on, as the kernels it calls need it for BLAS
    (np.dot with an out argument); a program still allocates nothing per step.
    """
    return njit(cache=CACHE, fastmath=FASTMATH, boundscheck=BOUNDSCHECK, nogil=True)(func)
