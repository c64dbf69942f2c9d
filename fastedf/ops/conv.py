"""Conv, MaxPooling and Flatten over channels-last images (B, H, W, C), and their kernels.

Conv runs as im2col + BLAS: every kernel tap (u, v, c) is one row of a column
matrix `cols` (kh * kw * C_in + 1, B * H * W), whose last row is ones so that
the bias rides in the product; the convolution and its gradients are then
three matrix products.  benchmarks/bench_conv.py measured this against direct
loops at the course's sizes (8x8x1 to 28x28x1 and 14x14x8 images, 3x3
kernels, 4 to 16 channels, batches of 1 to 256): im2col was 1.4 to 7 times
faster at every size, so it is the only implementation.

Compile rules: in a compiled program an image batch (B, H, W, C) is held as
(B, H * W * C) rows; each rule reshapes its rows to images with the sizes
seen at fit's dry run, so one program serves every batch size.
"""
import math

import numpy as np

from .. import config
from ..config import helper, kernel, numpy_twin
from ..kernels import gemm
from ..node import Input, Node, Parameter, _kept_copy, _reusable
from .linear import KEEP_YOURS, _is_size, init_rng


@kernel
def tap_mask(row, batch, H, W, du, dv):
    """row[p] = 0 for every pixel p = (n, i, j) whose tap (i + du, j + dv) falls outside the H x W image."""
    for n in range(batch):
        for i in range(H):
            base = (n * H + i) * W
            if 0 <= i + du < H:
                for j in range(min(W, max(0, -dv))):
                    row[base + j] = 0.0
                for j in range(max(0, W - dv), W):
                    row[base + j] = 0.0
            else:
                for j in range(W):
                    row[base + j] = 0.0


@kernel
def copy_into(dst, src):
    """dst[q] = src[q] for every q; 1-D, as many elements.  A contiguous pair compiles to a vector copy."""
    for q in range(dst.size):
        dst[q] = src[q]


@numpy_twin(copy_into)
def copy_into_numpy(dst, src):
    dst[:] = src[:dst.size]


@kernel
def add_into(dst, src):
    """dst[q] += src[q] for every q; 1-D, as many elements."""
    for q in range(dst.size):
        dst[q] += src[q]


@helper
def tap_shift(u, v, kh, kw, W, P):
    """Tap (u, v) of a kh x kw kernel over P pixels of W-wide images, in flat pixel order.

    Returns (du, dv, d, lo, hi): the tap's offset from the centre, the flat
    shift d, and the pixels [lo, hi) whose shifted index p + d is inside [0, P).
    Taps that cross an image edge there (to a neighbouring row or image) are
    for tap_mask.
    """
    du, dv = u - kh // 2, v - kw // 2
    d = du * W + dv
    return du, dv, d, max(0, -d), min(P, P - d)


@kernel
def conv_columns(x, kh, kw, cols):
    """cols[(u, v, c), (n, i, j)] = x[n, i + u - kh//2, j + v - kw//2, c], 0 outside x (im2col, transposed).

    x (B, H, W, C_in) C-contiguous, cols (kh * kw * C_in, B * H * W).
    """
    batch, H, W, cin = x.shape
    P = batch * H * W
    xf = x.reshape(x.size)
    t = 0
    for u in range(kh):
        for v in range(kw):
            # In flat pixel order the tap is a shift by d: one long copy (through views, so
            # it vectorizes), then the taps that crossed an image edge are zeroed.
            du, dv, d, lo, hi = tap_shift(u, v, kh, kw, W, P)
            for c in range(cin):
                row = cols[t]
                if lo < hi and cin == 1:
                    copy_into(row[lo:hi], xf[lo + d:hi + d])
                elif lo < hi:
                    copy_into(row[lo:hi], xf[(lo + d) * cin + c:(hi + d) * cin:cin])
                tap_mask(row, batch, H, W, du, dv)  # also covers [0, lo) and [hi, P), never written above
                t += 1


