"""Scale benchmark: `Linear -> Sigmoid [-> Linear -> Sigmoid] -> BCE` over d x hidden x batch, every implementation in one process.

Grid: d in {2, 64, 784} x hidden in {none (logistic regression), 64, 128} x B
in {1, 32, 256}; synthetic data (fixed seed, labels 0/1 of shape (n, 1)),
float64, the same data and initial parameters for every implementation,
batches in row order, the last partial batch averaged over its own size,
plain SGD with lr 0.1 on the mean-over-rows gradient.

Implementations: the NumPy EDF course loop (fastedf/numpy_edf.py), the
hand-written Numba loop calling BLAS (benchmarks/handwritten_mlp.py, "the
limit"), the same course loop on fastedf nodes, fastedf.fit with
engine="graph" and engine="compiled", and, when importable, PyTorch eager and
JAX jit + lax.scan (optional, not fastedf dependencies).

Threads: --threads N (default 1) sets OPENBLAS/OMP/MKL/NUMBA_NUM_THREADS before
NumPy is imported, torch.set_num_threads(N) and, for N = 1, XLA's single-thread
flag, and pins the process to N cores (sched_setaffinity), which is what
actually holds XLA to one core; --threads 0 leaves every library at its
default (all cores).  fastedf
gets FASTEDF_BLAS_THREADS = N (all cores for 0).

Correctness first: at every grid point each implementation is run on a check
configuration and its final parameters must equal the NumPy EDF's to 1e-8
(max abs difference), else a FAIL line is printed and the script exits 1
before any timing.  The check configuration is the full data (--rows rows,
--epochs epochs) for B > 1, and the first --slow-rows rows for one epoch for
B = 1, where it is exactly what the Python-loop implementations are timed on.

Timing: the minimum over --repeats runs (the implementations interleaved;
the machine is shared), training only: graph construction, data conversion
and compilation are excluded (every JIT implementation gets a warm-up run at
the timed shapes first; fit's time is History.train_time_s).  Python-loop
implementations (NumPy EDF, course loop on fastedf nodes, fit graph engine,
PyTorch eager) pay a constant cost per update, so at B = 1 they are timed on
the first --slow-rows rows for one epoch and their ms/epoch is scaled by
rows / slow_rows (marked '*' in the table); every other run covers all rows
for --epochs epochs.

FLOP count (GFLOP/s column): a matmul of a (B, n_in) batch by (n_in, n_out)
counts 2 * B * n_in * n_out flops; each Linear layer does 3 (forward x @ A,
weight gradient x.T @ g, input gradient g @ A.T) except the first layer, whose
input gradient is not needed: 2.  Per epoch over n rows: logistic
4 * n * d; one hidden layer of width H: n * (4 * d * H + 6 * H).  Elementwise
work (bias, sigmoid, loss) is not counted.

Usage:  python benchmarks/bench_scale.py [--d 2,64,784] [--hidden none,64,128] [--batch-sizes 1,32,256]
                                         [--rows 4096] [--epochs 3] [--repeats 5] [--slow-rows 512] [--threads 1]
"""
import os
import sys


def _threads_from_argv(argv):
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
        if arg.startswith("--threads="):
            return int(arg.split("=", 1)[1])
    return 1


THREADS = _threads_from_argv(sys.argv)
if THREADS > 0:  # before NumPy, Numba, torch or JAX is imported
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[_var] = str(THREADS)
    if THREADS == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    # The process runs on THREADS cores, whatever a library does with its threads: XLA's flags alone did not
    # keep JAX's matmuls on one core (83 GFLOP/s where one core gives 48), so earlier tables flattered JAX.
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:THREADS])
# fastedf pins the BLAS its kernels call (FASTEDF_BLAS_THREADS, default 1); give it the same threads as the others
os.environ["FASTEDF_BLAS_THREADS"] = str(THREADS if THREADS > 0 else os.cpu_count())

import argparse  # noqa: E402
import functools  # noqa: E402
import pathlib  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import course_loop  # noqa: E402
import handwritten_mlp  # noqa: E402
from fastedf import numpy_edf  # noqa: E402

import fastedf  # noqa: E402

try:
    import torch
    if THREADS > 0:
        torch.set_num_threads(THREADS)
