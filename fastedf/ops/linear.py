"""Linear: x @ A + b, its kernels and its compile rule."""

import numpy as np

from .. import config
from ..config import helper, kernel, numpy_twin
from ..kernels import gemm
from ..node import Input, Node, Parameter, _kept_copy, _reusable


# Multiply-adds (batch * n * m) from which a BLAS call beats the register loops,
# measured with benchmarks/bench_crossover.py (docs/benchmarks.md); below it a
# call's fixed cost is more than the work.
BLAS_MIN_WORK = 384

# Batches of fewer rows multiply x @ A and g @ A.T through BLAS one row at a time (a matrix-vector call
# each): a gemm call's fixed cost is more than its work there.  Digits MLP 64 -> 32 -> 10, one kernel call
# each, thread CPU: x @ A at 64 x 32 took 0.17 us for one row and 0.89 us as a 2-row gemm (0.92 at 4 rows,
# 1.1 at 8), so B = 2 cost 1.5x B = 1 per sample in fit (benchmarks/bench_per_sample.py).
BLAS_MIN_ROWS = 8

# Batches of at most this many rows sum dA = x.T @ g in registers, fused with the SGD step (linear_sgd_rows):
# dA and the step at 64 x 32 took 0.17 us per row at one row, 0.15 at two, against 0.34 for a 2-row gemm and
# a separate step; at four rows the register loops (0.29) lose to the gemm (0.21).
FUSED_MAX_ROWS = 2

# Weights of at least this many elements take their SGD step fused with their gradient for batches of up to
# FUSED_MAX_ROWS (at B = 1, 2 -> 64 -> 1: 3.1 -> 2.6 ms per epoch, 64 -> 1: 0.655 -> 0.623 ms); below it the
# pass saved is less than the kernel's own cold compile, 0.8 s in Numba's compile events (the study's 2 weights).
FUSED_STEP_MIN_SIZE = 64


def calls_blas(batch, n, m):
    """True when the kernels multiply (batch, n) by (n, m) in BLAS, as blas_rows decides (in Python: a helper
    cannot be called from it): from then on its threads are pinned (fastedf.config.pin_blas_threads), which
    imports SciPy's BLAS; smaller layers never import it."""
    rows = batch if batch >= BLAS_MIN_ROWS else min(batch, 1)  # under BLAS_MIN_ROWS each row is a product
    return rows > 0 and n > 0 and m > 0 and rows * n * m >= BLAS_MIN_WORK


@helper
def blas_pays(batch, n, m):
    """True when a matmul of (batch, n) by (n, m) is big enough for BLAS."""
    return batch > 0 and n > 0 and m > 0 and batch * n * m >= BLAS_MIN_WORK


@helper
def blas_rows(batch, n, m):
    """How to multiply a (batch, n) matrix by an (n, m) one: 0 the register loops, 1 BLAS row by row, 2 one gemm."""
    if batch >= BLAS_MIN_ROWS:
        return 2 if blas_pays(batch, n, m) else 0
    return 1 if blas_pays(1, n, m) else 0  # each row costs what a batch of one costs


@kernel
def linear_forward(x, A, b, out):
    """out = x @ A + b.  x (B, n), A (n, m), b (m,) or (1, m), out (B, m)."""
    batch, n = x.shape
    m = A.shape[1]
    how = blas_rows(batch, n, m)
    if how:
        if how == 2:
            gemm(x, A, out)  # into the preallocated out
        else:
            for i in range(batch):
                gemm(x[i:i + 1], A, out[i:i + 1])
        for i in range(batch):
            for j in range(m):
                out[i, j] += b.flat[j]
        return
    # Every out[i, j] is b[j] + x[i, 0] A[0, j] + x[i, 1] A[1, j] + ..., added in that order whichever loop
    # runs, so all three give the same bits; which is fastest depends on the shape (ad hoc timings of each loop,
    # one process each: docs/benchmarks.md section 1, "What changed"; test_kernels checks the order).
    if m == 1 and n < 8 <= batch:  # a narrow logistic head: a pass over the rows per input column
        for i in range(batch):
            out[i, 0] = b.flat[0]
        for k in range(n):
            a = A[k, 0]
            for i in range(batch):
                out[i, 0] += x[i, k] * a
    elif m >= 4:  # wide rows: x[i, k] times A's row k added to out's row i, vectorised along the row
        for i in range(batch):
            for j in range(m):
                out[i, j] = b.flat[j]
            for k in range(n):
                xik = x[i, k]
                for j in range(m):
                    out[i, j] += xik * A[k, j]
    else:  # a dot product per output, summed in a register (out may alias x or A, as far as LLVM knows)
        for i in range(batch):
            for j in range(m):
                acc = b.flat[j]
                for k in range(n):
                    acc += x[i, k] * A[k, j]
                out[i, j] = acc


