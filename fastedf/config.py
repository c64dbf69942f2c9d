"""JIT policy, in one place: every fastedf kernel is compiled with these flags.

Environment overrides (read once, at import):
  FASTEDF_CACHE=0        do not write Numba's on-disk cache (default: cache)
  FASTEDF_FASTMATH=1     allow reassociation and contraction (default: off, so
                         results do not depend on how LLVM orders sums);
                         nnan/ninf are never set, NaN checks must keep working;
                         reassociation undoes fastedf.vexp's exact range
                         reduction: exp and sigmoid then err by up to ~100 ulp
  FASTEDF_BOUNDSCHECK=1  bounds-check every array access (slow; for debugging)
  FASTEDF_BLAS_THREADS=n threads of the BLAS that the kernels call (default 1: the
                         course's matmuls are small; a two-thread BLAS with the other
                         core busy was seen to run a digits MLP fit 50x slower, see
                         docs/benchmarks.md, section 1, for how to compare)

Numba is imported on first use, not with fastedf: the decorators below
return Lazy stand-ins, and the first call of any of them (or Numba typing
code that calls one) imports Numba, makes every registered kernel, helper
and intrinsic real, and points fastedf's modules and node classes at the
real objects (activate), so the node path calls Numba's dispatchers
directly from then on.  Importing Numba took 0.2 s of `import fastedf`'s 0.3.

The NumPy tier: a kernel may have a NumPy twin (numpy_twin), written beside
it, same arguments, same writes into `out`, same numbers to ~1e-15 relative.
Before activation a Lazy kernel with a twin runs the twin, so a short script
never pays for loading Numba; fastedf activates once the process has spent
NUMPY_TIER_SECONDS in calls of twins (ski rental: by then the loop has taken
what the switch costs, and a loop that long is likely to run as long again).
Kernels without a twin, fit, compiled programs and Numba typing a Lazy
activate as before.  The fused course loop first runs as the NumPy step
(fastedf.numpy_step), whose loop time this clock does not count: the step's
plan weighs switching to the compiled step itself (fastedf.fused).
  FASTEDF_NUMPY_TIER_SECONDS=s  seconds of twin calls before Numba loads
                                (default NUMBA_LOAD_SECONDS); 0: Numba from the
                                first kernel call; a large value: stay in NumPy
"""
import os
import sys
import threading
import time
import warnings

import numpy as np

from .env import env_flag, env_seconds, env_threads

_SAFE_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


CACHE = env_flag("FASTEDF_CACHE", True)
FASTMATH = _SAFE_FASTMATH if env_flag("FASTEDF_FASTMATH", False) else False
BOUNDSCHECK = env_flag("FASTEDF_BOUNDSCHECK", False)


BLAS_THREADS = env_threads("FASTEDF_BLAS_THREADS", 1)

# What loading Numba costs a process whose kernels are in Numba's cache: `import numba` ~0.095 s, activate()
# ~0.008 s, the first kernel's load ~0.04 s (NRT's initialisation 17 ms, the first typeof 11 ms) and ~3 ms for
# each further one.  Each course script of tests/course_scripts took 0.18-0.25 s more CPU with Numba from the
# first call than on the twins throughout (FASTEDF_NUMPY_TIER_SECONDS=0 and 1e9, fresh processes, warm caches,
# best of 4 on a shared 2-core machine).  Ski rental, as fastedf.fused's Watch: a process that has spent this
# long in twins' loops switches, so a loop that stops right after pays at most twice what was best for it.
NUMBA_LOAD_SECONDS = 0.2


NUMPY_TIER_SECONDS = env_seconds("FASTEDF_NUMPY_TIER_SECONDS", NUMBA_LOAD_SECONDS)

_blas_pinned = _blas_wanted = False


def pin_blas_threads():
    """Limit the BLAS that Numba's np.dot calls (SciPy's) to BLAS_THREADS threads, once per process.

    Only SciPy's library: the caller's NumPy keeps its own thread count.
    """
    global _blas_pinned, _blas_wanted
    if _blas_pinned:
        return
    if _twins:  # the twins' products run in NumPy's BLAS: SciPy's is pinned when Numba loads (activate)
        _blas_wanted = True
        return
    _blas_pinned = True
    _import_blas()
    from threadpoolctl import ThreadpoolController
    for lib in ThreadpoolController().lib_controllers:
        if "scipy" in os.path.basename(os.path.dirname(lib.filepath)):  # .../scipy.libs/libscipy_openblas*.so
            lib.set_num_threads(BLAS_THREADS)