except ImportError:
    torch = None
try:
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
except ImportError:
    jax = None

LR = 0.1
EPS = 1e-12
TOLERANCE = 1e-8


# ---------------------------------------------------------------- data and model

def make_data(rows, d, seed=0):
    """X (rows, d) normal with rows of norm about 1; Y (rows, 1) in {0, 1} from a noisy linear teacher.

    Unit-norm rows keep one SGD step from moving a logit by more than about
    lr, so no sigmoid saturates: there the course's chain rule through the
    clipped BCE and the fused p - y of the other implementations agree.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, d)) / np.sqrt(d)
    w = 3.0 * rng.standard_normal(d)
    Y = (X @ w + rng.standard_normal(rows) > 0).astype(np.float64).reshape(-1, 1)
    return X, Y


def make_init(d, hidden, seed=1):
    """Initial parameters [A1, b1] (logistic) or [A1, b1, A2, b2]; A is (n_in, n_out), b is (n_out,)."""
    rng = np.random.default_rng(seed)
    widths = [d, 1] if hidden is None else [d, hidden, 1]
    params = []
    for layer, (n_in, n_out) in enumerate(zip(widths, widths[1:])):
        scale = 1.0 if layer == 0 else 1.0 / np.sqrt(n_in)  # unit-norm inputs: pre-activations about N(0, 1)
        params += [scale * rng.standard_normal((n_in, n_out)), 0.1 * rng.standard_normal(n_out)]
    return params


def flops_per_epoch(rows, d, hidden):
    return 4 * rows * d if hidden is None else rows * (4 * d * hidden + 6 * hidden)


def edf_graph(edf, init):
    """The model on module `edf`'s nodes: (x, y, loss, nodes in topological order, parameters)."""
    x, y = edf.Input(), edf.Input()
    params = [edf.Parameter(p.copy()) for p in init]
    nodes, h = [x, y], x
    for A, b in zip(params[::2], params[1::2]):
        linear = edf.Linear(h, A, b)
        h = edf.Sigmoid(linear)
        nodes += [A, b, linear, h]
    loss = edf.BCE(y, h)
    return x, y, loss, nodes + [loss], params


# ---------------------------------------------------------------- implementations
# Each: impl(X, Y, init, batch, epochs) -> (seconds spent training, final parameters as NumPy arrays).

def run_course_loop(edf, X, Y, init, batch, epochs):
    """The course's loop (benchmarks/course_loop.py) over `edf`'s nodes; returns (seconds, parameters)."""
    x, y, _, nodes, params = edf_graph(edf, init)
    seconds = course_loop.train(nodes, params, x, y, X, Y, batch, epochs, LR)
    return seconds, [np.array(p.value) for p in params]


def numpy_edf_loop(X, Y, init, batch, epochs):
    return run_course_loop(numpy_edf, X, Y, init, batch, epochs)


def fastedf_loop(X, Y, init, batch, epochs):
    return run_course_loop(fastedf, X, Y, init, batch, epochs)


def handwritten(X, Y, init, batch, epochs):
    params = [p.copy() for p in init]
    loss = np.zeros(epochs)
    train = handwritten_mlp.train_logistic if len(params) == 2 else handwritten_mlp.train_mlp
    start = time.perf_counter()
    train(X, Y, *params, batch, epochs, LR, loss)
    return time.perf_counter() - start, params


def fit(engine, X, Y, init, batch, epochs):
    x, y, loss, _, params = edf_graph(fastedf, init)
    history = fastedf.fit(loss, {x: X, y: Y}, batch_size=batch, epochs=epochs, lr=LR, engine=engine)
    return history.train_time_s, [np.array(p.value) for p in params]


def fit_graph(X, Y, init, batch, epochs):
    return fit("graph", X, Y, init, batch, epochs)


def fit_compiled(X, Y, init, batch, epochs):
    return fit("compiled", X, Y, init, batch, epochs)


