"""What every fastedf subcommand shares: one-line errors, exit codes, the output-directory lock, resource limits
and the Ctrl-C guard.

A subcommand builds its options with `ArgumentParser` and raises `UsageError`
for bad input it finds later (a bad CSV, a NaN, a path it cannot write, a run
this machine cannot finish); `fastedf.__main__` prints
`fastedf <cmd>: error: <message>` on one line and exits with `EXIT_USAGE`.
"""
import argparse
import errno
import fcntl
import itertools
import math
import os
import platform
import resource
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from stat import S_ISREG

from . import __version__
from .env import env_seconds
from .errors import UsageError
from .text import format_bytes, format_duration

LARGEST_INT = 2**63 - 1  # integer options above this are refused before any arithmetic on them
SEED_LIMIT = 2**64  # NumPy's generators and fit's shuffle take seeds in [0, 2**64)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but errors raise UsageError instead of printing usage and exiting.

    Options are matched whole, never by prefix: `fastedf sweep --seed 3` would
    otherwise run --seeds 3 (seeds 0..2) when seed 3 was meant.  An unknown
    option is named with the nearest real ones.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message):
        if message.startswith("unrecognized arguments:"):
            message += _did_you_mean(message.split(":", 1)[1].split(), self._option_string_actions)
        raise UsageError(message)


def _did_you_mean(words, options):
    """'; did you mean --seeds?' for the first unknown option close to real ones, or ''."""
    import difflib

    for word in words:
        if word.startswith("--"):
            close = difflib.get_close_matches(word.split("=", 1)[0], [o for o in options if o.startswith("--")],
                                              n=2, cutoff=0.6)
            if close:
                return f" (did you mean {' or '.join(close)}?)"
    return ""


def positive_int(text):
    """An argparse type: an integer >= 1."""
    return _int(text, lowest=1)


def nonnegative_int(text):
    """An argparse type: an integer >= 0."""
    return _int(text, lowest=0)


