"""Start-up and call overhead: `import fastedf`, a process's first step, fit's overhead, course scripts end to end.

Every measurement runs in fresh processes (one core: BLAS, OpenMP and Numba
pinned to one thread), alternating between the sides it compares, best
(minimum) of --repeats, wall and CPU time (the children's user + system):
- import: `python -c "import fastedf"` against `python -c "import numpy"`;
- first step: a fresh process (Numba's cache warm) builds a graph of
  fastedf's nodes and runs one course-loop step (forward, backward, the
  update); then the median of 20 more steps;
- fit: fit(..., epochs=1) called again on a graph fitted before and on new
  graphs of the same structure, its overhead being the call's wall time
  minus History.train_time_s (targets 0.1 and 0.5 ms);
- scripts: each course script of tests/course_scripts/ run end to end in a
  fresh process with `EDF` bound to fastedf and to its own NumPy EDF
  (fastedf/numpy_edf.py, loaded alone); both must give the same numbers
  (rtol 1e-10) before any time is printed.  Beside the whole process, the
  median time from the script's `def forward_pass` to its end (its training
  and what follows, without Python's start, the imports and the data);
- lengths: a course loop (the per-sample graph, the 64-wide MLP at B = 32) of
  a few milliseconds to past the move to Numba, end to end in a fresh process,
  fastedf's nodes against the NumPy EDF's (final losses equal to 1e-9).
--baseline DIR runs every part for another checkout too (another fastedf
on PYTHONPATH, its own program cache), alternating with this one, and
checks that both fit the same numbers.
The children run in this environment as it is: where PYTHONDONTWRITEBYTECODE
is set, fastedf still keeps its own modules' bytecode (fastedf.bytecode) and
the first, untimed runs write it; the NumPy EDF side loads a copy of
fastedf/numpy_edf.py from a directory of its own, as a student's EDF.py:
compiled in every process there, as plain python does.

Usage:  python benchmarks/bench_startup.py [--parts import,first,fit,scripts,lengths] [--repeats 5] [--baseline DIR]
        [--importtime]
"""
import argparse
import json
import math
import os
import pathlib
import pickle
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
SCRIPTS = sorted((ROOT / "tests" / "course_scripts").glob("*.py"))
THREADS = {var: "1" for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
                                "FASTEDF_BLAS_THREADS")}
GRAPHS = ("per_sample", "logistic", "mlp", "conv")
# part lengths: loops from a few milliseconds (the NumPy tier) past the move to Numba (~0.2 s of steps)
LENGTHS = {"per_sample": (300, 3000, 30000), "mlp": (100, 1000, 10000)}
NEUTRAL = tempfile.gettempdir()  # the children's working directory: `python -c` would import a fastedf found there


def child_env(root, cache):
    return dict(os.environ, **THREADS, PYTHONPATH=str(root), FASTEDF_CACHE_DIR=str(cache))


