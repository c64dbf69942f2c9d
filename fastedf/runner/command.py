"""The command: `fastedf run [--explain] [--check] [--quiet] SCRIPT.py [ARGS...]`.

The script runs as `python SCRIPT.py ARGS...` would: sys.argv, sys.path[0]
(the script's directory), `__name__ == "__main__"`, the working directory,
stdout and the exit status are python's.  Everything fastedf says goes to
stderr, after the script has finished.
"""
import atexit
import builtins
import gc
import importlib.machinery
import io
import os
import sys
import types

from ..errors import EXIT_INTERRUPTED, UsageError
from . import scriptcode

USAGE = "usage: fastedf run [--explain] [--check] [--quiet] SCRIPT.py [ARGS...]"
HELP = f"""{USAGE}

Run SCRIPT.py as `python SCRIPT.py ARGS...` would, with the operation nodes of
its own EDF module verified against fastedf's implementations and accelerated
where they agree.  Options come before SCRIPT; everything after it is the
script's own argv.

  --explain   print, for every node class, the convention that matched or why
              it stays the user's code (stderr, at exit); verifies from the
              first call, however short the script
  --check     keep running the user's code beside the accelerated one on every
              call and report any difference (the user's values are used)
  --quiet     no summary line at exit
"""
OPTIONS = ("--explain", "--check", "--quiet")


def parse(argv):
    """(options, script, script_args) from the command line; options only before the script."""
    options = set()
    for i, arg in enumerate(argv):
        if arg in ("-h", "--help"):
            print(HELP)
            raise SystemExit(0)
        if arg in OPTIONS:
            options.add(arg[2:])
        elif arg.startswith("-") and arg != "-":
            raise UsageError(f"unknown option {arg!r}; {USAGE}")
        else:
            return options, arg, argv[i + 1:]
    raise UsageError(f"no script given; {USAGE}")


def main(argv, whole_process=False):
    """Run the script; returns its exit status as python would give it.  whole_process: the process ends when
    this returns (fastedf's command line), so the script stays its __main__ to the end, as under python."""
    options, script, args = parse(list(argv))
    if not os.path.isfile(script):
        raise UsageError(f"can't open file {script!r}: no such file")
    from . import nodes, records
    # --explain and --check ask what fastedf would do with each class: they verify from the first call
    registry = nodes.Registry(check="check" in options, eager=bool(options & {"explain", "check"}))
    path = os.path.abspath(script)
    if whole_process:
        _teardown_after_the_script()
    found = records.read()
    registry.expected = records.under(found, f"class:{path}:")  # each class's whole run last time
    registry.expected_total = found.get(f"script:{path}", 0.0)
    registry.hints = dict(key.split(":", 1) for key in records.under(found, "match:") if ":" in key)
    if found.get(f"script:{path}", 0.0) > nodes.ACTIVATE_AFTER:  # verifying repaid last time: from the first call
        registry.activate()
    status = _run_script(script, args, registry, keep_main=whole_process)
    registry.finish()
    from . import report
    records.remember({f"script:{path}": report.plain_seconds(registry),
                      **{f"class:{path}:{c.name}": seconds for c, seconds in report.plain_by_class(registry)},
                      **{f"match:{digest}:{describe}": 1.0 for digest, describe in registry.matches()}})
    if "quiet" not in options:
        print(report.summary(registry), file=sys.stderr)
    if "explain" in options:
        print(report.explain(registry), file=sys.stderr)
    return status


def _teardown_after_the_script():
    """Python's own teardown, lighter.  The interpreter's last full collections scan every object still alive:
    with Numba, scikit-learn or matplotlib loaded, up to ~0.1 s after the script ends.  Registered before the
    script's own atexit functions, this runs after them: open files are flushed, the script's modules leave
    sys.modules as at python's exit, one collection finalizes what they held, and what is alive is frozen, so
    the interpreter's passes scan nothing.

    A module's globals are in a cycle with the functions it defines: only a collection finalizes what the
    script holds in them (an unclosed gzip or zip file's trailer, a suspended generator's finally block, a
    progress bar's last line), as python's last one does.  What other modules hold in a reference cycle is
    then not finalized; CPython does not promise that it is, and its files were flushed.  Python's teardown
    is kept as it is for a script whose own classes define __del__ (their messages at exit are part of its
    output) and while daemon threads still run (python stops them before it finalizes anything)."""
    atexit.unregister(_light_teardown)
    atexit.register(_light_teardown)


def _light_teardown():
    from .nodes import user_file
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        return
    alive = gc.get_objects()
    for kind in set(map(type, alive)):
        code = getattr(getattr(kind, "__del__", None), "__code__", None)
        if code is not None and user_file(code.co_filename):
            return
    for obj in alive:
        if type(obj) in _WRITERS:
            try:
                if not obj.closed and obj.writable():
                    obj.flush()
            except (OSError, ValueError):  # what flushing raises is the file's own close's business
                pass
    del alive
    for name, module in list(sys.modules.items()):
        if name == "__main__" or user_file(getattr(module, "__file__", None)):
            del sys.modules[name]
    gc.collect()
    gc.freeze()
    if _interrupted:
        _end_as_interrupted()


