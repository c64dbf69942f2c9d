"""Regenerates the measured blocks of docs/benchmarks.md and docs/memory.md by running the scripts that make them.

Each measured block of those pages sits between two markers,

    <!-- begin: NAME -->
    ...
    <!-- end: NAME -->

and holds the command, the machine it ran on (CPU model, cores, Python, NumPy
and Numba versions, thread pinning, commit, date, load) and what the script
printed: as it is when every line is a markdown table row, else in a fenced
block.  `report.py NAME ...` runs those sections' commands from the
repository's root and rewrites only their blocks; the prose around them is
kept.  A script that fails leaves its block as it was (its error is printed
and the exit status is 1).  A section that needs a library not installed here
(JAX for bench_jax) is skipped and keeps its block; bench_scale runs without
PyTorch and JAX and says "not installed" in their columns.  Figures a command
writes (docs/memory.md's plots) are copied into docs/.

Usage:  python benchmarks/report.py --list
        python benchmarks/report.py [--quick] [--dry-run] NAME [NAME ...]      (or `all`)
--quick runs each section's shorter variant (fewer repeats or points) to check
that the page regenerates; its tables are not the reference, so commit only
full runs.
"""
import argparse
import dataclasses
import datetime
import importlib.metadata
import importlib.util
import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys
import textwrap
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
WIDTH = 118  # the pages' line width
PINNED = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "FASTEDF_BLAS_THREADS")


@dataclasses.dataclass(frozen=True)
class Section:
    doc: str                    # the page holding the block, relative to the repository's root
    command: tuple              # arguments after `python`
    quick: tuple = ()           # arguments appended under --quick (argparse keeps the last of a repeated option)
    pinned: bool = True         # run with every thread variable at 1 (bench_scale --threads 0 sets its own)
    needs: tuple = ()           # modules without which the section is skipped
    figures: tuple = ()         # (written by the command, copied to) pairs, relative to the root
    minutes: float = 1.0        # rough duration of a full run on a quiet 2-core machine


BENCH = "docs/benchmarks.md"
MEMORY = "docs/memory.md"
MEMORY_POINTS = ("--samples", "16384", "--batch-sizes", "256,512,1024,2048,4096,8192", "--epochs", "3")
MEMORY_QUICK = ("--samples", "2048", "--batch-sizes", "256,512", "--epochs", "1")


def memory_section(features, script=("-m", "fastedf", "memory", "--engine", "compiled,graph"), name="memory"):
    out = f"results/{name}_d{features}"
    figures = ((f"{out}/memory_vs_batch.png", f"docs/{name}_vs_batch_d{features}.png"),) if name == "memory" else ()
    # --overwrite: the section replaces its own earlier measurement, which `fastedf memory` otherwise keeps
    overwrite = ("--overwrite",) if name == "memory" else ()
    return Section(MEMORY, (*script, "--features", str(features), *MEMORY_POINTS, "--out", out, *overwrite),
                   MEMORY_QUICK,
                   figures=figures, minutes=0.5)


SECTIONS = {
    "bench_scale": Section(BENCH, ("benchmarks/bench_scale.py", "--repeats", "3"),
                           ("--d", "2,64", "--hidden", "none,64", "--batch-sizes", "1,32", "--repeats", "1"),
                           minutes=1.5),
    "bench_scale_threads": Section(BENCH, ("benchmarks/bench_scale.py", "--repeats", "3", "--threads", "0"),
                                   ("--d", "2,64", "--hidden", "none,64", "--batch-sizes", "1,32", "--repeats", "1"),
                                   pinned=False, minutes=1.5),
    "bench_fit": Section(BENCH, ("benchmarks/bench_fit.py", "--repeats", "7"), ("--repeats", "1", "--epochs", "2")),
    "bench_graph": Section(BENCH, ("benchmarks/bench_graph.py", "--repeats", "5"), ("--repeats", "1")),
    "bench_course_loop": Section(BENCH, ("benchmarks/bench_course_loop.py", "--repeats", "5"),
                                 ("--repeats", "1", "--epochs", "1")),
    "bench_course": Section(BENCH, ("benchmarks/bench_course.py", "--repeats", "3"),
                            ("--repeats", "1", "--epochs", "1", "--batch-sizes", "32")),
    "bench_per_sample": Section(BENCH, ("benchmarks/bench_per_sample.py",), ("--repeats", "1", "--epochs", "2")),
    "bench_compile": Section(BENCH, ("benchmarks/bench_compile.py", "--layers", "0,1,2,4,8,16"),
                             ("--layers", "0"), minutes=3),
    "bench_startup": Section(BENCH, ("benchmarks/bench_startup.py",), ("--repeats", "1", "--parts", "import,fit"),
                             minutes=3),
    "bench_run": Section(BENCH, ("benchmarks/bench_run.py",), ("--runs", "1"), minutes=3),
    "bench_per_update": Section(BENCH, ("benchmarks/bench_per_update.py", "--runs", "5"), ("--runs", "1"), minutes=3),
    "bench_study": Section(BENCH, ("benchmarks/bench_study.py",), ("--epochs", "2"), minutes=0.5),
    "bench_checkpoints": Section(BENCH, ("benchmarks/bench_checkpoints.py",), ("--epochs", "2", "--repeats", "1")),
    "bench_activations": Section(BENCH, ("benchmarks/bench_activations.py",), minutes=0.5),
    "bench_crossover": Section(BENCH, ("benchmarks/bench_crossover.py",), minutes=0.5),
    "bench_outer_product": Section(BENCH, ("benchmarks/bench_outer_product.py",), minutes=0.5),
    "bench_conv": Section(BENCH, ("benchmarks/bench_conv.py",), ("--repeats", "1", "--round-ms", "5"), minutes=1),
    "bench_jax": Section(BENCH, ("benchmarks/bench_jax.py",), ("--repeats", "1", "--epochs", "2", "--batch-sizes",
                                                              "1,32"), needs=("jax",), minutes=1),
    "bench_dask": Section(BENCH, ("benchmarks/bench_dask.py", "--epochs", "100", "--seeds", "5", "--lrs",
                                  "0.003,0.01,0.03,0.1,0.3"),
                          ("--epochs", "2", "--seeds", "1", "--lrs", "0.1", "--repeats", "1"),
                          needs=("dask",), minutes=7),
    "memory_d64": memory_section(64),
    "memory_d2": memory_section(2),
    "memory_numpy_edf_d64": memory_section(64, ("profiling/numpy_edf_memory.py",), "memory_numpy_edf"),
    "memory_numpy_edf_d2": memory_section(2, ("profiling/numpy_edf_memory.py",), "memory_numpy_edf"),
}