@kernel
def conv_forward(x, K, b, cols, Kb, out):
    """out[n, i, j, o] = b[o] + sum_{u, v, c} x[n, i + u - kh//2, j + v - kw//2, c] K[u, v, c, o], 0 outside x.

    x (B, H, W, C_in) and K (kh, kw, C_in, C_out) C-contiguous, b (C_out,) or (1, C_out),
    out (B, H, W, C_out).  With T = kh * kw * C_in: cols (T + 1, B * H * W) receives x's
    columns over a row of ones (kept for conv_backward) and Kb (T + 1, C_out) K as
    (T, C_out) over b, so that out = cols.T @ Kb: the bias rides in the product.
    """
    kh, kw, cin, cout = K.shape
    taps = kh * kw * cin
    conv_columns(x, kh, kw, cols[:taps])
    cols[taps, :] = 1.0
    copy_into(Kb.reshape(Kb.size)[:K.size], K.reshape(K.size))
    for o in range(cout):
        Kb[taps, o] = b.flat[o]
    gemm(cols.T, Kb, out.reshape(cols.shape[1], cout))


def _taps(images, kh, kw):
    """A view (kh, kw, C, B, H, W) of `images` (B, H, W, C) zero-padded by kh // 2 and kw // 2: the tap (u, v)
    of pixel (n, i, j) at [u, v, :, n, i, j], conv_columns' rows (u, v, c) and columns (n, i, j)."""
    batch, H, W, cin = images.shape
    padded = np.zeros((batch, H + kh - 1, W + kw - 1, cin))
    padded[:, kh // 2:kh // 2 + H, kw // 2:kw // 2 + W] = images
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(1, 2))  # (B, H, W, C, kh, kw)
    return windows.transpose(4, 5, 3, 0, 1, 2)


@numpy_twin(conv_forward)
def conv_forward_numpy(x, K, b, cols, Kb, out):
    kh, kw, cin, cout = K.shape
    taps = kh * kw * cin
    batch, H, W, _ = x.shape
    cols[:taps].reshape(kh, kw, cin, batch, H, W)[...] = _taps(x, kh, kw)
    cols[taps] = 1.0
    Kb[:taps] = K.reshape(taps, cout)
    Kb[taps] = b.reshape(cout)
    np.matmul(cols.T, Kb, out=out.reshape(cols.shape[1], cout))


@kernel
def conv_backward(cols, g, dKb):
    """dKb = cols @ g2 for the cols of conv_forward and g (B, H, W, C_out) C-contiguous as (B * H * W, C_out).

    Its first T = kh * kw * C_in rows are dK as (T, C_out), dK[u, v, c, o] =
    sum_{n, i, j} x[n, i + u - kh//2, j + v - kw//2, c] g[n, i, j, o]; the last row,
    from the row of ones, is db[o] = sum_{n, i, j} g[n, i, j, o].
    """
    gemm(cols, g.reshape(cols.shape[1], g.shape[3]), dKb)


@numpy_twin(conv_backward)
def conv_backward_numpy(cols, g, dKb):
    np.matmul(cols, g.reshape(cols.shape[1], g.shape[3]), out=dKb)


@kernel
def conv_input_grad(g, K, dcols, dx):
    """dx[n, r, s, c] = sum_{u, v, o} g[n, r - u + kh//2, s - v + kw//2, o] K[u, v, c, o], terms inside g only.

    g (B, H, W, C_out), K (kh, kw, C_in, C_out) and dx (B, H, W, C_in) C-contiguous;
    dcols (kh * kw * C_in, B * H * W) is scratch.  col2im of dcols = K2 @ g2.T: each
    column entry is added back to the pixel conv_columns copied it from.
    """
    batch, H, W, cin = dx.shape
    kh, kw, _, cout = K.shape
    P = batch * H * W
    gemm(K.reshape(kh * kw * cin, cout), g.reshape(P, cout).T, dcols)
    dxf = dx.reshape(dx.size)
    dxf[:] = 0.0
    t = 0
    for u in range(kh):
        for v in range(kw):
            du, dv, d, lo, hi = tap_shift(u, v, kh, kw, W, P)
            for c in range(cin):
                row = dcols[t]
                tap_mask(row, batch, H, W, du, dv)  # taps that fell outside x carry no gradient
                if lo < hi and cin == 1:
                    add_into(dxf[lo + d:hi + d], row[lo:hi])
                elif lo < hi:
                    add_into(dxf[(lo + d) * cin + c:(hi + d) * cin:cin], row[lo:hi])
                t += 1