_interrupted = False  # the script was stopped by a KeyboardInterrupt (for the whole process's end)


def _end_as_interrupted():
    """End as python ends a script a KeyboardInterrupt stopped: killed by SIGINT, not exit status 130, so that
    a shell running it in a loop stops too.  What is left of the teardown is frozen: only stdio to flush."""
    import signal
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # closed or replaced by the script: nothing to flush
            pass
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)


_WRITERS = (io.TextIOWrapper, io.BufferedWriter, io.BufferedRandom)


def _run_script(script, args, registry, keep_main=False):
    """Run the script as __main__ with the registry's class hook installed; its exit status.  keep_main: the
    script's module stays sys.modules["__main__"] after it (else the caller's is put back)."""
    path = os.path.abspath(script)
    sys.argv = [script, *args]
    sys.path[0] = os.path.dirname(os.path.realpath(path))  # python resolves a symlinked script's directory
    scriptcode.keep_modules_of(sys.path[0])
    sys.stdout.flush()
    registry.install()
    # What is alive now (NumPy, fastedf's runner) lives as long as the process: frozen, the garbage collector's
    # full passes during the script do not scan it again (columns_transposed, which imports scikit-learn: 0.834
    # -> 0.800 s of CPU, best of 9 fresh runs; plain python 0.785).  Thawed after for a caller in process only:
    # with the script kept as __main__, thawing would also undo a gc.freeze() of the script's own.
    gc.freeze()
    try:
        _run_as_main(path, keep_main)
        return 0
    except SystemExit as done:
        return _exit_status(done.code)
    except KeyboardInterrupt:
        global _interrupted
        _interrupted = keep_main
        _print_script_traceback(*sys.exc_info())
        return EXIT_INTERRUPTED
    except BaseException:  # noqa: BLE001  the script's own error: python prints it and exits 1
        _print_script_traceback(*sys.exc_info())
        return 1
    finally:
        if not keep_main:
            gc.unfreeze()
        registry.uninstall()
        try:
            sys.stdout.flush()
        except (OSError, ValueError):  # a closed or broken stdout is the script's business
            pass


def _run_as_main(path, keep_main=False):
    """Execute the file as python runs a script: a fresh __main__ module, __file__ absolute, argv left alone
    (runpy.run_path would set sys.argv[0] to the absolute path).  Unless keep_main, the caller's __main__ is
    put back after it; kept, what the script holds lives until the interpreter's teardown, as under python
    (its atexit functions see it, and its files are closed at exit, not when the script ends)."""
    code = scriptcode.code_of(path)
    main = types.ModuleType("__main__")
    main.__file__, main.__cached__, main.__builtins__ = path, None, builtins
    main.__loader__ = importlib.machinery.SourceFileLoader("__main__", path)  # as python sets it
    saved = sys.modules.get("__main__")
    sys.modules["__main__"] = main
    try:
        exec(code, vars(main))
    finally:
        if not keep_main:
            sys.modules["__main__"] = saved


def _exit_status(code):
    """The process status python gives `sys.exit(code)`: None is 0, an int itself, anything else printed, 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


_OWN_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_IMPORTLIB = "<frozen importlib._bootstrap"  # and _bootstrap_external


def _print_script_traceback(kind, error, tb):
    """The traceback python would print: the script's frames, none of fastedf's."""
    import traceback  # only for a script that fails: importing it costs every run ~1.6 ms
    report = traceback.TracebackException(kind, error, tb)
    for part in _chain(report):
        part.stack = traceback.StackSummary.from_list(_script_frames(part.stack))
    print("".join(report.format()), end="", file=sys.stderr)


def _script_frames(stack):
    """The frames python would show: none of fastedf's, nor importlib's that lead into them.  Python hides the
    importlib frames that compile a module (an error in one of the script's own modules); fastedf's loader
    compiles them, and its frames break the run python would have hidden."""
    kept, run = [], []
    for frame in [*stack, None]:
        if frame is not None and (_own(frame.filename) or frame.filename.startswith(_IMPORTLIB)):
            run.append(frame)
            continue
        if not any(_own(f.filename) for f in run):
            kept += run
        run = []
        if frame is not None:
            kept.append(frame)
    return kept


def _chain(report):
    seen = set()
    while report is not None and id(report) not in seen:
        seen.add(id(report))
        yield report
        report = report.__cause__ or (None if report.__suppress_context__ else report.__context__)


def _own(filename):
    return os.path.abspath(filename).startswith(_OWN_DIR)
