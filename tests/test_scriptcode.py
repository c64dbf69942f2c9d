"""fastedf run keeps the script's and its modules' compiled code in its cache directory (fastedf.runner.scriptcode).

Each entry serves only the source file it was compiled from: the tests
change a file (size, modification time, content alone), damage an entry and turn the cache
off, and check the code run is always the file's own.
"""
import os
import subprocess
import sys

import pytest

from fastedf.runner import scriptcode


@pytest.fixture
def cache(fastedf_cache):
    return fastedf_cache / scriptcode.FOLDER


def _result(code):
    scope = {}
    exec(code, scope)
    return scope["VALUE"]


def test_the_code_is_kept_and_served_only_for_the_file_it_was_compiled_from(tmp_path, cache):
    source = tmp_path / "prog.py"
    source.write_text("VALUE = 1\n")
    assert _result(scriptcode.code_of(str(source))) == 1
    (entry,) = cache.iterdir()
    first = entry.read_bytes()
    assert _result(scriptcode.code_of(str(source))) == 1 and entry.read_bytes() == first  # served, not rewritten
    source.write_text("VALUE = 22\n")  # another size
    assert _result(scriptcode.code_of(str(source))) == 22
    stats = source.stat()
    source.write_text("VALUE = 33\n")  # the same size, another modification time
    os.utime(source, ns=(stats.st_atime_ns, stats.st_mtime_ns + 1000))
    assert _result(scriptcode.code_of(str(source))) == 33
    stats = source.stat()
    source.write_text("VALUE = 44\n")  # the same size and modification time (a copy that keeps times)
    os.utime(source, ns=(stats.st_atime_ns, stats.st_mtime_ns))
    assert _result(scriptcode.code_of(str(source))) == 44
    entry.write_bytes(entry.read_bytes()[:-7])  # damaged
    assert _result(scriptcode.code_of(str(source))) == 44
    assert scriptcode.code_of(str(source)).co_filename == str(source)


def test_a_syntax_error_is_the_file_s_own(tmp_path, cache):
    source = tmp_path / "bad.py"
    source.write_text("VALUE = (\n")
    with pytest.raises(SyntaxError) as raised:
        scriptcode.code_of(str(source))
    assert raised.value.filename == str(source)


def test_nothing_is_kept_with_the_cache_off(tmp_path, cache, monkeypatch):
    monkeypatch.setenv("FASTEDF_CACHE", "0")
    source = tmp_path / "prog.py"
    source.write_text("VALUE = 4\n")
    assert _result(scriptcode.code_of(str(source))) == 4
    assert not cache.exists()


def test_the_script_and_its_module_run_their_own_code_from_the_cache(tmp_path):
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "helper.py").write_text("VALUE = 'first'\n")
    (folder / "prog.py").write_text("import helper\nprint(helper.VALUE, helper.__file__ == %r)\n"
                                    % str(folder / "helper.py"))
    env = {**os.environ, "FASTEDF_CACHE_DIR": str(tmp_path / "cache"), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("FASTEDF_CACHE", None)

    def run():
        done = subprocess.run([sys.executable, "-m", "fastedf", "run", "--quiet", "prog.py"], cwd=folder, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert run() == run() == "first True\n"
    kept = sorted(p.name.split("-")[0] for p in (tmp_path / "cache" / scriptcode.FOLDER).iterdir())
    assert kept == ["helper.py", "prog.py"] and not (folder / "__pycache__").exists()
    (folder / "helper.py").write_text("VALUE = 'second, longer'\n")
    assert run() == "second, longer True\n"