@numpy_twin(conv_input_grad)
def conv_input_grad_numpy(g, K, dcols, dx):
    batch, H, W, cin = dx.shape
    kh, kw, _, cout = K.shape
    np.matmul(K.reshape(kh * kw * cin, cout), g.reshape(batch * H * W, cout).T, out=dcols)
    # col2im: each tap's column entries added back to the padded pixel they were copied from, taps in order
    padded = np.zeros((batch, H + kh - 1, W + kw - 1, cin))
    per_tap = dcols.reshape(kh, kw, cin, batch, H, W).transpose(0, 1, 3, 4, 5, 2)
    for u in range(kh):
        for v in range(kw):
            padded[:, u:u + H, v:v + W] += per_tap[u, v]
    dx[...] = padded[:, kh // 2:kh // 2 + H, kw // 2:kw // 2 + W]


@kernel
def split_bias_row(dKb, dK, db):
    """dK and db from conv_backward's dKb (T + 1, C_out): dK (as (T, C_out)) its first T rows, db its last."""
    taps, cout = dKb.shape[0] - 1, dKb.shape[1]
    if dK.size != taps * cout or db.size != cout:
        raise ValueError("fastedf kernel: arrays of different sizes")
    copy_into(dK.reshape(dK.size), dKb.reshape(dKb.size)[:dK.size])
    for o in range(cout):
        db.flat[o] = dKb[taps, o]


@numpy_twin(split_bias_row)
def split_bias_row_numpy(dKb, dK, db):
    taps, cout = dKb.shape[0] - 1, dKb.shape[1]
    if dK.size != taps * cout or db.size != cout:
        raise ValueError("fastedf kernel: arrays of different sizes")
    dK.reshape(taps, cout)[...] = dKb[:taps]
    db.reshape(cout)[...] = dKb[taps]


@kernel
def maxpool_forward(x, size, out, arg):
    """out[n, i, j, c] = max of the window x[n, i*size : (i+1)*size, j*size : (j+1)*size, c]; arg = u*size + v of it.

    x (B, H, W, C), out and arg (int64) (B, H/size, W/size, C).  The first
    maximum in row-major window order wins ties.  A window holding a NaN gives
    NaN and arg -1 (no gradient), as the reference's max and == do.
    """
    batch, Ho, Wo, C = out.shape
    for n in range(batch):
        for i in range(Ho):
            for j in range(Wo):
                for c in range(C):
                    best = x[n, i * size, j * size, c]
                    at = 0
                    nan = False
                    for u in range(size):
                        for v in range(size):
                            xv = x[n, i * size + u, j * size + v, c]
                            nan |= math.isnan(xv)  # flagged apart: a NaN test in the comparison costs a branch
                            if xv > best:  # strict: an equal later value loses
                                best = xv
                                at = u * size + v
                    out[n, i, j, c] = np.nan if nan else best
                    arg[n, i, j, c] = -1 if nan else at


def _windows(images, size):
    """(B, H/size, W/size, C, size * size) windows of images (B, H, W, C), u * size + v last (a copy)."""
    batch, H, W, C = images.shape
    blocks = images.reshape(batch, H // size, size, W // size, size, C).transpose(0, 1, 3, 5, 2, 4)
    return blocks.reshape(batch, H // size, W // size, C, size * size)


@numpy_twin(maxpool_forward)
def maxpool_forward_numpy(x, size, out, arg):
    windows = _windows(x, size)
    np.argmax(windows, axis=-1, out=arg)  # the first maximum in window order
    np.copyto(out, np.take_along_axis(windows, arg[..., None], axis=-1)[..., 0])
    nan = np.isnan(windows).any(axis=-1)
    if nan.any():
        out[nan], arg[nan] = np.nan, -1


@kernel
def maxpool_backward(g, arg, size, dx):
    """dx[n, i*size + u, j*size + v, c] = g[n, i, j, c] if u*size + v == arg[n, i, j, c], else 0.

    g and arg (B, H/size, W/size, C), dx (B, H, W, C): every element written once.
    """
    batch, Ho, Wo, C = g.shape
    for n in range(batch):
        for i in range(Ho):
            for u in range(size):
                for j in range(Wo):
                    for v in range(size):
                        at = u * size + v
                        for c in range(C):
                            dx[n, i * size + u, j * size + v, c] = g[n, i, j, c] if arg[n, i, j, c] == at else 0.0


@numpy_twin(maxpool_backward)
def maxpool_backward_numpy(g, arg, size, dx):
    batch, Ho, Wo, C = g.shape
    routed = np.where(np.arange(size * size) == arg[..., None], g[..., None], 0.0)  # (B, Ho, Wo, C, size^2)
    dx[...] = routed.reshape(batch, Ho, Wo, C, size, size).transpose(0, 1, 4, 2, 5, 3).reshape(dx.shape)


class _Cache:
    """Buffers keyed by shape: `cache[key]` is `make(*key)`, made at the first use of the key and reused after.

    A few keys are kept (the training batch, a short last batch, an evaluation
    set), so alternating between them allocates nothing either.
    """

    KEEP = 4

    def __init__(self, make):
        self._make = make
        self._entries = {}

    def __getitem__(self, key):
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= self.KEEP:
                del self._entries[next(iter(self._entries))]  # the oldest key
            entry = self._entries[key] = self._make(*key)
        return entry


class _ConvBuffers:
    """One shape's buffers: x's columns, K over b, the gradients, and dx's when first needed."""

    def __init__(self, x_shape, K_shape, b_shape):
        kh, kw, cin, cout = K_shape
        taps = kh * kw * cin
        self.cols = np.empty((taps + 1, x_shape[0] * x_shape[1] * x_shape[2]))
        self.Kb, self.dKb = np.empty((taps + 1, cout)), np.empty((taps + 1, cout))
        # dK and db are views of dKb, the product that computes both
        self.dK, self.db = self.dKb[:taps].reshape(K_shape), self.dKb[taps].reshape(b_shape)
        self.x = self.dx = self.dcols = None

    def contiguous_x(self, x):
        """x, or its copy in a buffer when it is strided (conv_columns reads it flat)."""
        if x.flags.c_contiguous:
            return x
        if self.x is None:
            self.x = np.empty(x.shape)
        self.x[...] = x
        return self.x


CONV_CONVENTION = ("fastedf computes Conv(x, K, b) with stride 1 and zero 'same' padding (kernel // 2), channels "
                   "last: x (B, H, W, C_in), K (kh, kw, C_in, C_out) with odd kh, kw, b (C_out,)")
POOL_CONVENTION = ("fastedf computes MaxPooling(x, size) over non-overlapping size x size windows (stride == size), "
                   "channels last: x (B, H, W, C) with H and W divisible by size")


def _pair(value):
    """(a, b) from an int a (as (a, a)) or a pair of ints, else None."""
    if _is_size(value):
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_size(v) for v in value):
        return int(value[0]), int(value[1])
    return None


def _same_padding(padding, kernel):
    """True when `padding` (None, 'same', an int or a pair) is kernel // 2 on each axis of `kernel` (kh, kw)."""
    if isinstance(padding, str):
        padding = {"same": None, "valid": 0}.get(padding.lower(), padding)
    return padding is None or _pair(padding) == (kernel[0] // 2, kernel[1] // 2)


class Conv(Node):
    """2-D cross-correlation, stride 1, zero "same" padding, channels last.

    x (B, H, W, C_in), K (kh, kw, C_in, C_out) with kh and kw odd, b (C_out,) or (1, C_out):
        out[n, i, j, o] = b[o] + sum_{u, v, c} xpad[n, i + u, j + v, c] K[u, v, c, o],
    xpad being x with kh // 2 and kw // 2 zeros around H and W; out is (B, H, W, C_out).
    Backward: dK[u, v, c, o] = sum_{n, i, j} xpad[n, i + u, j + v, c] g[n, i, j, o],
    db[o] = sum_{n, i, j} g[n, i, j, o], and dx the same correlation run back
    (conv_input_grad).  Kernels: conv_forward, conv_backward, conv_input_grad.
    Buffers (columns, gradients, dx's scratch) are made at the first step at a
    shape and reused after; a few shapes are kept (_Cache).

    backward() uses the columns of x that forward() built, so the gradients are
    those at the x forward saw.  dx is computed at backward when x is an
    operation or a Parameter; for a data Input it is computed when
    `gradients[x]` is read (with K as it was at backward), as in Linear.

    Other forms students write, accepted where they are fastedf's convention:
    - Conv(x, K) without a bias: a bias of zeros that is not trained;
    - Conv(x, C_in, C_out, kernel, stride=1, padding=kernel // 2) (or
      kernel_size=, padding="same"): fastedf makes K ~ N(0, 1/(kh kw C_in))
      (fastedf.ops.linear.init_rng, as Linear's layer form) and b = 0, as
      `self.K`, `self.b`.
    Another stride or padding is refused here, channels-first data at the
    first forward, naming the shapes, the convention and `fastedf run`.
    """

    def __init__(self, x, K, b=None, kernel=None, stride=1, padding=None, kernel_size=None):
        kernel = kernel if kernel is not None else kernel_size
        if _is_size(K):
            K, b = self._make_parameters(K, b, kernel)
        elif kernel is not None:
            raise TypeError(f"Conv: a kernel size {kernel!r} goes with the layer form Conv(x, C_in, C_out, kernel); "
                            "with a kernel K write Conv(x, K, b)")
        if _pair(stride) != (1, 1):
            raise ValueError(f"Conv: stride {stride!r}; {CONV_CONVENTION}; {KEEP_YOURS}")
        if self._kernel_size is not None and not _same_padding(padding, self._kernel_size):
            raise ValueError(f"Conv: padding {padding!r} for a {self._kernel_size} kernel; {CONV_CONVENTION}; "
                             f"{KEEP_YOURS}")
        super().__init__([x, K] if b is None else [x, K, b])
        self._padding = padding  # checked against K's shape at the first forward
        self._buffers = _Cache(_ConvBuffers)
        self._checked = self._columns_of = self._g_kept = self._K_kept = self._zero_bias = None
        if isinstance(x, Input):  # data: its gradient is computed only when read
            self.gradients.defer(x, self._data_gradient)

    _kernel_size = None  # (kh, kw) of the layer form, known before the first forward

    def _make_parameters(self, c_in, c_out, kernel):
        window = _pair(kernel)
        if not _is_size(c_out) or window is None or min(c_in, c_out, *window) < 1:
            raise ValueError(f"Conv: the layer form is Conv(x, C_in, C_out, kernel) with positive integers, "
                             f"got C_in={c_in!r}, C_out={c_out!r}, kernel={kernel!r}")
        (kh, kw), c_in, c_out = window, int(c_in), int(c_out)
        self._kernel_size = (kh, kw)
        self.K = Parameter(init_rng.normal(0.0, 1.0 / math.sqrt(kh * kw * c_in), size=(kh, kw, c_in, c_out)))
        self.b = Parameter(np.zeros(c_out))
        return self.K, self.b

    def _conv_values(self):
        """x, K and b as float64 arrays; b is zeros of C_out, made once, for a Conv without a bias."""
        values = self._values()
        if len(values) == 3:
            return values
        x, K = values
        cout = K.shape[-1] if K.ndim else 0
        if self._zero_bias is None or self._zero_bias.shape != (cout,):
            self._zero_bias = np.zeros(cout)
        return x, K, self._zero_bias

    def forward(self):
        config.pin_blas_threads()  # the kernels' products run in BLAS; a no-op after the first call
        x, K, b = self._conv_values()
        self._check_shapes(x, K, b)
        buf = self._buffers[x.shape, K.shape, b.shape]
        shape = x.shape[:3] + (K.shape[3],)
        out = self.value if _reusable(self.value, shape) else np.empty(shape)
        conv_forward(buf.contiguous_x(x), np.ascontiguousarray(K), b, buf.cols, buf.Kb, out)
        self._columns_of = buf  # buf.cols now hold this x
        self.value = out

    def _check_shapes(self, x, K, b):
        """Raise unless x (B, H, W, C_in), K (kh, kw, C_in, C_out) with odd kh, kw and b (C_out,) fit."""
        shapes = (x.shape, K.shape, b.shape)
        if shapes == self._checked:
            return
        def refusal(what, hint=""):
            return ValueError(f"{self}: {what}; {CONV_CONVENTION}{hint}; {KEEP_YOURS}")

        if x.ndim != 4 or K.ndim != 4:
            hint = "; a one-channel batch (B, H, W) needs x[..., None]" if x.ndim == 3 else ""
            raise refusal(f"x has shape {x.shape} and K has shape {K.shape}", hint)
        hint = ""
        if x.shape[3] != K.shape[2] and x.shape[1] == K.shape[2]:
            hint = "; x looks channels-first: pass x.transpose(0, 2, 3, 1)"
        elif x.shape[3] != K.shape[2] and K.shape[1] == x.shape[3] and K.shape[2] % 2 and K.shape[3] % 2:
            hint = "; K looks like (C_out, C_in, kh, kw): pass K.transpose(2, 3, 1, 0)"
        if K.shape[0] % 2 == 0 or K.shape[1] % 2 == 0:
            raise refusal(f"K has shape {K.shape}, an even kernel size {K.shape[:2]}, whose 'same' padding is not "
                          "symmetric", hint)
        if x.shape[3] != K.shape[2]:
            raise refusal(f"x has shape {x.shape} with {x.shape[3]} channels but K has shape {K.shape} for "
                          f"{K.shape[2]}", hint)
        if b.shape != (K.shape[3],) and b.shape != (1, K.shape[3]):
            raise refusal(f"b has shape {b.shape} but K has shape {K.shape}; need b ({K.shape[3]},) or "
                          f"(1, {K.shape[3]}), one bias per output channel")
        if not _same_padding(self._padding, K.shape[:2]):
            raise refusal(f"padding {self._padding!r} for K of shape {K.shape}")
        self._checked = shapes

    def backward(self):
        x_node, K_node = self.inputs[:2]
        x, K, b = self._conv_values()
        self._check_shapes(x, K, b)  # values may have changed since forward
        g = np.ascontiguousarray(self._upstream(x.shape[:3] + (K.shape[3],)))
        K = np.ascontiguousarray(K)
        buf = self._buffers[x.shape, K.shape, b.shape]
        if self._columns_of is not buf:  # no forward at these shapes just before: x's columns again
            conv_forward(buf.contiguous_x(x), K, b, buf.cols, buf.Kb, np.empty(g.shape))
            self._columns_of = buf
        conv_backward(buf.cols, g, buf.dKb)
        self.gradients[K_node] = buf.dK
        if len(self.inputs) == 3:
            self.gradients[self.inputs[2]] = buf.db
        if isinstance(x_node, Input):
            if self.keeps_deferred:  # keep K as it is now: the script may update it before reading the gradient
                self._K_kept = _kept_copy(self._K_kept, K)
            self._g_kept = g if self.keeps_deferred else None
        else:
            if buf.dx is None:
                buf.dx, buf.dcols = np.empty(x.shape), np.empty((buf.cols.shape[0] - 1, buf.cols.shape[1]))
            conv_input_grad(g, K, buf.dcols, buf.dx)
            self.gradients[x_node] = buf.dx

    lowers_any_rank = True
    weight_slots = (1,)  # K, a Parameter of rank 4
    forward_state = ("_columns_of",)

    def uses_blas(self, rows):
        """The kernels' products always run in BLAS."""
        return True

    def lower(self, low):
        """Compile rule: conv_forward into the rule's own columns, conv_backward, and dx when needed."""
        x, K, *b = self.inputs
        if not all(isinstance(node, Parameter) for node in (K, *b)):
            raise low.Unsupported(f"{self}: K and b must be Parameters to compile")
        _, H, W, cin = low.shape(x)
        kh, kw, _, cout = low.shape(K)
        taps, pixels, i = kh * kw * cin, H * W, low.index[self]
        cols = low.buffer(self, "cols", per_row=(taps + 1) * pixels)
        Kb, dKb = (low.buffer(self, name, shape=(taps + 1, cout)) for name in ("Kb", "dKb"))
        # without a bias: zeros that stay zero (buffers are zeroed once per fit), and a gradient nobody reads
        bias, dbias = ((low.value(b[0]), low.grad(b[0])) if b
                       else (low.buffer(self, name, shape=(cout,)) for name in ("zero_b", "unread_db")))
        forward = [f"cols{i} = {cols}[:n * {(taps + 1) * pixels}].reshape(({taps + 1}, n * {pixels}))",
                   f"conv_forward({_images(low.value(x), H, W, cin)}, {low.value(K)}, {bias}, "
                   f"cols{i}, {Kb}, {_images(low.value(self), H, W, cout)})"]
        g = _images(low.grad(self), H, W, cout)
        backward = [f"conv_backward(cols{i}, {g}, {dKb})", f"split_bias_row({dKb}, {low.grad(K)}, {dbias})"]
        if low.wants_grad[x]:
            dcols = low.buffer(self, "dcols", per_row=taps * pixels)
            backward.append(f"conv_input_grad({g}, {low.value(K)}, {dcols}[:n * {taps * pixels}].reshape(({taps}, "
                            f"n * {pixels})), {_images(low.grad(x), H, W, cin)})")
        return forward, backward

    def _data_gradient(self):
        g, K = self._g_kept, self._K_kept
        if g is None:
            raise KeyError(self.inputs[0])  # no backward yet
        dx = np.empty(g.shape[:3] + (K.shape[2],))
        dcols = np.empty((K.shape[0] * K.shape[1] * K.shape[2], g.shape[0] * g.shape[1] * g.shape[2]))
        conv_input_grad(g, K, dcols, dx)
        return dx


class _PoolBuffers:
    """One x shape's buffers: the window maxima's positions and dx."""

    def __init__(self, B, H, W, C, size):
        self.arg = np.empty((B, H // size, W // size, C), dtype=np.int64)
        self.dx = np.empty((B, H, W, C))


class MaxPooling(Node):
    """Max over non-overlapping size x size windows of axes 1 and 2.

    x (B, H, W, C) to (B, H/size, W/size, C), H and W divisible by size
    (further trailing axes are treated as channels; (B, H, W) works too):
        out[n, i, j, c] = max_{u, v < size} x[n, i*size + u, j*size + v, c].
    The gradient goes to the maximum of each window, the first in row-major
    window order on ties; backward() routes it by the positions forward()
    found (in an int64 buffer).  Kernels: maxpool_forward, maxpool_backward.
    Also written MaxPooling(x, size, stride) or with (size, size) pairs: accepted
    when the windows are square and stride == size, refused otherwise.
    """

    def __init__(self, x, size=2, stride=None):
        window = _pair(size)
        if window is None or min(window) < 1:
            raise ValueError(f"MaxPooling: size must be a positive integer, got {size!r}")
        if window[0] != window[1] or (stride is not None and _pair(stride) != window):
            raise ValueError(f"MaxPooling: size {size!r} and stride {stride!r}; {POOL_CONVENTION}; {KEEP_YOURS}")
        super().__init__([x])
        self.size = window[0]
        self._buffers = _Cache(_PoolBuffers)
        self._checked = self._arg_of = None

    def _shapes(self, shape):
        """x's shape as (B, H, W, C) for the kernels, and the output's shape; raises unless they fit."""
        if shape != self._checked:
            s = self.size
            if len(shape) < 3 or shape[1] % s or shape[2] % s:
                raise ValueError(f"{self}: x has shape {shape}; MaxPooling(x, size={s}) takes x "
                                 f"(batch, H, W, C) channels-last with H and W divisible by {s}; {POOL_CONVENTION}; "
                                 f"{KEEP_YOURS}")
            B, H, W = shape[:3]
            self._as4 = (B, H, W, math.prod(shape[3:]))
            self._out_shape = (B, H // s, W // s) + shape[3:]
            self._checked = shape
        return self._as4, self._out_shape

    def forward(self):
        (x,) = self._values()
        as4, shape = self._shapes(x.shape)
        buf = self._buffers[as4 + (self.size,)]
        out = self.value if _reusable(self.value, shape) else np.empty(shape)
        # the reshapes are for x of another rank than 4 (views unless x is strided)
        maxpool_forward(x if x.ndim == 4 else x.reshape(as4), self.size,
                        out if out.ndim == 4 else out.reshape(buf.arg.shape), buf.arg)
        self._arg_of = buf  # buf.arg now holds this x's maxima
        self.value = out

    def backward(self):
        (x,) = self._values()
        as4, shape = self._shapes(x.shape)
        buf = self._buffers[as4 + (self.size,)]
        if self._arg_of is not buf:  # no forward at this shape just before (rare): find the maxima again
            maxpool_forward(x if x.ndim == 4 else x.reshape(as4), self.size, np.empty(buf.arg.shape), buf.arg)
            self._arg_of = buf
        g = self._upstream(shape)
        maxpool_backward(g if g.ndim == 4 else g.reshape(buf.arg.shape), buf.arg, self.size, buf.dx)
        self.gradients[self.inputs[0]] = buf.dx if x.ndim == 4 else buf.dx.reshape(x.shape)

    lowers_any_rank = True
    forward_state = ("_arg_of",)
    lower_options = ("size",)  # what the compile rule reads besides shapes (fastedf.compiler.structure)

    def lower(self, low):
        """Compile rule: maxpool_forward, the maxima's positions in the rule's own int64 buffer, and back."""
        (x,) = self.inputs
        _, H, W, C = self._shapes(low.shape(x))[0]
        s, i = self.size, low.index[self]
        pooled = (H // s) * (W // s) * C
        arg = low.buffer(self, "arg", per_row=pooled, dtype="int64")
        forward = [f"arg{i} = {_images(arg + f'[:n * {pooled}]', H // s, W // s, C)}",
                   f"maxpool_forward({_images(low.value(x), H, W, C)}, {s}, "
                   f"{_images(low.value(self), H // s, W // s, C)}, arg{i})"]
        backward = []
        if low.wants_grad[x]:
            backward = [f"maxpool_backward({_images(low.grad(self), H // s, W // s, C)}, arg{i}, {s}, "
                        f"{_images(low.grad(x), H, W, C)})"]
        return forward, backward


class Flatten(Node):
    """(B, d1, d2, ...) to (B, d1 * d2 * ...), row-major (NumPy's reshape order).

    The value is a copy in the node's own buffer, not a view of x: a view would
    keep x's array alive, and the node producing x could not reuse its buffer
    (an allocation per step); the copy costs less.  The gradient is the
    upstream gradient reshaped to x's shape (a view of it when it is contiguous).
    """

    def __init__(self, x):
        super().__init__([x])
        self._x_shape = self._shape = None

    def _shapes(self, x_shape):
        """x's shape and the output's (B, width), remembered for the next call at the same shape."""
        if x_shape != self._x_shape:
            if len(x_shape) < 1:
                raise ValueError(f"{self}: x is a scalar; Flatten takes a batch (batch, ...)")
            # the width from the shape, not -1: reshape(0, -1) fails on an empty batch
            self._shape = (x_shape[0], math.prod(x_shape[1:]))
            self._x_shape = x_shape
        return self._shape

    def forward(self):
        (x,) = self._values()
        shape = self._shapes(x.shape)
        out = self.value if _reusable(self.value, shape) else np.empty(shape)
        np.copyto(out.reshape(x.shape), x)
        self.value = out

    def backward(self):
        x_node = self.inputs[0]
        x_shape = np.shape(x_node.value)
        g = self._upstream(self._shapes(x_shape))
        self.gradients[x_node] = g.reshape(x_shape)

    lowers_any_rank = True

    def lower(self, low):
        """Compile rule: a copy of the rows, which the program already holds flattened, and of their gradient."""
        (x,) = self.inputs
        width = math.prod(low.shape(x)[1:])
        forward = [f"copy_into({low.value(self)}.reshape(n * {width}), {low.value(x)}.reshape(n * {width}))"]
        backward = []
        if low.wants_grad[x]:
            backward = [f"copy_into({low.grad(x)}.reshape(n * {width}), {low.grad(self)}.reshape(n * {width}))"]
        return forward, backward


def _images(rows, H, W, C):
    """Source for the program's (n, H * W * C) rows `rows` seen as n images (n, H, W, C)."""
    return f"{rows}.reshape((n, {H}, {W}, {C}))"


# What fastedf.ops collects from this module (its docstring says what each is)
NODES = (Conv, MaxPooling, Flatten)
ALIASES = {"Convolution": Conv, "Conv2D": Conv, "MaxPool": MaxPooling, "MaxPool2D": MaxPooling,
           "MaxPooling2D": MaxPooling, "Flattener": Flatten, "Flatten2D": Flatten}
ORDER = 4
