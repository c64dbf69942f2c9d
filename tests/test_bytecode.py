"""fastedf's modules keep their bytecode under PYTHONDONTWRITEBYTECODE (fastedf.bytecode)."""
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CODE = "import fastedf.ops, fastedf.runner.command"


def _python(prefix, **env):
    environment = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1",
                       PYTHONPYCACHEPREFIX=str(prefix), **env)
    done = subprocess.run([sys.executable, "-v", "-c", CODE], env=environment, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stderr


def _kept(prefix):
    return sorted(p.name for p in pathlib.Path(prefix).rglob("*.pyc") if "fastedf" in str(p))


def test_modules_keep_their_bytecode_and_the_next_process_reads_it(tmp_path):
    _python(tmp_path)
    kept = _kept(tmp_path)
    for name in ("linear", "losses", "config", "node", "command", "bytecode", "env"):
        assert any(k.startswith(name + ".") for k in kept), (name, kept)
    assert not any(p.suffix == ".tmp" for p in tmp_path.rglob("*"))
    log = _python(tmp_path)
    linear = str(ROOT / "fastedf" / "ops" / "linear.py")
    assert f"matches {linear}" in log  # read, not compiled again


def test_other_modules_and_fastedf_cache_0_write_nothing(tmp_path):
    _python(tmp_path, FASTEDF_CACHE="0")
    assert _kept(tmp_path) == []


def test_a_cache_directory_that_cannot_be_made_costs_only_the_compile(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory would go")
    _python(blocker / "cache")  # imports as usual
    assert _kept(tmp_path) == [] and not any(p.suffix == ".tmp" for p in tmp_path.rglob("*"))
