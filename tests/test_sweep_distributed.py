"""`fastedf sweep --workers / --scheduler`: the serial sweep's rows, timed honestly, written once, resumable."""
import csv
import json
import os
import sys

import pytest

from fastedf.__main__ import main
from fastedf.study.distributed import DASK_MISSING
from test_distributed import dask_cluster, live_children, wait_for_workers  # noqa: F401  (dask_cluster: a fixture)

TINY = ["--engine", "compiled", "--epochs", "3", "--seeds", "2", "--batch-sizes", "1,8,1050", "--repeats", "2",
        "--quiet", "--no-figures"]
TIME_COLUMNS = {"train_time_s", "compile_time_s", "timing"}
TOLERANCE = 1e-12


def read(out):
    """(rows of results.csv, curves of runs.jsonl, results.json), in file order."""
    with open(os.path.join(out, "results.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    with open(os.path.join(out, "runs.jsonl")) as handle:
        runs = [json.loads(line) for line in handle if line.strip()]
    with open(os.path.join(out, "results.json")) as handle:
        document = json.load(handle)
    return rows, runs, document


def assert_same_runs(out, reference, timing):
    """out's files hold reference's rows and curves in the same order, except how the time was measured."""
    rows, runs, document = read(out)
    want_rows, want_runs, _ = read(reference)
    assert [r["batch_size"] + r["seed"] for r in rows] == [r["batch_size"] + r["seed"] for r in want_rows]
    for row, want in zip(rows, want_rows):
        for name in set(want) - TIME_COLUMNS - {"final_loss"}:
            assert row[name] == want[name], name
        assert abs(float(row["final_loss"]) - float(want["final_loss"])) <= TOLERANCE
        assert row["timing"] == timing and want["timing"] == "serial"
        assert float(row["train_time_s"]) > 0
    for run, want in zip(runs, want_runs):
        assert [run[k] for k in ("batch_size", "seed")] == [want[k] for k in ("batch_size", "seed")]
        assert max(abs(a - b) for a, b in zip(run["epoch_loss"], want["epoch_loss"])) <= TOLERANCE
    assert document["complete"]


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("serial"))
    assert main(["sweep", *TINY, "--out", out]) == 0
    return out


def test_workers_2_writes_the_serial_sweeps_rows_timed_here(serial, tmp_path):
    pytest.importorskip("distributed")
    before = live_children()
    assert main(["sweep", *TINY, "--workers", "2", "--out", str(tmp_path)]) == 0
    assert_same_runs(str(tmp_path), serial, "serial-client")
    assert live_children() - before == set()  # the LocalCluster's workers have exited
    with open(tmp_path / "report.md", encoding="utf-8") as handle:
        assert "each run timed alone by the sweep's process" in handle.read()


def test_timing_concurrent_says_so_and_resume_keeps_to_it(serial, tmp_path, capsys):
    pytest.importorskip("distributed")
    out = str(tmp_path)
    assert main(["sweep", *TINY, "--workers", "2", "--timing", "concurrent", "--out", out]) == 0
    assert_same_runs(out, serial, "worker-concurrent")
    with open(os.path.join(out, "report.md"), encoding="utf-8") as handle:
        assert "not comparable with times measured alone" in handle.read()
    # Drop the last two rows (as if killed), resume on the cluster: they are redone, the others kept.
    rows, _, _ = read(out)
    with open(os.path.join(out, "results.csv"), newline="") as handle:
        lines = handle.read().splitlines(keepends=True)
    with open(os.path.join(out, "results.csv"), "w", newline="") as handle:
        handle.writelines(lines[:-2])
    assert main(["sweep", *TINY, "--workers", "2", "--timing", "concurrent", "--out", out, "--resume"]) == 0
    after, _, document = read(out)
    assert after[:-2] == rows[:-2] and document["resumed_rows"] == len(rows) - 2
    assert_same_runs(out, serial, "worker-concurrent")
    capsys.readouterr()
    # Rows timed side by side are not mixed with rows timed one at a time.
    assert main(["sweep", *TINY, "--workers", "2", "--out", out, "--resume"]) == 2
    assert "timing" in capsys.readouterr().err


def test_scheduler_runs_the_sweep_on_separate_workers(dask_cluster, serial, tmp_path):  # noqa: F811
    address, workers = dask_cluster(2)
    wait_for_workers(address, 2)
    assert main(["sweep", *TINY, "--scheduler", address, "--out", str(tmp_path)]) == 0
    assert_same_runs(str(tmp_path), serial, "serial-client")
    assert all(worker.poll() is None for worker in workers)  # the sweep left the cluster running


def test_cluster_options_refused_with_one_line(tmp_path, capsys, monkeypatch):
    assert main(["sweep", *TINY, "--timing", "concurrent", "--out", str(tmp_path)]) == 2
    assert "--timing concurrent needs --workers or --scheduler" in capsys.readouterr().err
    assert main(["sweep", *TINY, "--workers", "2", "--scheduler", "tcp://127.0.0.1:1", "--out", str(tmp_path)]) == 2
    assert "not allowed with" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "distributed", None)  # Dask not installed
    assert main(["sweep", *TINY, "--workers", "2", "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fastedf sweep: error: {DASK_MISSING}"]
    assert not os.path.exists(tmp_path / "none")  # refused before anything was written