def torch_eager(X, Y, init, batch, epochs):
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    params = [torch.tensor(p, requires_grad=True) for p in init]
    start = time.perf_counter()
    for _ in range(epochs):
        for i in range(0, len(X), batch):
            h = Xt[i:i + batch]
            for A, b in zip(params[::2], params[1::2]):
                h = torch.sigmoid(h @ A + b)
            loss = torch.nn.functional.binary_cross_entropy(h, Yt[i:i + batch])  # mean: mean-over-rows gradient
            loss.backward()
            with torch.no_grad():
                for p in params:
                    p -= LR * p.grad
                    p.grad = None
    return time.perf_counter() - start, [p.detach().numpy() for p in params]


@functools.lru_cache(maxsize=None)
def jax_trainer(n, batch, epochs):
    """A jitted (params, X, Y) -> (params, each epoch's mean loss) running every epoch in lax.scan; compiled once
    per shape."""
    full, rest = n // batch, n % batch

    def loss(params, xb, yb):
        h = xb
        for A, b in zip(params[::2], params[1::2]):
            h = jax.nn.sigmoid(h @ A + b)
        p = jnp.clip(h, EPS, 1 - EPS)
        return -jnp.mean(yb * jnp.log(p) + (1 - yb) * jnp.log(1 - p))

    # The loss's value too, as every other implementation computes it (each epoch's mean is returned): with
    # jax.grad alone XLA drops the forward's logs, a step that does less than the others' (the d = 2 logistic
    # regression at B = 1 took 0.239 ms per epoch that way, docs/benchmarks.md section 1 at ecde755).
    value_and_grad = jax.value_and_grad(loss)

    def step(params, xy):
        value, grads = value_and_grad(params, *xy)
        return [p - LR * g for p, g in zip(params, grads)], value * xy[0].shape[0]

    @jax.jit
    def train(params, X, Y):
        d = X.shape[1]
        Xf, Yf = X[:full * batch].reshape(full, batch, d), Y[:full * batch].reshape(full, batch, 1)

        def epoch(params, _):
            params, losses = jax.lax.scan(step, params, (Xf, Yf))
            total = losses.sum()
            if rest:
                params, last = step(params, (X[full * batch:], Y[full * batch:]))
                total = total + last
            return params, total / n

        return jax.lax.scan(epoch, params, None, length=epochs)

    return train


def jax_scan(X, Y, init, batch, epochs):
    train = jax_trainer(len(X), batch, epochs)
    params, Xj, Yj = [jnp.asarray(p) for p in init], jnp.asarray(X), jnp.asarray(Y)
    start = time.perf_counter()
    params, epoch_loss = jax.block_until_ready(train(params, Xj, Yj))
    return time.perf_counter() - start, [np.asarray(p) for p in params]


# name -> (function, runs a Python step loop: timed on --slow-rows rows at B = 1)
IMPLEMENTATIONS = {
    "numpy_edf": (numpy_edf_loop, True),
    "handwritten_blas": (handwritten, False),
    "fastedf_loop": (fastedf_loop, True),
    "fit_graph": (fit_graph, True),
    "fit_compiled": (fit_compiled, False),
}
if torch is not None:
    IMPLEMENTATIONS["torch_eager"] = (torch_eager, True)
if jax is not None:
    IMPLEMENTATIONS["jax_scan"] = (jax_scan, False)


# ---------------------------------------------------------------- driver

def configs(args, batch, python_loop):
    """(rows, epochs) of the check run and of this implementation's timed runs."""
    small = (min(args.slow_rows, args.rows), 1)
    full = (args.rows, args.epochs)
    check = small if batch == 1 else full
    return check, (small if batch == 1 and python_loop else full)


def check_point(args, d, hidden, batch):
    """Runs every implementation on the check configuration; returns {name: max abs parameter difference}."""
    (rows, epochs), _ = configs(args, batch, True)
    X, Y = make_data(args.rows, d)
    init = make_init(d, hidden)
    _, ref = numpy_edf_loop(X[:rows], Y[:rows], init, batch, epochs)
    diffs = {"numpy_edf": 0.0}
    for name, (impl, _) in IMPLEMENTATIONS.items():
        if name == "numpy_edf":
            continue
        _, params = impl(X[:rows], Y[:rows], init, batch, epochs)
        diffs[name] = max(float(np.max(np.abs(np.reshape(p, np.shape(r)) - r))) for p, r in zip(params, ref))
    return diffs


