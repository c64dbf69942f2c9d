"""Each student EDF variant's script end to end: plain python against `fastedf run`.

For every variant in tests/run_variants/manifest.py: one untimed run a side (warms fastedf's caches and
gives the outputs to compare), then --runs runs a side, alternating plain python and `fastedf run`; the
fastest wall time and the smallest CPU time (user + system, from getrusage of the children) a side count.
Ratios are plain python's time over fastedf run's (above 1: fastedf run is faster), with their geometric
mean. "same output" compares stdout as tests/test_run_variants.py does (numbers to 1e-10 relative, timing
lines masked) and the exit status; a variant whose output differs is marked and the exit status is 1.
BLAS, OpenMP and Numba are pinned to one thread in the children.

Usage:  python benchmarks/bench_run.py [--variants a,b] [--runs 3]
"""
import argparse
import math
import os
import pathlib
import resource
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "run_variants"))
from compare import command, environment, first_difference  # noqa: E402
from manifest import VARIANTS  # noqa: E402


def timed(argv, cwd, env):
    """(stdout, exit status, wall seconds, CPU seconds) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return done.stdout, done.returncode, wall, cpu


def measure(name, runs):
    """{side: (stdout, status, best wall, best cpu)} for the sides 'python' and 'fastedf run'."""
    variant, env = VARIANTS[name], environment()
    sides = {"python": command(name, variant), "fastedf run": command(name, variant, [])}
    first = {side: timed(argv, cwd, env) for side, (argv, cwd) in sides.items()}  # warm-up, not timed
    walls, cpus = {side: [] for side in sides}, {side: [] for side in sides}
    for _ in range(runs):
        for side, (argv, cwd) in sides.items():
            _, _, wall, cpu = timed(argv, cwd, env)
            walls[side].append(wall)
            cpus[side].append(cpu)
    return {side: (first[side][0], first[side][1], min(walls[side]), min(cpus[side])) for side in sides}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", help="comma-separated variant names (default: all)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs a side (default 3)")
    args = parser.parse_args(argv)
    names = args.variants.split(",") if args.variants else sorted(VARIANTS)
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {', '.join(unknown)} (choose from {', '.join(sorted(VARIANTS))})")

    print(f"{args.runs} timed runs a side after one untimed; load average {os.getloadavg()[0]:.2f} at start")
    print(f"{'variant':28s} {'python s':>9} {'run s':>9} {'wall x':>7} {'py cpu':>8} {'run cpu':>8} "
          f"{'cpu x':>7}  same output")
    wall_ratios, cpu_ratios, all_same = [], [], True
    for name in names:
        result = measure(name, args.runs)
        (out, status, wall, cpu), (fast_out, fast_status, fast_wall, fast_cpu) = result["python"], result["fastedf run"]
        same = status == fast_status and first_difference(out, fast_out) is None
        all_same &= same
        wall_ratios.append(wall / fast_wall)
        cpu_ratios.append(cpu / fast_cpu)
        print(f"{name:28s} {wall:9.3f} {fast_wall:9.3f} {wall_ratios[-1]:6.2f}x {cpu:8.3f} {fast_cpu:8.3f} "
              f"{cpu_ratios[-1]:6.2f}x  {'yes' if same else 'NO'}", flush=True)
    print(f"{'geometric mean':28s} {'':9} {'':9} {_geomean(wall_ratios):6.2f}x {'':8} {'':8} "
          f"{_geomean(cpu_ratios):6.2f}x  {'yes' if all_same else 'NO'}")
    return 0 if all_same else 1


def _geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))


if __name__ == "__main__":
    sys.exit(main())