def _import_blas(name="scipy.linalg.cython_blas"):
    """Import the module whose BLAS functions Numba's np.dot calls, without running scipy.linalg's __init__.

    `import scipy.linalg.cython_blas` imports the whole of scipy.linalg first
    (0.19 s of CPU here, against 0.07 s with `import scipy`, which Numba
    makes anyway); Numba finds the module by its name in sys.modules, so
    the extension is loaded from its file under that name.  A later
    `import scipy.linalg` imports the package as usual.
    """
    if name in sys.modules:
        return
    import importlib.machinery
    import importlib.util

    import scipy
    folder = os.path.join(os.path.dirname(scipy.__file__), "linalg")
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(folder, "cython_blas" + suffix)
        if os.path.exists(path):
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
                return
            except Exception:  # another SciPy: import it the usual way
                del sys.modules[name]
            break
    importlib.import_module(name)


# Every kernel, helper and program is compiled with these flags.  NumPy's error model: a float division by zero
# gives inf or NaN instead of raising ZeroDivisionError, because Python's check is a branch in every loop that
# divides, and it stops LLVM from vectorising it (the study at B = 32 ran 1.80x a fused loop with the check,
# 1.30x without it: benchmarks/bench_fit.py).  No division in fastedf's
# kernels can be by zero: rows and batch sizes are at least 1 (max(n, 1) where a batch may be empty), predictions
# are clipped before they divide, and 1 + exp(.) >= 1.
# No C wrapper (no_cfunc_wrapper): it serves Numba's first-class function calls, which fastedf never makes, and
# costs cold compile time for every function.
FLAGS = dict(fastmath=FASTMATH, boundscheck=BOUNDSCHECK, nogil=True, error_model="numpy", no_cfunc_wrapper=True)


def _compiled(func, flags=FLAGS):
    """`func` compiled with `flags`, cached on disk, its cache entries healed (kernel, helper and program differ
    only in what they are for); compiled in memory when Numba finds nowhere to write its cache."""
    from numba import njit
    if CACHE:
        try:
            return self_healing(_loading_light(njit(cache=True, **flags)(func)))
        except RuntimeError as error:  # Numba's "cannot cache function ...: no locator available"
            if "no locator available" not in str(error):
                raise
            _warn_no_cache(func)
    return njit(cache=False, **flags)(func)


_warned_no_cache = False


def _warn_no_cache(func):
    global _warned_no_cache
    if not _warned_no_cache:
        _warned_no_cache = True
        warnings.warn(f"fastedf: no writable directory for Numba's cache of {func.__module__}; compiling in memory, "
                      "so every process compiles again. To cache, set NUMBA_CACHE_DIR (kernels) and "
                      "FASTEDF_CACHE_DIR (generated programs) to a writable directory; FASTEDF_CACHE=0 compiles "
                      "in memory without this warning (warned once)", RuntimeWarning, stacklevel=4)


def _loading_light(dispatcher):
    """The dispatcher, loading its cache entries without refreshing Numba's target context first.

    Numba's Cache.load_overload refreshes the context before every load: the
    first refresh imports every lowering registry (some 40 modules, SciPy's
    linalg among them, through numba.np.arraymath), which a process whose
    kernels all come from the cache never uses: a warm process's first step
    took 0.39 s of CPU, 0.19 s without it (one run each, numba import
    included).  Loading machine code needs only Numba's runtime, initialised
    here as refresh would; a compile refreshes the context itself.
    """
    cache = getattr(dispatcher, "_cache", None)
    if cache is None or not hasattr(cache, "_load_overload") or not hasattr(cache, "_guard_against_spurious_io_errors"):
        return dispatcher  # another Numba: its own load_overload

    def load_overload(signature, target_context):
        from numba.core.runtime import rtsys
        rtsys.initialize(target_context)
        with cache._guard_against_spurious_io_errors():
            return cache._load_overload(signature, target_context)
        return None  # the guard swallowed an I/O error: compile
    cache.load_overload = load_overload
    return dispatcher


# Every loop clock (the NumPy tier's here, the fused loops' Watches) counts the time between successive calls; a
# gap longer than LOOP_GAP is not the loop's (a pause, a plot, input(), a step whose own Python dominates).
LOOP_GAP = 0.05
# The NumPy tier's clock: seconds spent in loops of twin calls, and when the last call came.
_tier_spent = 0.0
_tier_last = _tier_owned = -1.0


