"""The study's logistic regression in JAX (jit + lax.scan over batches and epochs) against fastedf.fit.

JAX is not a fastedf dependency: run this in an environment that has it, e.g.
    python3 -m venv --system-site-packages /tmp/jaxenv && /tmp/jaxenv/bin/pip install jax jaxlib
    /tmp/jaxenv/bin/python benchmarks/bench_jax.py
Both run in one process, float64, on the same data and initial weights; the
fastest of --repeats runs counts.  JAX compiles once per batch size (the
scan's shapes change), fastedf once per graph.
"""
import argparse
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from fastedf.models import logistic_regression
from fastedf.study.data import study_data

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from bench_fit import time_fit  # noqa: E402

jax.config.update("jax_enable_x64", True)
EPS = 1e-12


def jax_trainer(n, d, batch, epochs, lr):
    """A jitted function (A, b, X, Y) -> (A, b, epoch_loss): mini-batch SGD as fastedf.fit does it."""
    full, rest = n // batch, n % batch

    def loss(params, xb, yb):
        A, b = params
        p = jnp.clip(jax.nn.sigmoid(xb @ A + b), EPS, 1 - EPS)
        return -jnp.mean(yb * jnp.log(p) + (1 - yb) * jnp.log(1 - p))

    value_and_grad = jax.value_and_grad(loss)

    def step(params, xy):
        value, grad = value_and_grad(params, *xy)
        return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grad), value

    @jax.jit
    def train(A, b, X, Y):
        Xf, Yf = X[:full * batch].reshape(full, batch, d), Y[:full * batch].reshape(full, batch, 1)

        def epoch(params, _):
            params, losses = jax.lax.scan(step, params, (Xf, Yf))
            total = losses.sum() * batch
            if rest:
                params, last = step(params, (X[full * batch:], Y[full * batch:]))
                total = total + last * rest
            return params, total / n

        (A, b), epoch_loss = jax.lax.scan(epoch, (A, b), None, length=epochs)
        return A, b, epoch_loss

    return train


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32,64,128,256,512,1024,1050")
    args = parser.parse_args()
    data = study_data(seed=0)
    X, Y = data.X_train, data.y_train.reshape(-1, 1)
    n, d = X.shape
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; {args.epochs} epochs, n={n}")
    print(f"{'batch':>6} {'jax compile s':>14} {'jax train ms':>13} {'fastedf train ms':>17} {'jax/fastedf':>12} "
          f"{'max |dA|':>9}")
    totals = {"jax": 0.0, "jax_compile": 0.0, "fastedf": 0.0}
    for batch in map(int, args.batch_sizes.split(",")):
        init = logistic_regression(d)
        A0, b0 = (p.value.copy() for p in init.parameters)
        train = jax_trainer(n, d, batch, args.epochs, 0.1)
        start = time.perf_counter()
        jax.block_until_ready(train(A0, b0, X, Y))
        compile_s = time.perf_counter() - start
        jax_s = np.inf
        for _ in range(args.repeats):
            start = time.perf_counter()
            A, b, _ = jax.block_until_ready(train(A0, b0, X, Y))
            jax_s = min(jax_s, time.perf_counter() - start)
        ours_s, model = time_fit(X, Y, batch, args.epochs, args.repeats)
        diff = float(np.max(np.abs(np.asarray(A) - model.parameters[0].value)))
        totals["jax"] += jax_s
        totals["jax_compile"] += compile_s
        totals["fastedf"] += ours_s
        print(f"{batch:>6} {compile_s:>14.2f} {jax_s * 1e3:>13.2f} {ours_s * 1e3:>17.2f} {jax_s / ours_s:>11.1f}x "
              f"{diff:>9.1e}")
    print(f"whole study, training only: jax {totals['jax'] * 1e3:.1f} ms (+ {totals['jax_compile']:.1f} s compiling), "
          f"fastedf {totals['fastedf'] * 1e3:.1f} ms: jax/fastedf {totals['jax'] / totals['fastedf']:.1f}x")


if __name__ == "__main__":
    main()
