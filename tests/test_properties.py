"""Property tests (hypothesis): kernels, broadcasting gradients and the two engines over random shapes.

Tolerances as in the other tests: kernels rtol 1e-12 against tests/naive.py,
finite differences rtol 1e-6 / atol 1e-8, engines rtol 1e-11.
"""
import naive
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes
from numpy.testing import assert_allclose
from test_nodes import check_gradients, projection

import fastedf
from fastedf import Addition, Multiply, Parameter
K = naive.all_kernels()
from fastedf.models import mlp

SETTINGS = settings(max_examples=30, deadline=None)


@SETTINGS
@given(batch=st.integers(1, 20), n=st.integers(1, 6), m=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_linear_kernels_match_numpy(batch, n, m, seed):
    rng = np.random.default_rng(seed)
    x, A, b, g = rng.normal(size=(batch, n)), rng.normal(size=(n, m)), rng.normal(size=m), rng.normal(size=(batch, m))
    out, dA, db, dx = np.empty((batch, m)), np.empty((n, m)), np.empty(m), np.empty((batch, n))
    K.linear_forward(x, A, b, out)
    K.linear_backward(x, g, dA, db)
    K.linear_input_grad(g, A, dx)
    want_dA, want_db = naive.linear_backward(x, g)
    assert_allclose(out, naive.linear_forward(x, A, b), rtol=1e-12, atol=1e-14)
    assert_allclose(dA, want_dA, rtol=1e-12, atol=1e-14)
    assert_allclose(db, want_db, rtol=1e-12, atol=1e-14)
    assert_allclose(dx, naive.linear_input_grad(g, A), rtol=1e-12, atol=1e-14)


@SETTINGS
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3),
       multiply=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_broadcast_gradients_match_finite_differences(shapes, multiply, seed):
    rng = np.random.default_rng(seed)
    a, b = (Parameter(rng.normal(size=shape)) for shape in shapes.input_shapes)
    node = (Multiply if multiply else Addition)(a, b)
    check_gradients(projection(node, shapes.result_shape, rng), [a, b])


@settings(max_examples=15, deadline=None)
@given(rows=st.integers(1, 40), features=st.integers(1, 4), hidden=st.sampled_from([(), (3,)]),
       batch=st.integers(1, 50), epochs=st.integers(0, 3), shuffle=st.booleans(), seed=st.integers(0, 1000))
def test_engines_agree(rows, features, hidden, batch, epochs, shuffle, seed):
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(rows, features)), (rng.random((rows, 1)) > 0.5) * 1.0
    results = []
    for engine in ("graph", "compiled"):
        model = mlp(features, hidden, seed=seed)
        history = fastedf.fit(model.loss, {model.x: X, model.y: Y}, batch_size=batch, epochs=epochs, lr=0.5,
                              shuffle=shuffle, seed=seed, engine=engine)
        assert history.engine == engine
        assert history.updates == epochs * -(-rows // min(batch, rows))
        results.append((history.epoch_loss, np.concatenate([p.value.ravel() for p in model.parameters])))
    assert_allclose(results[1][0], results[0][0], rtol=1e-11)
    assert_allclose(results[1][1], results[0][1], rtol=1e-11, atol=1e-300)
