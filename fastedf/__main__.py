"""`fastedf <subcommand> ...` (also `python -m fastedf`): the command-line entry point.

Subcommands are imported only when called, so `fastedf sweep` does not load
the memory tooling and vice versa.

Errors, decided here once for every subcommand:
- anything the user typed or pointed at (UsageError, an OSError at a path,
  running out of memory): one line `fastedf <cmd>: error: ...`, exit 2;
- Ctrl-C: one line, exit 130 (a subcommand may print its own line and return 130);
- SIGTERM (kill, a batch system's time limit): handled as Ctrl-C, so finished
  rows are kept, results.json says so and child processes are stopped; exit 143
  (not `run`: the script's process ends as under python);
- the reader of stdout or stderr gone (`fastedf sweep --help | head -1`):
  nothing more is printed, exit 141, as for any program killed by SIGPIPE;
- anything else is a bug in fastedf: its traceback, then one line asking to
  report it, exit 1.
"""
import importlib
import os
import signal
import sys
import threading

from . import __version__
from .errors import EXIT_INTERRUPTED, EXIT_USAGE, UsageError

# each subcommand's module: its main
MODULES = {"sweep": "fastedf.study.sweep", "memory": "fastedf.study.memory", "run": "fastedf.runner"}
SUBCOMMANDS = {
    "sweep": "the batch-size study: time, loss, accuracy (and memory) against batch size; with --lrs, "
             "updates to a target loss, the critical batch size and the gradient noise scale",
    "memory": "peak memory per batch size, each measured under memray in a fresh process",
    "run": "run a course script with its own EDF module, its node classes verified and accelerated",
}


def _run(name, argv):
    try:
        module = importlib.import_module(MODULES[name])
    except ModuleNotFoundError as error:
        if error.name != MODULES[name]:
            raise  # a missing dependency inside the module: a real error, not a usage one
        raise UsageError(f"the {name} subcommand is not available in this version") from None
    if not hasattr(module, "main"):
        raise UsageError(f"the {name} subcommand is not available in this version")
    if name == "run":  # the process ends with the script: it stays __main__ to the end, as under python
        return module.main(argv, whole_process=True)
    return module.main(argv)


def _usage():
    lines = ["usage: fastedf <subcommand> [options]   (fastedf <subcommand> --help for its options)",
             "       fastedf --version", ""]
    lines += [f"  {name:8s} {text}" for name, text in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv=None):
    """Run a subcommand; returns its exit code (2 for bad input, 130 for Ctrl-C, 143 for SIGTERM, 1 for a bug)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with _TerminateAsInterrupt(enabled=argv[:1] != ["run"]) as terminate:
            code = _main(argv)
    except BrokenPipeError:
        _discard_output()
        return 128 + signal.SIGPIPE
    return 128 + signal.SIGTERM if terminate.received else code


class _TerminateAsInterrupt:
    """SIGTERM raised as the Ctrl-C it stands for, through whatever handles SIGINT at that moment.

    The sweep's interrupt guard then keeps a run whose training finished, and
    a KeyboardInterrupt stops child processes (subprocess.run kills its child)
    instead of leaving them running after their parent died.

    Not for `fastedf run` (enabled False): its process is the script's, and SIGTERM kills it as under python,
    not a KeyboardInterrupt it could catch; nor its forked children, which would inherit the handler
    (multiprocessing's Pool.terminate would print each worker's traceback).
    """

    def __init__(self, enabled=True):
        self.received = False
        self._previous = None
        self._enabled = enabled

    def __enter__(self):
        if self._enabled and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, signum, frame):
        self.received = True
        handler = signal.getsignal(signal.SIGINT)
        if not callable(handler):  # SIGINT ignored (a background job): SIGTERM must still stop the run
            raise KeyboardInterrupt
        handler(signal.SIGINT, frame)


def _discard_output():
    """Point stdout and stderr at /dev/null, so that nothing (not even Python's last flush) writes to a closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError, AttributeError):
            pass  # not a real file (a test's capture): nothing to protect
    os.close(devnull)


def _main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else EXIT_USAGE
    if argv[0] == "--version":
        print(f"fastedf {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"fastedf: error: unknown subcommand {name!r} (choose from {', '.join(SUBCOMMANDS)})",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        return int(_run(name, rest) or 0)
    except SystemExit as done:  # --help and argparse's own exits
        return done.code if isinstance(done.code, int) else 0
    except KeyboardInterrupt:
        _error(name, "interrupted")
        return EXIT_INTERRUPTED
    except UsageError as error:
        _error(name, f"error: {error}")
        return EXIT_USAGE
    except BrokenPipeError:
        raise  # our own output's reader went away: main's concern, not a path the user named
    except OSError as error:  # a file or directory the user named, or a full disk
        where = f"{error.filename}: " if error.filename else ""
        _error(name, f"error: {where}{error.strerror or error}")
        return EXIT_USAGE
    except MemoryError:
        _error(name, "error: out of memory; use smaller values (see --help)")
        return EXIT_USAGE
    except Exception:  # noqa: BLE001  a bug in fastedf: the traceback is what a report needs
        import traceback  # here, not at the top: `fastedf run` starts a script ~1.6 ms sooner without it
        traceback.print_exc()
        _error(name, "internal error; please report it with the traceback above")
        return 1


def _error(name, message):
    print(f"fastedf {name}: " + " ".join(str(message).split()), file=sys.stderr)  # one line, whatever it held


if __name__ == "__main__":
    sys.exit(main())
