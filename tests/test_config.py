"""The JIT policy's environment overrides (fastedf.config) and where programs are cached.

The FASTEDF_* flags are read once, at import: each setting runs in a fresh
process with its own Numba cache directory.
"""
import collections
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fastedf import BCE, Input, Linear, Parameter, Sigmoid, compiler
from fastedf.graph import forward_pass, topological_sort

KERNELS = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    from fastedf import config, kernels as K
    p = np.zeros(4)
    K.sgd_update(p, np.ones(4), 0.5)
    ir = "".join(K.sgd_update.inspect_llvm().values())
    nan_row = K.first_bad_row(np.array([[0.0], [np.nan]]), -1.0, 1.0)
    files = [name for _, _, names in os.walk(sys.argv[1]) for name in names]
    print(json.dumps({"p": p.tolist(), "reassoc": " reassoc " in ir, "nnan": "nnan" in ir or "ninf" in ir,
                      "nan_row": nan_row, "cache_files": len(files)}))
""")


def run_kernels(tmp_path, **env):
    """KERNELS in a fresh process with its own Numba cache and the FASTEDF_* settings given."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("FASTEDF_") or k in ("FASTEDF_CACHE_DIR", "FASTEDF_NUMPY_TIER_SECONDS")}
    numba_cache = tmp_path / "numba"
    done = subprocess.run([sys.executable, "-c", KERNELS, str(numba_cache)], capture_output=True, text=True,
                          timeout=300, env=dict(clean, NUMBA_CACHE_DIR=str(numba_cache), **env))
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_default_policy_caches_and_does_not_reassociate(tmp_path):
    got = run_kernels(tmp_path)
    assert got["p"] == [-0.5] * 4 and got["nan_row"] == 1
    assert not got["reassoc"] and not got["nnan"]  # results do not depend on how LLVM orders sums
    assert got["cache_files"] > 0  # Numba's on-disk cache was written


def test_fastedf_cache_0_writes_no_numba_cache(tmp_path):
    got = run_kernels(tmp_path, FASTEDF_CACHE="0")
    assert got["p"] == [-0.5] * 4
    assert got["cache_files"] == 0


def test_fastedf_fastmath_1_reassociates_but_keeps_nan_checks(tmp_path):
    got = run_kernels(tmp_path, FASTEDF_FASTMATH="1")
    assert got["reassoc"]  # the flag reached the compiled code
    assert not got["nnan"] and got["nan_row"] == 1  # never nnan/ninf: a NaN is still found


BLAS = textwrap.dedent("""
    import json, os
    import numpy as np
    import fastedf
    from threadpoolctl import threadpool_info
    from fastedf import BCE, Input, Linear, Node, Parameter, Sigmoid

    def scipy_blas_threads():  # SciPy's library, which Numba's np.dot calls (.../scipy.libs/libscipy_openblas*.so)
        return [lib["num_threads"] for lib in threadpool_info()
                if os.path.basename(os.path.dirname(lib["filepath"])) == "scipy.libs"]

    class Probe(Node):
        # a user's node: the fit runs in the graph engine, and this records the BLAS threads while it trains
        seen = set()

        def forward(self):
            Probe.seen.update(scipy_blas_threads())
            self.value = self.inputs[0].value

        def backward(self):
            self.gradients[self.inputs[0]] = self._upstream(np.shape(self.value))

    rng = np.random.default_rng(0)
    # 16 rows of 32 features into one output: 512 multiply-adds, enough for Linear to call BLAS (and pin it)
    X, Y = rng.normal(size=(64, 32)), (rng.uniform(size=(64, 1)) > 0.5) * 1.0
    x, y = Input(), Input()
    loss = BCE(y, Sigmoid(Probe([Linear(x, Parameter(rng.normal(size=(32, 1))), Parameter(np.zeros(1)))])))
    fastedf.fit(loss, {x: X, y: Y}, batch_size=16, epochs=1)
    print(json.dumps(sorted(Probe.seen)))
""")


@pytest.mark.parametrize("setting,threads", [(None, 1), ("3", 3)])
def test_blas_threads_during_a_fit(setting, threads):
    # No OPENBLAS/OMP limits in the child: the threads it sees are the ones fastedf set.
    env = {k: v for k, v in os.environ.items()
           if k not in ("FASTEDF_BLAS_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    if setting is not None:
        env["FASTEDF_BLAS_THREADS"] = setting
    done = subprocess.run([sys.executable, "-c", BLAS], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == [threads]


def _program_path(monkeypatch):
    """Where a program is written, lowered in this process as if for the first time (no compile needed)."""
    monkeypatch.setattr(compiler, "_loaded", {})
    monkeypatch.setattr(compiler, "_programs", collections.OrderedDict())  # no program lowered before
    x, y = Input(), Input()
    loss = BCE(y, Sigmoid(Linear(x, Parameter(np.zeros((2, 1))), Parameter(np.zeros(1)))))
    x.value, y.value = np.ones((1, 2)), np.ones((1, 1))
    graph = topological_sort(loss)
    forward_pass(graph)
    program, reason = compiler.lower(graph)
    assert reason is None
    return program.path


def test_programs_are_cached_in_home_cache_fastedf_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv("FASTEDF_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    path = _program_path(monkeypatch)
    assert os.path.dirname(path) == str(tmp_path / ".cache" / "fastedf") and os.path.isfile(path)


def test_fastedf_cache_dir_moves_the_programs(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FASTEDF_CACHE_DIR", str(tmp_path / "elsewhere"))
    path = _program_path(monkeypatch)
    assert os.path.dirname(path) == str(tmp_path / "elsewhere") and os.path.isfile(path)
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize("value", ["abc", "0", "-2", "1.5"])
def test_a_bad_blas_thread_count_warns_and_keeps_one(value):
    env = {**os.environ, "FASTEDF_BLAS_THREADS": value}
    done = subprocess.run([sys.executable, "-c", "import fastedf.config as c; print(c.BLAS_THREADS)"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
    assert f"FASTEDF_BLAS_THREADS={value!r} is not a thread count" in done.stderr
