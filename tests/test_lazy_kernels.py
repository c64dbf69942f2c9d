"""Numba is imported on first use (fastedf.config.Lazy, activate), not with fastedf.

Each check that depends on what a process has imported runs in a fresh
subprocess (it inherits PYTHONPATH and FASTEDF_CACHE_DIR).
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np

import fastedf
from fastedf import config

HEAVY = ("numba", "llvmlite", "scipy", "threadpoolctl", "matplotlib", "tqdm", "memray", "dask")


def run(code, **env):
    """The JSON a fresh Python process prints after running `code`."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=dict(os.environ, **env))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


LOADED = f"sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))"


def test_import_fastedf_imports_no_numba_scipy_plotting_or_progress_bars():
    loaded = run(f"""
        import json, sys
        import fastedf
        from fastedf import *
        import fastedf.models, fastedf.numpy_edf
        print(json.dumps({LOADED}))
    """)
    assert loaded == []


def test_a_step_on_small_layers_loads_numba_but_not_scipys_blas():
    # A compile refreshes Numba's target context, which imports scipy.linalg: the second process loads from the
    # cache, as a course script's process does once the kernels were compiled.
    out = [run(f"""
        import json, sys
        import numpy as np
        from fastedf import *
        x, y = Input(), Input()
        A, b = Parameter(np.full((2, 1), 0.1)), Parameter(np.zeros(1))
        loss = BCE(y, Sigmoid(Linear(x, A, b)))
        x.value, y.value = np.ones((8, 2)), np.ones((8, 1))
        graph = topological_sort(loss)
        for n in graph:
            n.forward()
        for n in reversed(graph):
            n.backward()
        small = {LOADED}, "scipy.linalg.cython_blas" in sys.modules
        W = np.arange(128.0).reshape(2, 64) / 64
        wide = Linear(x, Parameter(W), Parameter(np.zeros(64)))  # 8 * 2 * 64 >= BLAS_MIN_WORK: BLAS
        wide.forward()
        blas = "scipy.linalg.cython_blas" in sys.modules, "scipy.linalg" in sys.modules
        import scipy.linalg  # the package still imports, after its BLAS module was loaded alone
        solved = scipy.linalg.solve(np.eye(2) * 2, np.ones(2)).tolist()
        print(json.dumps([small, blas, solved, float(loss.value), bool(np.array_equal(wide.value, x.value @ W))]))
    """) for _ in range(2)][1]
    (loaded, blas_before), blas_after, solved, loss, same = out
    assert "numba" in loaded and not blas_before
    assert blas_after == [True, False]  # a layer that calls BLAS pins its threads: SciPy's BLAS, not its linalg
    assert solved == [0.5, 0.5] and same
    assert np.isclose(loss, -8 * np.log(1 / (1 + np.exp(-0.2))), rtol=1e-12)


def test_after_activation_fastedf_calls_numbas_dispatchers_directly():
    from numba.core.registry import CPUDispatcher

    config.activate()
    left = []
    for name, module in list(sys.modules.items()):
        if name == "fastedf" or name.startswith("fastedf."):
            for key, value in vars(module).items():
                if type(value) is config.Lazy:
                    left.append(f"{name}.{key}")
                elif isinstance(value, type):
                    left += [f"{name}.{key}.{attr}" for attr, held in vars(value).items()
                             if type(getattr(held, "__func__", held)) is config.Lazy]
    assert left == []
    assert isinstance(vars(fastedf.Sigmoid)["forward_kernel"].__func__, CPUDispatcher)
    from fastedf.ops import linear
    assert isinstance(linear.linear_forward, CPUDispatcher)


FLAGGED = """
    import json, sys
    import numpy as np
    from numba import njit
    from fastedf.kernels import gemm                # a Lazy intrinsic and a Lazy helper, held here before
    from fastedf.vexp import exp                    # activation, then typed by Numba through _numba_type_
    from fastedf.ops.linear import linear_forward
    from fastedf import config

    @njit
    def outside(a, b, out, v):
        gemm(a, b, out)
        return exp(v)

    a, b, out = np.arange(6.0).reshape(2, 3), np.ones((3, 2)), np.empty((2, 2))
    e = outside(a, b, out, 0.5)
    try:  # x (2, 3) by A (2, 1): the kernel reads A's rows 2, past its end, when bounds are unchecked
        linear_forward(np.zeros((2, 3)), np.zeros((2, 1)), np.zeros(1), np.zeros((2, 1)))
        raised = ""
    except IndexError as error:
        raised = "IndexError"
    import fastedf
    x, y = fastedf.Input(), fastedf.Input()
    A, b = fastedf.Parameter(np.full((3, 1), 0.2)), fastedf.Parameter(np.zeros(1))
    loss = fastedf.BCE(y, fastedf.Sigmoid(fastedf.Linear(x, A, b)))
    X, Y = np.linspace(-1, 1, 24).reshape(8, 3), np.array([[0.0], [1.0]] * 4)
    h = fastedf.fit(loss, {x: X, y: Y}, batch_size=4, epochs=2, lr=0.5, engine="compiled")
    print(json.dumps({"gemm": out.tolist(), "exp": e, "raised": raised, "loss": h.epoch_loss.tolist(),
                      "A": A.value.ravel().tolist(), "cache": type(linear_forward._cache).__name__,
                      "boundscheck": config.BOUNDSCHECK, "hits": sum(linear_forward.stats.cache_hits.values())}))
"""


def test_lazy_kernels_under_boundscheck_and_without_cache(tmp_path):
    plain = run(FLAGGED, NUMBA_CACHE_DIR=str(tmp_path / "plain"))
    loaded = run(FLAGGED, NUMBA_CACHE_DIR=str(tmp_path / "plain"))  # from the cache, its context not refreshed
    assert plain["hits"] == 0 and loaded["hits"] >= 1
    assert {**loaded, "hits": 0} == {**plain, "hits": 0}
    checked = run(FLAGGED, FASTEDF_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path / "checked"),
                  FASTEDF_CACHE_DIR=str(tmp_path / "programs-checked"))
    uncached = run(FLAGGED, FASTEDF_CACHE="0", NUMBA_CACHE_DIR=str(tmp_path / "uncached"),
                   FASTEDF_CACHE_DIR=str(tmp_path / "programs-uncached"))
    assert checked["boundscheck"] and checked["raised"] == "IndexError"  # the flag, read at import, still holds
    assert uncached["cache"] == "NullCache" and plain["cache"] != "NullCache"
    assert not (tmp_path / "uncached").exists()  # nothing written to Numba's cache
    for got in (checked, uncached):
        assert got["gemm"] == plain["gemm"] == (np.arange(6.0).reshape(2, 3) @ np.ones((3, 2))).tolist()
        assert got["exp"] == plain["exp"] and abs(plain["exp"] - np.exp(0.5)) <= np.spacing(np.exp(0.5))
        assert got["loss"] == plain["loss"] and got["A"] == plain["A"]