class Lazy:
    """A kernel, helper or intrinsic before Numba is imported; calling it, or Numba asking for its type (a
    jitted function outside fastedf that calls it), activates them all and uses the real one.  A kernel with a
    NumPy twin runs the twin instead until the NumPy tier has run NUMPY_TIER_SECONDS."""

    __slots__ = ("py_func", "make", "real", "twin")

    def __init__(self, func, make):
        self.py_func, self.make, self.real, self.twin = func, make, None, None

    def __call__(self, *args, **kwargs):
        if self.twin is not None and _twins:  # one clock read per call: the compiled path never comes here
            global _tier_spent, _tier_last
            now = time.perf_counter()
            if now - _tier_last < LOOP_GAP and now - _tier_owned >= LOOP_GAP:
                _tier_spent += now - _tier_last
            _tier_last = now
            if _tier_spent < NUMPY_TIER_SECONDS:
                return self.twin(*args, **kwargs)
            activate()
        return _real(self)(*args, **kwargs)

    def __getattr__(self, name):  # a dispatcher's attributes (overloads, signatures, ...)
        if name.startswith("__"):  # what staticmethod(), copy and pickle probe for: not a reason to activate
            raise AttributeError(name)
        return getattr(_real(self), name)

    @property
    def _numba_type_(self):  # how Numba types an object it does not know (numba.typeof)
        from numba.core.registry import cpu_target
        context = cpu_target.typing_context
        context.refresh()  # registers intrinsics made since it last looked
        return context.resolve_value_type(_real(self))

    def __repr__(self):
        return f"<fastedf.config.Lazy {self.py_func.__module__}.{self.py_func.__qualname__}>"


_lazy = []  # every Lazy made before activation, in definition order
_activation = threading.RLock()
_active = False
_twins = NUMPY_TIER_SECONDS > 0  # twins run: Numba not loaded, and the tier not switched off
twins = {}  # {kernel's Python function: its NumPy twin}, every twin registered (numpy_twin)


def numpy_twin(kernel_):
    """Register the decorated function as `kernel_`'s NumPy twin, run in its place before Numba is loaded.

    The twin takes the kernel's arguments, writes what it writes and returns
    what it returns, with NumPy's vectorised calls instead of loops: the math
    the kernel's docstring states, to ~1e-15 relative (tests/test_numpy_tier.py).
    It runs under np.errstate(all="ignore"): an overflow, inf * 0 or inf - inf
    gives the kernel's inf or NaN without NumPy's RuntimeWarning.
    """
    def register(func):
        func = np.errstate(all="ignore")(func)  # silent on inf and NaN, as the kernels are (0.4 us a call)
        twins[kernel_.py_func] = func
        if type(kernel_) is Lazy:
            kernel_.twin = func
        return func
    return register


def tier_owned(now):
    """A fused loop's NumPy step (fastedf.numpy_step) counted its loop's time at `now` (perf_counter): twin calls
    within LOOP_GAP of it, such as fastedf's sgd_update between its steps, do not add to this clock, as the step's
    plan weighs the switch to Numba for its loop itself."""
    global _tier_owned
    _tier_owned = now


def numba_switch_seconds():
    """The loop time after which loading Numba pays, 0 once it is loaded: the fused loop adds it to its own."""
    return 0.0 if _active else NUMPY_TIER_SECONDS


def _deferred(func, make):
    """make(), or a Lazy for it before activation."""
    if _active:
        return make()
    with _activation:
        if _active:
            return make()
        lazy = Lazy(func, make)
        _lazy.append(lazy)
        return lazy


def _real(lazy):
    if lazy.real is None:
        activate()
    return lazy.real


def activate():
    """Import Numba, make every Lazy real, and replace each one in fastedf's modules and classes by its real object.

    Numba resolves a jitted function's globals when it first compiles it, after
    this: kernels calling kernels and helpers link the real ones.
    """
    global _active, _twins
    if _active:
        return
    with _activation:
        if _active:
            return
        import numba  # noqa: F401  (before any make(): each imports what it needs from it)
        for lazy in _lazy:
            lazy.real = lazy.make()
        _active, _twins = True, False
        if _blas_wanted:
            pin_blas_threads()
        for name, module in list(sys.modules.items()):
            if name == "fastedf" or name.startswith("fastedf."):
                _replace_lazy(module, name)


def _replace_lazy(module, name):
    """Swap the Lazy objects among a module's globals, and among the attributes of the classes it defines, for
    their real objects (a kernel held as a staticmethod stays one)."""
    space = vars(module)
    for key, value in list(space.items()):
        if type(value) is Lazy:
            space[key] = value.real
        elif isinstance(value, type) and value.__module__ == name:
            for attr, held in list(vars(value).items()):
                if isinstance(held, staticmethod) and type(held.__func__) is Lazy:
                    setattr(value, attr, staticmethod(held.__func__.real))
                elif type(held) is Lazy:
                    setattr(value, attr, held.real)


