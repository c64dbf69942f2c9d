"""What every fastedf subcommand shares: a parser whose errors are one line, the exit codes, the environment record.

A subcommand builds its options with `ArgumentParser` and raises `UsageError`
for bad input it finds later (a bad CSV, a NaN); `fastedf.__main__` prints
`fastedf <cmd>: error: <message>` on one line and exits with `EXIT_USAGE`.
"""
import argparse
import os
import platform

EXIT_USAGE = 2  # argparse's convention for bad command lines


class UsageError(Exception):
    """Bad input from the command line or its files; the message is one line naming the problem."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but errors raise UsageError instead of printing usage and exiting."""

    def error(self, message):
        raise UsageError(message)


def positive_int(text):
    """An argparse type: an integer >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def nonnegative_int(text):
    """An argparse type: an integer >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def positive_float(text):
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be finite and > 0, got {text!r}")
    return value


def int_list(text):
    """An argparse type: comma-separated integers >= 1, e.g. '1,2,4'."""
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or any(not item for item in items):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return [positive_int(item) for item in items]


def _int(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def environment():
    """Versions, machine and CPU, saved with every result file."""
    import matplotlib
    import memray
    import numba
    import numpy

    from . import __version__
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "fastedf": __version__, "python": platform.python_version(), "numpy": numpy.__version__,
        "numba": numba.__version__, "matplotlib": matplotlib.__version__, "memray": memray.__version__,
        "platform": platform.platform(), "machine": platform.machine(), "cpu": cpu, "cpu_count": os.cpu_count(),
        "numba_num_threads": numba.config.NUMBA_NUM_THREADS,
        "timing": "single-threaded: fastedf kernels are serial (no parallel=True) and call no BLAS",
    }
