"""Conv at the course's sizes: im2col + BLAS against direct loops; and where a conv net's step time goes.

Part 1 times one Conv forward + backward (dK, db; and dx, for a Conv whose x
is not data) with fastedf's im2col kernels (fastedf.ops.conv) and with the
direct-loop kernels below, kept here as the measured alternative, checks that
they agree, and prints microseconds and the ratio direct / im2col, with the
plain NumPy reference node (numpy_edf.Conv, which always computes dx) for scale.

Part 2 takes the course's small conv net (digits 8x8x1 -> Conv 3x3x4 -> ReLU
-> MaxPooling 2 -> Flatten -> Linear 64->10 -> Softmax -> CE) and splits each
node's forward + backward call time into its kernels' time (the same kernels
called directly on the node's own arrays) and the rest, the per-node Python
overhead that compiling the nodes could remove.

Single-threaded (the thread variables are set before NumPy is imported);
best of --repeats rounds, each about --round-ms long, after a warm-up call;
the functions compared alternate round by round.
Usage:  python benchmarks/bench_conv.py [--repeats 5] [--round-ms 20] [--part 1|2]

Measured on the 2-core development machine (shared, so +-20%), microseconds
per forward + backward without dx, im2col / direct:
    8x8x1 -> 4:    B=1  2.0 / 5.0    B=32  18 / 133    B=256  156 / 1053
    8x8x1 -> 16:   B=1  2.4 / 6.3    B=32  34 / 203    B=256  497 / 1336
    28x28x1 -> 8:  B=1  8.3 / 62     B=32 510 / 1983   B=256 6956 / 15797
    14x14x8 -> 16: B=1   23 / 76     B=32 1249 / 2369  B=256 16327 / 22225
(with dx the ratios are 2.1 to 6.2).  im2col is faster at every size, so
fastedf keeps only it.  The conv net's step (Part 2): the five nodes Conv to
Linear cost about 13 us of Python per step beyond their kernels at every
batch size: 41% of the step at B = 1, 15% at B = 32, 3% at B = 256.
"""
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
             "FASTEDF_BLAS_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import functools  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from fastedf import numpy_edf  # noqa: E402

import fastedf  # noqa: E402
from fastedf.config import kernel  # noqa: E402
from fastedf.ops import conv as C  # noqa: E402

# (H, W, C_in, C_out) with a 3x3 kernel: digits to 4, 8, 16 channels, MNIST-sized to 8,
# and a second layer 14x14x8 -> 16.
SIZES = [(8, 8, 1, 4), (8, 8, 1, 8), (8, 8, 1, 16), (28, 28, 1, 8), (14, 14, 8, 16)]
BATCHES = [1, 32, 256]


# --- the direct-loop alternative (not used by fastedf) -------------------------


@kernel
def direct_forward(x, K, b, out):
    """out[n, i, j, :] = b + sum over taps inside x of x[n, i+u-kh//2, j+v-kw//2, c] K[u, v, c, :]."""
    batch, H, W, cin = x.shape
    kh, kw, _, cout = K.shape
    ph, pw = kh // 2, kw // 2
    for n in range(batch):
        for i in range(H):
            u0, u1 = max(0, ph - i), min(kh, H + ph - i)
            for j in range(W):
                v0, v1 = max(0, pw - j), min(kw, W + pw - j)
                o_ = out[n, i, j]
                for o in range(cout):
                    o_[o] = b.flat[o]
                for u in range(u0, u1):
                    for v in range(v0, v1):
                        xr = x[n, i + u - ph, j + v - pw]
                        for c in range(cin):
                            xv = xr[c]
                            Kr = K[u, v, c]
                            for o in range(cout):  # contiguous in out and K
                                o_[o] += xv * Kr[o]


