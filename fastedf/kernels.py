"""Numba kernels every engine shares: the SGD update, the epoch's row order, checks.

The kernels of each operation live beside its node in fastedf.ops.  Each
kernel is a pure function of float64 arrays and scalars that writes into
preallocated outputs and allocates nothing; kernels trust their arguments
(shapes and dtypes are checked by the Python callers).  Slow, obvious NumPy
versions of every kernel live in tests/naive.py.
"""
import numpy as np

from .config import helper, intrinsic, kernel, numpy_twin


@helper
def common_size(a, b):
    """a.size, after checking that b has as many elements.

    Elementwise kernels index through .flat, which Numba never bounds-checks, so
    each checks its sizes here: a mismatch the Python checks missed raises
    instead of reading or writing past an array.
    """
    if a.size != b.size:
        raise ValueError("fastedf kernel: arrays of different sizes")
    return a.size


@helper
def common_size3(a, b, c):
    """a.size, after checking that b and c have as many elements (see common_size)."""
    common_size(a, c)
    return common_size(a, b)


@kernel
def sgd_update(param, grad, lr):
    """param -= lr * grad, in place; both with the same number of elements."""
    for i in range(common_size(param, grad)):
        param.flat[i] -= lr * grad.flat[i]


@numpy_twin(sgd_update)
def sgd_update_numpy(param, grad, lr):
    if param.size != grad.size:
        raise ValueError("fastedf kernel: arrays of different sizes")
    param -= lr * grad.reshape(param.shape)


@kernel
def accumulate(total, grad, weight, first):
    """total = weight * grad when first, else total += weight * grad: a batch's gradient from its micro-batches."""
    for i in range(common_size(total, grad)):
        if first:
            total.flat[i] = weight * grad.flat[i]
        else:
            total.flat[i] += weight * grad.flat[i]


@kernel
def take_rows(src, order, dst):
    """dst[i] = src[order[i]] for every row i: one epoch's shuffled copy of the data."""
    for i in range(order.size):
        row = order[i]
        for k in range(src.shape[1]):  # element by element: a slice assignment may copy its source
            dst[i, k] = src[row, k]


@kernel
def shuffle_order(order, state):
    """Fisher-Yates shuffle of the int64 array `order` in place; returns the next uint64 state.

    Draws from a splitmix64 stream, so the graph and compiled trainers, which
    both call this kernel, visit the rows in the same order for the same seed.
    The rule, all arithmetic modulo 2**64: for i = n-1 down to 1,
    state += 0x9E3779B97F4A7C15; z = (state ^ (state >> 30)) * 0xBF58476D1CE4E5B9;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB; z ^= z >> 31; then swap
    order[i] and order[z % (i + 1)].
    """
    state = np.uint64(state)  # an int64 state would turn the mixing below into float arithmetic
    for i in range(order.size - 1, 0, -1):
        state += np.uint64(0x9E3779B97F4A7C15)
        z = (state ^ (state >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
        j = np.int64(z % np.uint64(i + 1))
        order[i], order[j] = order[j], order[i]
    return state


@kernel
def first_bad_row(a, low, high):
    """The first row of a (rows, k) holding a value outside [low, high] or NaN, or -1."""
    for i in range(a.shape[0]):
        for k in range(a.shape[1]):
            if not (low <= a[i, k] <= high):
                return i
    return -1


@intrinsic
def borrowed(typingctx, array):
    """The same array without its reference to the memory's owner (a null meminfo), for a training program.

    Every view Numba makes of an owned array takes a reference and drops it
    again, each an atomic add in a call that LLVM does not inline: at the
    study's batch size of 1 those calls took as long as the rest of the step
    (an ad hoc perf profile, one run; bench_fit.py at B = 1 shows the gain).
    A view of a borrowed array takes none.  Only for arrays that outlive every
    use of the view: a program's arguments, which its caller holds until it
    returns, and that it never returns or stores.
    """
    from numba import types
    from numba.core import cgutils
    if not isinstance(array, types.Array):
        return None

    def codegen(context, builder, signature, args):
        source = context.make_array(array)(context, builder, value=args[0])
        view = context.make_array(array)(context, builder)
        for field in ("nitems", "itemsize", "data", "shape", "strides"):
            setattr(view, field, getattr(source, field))
        view.meminfo = cgutils.get_null_value(view.meminfo.type)
        view.parent = cgutils.get_null_value(view.parent.type)
        return view._getvalue()
    return array(array), codegen


@intrinsic
def gemm(typingctx, a, b, out):
    """out = a @ b for 2-D float64 arrays, out C-contiguous (a copy of any other would be written); returns out.

    np.dot(a, b, out)'s own code (numba.np.linalg: a copy of a strided
    operand, the shape checks, zeros for an empty sum, then BLAS gemm, or gemv
    or dot for a vector operand), so the same BLAS calls and bits, without the
    function Numba's np.dot compiles around that code for each combination of
    layouts: ~0.25 s of cold compile apiece in Numba's compile events (one cold
    fit), its IR optimised again in every kernel that calls it.
    """
    from numba import types
    from numba.np import linalg  # imports SciPy's BLAS: only where a kernel calling gemm is compiled
    if not (all(isinstance(t, types.Array) and t.ndim == 2 and t.dtype == types.float64 for t in (a, b, out))
            and out.layout == "C"):
        return None
    linalg.ensure_blas()

    def codegen(context, builder, signature, args):
        with linalg.make_contiguous(context, builder, signature, args) as (signature, args):
            return linalg.dot_3_mm(context, builder, signature, args)
    return out(a, b, out), codegen


# Views into a compiled program's arena (fastedf.compiler): record i of the int64 table holds
# start, stop and the shape of one named buffer.  Generated code picks the helper of the buffer's rank.
# Borrowed (see borrowed): the program's caller holds the arena.
@helper
def view1(arena, table, i):
    return borrowed(arena)[table[i]:table[i + 1]]


@helper
def view2(arena, table, i):
    return borrowed(arena)[table[i]:table[i + 1]].reshape((table[i + 2], table[i + 3]))


@helper
def view4(arena, table, i):
    return borrowed(arena)[table[i]:table[i + 1]].reshape((table[i + 2], table[i + 3], table[i + 4], table[i + 5]))