def markers(name):
    return f"<!-- begin: {name} -->", f"<!-- end: {name} -->"


def block_span(text, name, doc):
    """(start, end) of the text between NAME's markers in `text`; one clear error if they are missing or repeated."""
    begin, end = markers(name)
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise SystemExit(f"report.py: {doc} must hold '{begin}' once, followed by '{end}' once")
    return text.index(begin) + len(begin), text.index(end)


def version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model():
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.exists() else ""
    def field(name):
        found = re.search(rf"^{name}\s*:\s*(.+)$", text, re.M)
        return found.group(1).strip() if found else ""
    flags = set(field("flags").split())
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    family = f"family {field('cpu family')} model {field('model')}, " if field("cpu family") else ""
    return f"{field('model name') or platform.processor() or platform.machine()} ({family}{simd})"


def commit():
    def git(*args):
        return subprocess.run(("git", *args), cwd=ROOT, capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "unknown commit"
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs")  # the pages it rewrites
    return head + (" with uncommitted changes" if changed else "")


def machine_line(section, when):
    threads = "threads pinned to 1 (" + ", ".join(PINNED) + ")" if section.pinned else "threads: library defaults"
    load = f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores" if hasattr(os, "getloadavg") else ""
    return (f"Measured at {commit()}, {when:%Y-%m-%d %H:%M} UTC, on {cpu_model()}, {os.cpu_count()} cores; "
            f"Python {platform.python_version()}, NumPy {version('numpy')}, Numba {version('numba')}; "
            f"{threads}; {load} when it started.")


def render(name, section, output, when, quick):
    command = " ".join(("python", *section.command, *(section.quick if quick else ())))
    lines = output.strip("\n").rstrip().splitlines()
    table = lines and all(line.startswith("|") for line in lines if line.strip())
    body = "\n".join(lines) if table else "```\n" + "\n".join(lines) + "\n```"
    note = " A --quick run, not the reference: regenerate without --quick." if quick else ""
    machine = textwrap.fill(machine_line(section, when) + note, WIDTH, break_on_hyphens=False)
    return f"\n```\n{command}\n```\n\n{machine}\n\n{body}\n"


def run(name, section, quick):
    """Runs one section; returns its new block text, or None (what went wrong printed) if the script failed."""
    env = dict(os.environ)
    if section.pinned:
        env.update({var: "1" for var in PINNED})
    argv = (sys.executable, *section.command, *(section.quick if quick else ()))
    when = datetime.datetime.now(datetime.timezone.utc)
    start = time.perf_counter()
    print(f"{name}: {' '.join(('python', *argv[1:]))}", flush=True)
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    print(f"{name}: {time.perf_counter() - start:.0f} s, exit status {done.returncode}", flush=True)
    if done.returncode != 0:
        print(f"{name}: failed, its block is kept as it was; the last lines it printed:\n"
              + "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:]), file=sys.stderr)
        return None
    for made, kept in section.figures:
        shutil.copyfile(ROOT / made, ROOT / kept)
    return render(name, section, done.stdout, when, quick)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="sections to refresh, or 'all'")
    parser.add_argument("--list", action="store_true", help="list the sections, their pages and commands")
    parser.add_argument("--quick", action="store_true", help="each section's short variant (a check, not a result)")
    parser.add_argument("--dry-run", action="store_true", help="print the new blocks instead of writing the pages")
    args = parser.parse_args()
    if args.list or not args.names:
        for name, section in SECTIONS.items():
            print(f"{name:<22} {section.doc:<19} ~{section.minutes:g} min  python {' '.join(section.command)}")
        return
    names = list(SECTIONS) if args.names == ["all"] else args.names
    unknown = [name for name in names if name not in SECTIONS]
    if unknown:
        parser.error(f"no section {', '.join(unknown)}; --list lists them")
    for name in names:  # every page must hold every block before anything runs
        block_span((ROOT / SECTIONS[name].doc).read_text(), name, SECTIONS[name].doc)
    failed = False
    for name in names:
        section = SECTIONS[name]
        missing = [module for module in section.needs if importlib.util.find_spec(module) is None]
        if missing:
            print(f"{name}: skipped, {', '.join(missing)} not installed here; its block is kept as it was")
            continue
        block = run(name, section, args.quick)
        if block is None:
            failed = True
            continue
        if args.dry_run:
            print(block)
            continue
        page = ROOT / section.doc
        text = page.read_text()  # read again: an earlier section may have rewritten this page
        start, end = block_span(text, name, section.doc)
        page.write_text(text[:start] + block + text[end:])
        print(f"{name}: {section.doc} updated")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