@numpy_twin(linear_forward)
def linear_forward_numpy(x, A, b, out):
    np.matmul(x, A, out=out)
    out += b


@kernel
def linear_backward(x, g, dA, db):
    """dA = x.T @ g and db = g summed over rows.  x (B, n), g (B, m), dA (n, m), db (m,) or (1, m)."""
    batch, n = x.shape
    m = g.shape[1]
    if batch == 0:
        dA[:, :] = 0.0
        for j in range(m):
            db.flat[j] = 0.0
        return
    for j in range(m):  # the first row assigns, so no pass of zeros is needed (0 + a == a exactly)
        db.flat[j] = g[0, j]
    for i in range(1, batch):
        for j in range(m):
            db.flat[j] += g[i, j]
    if batch > FUSED_MAX_ROWS and blas_pays(batch, n, m):  # fewer rows: linear_sgd_rows' sums, in registers
        gemm(x.T, g, dA)
        return
    if m == 1:  # one output: a register sum per input column (the loops below had a one-trip innermost loop)
        for k in range(n):  # the same sum, in the same order: the same bits
            acc = x[0, k] * g[0, 0]
            for i in range(1, batch):
                acc += x[i, k] * g[i, 0]
            dA[k, 0] = acc
        return
    for j in range(m):
        for k in range(n):
            dA[k, j] = x[0, k] * g[0, j]
    for i in range(1, batch):
        for k in range(n):
            xik = x[i, k]
            for j in range(m):
                dA[k, j] += xik * g[i, j]


@numpy_twin(linear_backward)
def linear_backward_numpy(x, g, dA, db):
    np.matmul(x.T, g, out=dA)
    np.add.reduce(g, axis=0, keepdims=db.ndim == 2, out=db)  # row after row, as the kernel adds them


@kernel
def linear_input_grad(g, A, dx):
    """dx = g @ A.T.  g (B, m), A (n, m), dx (B, n)."""
    batch, m = g.shape
    n = A.shape[0]
    if m == 1:  # one output: an outer product, vectorised along A's column, never BLAS: 0.28x-0.46x a gemm's
        for i in range(batch):  # time from (32, 64) to (256, 784), the same bits (bench_outer_product.py)
            gi = g[i, 0]
            for k in range(n):
                dx[i, k] = 0.0 + gi * A[k, 0]  # 0.0 + as the loop below: -0.0 becomes 0.0 there too
        return
    how = blas_rows(batch, m, n)
    if how == 2:
        gemm(g, A.T, dx)
        return
    if how == 1:
        for i in range(batch):
            gemm(g[i:i + 1], A.T, dx[i:i + 1])
        return
    for i in range(batch):
        for k in range(n):
            acc = 0.0
            for j in range(m):
                acc += g[i, j] * A[k, j]
            dx[i, k] = acc


@numpy_twin(linear_input_grad)
def linear_input_grad_numpy(g, A, dx):
    np.matmul(g, A.T, out=dx)


