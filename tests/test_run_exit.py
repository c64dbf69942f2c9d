"""`fastedf run` against plain python on what a script sees of its process: signals, its children, the
collector's state at exit, what its globals hold, its module's attributes, the traceback of an error in its
own module, a KeyboardInterrupt, a symlinked script.

Each case runs the same files under `python SCRIPT` and `fastedf run --quiet SCRIPT`, each in a folder of its
own, and compares exit status, stdout, stderr and the files left behind.
"""
import gzip
import os
import re
import subprocess
import sys
import textwrap

import pytest

ENV = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

# SIGTERM kills the script and its forked children as under python: none of them sees a KeyboardInterrupt.
SIGNALS = """
import multiprocessing, os, signal, sys, time
def wait():
    try:
        time.sleep(30)
    except KeyboardInterrupt:
        print("the child caught a KeyboardInterrupt", flush=True)
if __name__ == "__main__":
    child = multiprocessing.get_context("fork").Process(target=wait)
    child.start()
    time.sleep(0.2)
    child.terminate()
    child.join()
    print("the child's exit code", child.exitcode, flush=True)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
    except KeyboardInterrupt:
        print("the script caught a KeyboardInterrupt", flush=True)
"""

# What the script froze stays frozen at exit, as under python.
FREEZES = """
import atexit, gc
gc.freeze()
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count() > 0))
"""

# The script's module carries python's loader; one of its modules that does not compile shows python's
# traceback: the import line, then the module's error, no importlib frames.
MODULE = {
    "prog.py": """
import sys
print(type(__loader__).__name__, __loader__.get_filename() == __file__, __spec__, __cached__)
sys.stdout.flush()
import broken
""",
    "broken.py": "x = (1,\n",
}


# What the script's globals hold is finalized at exit as under python (the functions it defines put them in a
# cycle with its module's dict): an unclosed gzip file gets its trailer, a suspended generator its finally.
FINALIZED = """
import gzip
log = gzip.open("log.gz", "wt")
log.write("a line\\n" * 100)
def lines():
    try:
        yield 1
    finally:
        print("the generator's finally, at exit")
pending = lines()
next(pending)
"""


# A daemon thread still running at exit: python's teardown as it is (python stops the thread first).
DAEMON = """
import threading, time
out = open("out.txt", "w")
def spin():
    while True:
        time.sleep(0.01)
threading.Thread(target=spin, daemon=True).start()
out.write("written by the script, never closed\\n")
print("end of the script")
"""


# Stopped by a KeyboardInterrupt: python's traceback, its unflushed file written, killed by SIGINT (a shell's
# loop stops too), not exit status 130.
INTERRUPTED = """
print("the script starts")
out = open("out.txt", "w")
out.write("written before the interrupt\\n")
def stop():
    raise KeyboardInterrupt
stop()
"""


def _run_both(tmp_path, files):
    """[(status, stdout, stderr, {file: text})] of python then fastedf run on the same files."""
    results = []
    for name, command in (("python", [sys.executable]),
                          ("fastedf", [sys.executable, "-m", "fastedf", "run", "--quiet"])):
        folder = tmp_path / name
        folder.mkdir()
        for file, text in files.items():
            (folder / file).write_text(textwrap.dedent(text))
        done = subprocess.run([*command, "prog.py"], cwd=folder, env=ENV, capture_output=True, text=True,
                              timeout=120)
        left = {p.name: gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_text()
                for p in folder.iterdir() if p.is_file() and p.name not in files}
        results.append((done.returncode, done.stdout, re.sub(r"/\S*/(python|fastedf)/", "", done.stderr), left))
    return results


@pytest.mark.parametrize("files, expected", [
    ({"prog.py": SIGNALS}, "the child's exit code -15"),
    ({"prog.py": FREEZES}, "frozen at exit: True"),
    (MODULE, "SourceFileLoader True None None"),
    ({"prog.py": FINALIZED}, "the generator's finally, at exit"),
    ({"prog.py": DAEMON}, "end of the script"),
    ({"prog.py": INTERRUPTED}, "the script starts"),
])
def test_the_script_s_process_is_python_s(tmp_path, files, expected):
    plain, fast = _run_both(tmp_path, files)
    assert fast == plain
    assert expected in plain[1]  # not vacuous: the case shows what it is about



def test_a_symlinked_script_imports_from_its_real_directory(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "prog.py").write_text("import sys, helper\nprint(helper.WHERE, sys.path[0], __file__)\n")
    (tmp_path / "real" / "helper.py").write_text("WHERE = 'beside the real file'\n")
    (tmp_path / "prog.py").symlink_to(tmp_path / "real" / "prog.py")
    plain, fast = (subprocess.run([*command, "prog.py"], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                                  timeout=120) for command in ([sys.executable],
                                                               [sys.executable, "-m", "fastedf", "run", "--quiet"]))
    assert (fast.returncode, fast.stdout, fast.stderr) == (plain.returncode, plain.stdout, plain.stderr)
    assert "beside the real file" in plain.stdout