def seed_int(text):
    """An argparse type: a seed, an integer in [0, 2**64)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {_short(text)!r}") from None
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**64), got {_short(text)}")
    return value


def positive_float(text):
    """An argparse type: a finite real number > 0 (complex, NaN, inf and overflowing values are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a real number: {_short(text)!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {_short(text)!r}")
    return value


def int_list(text):
    """An argparse type: comma-separated integers >= 1, e.g. '1,2,4'."""
    return _comma_list(text, positive_int, "integers")


def float_list(text):
    """An argparse type: comma-separated finite numbers > 0, e.g. '0.03,0.1,0.3'."""
    return _comma_list(text, positive_float, "numbers")


def _comma_list(text, item, what):
    items = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not part for part in items):
        raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {_short(text)!r}")
    return [item(part) for part in items]


def _int(text, lowest):
    try:
        value = int(text)
    except ValueError:  # also a number too long for int() to parse
        raise argparse.ArgumentTypeError(f"not an integer: {_short(text)!r}") from None
    if abs(value) > LARGEST_INT:
        raise argparse.ArgumentTypeError(f"{_short(text)} is too large (at most 2**63 - 1)")
    if value < lowest:
        raise argparse.ArgumentTypeError(f"must be >= {lowest}, got {text!r}")
    return value


def _short(text, limit=40):
    """The start of what the user typed, for a message that stays one readable line."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


# ---------------------------------------------------------------- paths the user named

def path_error(error, path, doing="write"):
    """A UsageError for an OSError met at a path the user named: 'cannot write results/x.csv: Is a directory'."""
    reason = error.strerror or str(error)
    return UsageError(f"cannot {doing} {error.filename or path}: {reason}")


def open_output(path, newline=None):
    """`path` opened to write text from its start, never through a link nor into a file with other names.

    A file in --out may have been made a symbolic link (or a hard link) to a
    file elsewhere; opening it plainly would rewrite that file.  Such a path
    is refused with a UsageError naming it, untouched, as the lock file is.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO never hangs
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise _not_ours(path, "is a symbolic link" + _link_target(path)) from None
        raise path_error(error, path, "write") from None
    problem = _not_our_file(os.fstat(fd))
    if problem:
        os.close(fd)
        raise _not_ours(path, problem)
    os.ftruncate(fd, 0)
    return open(fd, "w", newline=newline, encoding="utf-8")


def _not_ours(path, problem):
    return UsageError(f"{path} {problem}; fastedf writes only regular files of its own: remove it, or choose "
                      "another --out")


def write_atomically(path, text):
    """Write `text` to `path` whole or not at all (a temporary file, then a rename), or raise a path UsageError."""
    try:
        with open_output(path + ".tmp", newline="") as handle:
            handle.write(text)
        os.replace(path + ".tmp", path)
    except OSError as error:
        raise path_error(error, path, "write") from None


def make_output_dir(path, option="--out"):
    """Create the directory `path` (and its parents) or raise a UsageError naming it."""
    if not path:
        raise UsageError(f"{option} is empty: name a directory")
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{option} {path} exists and is not a directory")
    if os.path.islink(path) and not os.path.exists(path):  # makedirs would only say "File exists"
        try:
            os.stat(path)
            why = "cannot be followed"
        except OSError as error:
            why = "is part of a loop of links" if error.errno == errno.ELOOP else "does not exist"
        raise UsageError(f"{option} {path} is a symbolic link to {os.readlink(path)}, which {why}; mend the link "
                         f"or choose another {option}")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create {option} directory {path}: {error.strerror or error}") from None


LATEST = "latest"  # in a default output root: a symbolic link to the newest output directory


def fresh_output_dir(root):
    """A new directory root/<UTC time>, with a numeric suffix when taken, and root/latest pointing at it.

    Every run with the default output gets its own directory, so none
    replaces another's files.  root/latest is replaced atomically (a new link
    renamed over it); where symbolic links are impossible (or root/latest is
    not a link, but a file of the user's), root/latest.txt names the directory
    instead.
    """
    make_output_dir(root, "the output root")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for number in itertools.count(1):
        name = stamp if number == 1 else f"{stamp}-{number}"
        try:
            os.mkdir(os.path.join(root, name))
            break
        except FileExistsError:
            continue
        except OSError as error:
            raise UsageError(f"cannot create a directory in {root}: {error.strerror or error}") from None
    link = os.path.join(root, LATEST)
    if _replace_link(link, name):
        stale = link + ".txt"
    else:
        write_atomically(link + ".txt", name + "\n")
        stale = link if os.path.islink(link) else None
    if stale:  # the other way of naming the newest would name an older one
        with suppress(OSError):
            os.remove(stale)
    return os.path.join(root, name)


def _replace_link(link, target):
    """Make `link` a symbolic link to `target` atomically; False where links are impossible or `link` is not one."""
    if os.path.lexists(link) and not os.path.islink(link):
        return False  # a file or directory of the user's: never replaced
    temporary = os.path.join(os.path.dirname(link), f".{os.path.basename(link)}-{os.getpid()}")
    try:
        os.symlink(target, temporary)
        os.replace(temporary, link)
    except OSError:
        with suppress(OSError):
            os.remove(temporary)
        return False
    return True


def latest_output_dir(root):
    """The directory root/latest (or root/latest.txt) names, or None."""
    link = os.path.join(root, LATEST)
    if os.path.islink(link):
        return os.path.join(root, os.readlink(link))
    try:
        with open(link + ".txt", encoding="utf-8") as handle:
            return os.path.join(root, handle.read().strip())
    except OSError:
        return None


def existing_files(directory, names):
    """The paths in `directory` of those `names` (and of their temporaries, name.tmp) that exist, in that order."""
    candidates = dict.fromkeys([*names, *(name + ".tmp" for name in names)])
    return [os.path.join(directory, name) for name in candidates if os.path.lexists(os.path.join(directory, name))]


def refuse_earlier_results(directory, paths, what, options):
    """A UsageError naming the directory, its first earlier file and the options that accept them."""
    more = f" and {len(paths) - 1} more" if len(paths) > 1 else ""
    return UsageError(f"--out {directory} holds {what} ({paths[0]}{more}); {options}, or choose another --out")


def refuse_other_commands_files(directory, paths, command):
    """A UsageError for an --out holding another subcommand's files: never mixed with ours nor removed."""
    more = f" and {len(paths) - 1} more" if len(paths) > 1 else ""
    return UsageError(f"--out {directory} holds the files of {command} ({paths[0]}{more}), not of this command; "
                      "choose another --out")


def remove_files(paths):
    """Remove these files (an earlier run's, for --overwrite), or raise a UsageError naming the first that resists."""
    for path in paths:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        except OSError as error:
            raise path_error(error, path, "remove") from None


class DirectoryLock:
    """One writer per output directory: an exclusive flock on DIR/.fastedf.lock, which holds the owner's pid.

    The lock belongs to the open file, so the operating system releases it when
    the owner exits or is killed: a lock left by a dead process never blocks the
    next run.  The file itself stays (removing it would race with a process
    about to lock it).  A second process refuses with a UsageError naming the
    directory and the owner's pid.  A lock path that is a symbolic link, not a
    regular file, another user's or a hard link is refused, untouched.
    """

    NAME = ".fastedf.lock"

    def __init__(self, directory, command):
        self.directory = directory
        self.path = os.path.join(directory, self.NAME)
        self.command = command
        self._fd = None

    def acquire(self):
        # Never follow a link out of the directory, never block on a FIFO, never truncate before the checks.
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise self._not_ours("is a symbolic link" + _link_target(self.path)) from None
            raise UsageError(f"cannot write to {self.directory}: {error.strerror or error}") from None
        problem = _not_our_file(os.fstat(fd))
        if problem:
            os.close(fd)
            raise self._not_ours(problem)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            owner = _read_owner(fd)
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UsageError(f"{self.directory} is in use by another fastedf process ({owner}); wait for "
                                 "it to finish or choose another --out") from None
            raise UsageError(f"cannot lock {self.directory}: {error.strerror or error}") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {self.command}\n".encode())
        except OSError as error:  # a full disk
            os.close(fd)
            raise UsageError(f"cannot write to {self.directory}: {error.strerror or error}") from None
        self._fd = fd
        return self

    def _not_ours(self, problem):
        return UsageError(f"the lock file {self.path} {problem}; fastedf locks only a regular file of its own: "
                          "remove it, or choose another --out")

    def release(self):
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _not_our_file(stat):
    """Why an opened path is not a file fastedf may lock or write (one phrase), or None."""
    if not S_ISREG(stat.st_mode):
        return "is not a regular file"
    if stat.st_uid != os.geteuid():
        return f"belongs to user {stat.st_uid}, not to this user ({os.geteuid()})"
    if stat.st_nlink != 1:  # a hard link: writing the pid would change the other name's file too
        return f"has {stat.st_nlink} names (a hard link)"
    return None


def _link_target(path):
    try:
        return f" (to {os.readlink(path)})"
    except OSError:
        return ""


def _read_owner(fd):
    """'pid 1234, fastedf sweep' from a lock file, or 'pid unknown' while its owner is still writing it."""
    try:
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    pid, _, command = text.partition(" ")
    return f"pid {pid}, {command}" if pid.isdigit() and command else f"pid {pid}" if pid.isdigit() else "pid unknown"


# ---------------------------------------------------------------- what this machine can finish

MAX_SECONDS = 7 * 24 * 3600  # a run whose least possible time exceeds a week is refused as one that cannot finish
# Lower bounds of fastedf's costs, about a tenth of what was measured on a 2020s x86 core, so a refusal
# means the run certainly cannot finish; the real time is typically ten times the bound.
SECONDS_PER_UPDATE = {"compiled": 1e-8, "graph": 1e-6}  # fixed cost of one SGD step (measured 1.2e-7, 1.2e-5)
SECONDS_PER_ELEMENT = 2e-10  # per feature value (plus the label) per sample per epoch (measured 2e-9)
SECONDS_PER_FIT = 1e-5  # building a model and calling fit (measured 1e-4)
SECONDS_PER_PROCESS = 0.05  # starting a Python process with NumPy (measured about 0.6 s with fastedf)


def available_memory_bytes():
    """Bytes this process may still allocate: MemAvailable, within any cgroup and RLIMIT_AS limit; None if unknown."""
    limits = []
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    if not limits:
        try:
            limits.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError, AttributeError):
            pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file) as a, open(usage_file) as b:
                limit, usage = a.read().strip(), b.read().strip()
            if limit.isdigit() and int(limit) < 2**60:
                limits.append(int(limit) - int(usage))
            break
        except (OSError, ValueError):
            continue
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        limits.append(soft)  # an upper bound: what is already mapped counts against it too
    return max(0, min(limits)) if limits else None


