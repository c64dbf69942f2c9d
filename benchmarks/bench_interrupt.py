"""Ctrl-C latency of a long fit: SIGINT sent to a child process in the middle of training, to KeyboardInterrupt.

The child prints "training" once a step has changed the parameters (so the
signal lands inside the training loop, not during its set-up); the signal
goes --settle seconds later (the compiled engine's chunks have grown to
their ~0.1 s by then), and each latency is the child's perf_counter at the KeyboardInterrupt less the
parent's at the signal (CLOCK_MONOTONIC: system-wide on Linux).  The README
promises under half a second; the compiled engine returns to Python every
~0.1 s (fastedf.compiler.CHUNK_SECONDS), the graph engine checks after
every step.  tests/test_fit_control.py runs CHILD for what it leaves behind
(the parameters of a finished step), not for this figure.
Usage:  python benchmarks/bench_interrupt.py [--repeats 5] [--settle 0.5]
"""
import argparse
import signal
import statistics
import subprocess
import sys
import textwrap
import time

CHILD = textwrap.dedent("""
    import sys, threading, time
    import numpy as np, fastedf
    from fastedf.models import logistic_regression
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 2)); Y = (X[:, :1] > 0) * 1.0
    model = logistic_regression(2)
    fastedf.fit(model.loss, {model.x: X, model.y: Y}, batch_size=1, epochs=1, engine=sys.argv[1])  # compile
    start = [p.value.copy() for p in model.parameters]

    def announce():  # a step has changed the parameters: the long fit is training
        while all(np.array_equal(a, p.value) for a, p in zip(start, model.parameters)):
            time.sleep(0.001)
        print("training", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    try:
        fastedf.fit(model.loss, {model.x: X, model.y: Y}, batch_size=1, epochs=10**6, engine=sys.argv[1])
    except KeyboardInterrupt:
        moved = any(not np.array_equal(a, p.value) for a, p in zip(start, model.parameters))
        finite = all(np.all(np.isfinite(p.value)) for p in model.parameters)
        print("interrupted", time.perf_counter(), moved, finite, flush=True)
""")


def interrupt(engine, settle=0.0, timeout=120):
    """Run CHILD and send SIGINT `settle` s after it trains; returns (its last words, perf_counter at the signal)."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, engine], stdout=subprocess.PIPE, text=True)
    try:
        ready = child.stdout.readline().strip()
        if ready != "training":
            raise RuntimeError(f"the child did not start training: {ready!r}")
        time.sleep(settle)
        sent = time.perf_counter()
        child.send_signal(signal.SIGINT)
        out, _ = child.communicate(timeout=timeout)
    finally:
        child.kill()
        child.wait()
    if child.returncode != 0:
        raise RuntimeError(f"the child exited with {child.returncode}")
    return out.split(), sent


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--settle", type=float, default=0.5, help="seconds of training before the signal")
    args = parser.parse_args()
    print(f"{'engine':<10}{'median s':>10}{'max s':>10}  within 0.5 s")
    for engine in ("compiled", "graph"):
        latencies = []
        for _ in range(args.repeats):
            words, sent = interrupt(engine, args.settle)
            if words[0] != "interrupted" or words[2:] != ["True", "True"]:
                raise RuntimeError(f"{engine}: the fit did not stop at a finished step: {words}")
            latencies.append(float(words[1]) - sent)
        print(f"{engine:<10}{statistics.median(latencies):>10.3f}{max(latencies):>10.3f}  "
              f"{'yes' if max(latencies) < 0.5 else 'NO'}")


if __name__ == "__main__":
    main()