@kernel
def direct_backward(x, g, dK, db):
    """dK[u, v, c, :] = sum_{n, i, j} x[n, i+u-kh//2, j+v-kw//2, c] g[n, i, j, :]; db = sum g."""
    batch, H, W, cin = x.shape
    kh, kw, _, cout = dK.shape
    ph, pw = kh // 2, kw // 2
    dK[...] = 0.0
    for o in range(cout):
        db.flat[o] = 0.0
    for n in range(batch):
        for i in range(H):
            u0, u1 = max(0, ph - i), min(kh, H + ph - i)
            for j in range(W):
                v0, v1 = max(0, pw - j), min(kw, W + pw - j)
                gr = g[n, i, j]
                for o in range(cout):
                    db.flat[o] += gr[o]
                for u in range(u0, u1):
                    for v in range(v0, v1):
                        xr = x[n, i + u - ph, j + v - pw]
                        for c in range(cin):
                            xv = xr[c]
                            dKr = dK[u, v, c]
                            for o in range(cout):
                                dKr[o] += xv * gr[o]


@kernel
def direct_input_grad(g, K, dx):
    """dx[n, r, s, c] = sum over taps inside g of g[n, r-u+kh//2, s-v+kw//2, :] . K[u, v, c, :]."""
    batch, H, W, cin = dx.shape
    kh, kw, _, cout = K.shape
    ph, pw = kh // 2, kw // 2
    for n in range(batch):
        for r in range(H):
            u0, u1 = max(0, r + ph - H + 1), min(kh, r + ph + 1)
            for s in range(W):
                v0, v1 = max(0, s + pw - W + 1), min(kw, s + pw + 1)
                for c in range(cin):
                    acc = 0.0
                    for u in range(u0, u1):
                        for v in range(v0, v1):
                            gr = g[n, r - u + ph, s - v + pw]
                            Kr = K[u, v, c]
                            for o in range(cout):
                                acc += gr[o] * Kr[o]
                    dx[n, r, s, c] = acc


# --- timing ------------------------------------------------------------------


def best_us(fs, repeats, round_ms):
    """Best of `repeats` rounds of the mean time of each f() in fs, in microseconds.

    Rounds of the functions alternate, so a burst of load from other processes
    hits all of them alike; each round is about round_ms long.
    """
    counts = []
    for f in fs:
        f()  # warm-up (compilation, caches)
        start = time.perf_counter()
        f()
        counts.append(max(1, int(round_ms / 1e3 / max(time.perf_counter() - start, 1e-7))))
    best = [float("inf")] * len(fs)
    for _ in range(repeats):
        for k, (f, n) in enumerate(zip(fs, counts)):
            start = time.perf_counter()
            for _ in range(n):
                f()
            best[k] = min(best[k], (time.perf_counter() - start) / n)
    return [t * 1e6 for t in best]


def conv_variants(x, K, b, g):
    """Forward + backward of one Conv by im2col and by direct loops, as functions of want_dx; checks they agree."""
    (B, H, W, cin), cout = x.shape, K.shape[3]
    cols, dcols = np.empty((9 * cin + 1, B * H * W)), np.empty((9 * cin, B * H * W))
    Kb, dKb = np.empty((9 * cin + 1, cout)), np.empty((9 * cin + 1, cout))
    out1, out2 = np.empty((B, H, W, cout)), np.empty((B, H, W, cout))
    dK2, db2 = np.empty(K.shape), np.empty(cout)
    dx1, dx2 = np.empty(x.shape), np.empty(x.shape)

    def im2col(want_dx):
        C.conv_forward(x, K, b, cols, Kb, out1)
        C.conv_backward(cols, g, dKb)
        if want_dx:
            C.conv_input_grad(g, K, dcols, dx1)

    def direct(want_dx):
        direct_forward(x, K, b, out2)
        direct_backward(x, g, dK2, db2)
        if want_dx:
            direct_input_grad(g, K, dx2)

    im2col(True)
    direct(True)
    for a, c in ((out1, out2), (dKb[:-1].reshape(K.shape), dK2), (dKb[-1], db2), (dx1, dx2)):
        # sums of up to 50 000 terms: absolute tolerance relative to the largest
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-13 * max(1.0, np.abs(c).max(initial=0.0)))
    return im2col, direct


