"""Peak memory of training (fastedf.study.memory): memray sees it, it grows with the batch, it stays near theory.

Each measurement runs in a fresh process (about a second, mostly importing
Numba), so these tests take few of them.
"""
import os
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

from fastedf import fit
from fastedf.models import logistic_regression
from fastedf.study.memory import (fit_slope, main, measure, measure_peaks, theoretical_bytes_per_sample, theoretical_peak,
                                  training_data)

# What the README states, in bytes per extra sample in the batch (d=64): the float64 rows a step must hold per
# sample, z and dL/dz compiled (its sigmoid and BCE are one kernel), z, p, dL/dp and dL/dz in the graph engine.
README_BYTES_PER_SAMPLE = {"compiled": 16, "graph": 32}
# The peak of one configuration varies by up to ~1.6 KB from run to run (allocator and interpreter noise; three
# runs of each engine seen), which moves a slope fitted over batch sizes 256..4096 by at most ~0.4 B per sample.
# 2 B is five times that, and a quarter of one float64 per sample: an extra per-sample buffer fails.
SLOPE_MARGIN = 2
NOISE_BYTES = 1024  # same configuration, different epochs: only the (epochs,) loss history may differ


def test_fit_slope_recovers_a_line():
    sizes = [256, 512, 1024, 4096]
    slope, intercept = fit_slope(sizes, [1000 + 32 * b for b in sizes])
    assert slope == pytest.approx(32.0)
    assert intercept == pytest.approx(1000.0)
    with pytest.raises(ValueError):
        fit_slope([256, 256], [1, 2])


def test_theoretical_minimum_per_engine():
    assert theoretical_bytes_per_sample() == theoretical_bytes_per_sample("graph") == 32  # z, p, dL/dp, dL/dz
    assert theoretical_bytes_per_sample("compiled") == 16  # z, dL/dz: Sigmoid and BCE in one kernel
    assert README_BYTES_PER_SAMPLE == {e: theoretical_bytes_per_sample(e) for e in README_BYTES_PER_SAMPLE}
    assert theoretical_peak(100, features=64) == 32 * 100 + 8 * 65  # plus dL/dA (64, 1) and dL/db (1,)
    assert theoretical_peak(100, features=64, engine="compiled") == 16 * 100 + 8 * 65
    with pytest.raises(ValueError, match="engine"):
        theoretical_bytes_per_sample("eager")