def free_disk_bytes(path):
    """Free bytes on the file system holding `path` (or its nearest existing parent); None if unknown."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    return usage.free if usage.total else None  # /proc and the like report no size at all


class Cost:
    """What a run needs: seconds (a lower bound), bytes of memory, bytes of disk."""

    def __init__(self, seconds=0.0, memory_bytes=0.0, disk_bytes=0.0):
        self.seconds, self.memory_bytes, self.disk_bytes = float(seconds), float(memory_bytes), float(disk_bytes)


def refuse_unless_it_fits(cost_of, options, what, disk_path):
    """Raise a one-line UsageError when the run cannot fit this machine's memory, the disk at `disk_path`, or a week.

    cost_of(values) -> Cost, `values` a dict {flag: int} of the options below;
    the cost must not decrease when any of them grows.  options: {flag: (value
    asked, default, smallest allowed)}.  The message names what was asked, the
    first limit it breaks, and the largest value of one option (the one
    furthest above its default that can make it fit) that fits every limit.
    """
    asked = {flag: value for flag, (value, _, _) in options.items()}
    limits = {"memory_bytes": available_memory_bytes(), "disk_bytes": free_disk_bytes(disk_path),
              "seconds": MAX_SECONDS}
    explain = {
        "memory_bytes": lambda need, limit: (f"needs about {format_bytes(need)} of memory and "
                                             f"{format_bytes(limit)} is available"),
        "disk_bytes": lambda need, limit: (f"would write about {format_bytes(need)} and {format_bytes(limit)} "
                                           f"is free at {disk_path}"),
        "seconds": lambda need, limit: (f"would take at least {format_duration(need)} even at fastedf's fastest "
                                        f"speed, and at most {format_duration(limit)} is accepted")}

    def broken(values):
        """The first limit `values` break, as (field, need, limit), or None."""
        cost = cost_of(values)
        for field, limit in limits.items():
            if limit is not None and getattr(cost, field) > limit:
                return field, getattr(cost, field), limit
        return None

    problem = broken(asked)
    if problem is None:
        return
    field, need, limit = problem
    ratio = {flag: value / max(default, 1) for flag, (value, default, _) in options.items()}
    for flag in sorted(options, key=ratio.get, reverse=True):
        value, _, smallest = options[flag]
        fits = _largest(lambda v, flag=flag: broken({**asked, flag: v}) is None, smallest, value)
        if fits is not None:
            raise UsageError(f"{flag} {value}: {what} {explain[field](need, limit)}; with the other options "
                             f"as given, {flag} {fits} is the most that fits")
    asked_text = ", ".join(f"{flag} {value}" for flag, value in asked.items())
    raise UsageError(f"{what} ({asked_text}) {explain[field](need, limit)}, and lowering any one of these "
                     "options is not enough")


def _largest(fits, low, high):
    """The largest v in [low, high) with fits(v), fits monotone (true then false); None if fits(low) is false."""
    if not fits(low):
        return None
    while high - low > 1:  # invariant: fits(low), not fits(high)
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


# ---------------------------------------------------------------- saved with every result

def environment():
    """Versions, machine and CPU, saved with every result file."""
    import matplotlib
    import memray
    import numba
    import numpy

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
        "timing": "single-threaded: fastedf kernels are serial (no parallel=True) and pin the BLAS they call to "
                  "FASTEDF_BLAS_THREADS threads (default 1)",
    }


# ---------------------------------------------------------------- progress

PROGRESS_SECONDS = env_seconds("FASTEDF_PROGRESS_SECONDS", 5.0)  # between lines when not a terminal


class Progress:
    """Runs done of a total, on stderr: tqdm's bar in a terminal, else a line every PROGRESS_SECONDS.

    A log file, a pipe or a notebook cell gets lines such as 'fastedf sweep:
    12 of 48 runs done, 1m03s elapsed, about 4m12s remaining' (the estimate
    from the runs done by this process, at their mean time).  quiet: nothing.
    """

    def __init__(self, total, done, what, quiet=False):
        self.total, self.done, self.what = total, done, what
        self._start_done = done
        self._start = self._last = time.monotonic()
        self._bar = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm
            self._bar = tqdm(total=total, initial=done, desc=what, unit="run", file=sys.stderr, leave=False)
        self._lines = not quiet and self._bar is None

    def describe(self, text):
        """What runs now (shown beside the bar)."""
        if self._bar is not None:
            self._bar.set_postfix_str(text)

    def update(self):
        self.done += 1
        if self._bar is not None:
            self._bar.update()
        now = time.monotonic()
        if self._lines and (now - self._last >= PROGRESS_SECONDS or self.done == self.total):
            self._last = now
            elapsed = now - self._start
            rate = elapsed / max(self.done - self._start_done, 1)
            print(f"{self.what}: {self.done} of {self.total} runs done, {_clock(elapsed)} elapsed, about "
                  f"{_clock(rate * (self.total - self.done))} remaining", file=sys.stderr, flush=True)

    def close(self):
        if self._bar is not None:
            self._bar.close()


def _clock(seconds):
    """1h02m03s, 4m05s, 6s."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s" if minutes \
        else f"{seconds}s"


# ---------------------------------------------------------------- Ctrl-C

class InterruptGuard:
    """Ctrl-C during a run of runs: at once while a run trains, otherwise once the row being recorded is on disk.

    Inside `training()` SIGINT raises KeyboardInterrupt as usual (fit stops;
    that run was not finished and --resume redoes it).  Outside, between the
    end of training and the row reaching results.csv, it is only noted, and
    `check()` raises it after the row is written: a run whose training
    finished is never thrown away.  Installed only in the main thread and only
    over Python's default handler (a SIGINT ignored by the caller stays ignored).
    """

    def __init__(self):
        self.pending = False
        self._training = False
        self._previous = None

    def __enter__(self):
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum, frame):
        if self._training:
            raise KeyboardInterrupt
        self.pending = True

    @contextmanager
    def training(self):
        self.check()
        self._training = True
        try:
            yield
        finally:
            self._training = False

    def check(self):
        """Raise the KeyboardInterrupt held since the last check, if any."""
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


NO_GUARD = InterruptGuard()  # never entered: training() and check() only, SIGINT left as it is