def reference_conv(x, K, b, g):
    """numpy_edf's Conv forward + backward (dx always) with upstream gradient g."""
    ref = numpy_edf.Conv(numpy_edf.Parameter(x), numpy_edf.Parameter(K), numpy_edf.Parameter(b))
    ref.outputs = [type("Sink", (), {"gradients": {ref: g}})()]

    def both():
        ref.forward()
        ref.backward()
    return both


def part1(repeats, round_ms):
    print(f"Part 1: one Conv forward + backward, 3x3 kernel, single thread, microseconds (best of {repeats})")
    print("  'no dx': x is data (the first layer); 'with dx': x is an activation.  "
          "numpy_edf always computes dx.")
    print(f"{'H x W x Cin -> Cout':>20} {'B':>4} | {'im2col':>9} {'direct':>9} {'ratio':>6} | "
          f"{'im2col':>9} {'direct':>9} {'ratio':>6} | {'numpy_edf':>10}")
    print(f"{'':>20} {'':>4} | {'no dx':^26} | {'with dx':^26} |")
    rng = np.random.default_rng(0)
    for H, W, cin, cout in SIZES:
        for B in BATCHES:
            x, K = rng.normal(size=(B, H, W, cin)), rng.normal(size=(3, 3, cin, cout))
            b, g = rng.normal(size=cout), rng.normal(size=(B, H, W, cout))
            im2col, direct = conv_variants(x, K, b, g)
            t = best_us([functools.partial(im2col, False), functools.partial(direct, False),
                         functools.partial(im2col, True), functools.partial(direct, True)], repeats, round_ms)
            t += best_us([reference_conv(x, K, b, g)], min(repeats, 3), 0)  # one call per round: it is slow
            print(f"{f'{H}x{W}x{cin} -> {cout}':>20} {B:>4} | {t[0]:9.1f} {t[1]:9.1f} {t[1] / t[0]:6.2f} | "
                  f"{t[2]:9.1f} {t[3]:9.1f} {t[3] / t[2]:6.2f} | {t[4]:10.1f}")


# --- Part 2: per-node overhead in the course's conv net ------------------------


def conv_net(images, labels, B, rng):
    """The course script's net (tests/course_scripts/conv_net.py) on the first B digits; returns graph and nodes."""
    x, y = fastedf.Input(), fastedf.Input()
    x.value, y.value = images[:B], labels[:B]
    K, c = fastedf.Parameter(rng.normal(scale=0.5, size=(3, 3, 1, 4))), fastedf.Parameter(np.zeros(4))
    A, b = fastedf.Parameter(rng.normal(scale=0.2, size=(64, 10))), fastedf.Parameter(np.zeros(10))
    conv = C.Conv(x, K, c)
    relu = fastedf.ReLU(conv)
    pool = C.MaxPooling(relu, 2)
    flat = C.Flatten(pool)
    logits = fastedf.Linear(flat, A, b)
    probs = fastedf.Softmax(logits)
    loss = fastedf.CE(y, probs)
    graph = [x, y, K, c, A, b, conv, relu, pool, flat, logits, probs, loss]
    return graph, {"conv": conv, "relu": relu, "pool": pool, "flat": flat, "logits": logits, "probs": probs,
                   "loss": loss}