@kernel
def linear_sgd_rows(x, g, A, b, lr):
    """A -= lr * (x.T @ g) and b -= lr * (g summed over rows) for a batch of 1 to FUSED_MAX_ROWS rows, in one pass.

    The arithmetic of linear_backward and then sgd_update at these batch
    sizes, where each dA[k, j] is x[0, k] g[0, j] (+ x[1, k] g[1, j]), summed
    in registers instead of written to dA: the same bits.
    """
    batch, n = x.shape
    m = A.shape[1]
    if not 1 <= batch <= FUSED_MAX_ROWS or g.shape[0] != batch or A.shape[0] != n or g.shape[1] != m or b.size != m:
        raise ValueError("fastedf kernel: arrays of different shapes")
    if batch == 1:
        for j in range(m):
            b.flat[j] -= lr * g[0, j]
        if m == 1:  # one output: a flat loop over A's column, which the compiler vectorises
            g0, a = g[0, 0], A.reshape(n)
            for k in range(n):
                a[k] -= lr * (x[0, k] * g0)
            return
        for k in range(n):
            xk = x[0, k]
            for j in range(m):
                A[k, j] -= lr * (xk * g[0, j])
        return
    for j in range(m):
        b.flat[j] -= lr * (g[0, j] + g[1, j])
    for k in range(n):
        x0, x1 = x[0, k], x[1, k]
        for j in range(m):
            A[k, j] -= lr * (x0 * g[0, j] + x1 * g[1, j])


class _SeededAtFirstDraw:
    """np.random.default_rng(seed), made at its first use: importing numpy.random costs `from fastedf import *`
    8-11 ms, and a script that builds no layer form draws nothing here."""

    def __init__(self, seed):
        self._seed, self._rng = seed, None

    def __getattr__(self, name):
        if self._rng is None:
            self._rng = np.random.default_rng(self._seed)
        return getattr(self._rng, name)


init_rng = _SeededAtFirstDraw(0)  # the layer forms' initial weights; assign a Generator for other draws


