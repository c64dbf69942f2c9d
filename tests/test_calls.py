"""Kernel calls by address (fastedf.calls): the rewrite of generated source, the call itself, the hash table."""
import numpy as np
import pytest
from numba import njit

from fastedf import calls


@njit(cache=False)
def axpy(a, x, y):
    if x.shape[0] != y.shape[0]:
        raise ValueError("axpy: sizes differ")
    for i in range(x.shape[0]):
        y[i] += a * x[i]
    return 2.0 * x.shape[0]


@njit(cache=False)
def program(kernels, a, x, y, report):
    if report:
        calls.kernel_hashes(kernels, 2)
        return 0.0
    first = calls.kcall(axpy, kernels, 0, a, x, y)
    return first + calls.kcall(axpy, kernels, 1, 1, x[:2], y[:2])  # an int the kernel's signature casts


@njit(cache=False)
def inlining(a, x, y):
    return calls.icall(axpy, a, x, y) + calls.icall(axpy, 1, x[:2], y[:2])


def check_both_axpys(run):
    """run(a, x, y) makes the two axpy calls of `program` and `inlining`: the values direct calls give."""
    x, y = np.arange(4.0), np.ones(4)
    assert run(2.0, x, y) == 8.0 + 4.0
    expected = np.ones(4) + 2.0 * np.arange(4.0)
    expected[:2] += np.arange(2.0)
    assert np.array_equal(y, expected)


def test_an_inlined_call_computes_what_a_direct_call_does_without_a_call():
    check_both_axpys(inlining)
    code = inlining.inspect_llvm(inlining.signatures[0])
    body = code[code.index("define", code.index("inlining")):]
    body = body[:body.index("\n}\n")]  # the first function defined after the name: the compiled body
    assert "axpy" not in body  # LLVM inlined both calls
    with pytest.raises(ValueError, match="axpy: sizes differ"):
        inlining(2.0, np.zeros(3), np.zeros(4))


def test_inlined_rewrites_only_the_kernels_calls():
    text = "v = f(a, g(b))\nmin(f(y), 2)\n"
    assert calls.inlined(text, {"f": None}) == "v = icall(f, a, g(b))\nmin(icall(f, y), 2)\n"


def test_by_address_rewrites_only_the_kernels_calls():
    text = "v = f(a, g(b), c[:n].reshape((n, 2)))\nh(x)\nmin(f(y), 2)\n"
    rewritten, names = calls.by_address(text, {"f": None, "h": None})
    assert names == ["f", "h", "f"]
    assert rewritten == ("v = kcall(f, kernels, 0, a, g(b), c[:n].reshape((n, 2)))\n"
                         "kcall(h, kernels, 1, x)\nmin(kcall(f, kernels, 2, y), 2)\n")
    assert calls.by_address("h(x)\nf(y)\n", {"f": None, "h": None}, first_slot=3) == (
        "kcall(h, kernels, 3, x)\nkcall(f, kernels, 4, y)\n", ["h", "f"])  # a later part of the same program


@pytest.fixture(scope="module")
def typed():
    """The call sites' kernels and signatures, recorded when `program` compiles (once per process)."""
    calls._typed.clear()
    hashes = np.zeros(2, dtype=np.int64)
    program(hashes, 2.0, np.zeros(3), np.zeros(3), True)
    assert sorted(calls._typed) == [0, 1]
    return dict(calls._typed), hashes


def table(typed):
    kernels, hashes = typed
    addresses = np.zeros(2, dtype=np.int64)
    for slot, (dispatcher, signature) in kernels.items():
        addresses[slot], hashed = calls.address(dispatcher, signature.args)
        assert hashed == hashes[slot] != 0  # the compiled program expects this very function
    return addresses


def test_a_call_by_address_computes_what_a_direct_call_does(typed):
    addresses = table(typed)
    check_both_axpys(lambda a, x, y: program(addresses, a, x, y, False))


def test_a_kernels_exception_propagates_through_the_call(typed):
    with pytest.raises(ValueError, match="axpy: sizes differ"):
        program(table(typed), 2.0, np.zeros(3), np.zeros(4), False)


def test_the_hash_names_the_signature(typed):
    (d0, s0), (d1, s1) = typed[0][0], typed[0][1]
    assert d0 is d1 is axpy and s0 != s1  # float and int scale
    assert calls.kernel_hash(d0, s0) != calls.kernel_hash(d1, s1) and typed[1][0] != typed[1][1]


def test_programs_compiled_in_threads_get_their_own_kernels(tmp_path, monkeypatch):
    """Two threads compiling two new programs at once give the numbers of one fit at a time (a program whose table
    was read from the other's compile would be recompiled, not run: the hashes guard it)."""
    import threading

    import fastedf
    from fastedf.models import mlp
    monkeypatch.setenv("FASTEDF_CACHE_DIR", str(tmp_path))  # new program files: both compile here
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    Y = (X[:, :1] > 0) * 1.0

    def fit(activation, results):
        model = mlp(3, (4, 5), activation=activation, seed=2)
        history = fastedf.fit(model.loss, {model.x: X, model.y: Y}, batch_size=8, epochs=3, engine="compiled")
        results[activation] = history.epoch_loss

    together, alone = {}, {}
    threads = [threading.Thread(target=fit, args=(a, together)) for a in ("tanh", "relu")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for activation in ("tanh", "relu"):
        fit(activation, alone)
        assert np.array_equal(together[activation], alone[activation])