def intrinsic(func=None, **options):
    """numba.extending.intrinsic(**options)(func), made on first use: its typing function imports what it needs
    from Numba itself."""
    if func is None:
        return lambda f: intrinsic(f, **options)

    def make():
        from numba.extending import intrinsic as numba_intrinsic
        return numba_intrinsic(**options)(func) if options else numba_intrinsic(func)
    return _deferred(func, make)


def kernel(func):
    """Compile `func` as a serial fastedf kernel with the project's JIT flags.

    Each kernel is compiled once per signature and cached; the training
    programs call it by address or have LLVM inline its compiled code
    (fastedf.calls), so Numba never types a kernel's body again for a program.
    Lazy until first use (activate).
    """
    return _deferred(func, lambda: _compiled(func))


# A helper is only ever called from compiled code: Numba need not build the wrapper that Python callers need
# (the C wrapper costs 0.4-0.9 s of a cold fit's compile: bench_compile.py --layers 0,1,8, two alternating runs
# with and without it).
_HELPER_FLAGS = dict(FLAGS, no_cpython_wrapper=True)


def helper(func):
    """Compile a tiny helper that kernels call (a size check, fastedf.vexp's exp); not callable from Python.

    Compiled once per signature and linked into its callers, where LLVM
    inlines it (it is small): the sigmoid and tanh loops still vectorise
    (bench_activations.py).  Numba's own inline="always" copied and re-typed
    the helper's IR at every call site, which cost compile time in every
    kernel (bench_compile.py --layers 2, one cold run each before and after
    this change on the AVX2 machine of docs/benchmarks.md section 2: 9.9 and
    7.6 s; runs there vary by ~25%).  Cached like a kernel, and healed like one.
    """
    return _deferred(func, lambda: _compiled(func, _HELPER_FLAGS))


def fma_helper(func):
    """A helper whose multiply-adds LLVM may fuse into FMA instructions (fastmath's "contract" flag alone).

    fastedf.vexp's exp: its polynomial is 13 multiply-adds in a chain, 26
    roundings and 26 latencies without FMA; with it the sigmoid over 32768
    elements took 2.77 ns per element instead of 3.65 on an AVX2 machine
    (bench_activations.py, one run with and one without FMA: 97.9 against
    114.8 us), still within 1 ulp of np.exp.  Only where the
    CPU has FMA; every engine calls the same helper, so they agree to the last bit.
    """
    return _deferred(func, lambda: _compiled(func, dict(_HELPER_FLAGS, fastmath=FASTMATH or {"contract"})))


def program(func):
    """Compile a generated training program (fastedf.compiler).

    With Numba's runtime (NRT) on, as the kernels it calls need it for BLAS
    (np.dot's BLAS calls, kernels.gemm); a program still allocates nothing per step.
    Its module imports fastedf's kernels: they are real by then.
    """
    activate()
    return _compiled(func)


def self_healing(dispatcher):
    """Treat the dispatcher's on-disk Numba cache as disposable: an unreadable entry is dropped and recompiled.

    A truncated or garbage index or data file would otherwise raise from
    every later call, in every process.  One warning says what happened.
    """
    cache = getattr(dispatcher, "_cache", None)
    if cache is None or not hasattr(cache, "flush"):
        return dispatcher
    for name in ("load_overload", "save_overload"):
        setattr(cache, name, _healing(getattr(cache, name), cache, dispatcher.py_func.__qualname__))
    return dispatcher


_warned_damage = False


def warn_cache_damage(message):
    """One RuntimeWarning per process for damaged caches (a generated program, Numba's entries): a damage that
    spans both still warns once; what is healed after the first is not news."""
    global _warned_damage
    if not _warned_damage:
        _warned_damage = True
        warnings.warn(f"fastedf: {message} (warned once)", RuntimeWarning, stacklevel=3)


def _healing(method, cache, what):
    def call(*args):
        try:
            return method(*args)
        except Exception as error:  # any damage: a cache miss is always safe
            warn_cache_damage(f"Numba's cache for {what} was unreadable ({type(error).__name__}: {error}); "
                              "damaged entries are dropped and recompiled")
            try:
                cache.flush()
            except Exception:
                pass
            try:
                return method(*args)
            except Exception:
                return None  # compile without the cache this time
    return call