def test_memray_sees_numba_allocations():
    # Numba's NRT allocates arrays with malloc, which memray intercepts: a njit np.empty shows in the peak.
    script = textwrap.dedent("""
        import os, sys, tempfile
        import memray, numpy as np
        from numba import njit

        @njit
        def allocate(n):
            a = np.empty(n)
            a[:] = 1.0
            return a.sum()

        allocate(1)
        path = os.path.join(tempfile.mkdtemp(), "nrt.bin")
        with memray.Tracker(path, native_traces=False):
            allocate(1_000_000)
        print(memray.FileReader(path).metadata.peak_memory)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert int(done.stdout.split()[-1]) >= 8_000_000


@pytest.mark.parametrize("engine", ["graph", "compiled"])
def test_peak_grows_with_batch_size_as_the_readme_states(engine):
    rows = measure_peaks(engine, [256, 2048, 4096], features=64, samples=4096, epochs=2)
    peaks = [row["peak_bytes"] for row in rows]
    assert peaks[0] < peaks[1] < peaks[2], rows
    slope, _ = fit_slope([row["batch_size"] for row in rows], peaks)
    assert abs(slope - README_BYTES_PER_SAMPLE[engine]) <= SLOPE_MARGIN, (slope, rows)


def test_compiled_peak_does_not_grow_with_epochs():
    # d=2, B=1024: the training buffers, not input validation, set the peak, so a per-step leak would show.
    one = measure("compiled", 1024, features=2, samples=4096, epochs=1)
    twenty = measure("compiled", 1024, features=2, samples=4096, epochs=20)
    assert "validate_feeds" not in twenty["largest"][0]["site"], twenty
    assert abs(twenty["peak_bytes"] - one["peak_bytes"]) <= NOISE_BYTES, (one, twenty)


def test_repeated_compiled_fits_keep_no_python_memory():
    # Each fit calls its program at least three times (chunks of 16 steps, then at most twice the last; 80 steps).
    # A leak per call shows: CPython 3.11 never reuses a freed 20-tuple, and a 20-argument program kept its two
    # argument tuples, 400 bytes a call, 24 kB over these fits.  What may stay is bounded: CPython's free lists
    # (80 lists, 80 dicts) and what the first fits set up, 1.3 kB measured.
    X, Y = training_data(4096, 2)
    model = logistic_regression(2, seed=0)
    feeds = {model.x: X, model.y: Y}
    for _ in range(3):
        fit(model.loss, feeds, batch_size=1024, epochs=20, lr=0.1, engine="compiled")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(20):
            fit(model.loss, feeds, batch_size=1024, epochs=20, lr=0.1, engine="compiled")
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown <= 8192, grown


def test_a_rejected_engine_is_a_value_error():
    with pytest.raises(ValueError, match="engine"):
        measure("eager", 256, features=2, samples=512, epochs=1)


def test_cli_rejects_bad_options_before_measuring(tmp_path):
    from fastedf.guardrails import UsageError

    with pytest.raises(UsageError):
        main(["--engine", "graph,tpu", "--out", str(tmp_path)])
    with pytest.raises(UsageError):
        main(["--batch-sizes", "512,8192", "--samples", "4096", "--out", str(tmp_path)])
    assert not os.listdir(tmp_path)


@pytest.fixture(scope="module")
def data_8mib():
    """X (16384, 64) float64, 8 MiB: any copy of the data during a step breaks the 4 MB limit below."""
    X, Y = training_data(16384, 64)
    for engine in ("graph", "compiled"):  # compile and warm up outside the tracked test body
        warm = logistic_regression(64, seed=0)
        fit(warm.loss, {warm.x: X, warm.y: Y}, batch_size=512, epochs=1, engine=engine)
    return X, Y


@pytest.mark.limit_memory("4 MB")
@pytest.mark.parametrize("engine", ["graph", "compiled"])
def test_training_epoch_stays_under_limit(engine, data_8mib):
    # pytest-memray tracks this body when installed; without the plugin this is an ordinary test.
    X, Y = data_8mib
    model = logistic_regression(64, seed=0)
    history = fit(model.loss, {model.x: X, model.y: Y}, batch_size=512, epochs=1, engine=engine)
    assert np.isfinite(history.epoch_loss).all()


def test_micro_batches_keep_the_peak_flat(tmp_path, capsys):
    # `fastedf memory --micro-batch 64`: the whole-batch line grows (16 B per sample, compiled), the micro-batch
    # line does not: its buffers hold 64 rows whatever the batch (fit's micro_batch, the same updates).
    import csv

    assert main(["--engine", "compiled", "--batch-sizes", "256,2048", "--features", "64", "--samples", "4096",
                 "--epochs", "1", "--micro-batch", "64", "--out", str(tmp_path)]) == 0
    with open(tmp_path / "memory.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    whole = {int(r["batch_size"]): int(r["peak_bytes"]) for r in rows if not r["micro_batch"]}
    micro = {int(r["batch_size"]): int(r["peak_bytes"]) for r in rows if r["micro_batch"] == "64"}
    least = README_BYTES_PER_SAMPLE["compiled"] - SLOPE_MARGIN  # 14 B: the step's two float64 per row, less noise
    assert whole[2048] - whole[256] >= least * (2048 - 256), rows
    assert abs(micro[2048] - micro[256]) <= NOISE_BYTES, rows
    # below the whole batch by (at least) the activations of the rows beyond 256; not counted from 64 rows, since
    # the micro-batch line has fixed buffers of its own (gradient accumulators, ~0.5-1 KB here)
    assert micro[2048] < whole[2048] - least * (2048 - 256), rows
    out = capsys.readouterr().out
    assert "compiled, micro-batch 64" in out and (tmp_path / "memory_vs_batch.png").exists()


def test_an_earlier_measurement_is_refused_kept_byte_for_byte_or_overwritten(tmp_path, capsys, monkeypatch):
    from fastedf.__main__ import main as cli_main

    monkeypatch.chdir(tmp_path)
    argv = ["memory", "--engine", "graph", "--batch-sizes", "2,4", "--samples", "8", "--epochs", "1"]
    assert cli_main([*argv, "--out", "m"]) == 0
    before = {name: (tmp_path / "m" / name).read_bytes() for name in ("memory.csv", "memory.json",
                                                                       "memory_vs_batch.png")}
    capsys.readouterr()
    assert cli_main([*argv, "--no-plot", "--out", "m"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out m holds an earlier measurement's files" in err[0] and "--overwrite" in err[0]
    assert {name: (tmp_path / "m" / name).read_bytes() for name in before} == before
    (tmp_path / "m" / "notes.txt").write_text("mine")
    assert cli_main([*argv, "--no-plot", "--overwrite", "--out", "m"]) == 0
    assert sorted(p.name for p in (tmp_path / "m").iterdir() if not p.name.startswith(".")) == [
        "memory.csv", "memory.json", "notes.txt"]  # no stale figure beside the new rows
    # The default output: a new directory each time, results/memory/latest the newest.
    assert cli_main([*argv, "--no-plot"]) == 0 and cli_main([*argv, "--no-plot"]) == 0
    made = sorted(p for p in (tmp_path / "results" / "memory").iterdir() if p.name != "latest")
    assert len(made) == 2 and all((p / "memory.csv").exists() for p in made)
    assert (tmp_path / "results" / "memory" / "latest").resolve() == made[-1].resolve()
