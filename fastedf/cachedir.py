"""Where fastedf keeps what it writes between processes: generated programs, the runner's records.

Its own module so that `fastedf run` finds it before anything heavy is imported.
"""
import _thread
import os


def cache_dir():
    """Where generated programs live: $FASTEDF_CACHE_DIR, else ~/.cache/fastedf, else a temp dir; None if none is
    writable."""
    candidates = [os.environ.get("FASTEDF_CACHE_DIR"), os.path.join(os.path.expanduser("~"), ".cache", "fastedf")]
    for path in [c for c in candidates if c] + [None]:
        try:
            if path is None:  # tempfile only here: its import costs a start ~3 ms where nothing else needs it
                import tempfile
                path = os.path.join(tempfile.gettempdir(), "fastedf")  # gettempdir raises when none is usable
            os.makedirs(path, exist_ok=True)
            if os.access(path, os.W_OK):
                return path
        except OSError:
            continue
    return None


def write_atomic(path, data):
    """Write bytes to `path` through a scratch file beside it (named by process and thread), so a reader never
    sees half of it; its folder is made if missing.  Raises OSError, the scratch file removed: a caller keeping
    what it can make again ignores it."""
    scratch = f"{path}.{os.getpid()}.{_thread.get_ident()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(scratch, "wb") as out:
            out.write(data)
        os.replace(scratch, path)
    except OSError:
        try:
            os.unlink(scratch)
        except OSError:
            pass
        raise