def kernel_calls(nodes):
    """For each node but the softmax and the loss, its kernels called directly on the node's own arrays."""
    from fastedf.ops.activations import relu_backward, relu_forward
    from fastedf.ops.linear import linear_backward, linear_forward, linear_input_grad
    conv, relu, pool, flat, logits = (nodes[k] for k in ("conv", "relu", "pool", "flat", "logits"))
    x, K, c = (n.value for n in conv.inputs)
    cbuf = conv._buffers[x.shape, K.shape, c.shape]
    pbuf = pool._buffers[relu.value.shape + (pool.size,)]
    A, b = logits.inputs[1].value, logits.inputs[2].value
    dA, db = logits.gradients[logits.inputs[1]], logits.gradients[logits.inputs[2]]
    dx = logits.gradients[logits.inputs[0]]
    g = {name: node.upstream_gradient() for name, node in nodes.items() if name != "loss"}
    flat_in = flat.value.reshape(pool.value.shape)

    def conv_kernels():  # x is data: no dx, as at backward
        C.conv_forward(x, K, c, cbuf.cols, cbuf.Kb, conv.value)
        C.conv_backward(cbuf.cols, g["conv"], cbuf.dKb)

    def relu_kernels():
        relu_forward(conv.value, relu.value)
        relu_backward(relu.value, g["relu"], relu.gradients[conv])

    def pool_kernels():
        C.maxpool_forward(relu.value, pool.size, pool.value, pbuf.arg)
        C.maxpool_backward(g["pool"], pbuf.arg, pool.size, pbuf.dx)

    def flat_copy():  # Flatten has no kernel: its forward is this copy, its backward a reshape
        np.copyto(flat_in, pool.value)

    def linear_kernels():  # its x (flat) is an operation: dx is computed too, as at backward
        linear_forward(flat.value, A, b, logits.value)
        linear_backward(flat.value, g["logits"], dA, db)
        linear_input_grad(g["logits"], A, dx)

    return {"conv": conv_kernels, "relu": relu_kernels, "pool": pool_kernels, "flat": flat_copy,
            "logits": linear_kernels}


def step(graph):
    """The course loop's forward and backward over the graph (no update)."""
    for n in graph:
        n.forward()
    for n in reversed(graph):
        n.backward()


def node_calls(node):
    node.forward()
    node.backward()


def part2(repeats, round_ms):
    from sklearn.datasets import load_digits
    digits = load_digits()
    images = digits.images.reshape(-1, 8, 8, 1) / 16.0
    labels = np.eye(10)[digits.target]
    print("\nPart 2: the course's conv net (8x8x1 -> Conv 3x3x4 -> ReLU -> MaxPooling 2 -> Flatten -> Linear "
          "64->10 -> Softmax -> CE),")
    print(f"  graph engine, microseconds (best of {repeats}): each node's forward() + backward() calls, "
          "and its kernels called directly on its arrays")
    for B in BATCHES:
        graph, nodes = conv_net(images, labels, B, np.random.default_rng(5))
        fastedf.forward_pass(graph)
        fastedf.backward_pass(graph)

        calls = kernel_calls(nodes)
        names = list(nodes)
        times = best_us([functools.partial(step, graph)] + [functools.partial(node_calls, nodes[k]) for k in names]
                        + [calls[k] for k in calls], repeats, round_ms)
        total, t_nodes, t_kernels = times[0], dict(zip(names, times[1:])), dict(zip(calls, times[1 + len(names):]))
        print(f"\n  B = {B}: forward + backward of the whole graph (13 nodes) {total:.1f} us")
        print(f"  {'node':>8} {'calls':>9} {'kernels':>9} {'overhead':>9}")
        for name in names:
            if name in t_kernels:
                print(f"  {name:>8} {t_nodes[name]:9.1f} {t_kernels[name]:9.1f} {t_nodes[name] - t_kernels[name]:9.1f}")
            else:
                print(f"  {name:>8} {t_nodes[name]:9.1f} {'-':>9} {'-':>9}")
        ops = sum(t_nodes[k] for k in calls)
        kern = sum(t_kernels.values())
        rest = total - sum(t_nodes.values())
        print(f"  conv..logits: calls {ops:.1f}, kernels {kern:.1f}, Python overhead {ops - kern:.1f} us "
              f"({(ops - kern) / total:.0%} of the step); softmax + loss {t_nodes['probs'] + t_nodes['loss']:.1f} us; "
              f"leaves and the loop {rest:.1f} us")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds per measurement; the best is kept")
    parser.add_argument("--round-ms", type=float, default=20.0, help="length of one round")
    parser.add_argument("--part", type=int, choices=(1, 2), help="run one part only")
    args = parser.parse_args()
    fastedf.config.pin_blas_threads()  # as Conv.forward does; the kernels are called directly here
    print(f"numpy {np.__version__}, single-threaded, repeats {args.repeats}, rounds of {args.round_ms:g} ms")
    if args.part in (None, 1):
        part1(args.repeats, args.round_ms)
    if args.part in (None, 2):
        part2(args.repeats, args.round_ms)


if __name__ == "__main__":
    main()
