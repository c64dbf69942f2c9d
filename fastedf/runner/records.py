"""What earlier runs learnt, kept between processes in the cache directory (fastedf.cachedir).

Three kinds of record, all seconds: how long a script's node methods ran
(`script:<path>`, the plain-python estimate of its last run), how long each
of its node classes' methods ran (`class:<path>:<module.class>`, the same
estimate), and how long a graph structure's loops ran node by node before any
run compiled its program (`program:<name>`, accumulated).  They decide only *when* work starts (verify
from the first call, compile a program a single run would not repay), never
what is computed: a stale or lost record costs time, not numbers.
"""
import os

from ..cachedir import cache_dir

NAME = "run-records.txt"
MAX_RECORDS = 1024  # the most recently written kept (a full file reads in ~0.25 ms): a new script adds one a class


def _path():
    folder = cache_dir()
    return None if folder is None else os.path.join(folder, NAME)


def _read(path):
    """{key: seconds} from the file's lines `seconds<TAB>key` (plain text: json's import would cost start-up)."""
    found = {}
    try:
        with open(path) as f:
            for line in f:
                seconds, _, key = line.rstrip("\n").partition("\t")
                try:
                    found[key] = float(seconds)
                except ValueError:
                    continue
    except (OSError, UnicodeDecodeError):
        pass
    return found


def earlier(key):
    """The seconds recorded under `key` (0.0 if none)."""
    return read().get(key, 0.0)


def read():
    """Every record, {key: seconds}."""
    path = _path()
    return _read(path) if path else {}


def under(found, prefix):
    """{rest of the key: seconds} of the records in `found` whose keys start with `prefix`."""
    return {key[len(prefix):]: seconds for key, seconds in found.items() if key.startswith(prefix)}


def remember(values, accumulate=()):
    """Record {key: seconds}; keys in `accumulate` add to what is recorded.  Written atomically; an unwritable
    cache loses the record silently (it only decides when work starts)."""
    path = _path()
    if path is None or not values:
        return
    records = _read(path)
    for key, seconds in values.items():
        earlier = records.pop(key, 0.0)  # popped, so that it is written last: the most recent
        records[key] = (earlier if key in accumulate else 0.0) + seconds
    records = dict(list(records.items())[-MAX_RECORDS:])  # written last, kept: dicts keep insertion order
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            f.writelines(f"{seconds!r}\t{key}\n" for key, seconds in records.items() if "\n" not in key)
        os.replace(tmp, path)
    except OSError:
        try:
            os.remove(tmp)
        except OSError:
            pass