def time_point(args, d, hidden, batch):
    """{name: (ms per epoch over all rows, scaled?)}, fastest of --repeats interleaved runs."""
    X, Y = make_data(args.rows, d)
    init = make_init(d, hidden)
    runs = {}
    for name, (impl, python_loop) in IMPLEMENTATIONS.items():
        _, (rows, epochs) = configs(args, batch, python_loop)
        runs[name] = (impl, rows, epochs)
        if not python_loop:  # compile at the timed shapes (JAX), warm caches
            impl(X[:rows], Y[:rows], init, batch, epochs)
    best = {name: np.inf for name in runs}
    for _ in range(args.repeats):
        for name, (impl, rows, epochs) in runs.items():
            seconds, _ = impl(X[:rows], Y[:rows], init, batch, epochs)
            best[name] = min(best[name], seconds / epochs * args.rows / rows)
    return {name: (best[name] * 1e3, runs[name][1] != args.rows) for name in runs}


def print_table(results, rows):
    print(f"{'d':>4} {'hidden':>6} {'B':>4}  {'implementation':<17} {'ms/epoch':>10} {'GFLOP/s':>8} "
          f"{'x fastest':>9} {'max |dparam|':>13}")
    for (d, hidden, batch), (times, diffs) in results.items():
        fastest = min(ms for ms, _ in times.values())
        gflop = flops_per_epoch(rows, d, hidden) / 1e9
        for name, (ms, scaled) in times.items():
            print(f"{d:>4} {hidden or 'none':>6} {batch:>4}  {name:<17} {ms:>9.3f}{'*' if scaled else ' '} "
                  f"{gflop / (ms / 1e3):>8.2f} {ms / fastest:>8.2f}x {diffs[name]:>13.1e}")
    print("* timed on --slow-rows rows for one epoch (a Python loop: constant cost per update), scaled to all rows")


def csv_ints(text):
    return [int(v) for v in text.split(",")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=csv_ints, default=[2, 64, 784])
    parser.add_argument("--hidden", default="none,64,128", help="comma list of hidden widths; 'none' = logistic")
    parser.add_argument("--batch-sizes", type=csv_ints, default=[1, 32, 256])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--slow-rows", type=int, default=512, help="rows the Python-loop implementations time at B=1")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/Numba/torch/XLA threads; 0 = library defaults")
    args = parser.parse_args()
    hiddens = [None if h.strip().lower() == "none" else int(h) for h in args.hidden.split(",")]
    grid = [(d, h, b) for d in args.d for h in hiddens for b in args.batch_sizes]

    versions = [f"numpy {np.__version__}", f"fastedf {fastedf.__version__}"]
    versions += [f"torch {torch.__version__}"] if torch is not None else ["torch not installed"]
    versions += [f"jax {jax.__version__}"] if jax is not None else ["jax not installed"]
    pinned = (f"{THREADS} (OPENBLAS/OMP/MKL/NUMBA_NUM_THREADS={THREADS}, torch.set_num_threads({THREADS})"
              + (", XLA single-threaded)" if THREADS == 1 else ")")) if THREADS > 0 else \
        f"library defaults ({os.cpu_count()} cores)"
    print(f"bench_scale: threads {pinned}; {', '.join(versions)}")
    print(f"float64, rows={args.rows}, epochs={args.epochs}, lr={LR}, min of {args.repeats} repeats, "
          f"B=1 check and Python-loop timing on {min(args.slow_rows, args.rows)} rows x 1 epoch")

    checks = {point: check_point(args, *point) for point in grid}
    failed = [(point, name, diff) for point, diffs in checks.items() for name, diff in diffs.items()
              if not diff <= TOLERANCE]
    for (d, hidden, batch), name, diff in failed:
        print(f"FAIL: {name} at d={d}, hidden={hidden or 'none'}, B={batch}: max |param - numpy_edf| = {diff:.3e} "
              f"> {TOLERANCE:g}")
    if failed:
        sys.exit(1)
    print(f"check: every implementation ends at the NumPy EDF's parameters (max abs diff <= {TOLERANCE:g})")
    print_table({point: (time_point(args, *point), checks[point]) for point in grid}, args.rows)


if __name__ == "__main__":
    main()