def timed(args, env):
    """(wall s, CPU s, stdout) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True, cwd=NEUTRAL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise RuntimeError(f"{' '.join(map(str, args))} failed:\n{done.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), done.stdout


# ---------------------------------------------------------------------------------------------- the child side

def build(edf, kind, rng):
    """(step(i), loss, (x, y)) for a course-loop graph of `kind` written with module `edf`'s nodes; step(i) runs
    the i-th step (64 rows: per sample, or two batches of 32); x, y: the Inputs (None for the per-sample graph)."""
    if kind == "per_sample":  # the instructor's per-sample graph: two (1, 1) inputs, Multiply, Addition
        x1, x2, y = edf.Input(), edf.Input(), edf.Input()
        w1, w2, b = (edf.Parameter(rng.normal(size=(1, 1))) for _ in range(3))
        m1, m2 = edf.Multiply(x1, w1), edf.Multiply(x2, w2)
        s = edf.Addition(m1, m2)
        z = edf.Addition(s, b)
        p = edf.Sigmoid(z)
        loss = edf.BCE(y, p)
        graph, trainable, inputs = [x1, x2, y, w1, w2, b, m1, m2, s, z, p, loss], [w1, w2, b], None
        X, Y = rng.normal(size=(64, 2)), (rng.random((64, 1)) > 0.5) * 1.0

        def feed(i):
            i %= 64
            x1.value, x2.value, y.value = X[i:i + 1, 0:1], X[i:i + 1, 1:2], Y[i:i + 1]
    else:
        x, y = edf.Input(), edf.Input()
        if kind == "logistic":
            A, b = edf.Parameter(rng.normal(size=(2, 1))), edf.Parameter(np.zeros(1))
            linear = edf.Linear(x, A, b)
            loss = edf.BCE(y, edf.Sigmoid(linear))
            X, Y = rng.normal(size=(64, 2)), (rng.random((64, 1)) > 0.5) * 1.0
        else:
            if kind == "mlp":
                X = rng.normal(size=(64, 64))
                A1, b1 = edf.Parameter(rng.normal(scale=0.1, size=(64, 64))), edf.Parameter(np.zeros(64))
                hidden = edf.ReLU(edf.Linear(x, A1, b1))
            else:
                X = rng.normal(size=(64, 8, 8, 1))
                A1, b1 = edf.Parameter(rng.normal(scale=0.3, size=(3, 3, 1, 4))), edf.Parameter(np.zeros(4))
                hidden = edf.Flatten(edf.MaxPooling(edf.ReLU(edf.Conv(x, A1, b1)), 2))
            A, b = edf.Parameter(rng.normal(scale=0.1, size=(64, 10))), edf.Parameter(np.zeros(10))
            loss = edf.CE(y, edf.Softmax(edf.Linear(hidden, A, b)))
            Y = np.eye(10)[rng.integers(0, 10, 64)]
        graph = edf.topological_sort(loss)
        trainable, inputs = [n for n in graph if isinstance(n, edf.Parameter)], (x, y)

        def feed(i):
            x.value, y.value = X[i % 2 * 32:i % 2 * 32 + 32], Y[i % 2 * 32:i % 2 * 32 + 32]

    # The course's step, from the NumPy EDF the child loaded, or fastedf's copy of it on fastedf's side (its
    # import there makes that side pay ~0.3 ms more); benchmarks/course_loop.py would import fastedf on both.
    course_step = getattr(edf, "course_step", None)
    if course_step is None:
        from fastedf.numpy_edf import course_step

    def step(i, lr=0.1):
        feed(i)
        course_step(graph, trainable, lr)
    return step, loss, inputs


def child_first(kind):
    """A fresh process's first course-loop step on fastedf's nodes, then its steady step; prints JSON."""
    start = time.perf_counter()
    import fastedf
    imported = time.perf_counter() - start
    step, loss, _ = build(fastedf, kind, np.random.default_rng(0))
    wall, cpu = time.perf_counter(), time.thread_time()
    step(0)
    first, first_cpu = time.perf_counter() - wall, time.thread_time() - cpu
    steps = []
    for i in range(1, 21):
        t = time.perf_counter()
        step(i)
        steps.append(time.perf_counter() - t)
    print(json.dumps({"import": imported, "first": first, "first_cpu": first_cpu, "steady": statistics.median(steps),
                      "loss": float(loss.value), "scipy.linalg": "scipy.linalg" in sys.modules}))


def child_loop(which, kind, steps, numpy_edf):
    """A course loop of `steps` steps on a graph of `kind`, with fastedf's nodes or the NumPy EDF's; prints its
    final loss."""
    if which == "fastedf":
        import fastedf as edf
    else:
        import importlib.util
        spec = importlib.util.spec_from_file_location("EDF", numpy_edf)
        edf = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(edf)
    step, loss, _ = build(edf, kind, np.random.default_rng(0))
    for i in range(int(steps)):
        step(i)
    print(json.dumps({"loss": float(loss.value)}))


def child_fit():
    """fit's overhead (wall minus History.train_time_s) per call, again on one graph and on new graphs of its
    structure; prints JSON with the final parameters of one fixed fit, to compare sides."""
    import fastedf
    rng = np.random.default_rng(3)
    out = {}
    for kind, rows, batch in (("logistic", 64, 16), ("mlp", 256, 32)):
        X = rng.normal(size=(rows, 2 if kind == "logistic" else 64))
        Y = (X[:, :1] > 0) * 1.0 if kind == "logistic" else np.eye(10)[rng.integers(0, 10, rows)]

        def model(seed):
            _, loss, (x, y) = build(fastedf, kind, np.random.default_rng(seed))
            return loss, {x: X, y: Y}

        def overheads(calls, new):
            walls, cpus = [], []
            loss, feeds = model(1)
            for _ in range(calls):
                if new:
                    loss, feeds = model(1)
                wall, cpu = time.perf_counter(), time.thread_time()
                history = fastedf.fit(loss, feeds, batch_size=batch, epochs=1, lr=0.1)
                walls.append(time.perf_counter() - wall - history.train_time_s)
                cpus.append(time.thread_time() - cpu)
            return walls, cpus

        loss, feeds = model(2)
        fastedf.fit(loss, feeds, batch_size=batch, epochs=3, lr=0.1, shuffle=True, seed=5)  # compiles, and checks
        params = [n.value.tolist() for n in fastedf.topological_sort(loss) if isinstance(n, fastedf.Parameter)]
        overheads(5, False)
        same, new = overheads(200, False), overheads(100, True)
        out[kind] = {"params": params, "same": same, "new": new}
    print(json.dumps(out))


def child_script(which, path, numpy_edf, out):
    """Run a course script with `EDF` bound to fastedf or to the NumPy EDF loaded alone; pickle its result."""
    if which == "fastedf":
        import fastedf as edf
    else:
        import importlib.util
        spec = importlib.util.spec_from_file_location("EDF", numpy_edf)
        edf = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(edf)
    sys.modules["EDF"] = edf
    namespace = {"__name__": "__main__", "__file__": path}
    lines = pathlib.Path(path).read_text().splitlines(keepends=True)
    cut = next(i for i, line in enumerate(lines) if line.startswith("def forward_pass"))
    exec(compile("".join(lines[:cut]), path, "exec"), namespace)  # imports, data, the graph
    wall, cpu = time.perf_counter(), time.process_time()
    exec(compile("\n" * cut + "".join(lines[cut:]), path, "exec"), namespace)  # the training and what follows
    print(f"training {time.perf_counter() - wall:.6f} {time.process_time() - cpu:.6f}")
    if out:
        with open(out, "wb") as f:
            pickle.dump(namespace["result"], f)


# --------------------------------------------------------------------------------------------- the parent side

def me(*args):
    return [sys.executable, str(pathlib.Path(__file__).resolve()), "--child", *map(str, args)]


def part_import(sides, repeats, importtime):
    print("\n## import (best of %d fresh processes)" % repeats)
    runs = {(name, what): [] for name in sides for what in ("fastedf", "numpy")}
    for timing in [False] + [True] * repeats:  # an untimed round first: it caches the bytecode
        for name, env in sides.items():
            for what in ("fastedf", "numpy"):
                took = timed([sys.executable, "-c", f"import {what}"], env)[:2]
                if timing:
                    runs[name, what].append(took)
    print(f"{'side':>10} {'fastedf wall':>13} {'numpy wall':>11} {'difference':>11} {'fastedf CPU':>12} "
          f"{'numpy CPU':>10} {'difference':>11}")
    for name in sides:
        f, n = (min(r[0] for r in runs[name, w]) for w in ("fastedf", "numpy"))
        fc, nc = (min(r[1] for r in runs[name, w]) for w in ("fastedf", "numpy"))
        print(f"{name:>10} {f:>12.3f}s {n:>10.3f}s {f - n:>10.3f}s {fc:>11.3f}s {nc:>9.3f}s {fc - nc:>10.3f}s")
    if importtime:
        for name, env in sides.items():
            done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import fastedf"], env=env,
                                  capture_output=True, text=True, cwd=NEUTRAL)
            rows = [line.split("|") for line in done.stderr.splitlines() if line.startswith("import time:")][1:]
            rows.sort(key=lambda r: -int(r[1]))
            print(f"\n{name}: python -X importtime -c 'import fastedf', top 10 by cumulative us")
            for row in rows[:10]:
                print(f"  {int(row[1]):>8} {row[2].rstrip()}")


def part_first(sides, repeats):
    print("\n## first step of a fresh process, Numba's cache warm (best of %d; ms)" % repeats)
    results = {}
    for kind in GRAPHS:
        for env in sides.values():
            timed(me("first", kind), env)  # warms Numba's cache and the program cache
        for _ in range(repeats):
            for name, env in sides.items():
                results.setdefault((name, kind), []).append(json.loads(timed(me("first", kind), env)[2]))
    print(f"{'graph':>10} {'side':>10} {'import':>8} {'first step':>11} {'its CPU':>8} {'steady step':>12} "
          f"{'scipy.linalg':>13}")
    for kind in GRAPHS:
        losses = {name: results[name, kind][0]["loss"] for name in sides}
        for name in sides:
            runs = results[name, kind]
            best = min(runs, key=lambda r: r["first"])
            print(f"{kind:>10} {name:>10} {min(r['import'] for r in runs) * 1e3:>8.1f} {best['first'] * 1e3:>11.1f} "
                  f"{best['first_cpu'] * 1e3:>8.1f} {min(r['steady'] for r in runs) * 1e3:>12.3f} "
                  f"{str(best['scipy.linalg']):>13}")
        if not np.allclose(list(losses.values()), next(iter(losses.values())), rtol=1e-12, atol=0):
            print(f"   !! the sides' losses differ: {losses}")  # the NumPy tier's twins differ in the last bits


def part_fit(sides, repeats):
    print("\n## fit's overhead: wall time of fit(..., epochs=1) minus History.train_time_s (ms)")
    results = {}
    for _ in range(max(1, repeats // 2)):
        for name, env in sides.items():
            results.setdefault(name, []).append(json.loads(timed(me("fit"), env)[2]))
    for kind in results[next(iter(sides))][0]:
        params = {name: runs[0][kind]["params"] for name, runs in results.items()}
        if any(p != next(iter(params.values())) for p in params.values()):
            raise SystemExit(f"the sides' fits of {kind} trained different parameters: not timed")
    print(f"{'graph':>10} {'side':>10} {'same graph: min':>16} {'median':>7} {'CPU/call':>9} "
          f"{'new graph: min':>15} {'median':>7} {'CPU/call':>9}")
    for kind in results[next(iter(sides))][0]:
        for name, runs in results.items():
            cells = []
            for which in ("same", "new"):
                walls = [w for run in runs for w in run[kind][which][0]]
                cpus = [c for run in runs for c in run[kind][which][1]]
                cells.append(f"{min(walls) * 1e3:>15.3f} {statistics.median(walls) * 1e3:>7.3f} "
                             f"{statistics.median(cpus) * 1e3:>9.3f}")
            print(f"{kind:>10} {name:>10} {cells[0]} {cells[1]}")
    print("targets: <= 0.1 ms on a graph fitted before, <= 0.5 ms on a new graph of a seen structure")


def part_lengths(sides, repeats):
    print("\n## a course loop of n steps end to end, one fresh process each (best of %d)" % repeats)
    print(f"{'graph':>10} {'steps':>6} {'side':>10} {'NumPy EDF wall':>15} {'fastedf wall':>13} {'ratio':>6} "
          f"{'NumPy CPU':>10} {'fastedf CPU':>12} {'ratio':>6}")
    runs = [("numpy", "this", sides["this"])] + [("fastedf", name, env) for name, env in sides.items()]
    with tempfile.TemporaryDirectory() as tmp:
        numpy_edf = pathlib.Path(tmp) / "EDF.py"  # a student's EDF.py, as in part_scripts
        shutil.copyfile(ROOT / "fastedf" / "numpy_edf.py", numpy_edf)
        for kind, lengths in LENGTHS.items():
            for steps in lengths:
                losses = {(w, n): json.loads(timed(me("loop", w, kind, steps, numpy_edf), env)[2])["loss"]
                          for w, n, env in runs}  # also warms the caches
                reference = losses["numpy", "this"]
                for (w, n), got in losses.items():
                    if abs(got - reference) > 1e-9 * abs(reference):
                        sys.exit(f"FAIL: {kind} {steps} steps, {w} {n}: loss {got!r} against the NumPy EDF's "
                                 f"{reference!r}")
                times = {(w, n): [] for w, n, _ in runs}
                for _ in range(repeats):
                    for w, n, env in runs:
                        times[w, n].append(timed(me("loop", w, kind, steps, numpy_edf), env)[:2])
                nw, nc = (min(t[i] for t in times["numpy", "this"]) for i in (0, 1))
                for name in sides:
                    fw, fc = (min(t[i] for t in times["fastedf", name]) for i in (0, 1))
                    print(f"{kind:>10} {steps:>6} {name:>10} {nw:>14.3f}s {fw:>12.3f}s {nw / fw:>5.2f}x "
                          f"{nc:>9.3f}s {fc:>11.3f}s {nc / fc:>5.2f}x")


def part_scripts(sides, repeats):
    sys.path.insert(0, str(ROOT / "tests"))
    from test_course_scripts import assert_same_numbers
    print("\n## course scripts end to end, one fresh process each (best of %d)" % repeats)
    print(f"{'script':>16} {'side':>10} {'NumPy EDF wall':>15} {'fastedf wall':>13} {'ratio':>6} {'NumPy CPU':>10} "
          f"{'fastedf CPU':>12} {'ratio':>6} {'EDF train':>9} {'fe train':>9} {'ratio':>6}")
    print("  (train: wall ms from the script's `def forward_pass` to its end, in the process: the training loop and "
          "what follows; median)")
    ratios = {name: [] for name in sides}
    runs = [("numpy", "this", sides["this"])] + [("fastedf", name, env) for name, env in sides.items()]
    with tempfile.TemporaryDirectory() as tmp:
        # the NumPy EDF as a student's own module: a file of theirs, whose bytecode Python writes or not as the
        # environment says (fastedf keeps its own package's, fastedf/numpy_edf.py's among them)
        numpy_edf = pathlib.Path(tmp) / "EDF.py"
        shutil.copyfile(ROOT / "fastedf" / "numpy_edf.py", numpy_edf)
        for path in SCRIPTS:
            results = {}
            for which, name, env in runs:  # also warms the caches
                out = pathlib.Path(tmp) / f"{which}-{name}.pickle"
                timed(me("script", which, path, numpy_edf, out), env)
                results[which, name] = pickle.loads(out.read_bytes())
            for name in sides:
                assert_same_numbers(results["fastedf", name], results["numpy", "this"])
            times = {(which, name): [] for which, name, _ in runs}
            for _ in range(repeats):
                for which, name, env in runs:
                    wall, cpu, out = timed(me("script", which, path, numpy_edf, ""), env)
                    times[which, name].append((wall, cpu, float(out.split()[-2]) * 1e3))
            nw, nc = (min(t[i] for t in times["numpy", "this"]) for i in (0, 1))
            nt = statistics.median(t[2] for t in times["numpy", "this"])
            for name in sides:
                fw, fc = (min(t[i] for t in times["fastedf", name]) for i in (0, 1))
                ft = statistics.median(t[2] for t in times["fastedf", name])
                ratios[name].append(nw / fw)
                print(f"{path.stem:>16} {name:>10} {nw:>14.3f}s {fw:>12.3f}s {nw / fw:>5.2f}x {nc:>9.3f}s "
                      f"{fc:>11.3f}s {nc / fc:>5.2f}x {nt:>9.2f} {ft:>9.2f} {nt / ft:>5.2f}x")
    for name, found in ratios.items():
        print(f"{name}: geometric mean of the wall ratios (NumPy EDF / fastedf; > 1: fastedf faster): "
              f"{math.exp(statistics.mean(map(math.log, found))):.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="import,first,fit,scripts,lengths")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", help="another checkout's root to compare against")
    parser.add_argument("--importtime", action="store_true", help="print `python -X importtime` top entries")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as caches:
        sides = {"this": child_env(ROOT, os.environ.get("FASTEDF_CACHE_DIR") or pathlib.Path(caches) / "this")}
        if args.baseline:
            sides["baseline"] = child_env(pathlib.Path(args.baseline).resolve(), pathlib.Path(caches) / "baseline")
        print(f"python {sys.version.split()[0]}, one thread, PYTHONDONTWRITEBYTECODE="
              f"{os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}, sides: "
              + ", ".join(f"{name} = {env['PYTHONPATH']}" for name, env in sides.items()))
        parts = args.parts.split(",")
        if "import" in parts:
            part_import(sides, args.repeats, args.importtime)
        if "first" in parts:
            part_first(sides, args.repeats)
        if "fit" in parts:
            part_fit(sides, args.repeats)
        if "scripts" in parts:
            part_scripts(sides, args.repeats)
        if "lengths" in parts:
            part_lengths(sides, args.repeats)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        {"first": child_first, "fit": child_fit, "script": child_script, "loop": child_loop}[sys.argv[2]](*sys.argv[3:])
    else:
        main()