def _is_size(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


CONVENTION = "fastedf computes x @ A + b with samples as rows: x (B, n_in), A (n_in, n_out), b (n_out,) or (1, n_out)"
# Every refusal of a script's own convention ends with this: the runner keeps the script's conventions.
KEEP_YOURS = "to keep your script's own conventions, run it with `fastedf run SCRIPT.py`"


def _convention_error(node, x_shape, A_shape, b_shape):
    """Why x, A and b are not x @ A + b with samples as rows, the call that would work, and `fastedf run`."""
    got = f"{node}: x has shape {x_shape}, A has shape {A_shape} and b has shape {b_shape}"
    columns = len(x_shape) == 2 and len(A_shape) == 2 and x_shape[0] == A_shape[1]  # A @ x would fit
    if len(x_shape) != 2 or len(A_shape) != 2:
        fix = "reshape x to 2-D, e.g. x.reshape(len(x), -1), and give A as (n_in, n_out)"
    elif x_shape[1] == A_shape[1] and x_shape[1] != A_shape[0]:
        fix = "your A is (n_out, n_in): pass its transpose, Parameter(A.T)"
    elif columns and (x_shape[1] != A_shape[0] or A_shape[0] == 1):
        fix = ("this looks like samples as columns (A @ x): feed x.T (B, n_in) and pass Parameter(A.T)"
               + (f"; for {x_shape[0]} samples of one feature into {A_shape[1]} outputs write "
                  "Addition(Multiply(x, A), b)" if x_shape[1] == 1 == A_shape[0] else ""))
    elif x_shape[1] != A_shape[0]:
        fix = f"A's rows ({A_shape[0]}) must match x's columns ({x_shape[1]})"
    elif columns and np.prod(b_shape, dtype=int) == A_shape[0] != A_shape[1]:
        fix = "this looks like samples as columns (A @ x, b per row of A): feed x.T (B, n_in), pass Parameter(A.T)"
    else:
        fix = f"b must be ({A_shape[1]},) or (1, {A_shape[1]}), one bias per output, never broadcast to more rows"
    return f"{got}; {CONVENTION}; {fix}; {KEEP_YOURS}"


class Linear(Node):
    """x @ A + b for a batch x (B, n_in), A (n_in, n_out) and b (n_out,) or (1, n_out); samples are rows.

    Other forms students write, accepted where they are unambiguous:
    - Linear(x, n_in, n_out) with integers: fastedf makes A ~ N(0, 1/n_in) and
      b = 0 (fastedf.ops.linear.init_rng, seeded 0), as `self.A`, `self.b`;
      if x turns out n_out wide at the first forward, the two are swapped;
    - Linear(A, x, b), the weight first, when A is a Parameter and x is not
      (an Input, or a hidden layer's activation).
    Anything else that is not x @ A + b (samples as columns, a weight that only
    fits transposed, a bias that would broadcast to more rows) is refused at the
    first forward, naming the shapes, the call to write and `fastedf run`; so is
    x (n, 1) with A (1, n), also one sample as a column, except where the rows
    are known to be samples (fit, fastedf.models).  A square weight is read as
    given: (n_in, n_out).
    """

    def __init__(self, x, A, b=None):
        if _is_size(A) and (b is None or _is_size(b)):
            A, b = self._make_parameters(A, b)
        elif isinstance(x, Parameter) and not isinstance(A, Parameter) and b is not None:
            x, A = A, x  # Linear(A, x, b): the weight is the Parameter, the data an Input or another node's output
        if b is None:
            raise TypeError("Linear needs (x, A, b) or (x, n_in, n_out); got no bias argument")
        super().__init__([x, A, b])
        self._dA = self._db = self._dx = self._A_kept = self._g_kept = self._checked = None
        if isinstance(x, Input):  # data: its gradient is computed only when read
            self.gradients.defer(x, self._data_gradient)

    def forward(self):
        if self._sizes is not None:
            shape = np.shape(self.inputs[0].value)
            self._size_parameters(shape[1] if len(shape) == 2 else None)
        x, A, b = self._values()
        self._check_shapes(x, A, b)
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)  # BLAS reads contiguous rows; a strided feed is copied once here
        shape = (x.shape[0], A.shape[1])
        out = self.value if _reusable(self.value, shape) else np.empty(shape)
        linear_forward(x, A, b, out)
        self.value = out

    def _check_shapes(self, x, A, b):
        """Raise unless x (B, n), A (n, m) and b (m,) or (1, m) fit; remembers shapes that did.

        x (n, 1) with A (1, n) fits too, but is also one sample as a column (A @ x) whose x @ A is an
        outer product: refused as ambiguous, unless the rows are known to be samples (graph.rows_as_samples).
        """
        shapes = (x.shape, A.shape, b.shape, self.rows_are_samples)
        if shapes == self._checked:
            return
        m = A.shape[-1] if A.ndim else 0
        if (x.ndim != 2 or A.ndim != 2 or x.shape[1] != A.shape[0]
                or (x.shape[1] == 1 == A.shape[0] and x.shape[0] == m > 1 and not self.rows_are_samples)
                or (b.shape != (m,) and b.shape != (1, m))):
            raise ValueError(_convention_error(self, x.shape, A.shape, b.shape))
        if calls_blas(x.shape[0], *A.shape):
            config.pin_blas_threads()  # before the kernels' first BLAS call; a no-op after the first
        self._checked = shapes

    def uses_blas(self, rows):
        """True when the kernels call BLAS for a batch of `rows` rows (after a forward has set A)."""
        return calls_blas(rows, *np.shape(self.inputs[1].value))

    _sizes = None  # (first, second) integers of the layer form until the first forward settles them

    def _make_parameters(self, first, second):
        self._sizes = (int(first), int(second))
        if min(self._sizes) < 1:
            raise ValueError(f"Linear: layer sizes must be >= 1, got {first} and {second}")
        A, b = Parameter(np.zeros(self._sizes)), Parameter(np.zeros(self._sizes[1]))
        self.A, self.b = A, b
        return A, b

    def _size_parameters(self, x_width):
        """Initialise the layer form's A and b once x's width says which integer is n_in."""
        first, second = self._sizes
        if x_width == first:
            n_in, n_out = first, second
        elif x_width == second:
            n_in, n_out = second, first
        else:
            raise ValueError(f"{self}: x has width {x_width} but the layer was made with sizes {first} and {second}; "
                             f"write Linear(x, n_in, n_out) with n_in = {x_width}; {CONVENTION}; {KEEP_YOURS}")
        self.A.value = init_rng.normal(0.0, 1.0 / np.sqrt(n_in), size=(n_in, n_out))
        self.b.value = np.zeros(n_out)
        self._sizes = None

    def backward(self):
        x_node, A_node, b_node = self.inputs
        x, A, b = self._values()
        self._check_shapes(x, A, b)  # values may have changed since forward
        g = self._upstream((x.shape[0], A.shape[1]))
        dA, db = self._dA, self._db
        if dA is None or dA.shape != A.shape or db.shape != b.shape:
            dA, db = self._dA, self._db = np.empty(A.shape), np.empty(b.shape)
        linear_backward(x, g, dA, db)
        self.gradients[A_node] = dA
        self.gradients[b_node] = db
        if isinstance(x_node, Input):
            if self.keeps_deferred:  # keep A as it is now: the script may update it before reading the gradient
                self._A_kept = _kept_copy(self._A_kept, A)
            self._g_kept = g if self.keeps_deferred else None
        else:
            dx = self._dx
            if dx is None or dx.shape != (g.shape[0], A.shape[0]):
                dx = self._dx = np.empty((g.shape[0], A.shape[0]))  # reused by the next backward, as dA is
            linear_input_grad(g, A, dx)
            self.gradients[x_node] = dx

    def _data_gradient(self):
        g, A = self._g_kept, self._A_kept
        if g is None:
            raise KeyError(self.inputs[0])  # no backward yet
        dx = np.empty((g.shape[0], A.shape[0]))  # a fresh array per read: the script keeps it
        linear_input_grad(g, A, dx)
        return dx

    def lower(self, low):
        """Compile rule: forward, the input's gradient when something needs it, then A's and b's.

        Without micro-batches and for an A of FUSED_STEP_MIN_SIZE or more, the
        rule also takes A's and b's SGD step (nothing else reads them: a
        Parameter feeding two nodes does not compile), and a batch of up to
        FUSED_MAX_ROWS rows takes it in one pass (linear_sgd_rows): at 784 x 64
        and one row that pass costs a third of computing dA and then updating A.
        """
        x, A, b = self.inputs
        if not (isinstance(A, Parameter) and isinstance(b, Parameter)):
            raise low.Unsupported(f"{self}: A and b must be Parameters to compile")
        forward = [f"linear_forward({low.value(x)}, {low.value(A)}, {low.value(b)}, {low.value(self)})"]
        backward = []
        if low.wants_grad[x]:  # before A changes
            backward.append(f"linear_input_grad({low.grad(self)}, {low.value(A)}, {low.grad(x)})")
        gradients = [f"linear_backward({low.value(x)}, {low.grad(self)}, {low.grad(A)}, {low.grad(b)})"]
        if low.micro or not low.updates:  # gradients accumulated over micro-batches, or a step without SGD
            return forward, backward + gradients
        if np.size(A.value) < FUSED_STEP_MIN_SIZE:  # too small for the pass saved to repay its compile time
            return forward, backward + gradients
        low.updated_by_rule.update((A, b))
        steps = [f"sgd_update({low.value(A)}, {low.grad(A)}, lr)", f"sgd_update({low.value(b)}, {low.grad(b)}, lr)"]
        fused = f"linear_sgd_rows({low.value(x)}, {low.grad(self)}, {low.value(A)}, {low.value(b)}, lr)"
        rows_apart = ["    " + line for line in gradients + steps]
        return forward, backward + [f"if n <= {FUSED_MAX_ROWS}:", "    " + fused, "else:"] + rows_apart


# What fastedf.ops collects from this module (its docstring says what each is)
NODES = (Linear,)
ALIASES = {}
ORDER = 1
