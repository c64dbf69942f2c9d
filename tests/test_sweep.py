"""`fastedf sweep` on tiny configurations: the files it writes, resume, bad input, and the report's analysis."""
import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import fastedf
from fastedf.__main__ import main
from fastedf.guardrails import DirectoryLock
from fastedf.models import logistic_regression
from fastedf.study import claims, one_run, options, plots, results
from fastedf.study.data import study_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Graph engine: nothing to compile, so tiny runs take milliseconds.
TINY = ["--engine", "graph", "--epochs", "2", "--seeds", "2", "--batch-sizes", "1,8,1050", "--repeats", "1",
        "--quiet"]
REQUIRED = {"batch_size", "seed", "updates", "train_time_s", "compile_time_s", "final_loss", "test_accuracy",
            "peak_memory_bytes"}
PNG = b"\x89PNG\r\n\x1a\n"


def read_rows(out):
    with open(os.path.join(out, "results.csv"), newline="") as handle:
        return list(csv.DictReader(handle))


def run(argv, capsys):
    """main(argv) in this process; returns (exit code, stderr lines)."""
    code = main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One tiny sweep shared by the tests that only read its files."""
    out = str(tmp_path_factory.mktemp("tiny"))
    assert main(["sweep", *TINY, "--out", out]) == 0
    return out


# ---------------------------------------------------------------- files written

def test_results_csv_has_one_complete_row_per_batch_size_and_seed(tiny):
    rows = read_rows(tiny)
    assert REQUIRED <= set(rows[0])
    assert sorted((int(r["batch_size"]), int(r["seed"])) for r in rows) == [
        (1, 0), (1, 1), (8, 0), (8, 1), (1050, 0), (1050, 1)]
    for r in rows:
        b = int(r["batch_size"])
        assert int(r["updates"]) == 2 * math.ceil(1050 / b)
        assert float(r["train_time_s"]) > 0 and float(r["compile_time_s"]) >= 0
        assert 0 < float(r["final_loss"]) < math.log(2) * 2
        assert 0 <= float(r["test_accuracy"]) <= 1
        assert r["peak_memory_bytes"] == ""  # not measured without --memory
    # One update per sample at B = 1 takes far longer than two full-batch updates.
    time_of = {(int(r["batch_size"]), int(r["seed"])): float(r["train_time_s"]) for r in rows}
    assert time_of[1, 0] > 10 * time_of[1050, 0]


def test_rows_match_training_the_model_directly(tiny):
    """final_loss and test_accuracy are those of fastedf.fit with the same seed, batch size and epochs."""
    row = next(r for r in read_rows(tiny) if r["batch_size"] == "8" and r["seed"] == "1")
    split = study_data(1)
    model = logistic_regression(2, seed=1)
    fastedf.fit(model.loss, {model.x: split.X_train, model.y: split.y_train.reshape(-1, 1)}, batch_size=8,
                epochs=2, lr=0.1, engine="graph")
    assert float(row["final_loss"]) == pytest.approx(model.mean_loss(split.X_train, split.y_train), rel=1e-12)
    assert float(row["test_accuracy"]) == pytest.approx(model.accuracy(split.X_test, split.y_test))


def test_results_json_holds_rows_configuration_and_environment(tiny):
    with open(os.path.join(tiny, "results.json")) as handle:
        doc = json.load(handle)
    assert doc["complete"] is True
    assert doc["config"]["epochs"] == 2 and doc["config"]["batch_sizes"] == [1, 8, 1050]
    assert doc["config"]["n_train"] == 1050 and doc["config"]["n_test"] == 350
    for key in ("python", "numpy", "numba", "matplotlib", "cpu", "cpu_count"):
        assert doc["environment"][key]
    csv_rows = read_rows(tiny)
    assert len(doc["rows"]) == len(csv_rows)
    assert {(r["batch_size"], r["seed"], r["final_loss"]) for r in doc["rows"]} == {
        (int(r["batch_size"]), int(r["seed"]), float(r["final_loss"])) for r in csv_rows}


def test_figures_are_pngs(tiny):
    names = ["time_vs_batch_size.png", "loss_vs_batch_size.png", "accuracy_vs_batch_size.png",
             "loss_curves.png", "decision_boundaries.png"]
    for name in names:
        with open(os.path.join(tiny, name), "rb") as handle:
            assert handle.read(8) == PNG, name
    assert not os.path.exists(os.path.join(tiny, "memory_vs_batch_size.png"))


def test_runs_jsonl_has_a_curve_per_row(tiny):
    with open(os.path.join(tiny, "runs.jsonl")) as handle:
        runs = [json.loads(line) for line in handle]
    assert len(runs) == 6
    assert all(len(r["epoch_loss"]) == 2 and np.all(np.isfinite(r["epoch_loss"])) for r in runs)
    assert all(np.shape(r["parameters"][0]) == (2, 1) for r in runs)


def test_report_states_each_claim_with_numbers_from_the_rows(tiny):
    with open(os.path.join(tiny, "report.md")) as handle:
        text = handle.read()
    for heading in ("## 1. Does doubling", "## 2. Does memory", "## 3. Do final loss"):
        assert heading in text
    rows = [results._parse_row(r) for r in read_rows(tiny)]
    ts = claims.time_scaling(rows, 1050, 2)
    assert f"**{ts.slope:.2f}**" in text
    assert "Not measured in this run" in text  # memory, without --memory
    loss = claims.trend(rows, "final_loss", +1)
    assert f"**Final loss: {loss.verdict}**" in text
    assert "Not tested in this run" in text  # lr scaling, fixed lr only
    flagged = sum(r["time_flag"] != "" for r in read_rows(tiny))
    assert f"{flagged} of 6 runs were flagged" in text
    assert all(float(r["cpu_time_s"]) > 0 and r["time_flag"] in ("", "remeasured", "unsettled")
               for r in read_rows(tiny))


# ---------------------------------------------------------------- results are never lost

def snapshot(out):
    """{file name: bytes} of every file in out but the lock (which holds the pid of the last sweep to lock it)."""
    return {name: open(os.path.join(out, name), "rb").read() for name in sorted(os.listdir(out))
            if os.path.isfile(os.path.join(out, name)) and name != DirectoryLock.NAME}


def test_a_second_sweep_on_the_same_out_is_refused_and_leaves_the_first_byte_for_byte(tiny, tmp_path, capsys):
    out = str(tmp_path / "out")
    shutil.copytree(tiny, out)
    before = snapshot(out)
    for extra in ([], ["--epochs", "3", "--no-figures"]):
        code, err = run(["sweep", *TINY, *extra, "--out", out], capsys)
        assert code == 2 and len(err) == 1, err
        assert f"--out {out} holds an earlier sweep's results" in err[0]
        assert "--resume" in err[0] and "--overwrite" in err[0]
        assert snapshot(out) == before
    # An interrupted sweep's files are results too: only its runs.jsonl is left.
    os.makedirs(tmp_path / "cut")
    shutil.copy(os.path.join(tiny, "runs.jsonl"), tmp_path / "cut")
    code, err = run(["sweep", *TINY, "--out", str(tmp_path / "cut")], capsys)
    assert code == 2 and "runs.jsonl" in err[0], err


def test_overwrite_removes_only_a_sweeps_files_and_no_figures_leaves_no_stale_png(tiny, tmp_path, capsys):
    out = str(tmp_path / "out")
    shutil.copytree(tiny, out)
    assert any(name.endswith(".png") for name in os.listdir(out))
    with open(os.path.join(out, "notes.txt"), "w") as handle:
        handle.write("the user's own notes")
    with open(os.path.join(out, "my_plot.png"), "wb") as handle:
        handle.write(PNG)
    code, err = run(["sweep", *TINY, "--seeds", "1", "--no-figures", "--overwrite", "--out", out], capsys)
    assert code == 0, err
    assert sorted(name for name in os.listdir(out) if name.endswith(".png")) == ["my_plot.png"]
    assert open(os.path.join(out, "notes.txt")).read() == "the user's own notes"
    assert {int(r["seed"]) for r in read_rows(out)} == {0}  # the new sweep's rows only
    code, err = run(["sweep", *TINY, "--resume", "--overwrite", "--out", out], capsys)
    assert code == 2 and "--resume" in err[0] and "--overwrite" in err[0]


def test_resume_rewrites_the_figures_from_all_rows_or_removes_them(tiny, tmp_path, capsys):
    out = str(tmp_path / "out")
    shutil.copytree(tiny, out)
    code, err = run(["sweep", *TINY, "--no-figures", "--resume", "--out", out], capsys)
    assert code == 0, err
    assert not [name for name in os.listdir(out) if name.endswith(".png")]


def test_resume_removes_a_figure_only_the_earlier_results_json_lists(tiny, tmp_path, capsys):
    out = str(tmp_path / "out")
    shutil.copytree(tiny, out)
    path = os.path.join(out, "results.json")
    with open(path, encoding="utf-8") as handle:
        document = json.load(handle)
    document["figures"] = [*document.get("figures", []), "older_figure.png"]  # a name this version does not make
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(document, handle)
    open(os.path.join(out, "older_figure.png"), "wb").close()
    code, err = run(["sweep", *TINY, "--no-figures", "--resume", "--out", out], capsys)
    assert code == 0, err
    assert not os.path.exists(os.path.join(out, "older_figure.png"))


def test_every_figure_a_sweep_writes_is_one_overwrite_knows(tiny):
    written = {name for name in os.listdir(tiny) if name.endswith(".png")}
    assert written and written <= set(plots.FIGURES)


def test_the_default_output_is_a_new_directory_per_sweep_and_latest_points_at_the_newest(tmp_path, capsys,
                                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["sweep", *TINY, "--seeds", "1", "--batch-sizes", "8,1050", "--no-figures"]
    assert main(argv) == 0
    assert main([*argv, "--epochs", "3"]) == 0  # within the same second: a numbered directory
    made = sorted(name for name in os.listdir("results") if name != "latest")
    assert len(made) == 2
    first, second = (os.path.join("results", name) for name in made)
    if made[1].split("-")[-1] != "2":  # another second: sorted by time anyway
        assert made[0] < made[1]
    assert {r["epochs"] for r in read_rows(first)} == {"2"}
    assert {r["epochs"] for r in read_rows(second)} == {"3"}
    assert os.path.samefile(os.path.join("results", "latest"), second)
    # --resume without --out resumes the newest
    assert main([*argv, "--epochs", "3", "--resume"]) == 0
    with open(os.path.join(second, "results.json")) as handle:
        assert json.load(handle)["resumed_rows"] == 2
    # Where no symbolic link can be made, results/latest.txt names the newest directory.
    def no_links(*args):
        raise OSError(1, "Operation not permitted")

    real_symlink = os.symlink
    monkeypatch.setattr(os, "symlink", no_links)
    assert main(argv) == 0
    with open(os.path.join("results", "latest.txt")) as handle:
        third = os.path.join("results", handle.read().strip())
    assert third not in (first, second) and len(read_rows(third)) == 2
    assert not os.path.lexists(os.path.join("results", "latest"))  # it would name an older directory
    assert main([*argv, "--resume"]) == 0
    monkeypatch.setattr(os, "symlink", real_symlink)
    with open(os.path.join("results", "latest"), "w") as handle:  # a file of the user's is never replaced
        handle.write("mine")
    assert main(argv) == 0
    assert open(os.path.join("results", "latest")).read() == "mine"
    with open(os.path.join("results", "latest.txt")) as handle:
        assert len(read_rows(os.path.join("results", handle.read().strip()))) == 2
    capsys.readouterr()


# ---------------------------------------------------------------- options

def test_csv_data_with_a_named_label_column(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(-2, 1, (20, 3)), rng.normal(2, 1, (20, 3))])
    data = tmp_path / "data.csv"
    lines = ["a,target,b,c"] + [f"{x[0]},{int(i >= 20)},{x[1]},{x[2]}" for i, x in enumerate(X)]
    data.write_text("\n".join(lines) + "\n")
    out = str(tmp_path / "out")
    code, err = run(["sweep", "--engine", "graph", "--epochs", "3", "--seeds", "1", "--repeats", "1", "--quiet",
                     "--data", str(data), "--label-column", "target", "--out", out], capsys)
    assert code == 0, err
    rows = read_rows(out)
    assert [int(r["batch_size"]) for r in rows] == [1, 2, 4, 8, 16, 30]  # 30 training rows, 10 test
    with open(os.path.join(out, "results.json")) as handle:
        assert json.load(handle)["config"]["features"] == ["a", "b", "c"]
    assert not os.path.exists(os.path.join(out, "decision_boundaries.png"))  # 3 features: no plane to draw


def test_lr_scaling_adds_scaled_runs_beside_the_fixed_lr(tmp_path, capsys):
    out = str(tmp_path)
    code, err = run(["sweep", *TINY, "--batch-sizes", "2,8", "--seeds", "1", "--lr-scaling", "sqrt,linear",
                     "--out", out], capsys)
    assert code == 0, err
    lr = {(r["lr_scaling"], int(r["batch_size"])): float(r["lr"]) for r in read_rows(out)}
    assert lr == {("none", 2): 0.1, ("none", 8): 0.1, ("linear", 2): 0.1, ("linear", 8): pytest.approx(0.4),
                  ("sqrt", 2): 0.1, ("sqrt", 8): pytest.approx(0.2)}
    text = (tmp_path / "report.md").read_text()
    assert "- `linear`:" in text and "- `sqrt`:" in text


def test_default_batch_sizes_reach_the_training_set():
    assert options.default_batch_sizes(1050) == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 1050]
    assert options.default_batch_sizes(8) == [1, 2, 4, 8]


def test_progress_lines_appear_in_a_log_file(tmp_path):
    args = [a for a in TINY if a != "--quiet"]
    log = tmp_path / "sweep.log"
    with open(log, "w") as handle:  # not a terminal: no bar, a line every FASTEDF_PROGRESS_SECONDS
        done = subprocess.run([sys.executable, "-m", "fastedf", "sweep", *args, "--no-figures", "--out",
                               str(tmp_path / "out")], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=handle,
                              env={**os.environ, "FASTEDF_PROGRESS_SECONDS": "0"}, check=False)
    lines = log.read_text().splitlines()
    assert done.returncode == 0, lines
    assert "\r" not in log.read_text()  # no bar redrawn in place
    progress = [line for line in lines if " runs done, " in line]
    assert [line.split(":")[1].split(" runs")[0].strip() for line in progress] == [f"{i} of 6" for i in range(1, 7)]
    assert all("elapsed, about" in line and line.endswith("remaining") for line in progress)
    assert lines[-1].startswith("6 runs (0 resumed)")  # then the closing summary


def test_progress_lines_wait_for_their_interval(capsys, monkeypatch):
    from fastedf import guardrails

    monkeypatch.setattr(guardrails, "PROGRESS_SECONDS", 3600)
    progress = guardrails.Progress(4, 1, "fastedf sweep")
    for _ in range(3):
        progress.update()
    progress.close()
    assert capsys.readouterr().err.splitlines() == [
        "fastedf sweep: 4 of 4 runs done, 0s elapsed, about 0s remaining"]  # the last one only
    quiet = guardrails.Progress(2, 0, "fastedf sweep", quiet=True)
    quiet.update(), quiet.update()
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------- resume

def test_resume_after_an_interruption_redoes_no_finished_row(tmp_path, capsys, monkeypatch):
    out = str(tmp_path)
    real = one_run.run_one
    calls = []

    def interrupted(split, batch_size, seed, lr, epochs, *rest, **options):
        if len(calls) == 4:  # the warm-up and three runs, then Ctrl-C
            raise KeyboardInterrupt
        calls.append((batch_size, seed, epochs))
        return real(split, batch_size, seed, lr, epochs, *rest, **options)

    monkeypatch.setattr(one_run, "run_one", interrupted)
    code, err = run(["sweep", *TINY, "--out", out], capsys)
    assert code == 130 and "--resume" in err[-1]
    before = read_rows(out)
    assert len(before) == 3
    # A row cut short by the interruption must be dropped and redone.
    with open(os.path.join(out, "results.csv"), "a") as handle:
        handle.write("none,8,1,0.1,gra")

    redone = []

    def recording(split, batch_size, seed, lr, epochs, *rest, **options):
        redone.append((batch_size, seed, epochs))
        return real(split, batch_size, seed, lr, epochs, *rest, **options)

    monkeypatch.setattr(one_run, "run_one", recording)
    code, err = run(["sweep", *TINY, "--out", out, "--resume"], capsys)
    assert code == 0, err
    finished = {(int(r["batch_size"]), int(r["seed"])) for r in before}
    timed = [(b, s) for b, s, epochs in redone if epochs == 2]  # the warm-up runs one epoch
    assert sorted(timed) == sorted({(1, 0), (1, 1), (8, 0), (8, 1), (1050, 0), (1050, 1)} - finished)
    after = read_rows(out)
    assert len(after) == 6
    assert after[:3] == before  # finished rows kept exactly, timings included
    with open(os.path.join(out, "results.json")) as handle:
        doc = json.load(handle)
    assert doc["complete"] and doc["resumed_rows"] == 3


def test_resume_after_the_process_is_killed(tmp_path):
    out = str(tmp_path)
    args = ["--engine", "graph", "--epochs", "20", "--seeds", "3", "--batch-sizes", "1,2,4,8", "--repeats", "1",
            "--quiet", "--no-figures", "--out", out]
    child = subprocess.Popen([sys.executable, "-m", "fastedf", "sweep", *args], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:
        if os.path.exists(os.path.join(out, "results.csv")) and len(read_rows(out)) >= 2:
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the sweep finished before it could be killed"
    before = read_rows(out)
    assert 2 <= len(before) < 12
    assert main(["sweep", *args, "--resume"]) == 0
    after = read_rows(out)
    assert len(after) == 12
    assert len({(r["batch_size"], r["seed"]) for r in after}) == 12
    assert after[:len(before)] == before


def test_resume_refuses_a_different_configuration(tiny, tmp_path, capsys):
    out = str(tmp_path)
    assert main(["sweep", *TINY, "--no-figures", "--out", out]) == 0
    capsys.readouterr()
    code, err = run(["sweep", *TINY, "--epochs", "3", "--out", out, "--resume"], capsys)
    assert code == 2 and len(err) == 1 and "epochs" in err[0]
    assert len(read_rows(out)) == 6  # nothing lost


# ---------------------------------------------------------------- bad input

def _csv(tmp_path, text, name="bad.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


BAD = {
    "batch size 0": (["--batch-sizes", "0"], "--batch-sizes"),
    "batch size not a number": (["--batch-sizes", "1,x"], "not an integer"),
    "batch size above the training rows": (["--batch-sizes", "4096"], "exceeds"),
    "negative epochs": (["--epochs", "-1"], "--epochs"),
    "epochs not a number": (["--epochs", "ten"], "--epochs"),
    "zero lr": (["--lr", "0"], "--lr"),
    "negative lr": (["--lr", "-0.1"], "--lr"),
    "NaN lr": (["--lr", "nan"], "--lr"),
    "seeds 0": (["--seeds", "0"], "--seeds"),
    "unknown engine": (["--engine", "gpu"], "--engine"),
    "unknown lr scaling": (["--lr-scaling", "cubic"], "cubic"),
    "unknown option": (["--bogus"], "--bogus"),
    "label column without data": (["--label-column", "y"], "--data"),
    "missing CSV": (["--data", "{tmp}/nope.csv"], "nope.csv"),
    "unreadable CSV (a directory)": (["--data", "{tmp}"], "cannot read"),
    "NaN in CSV": (["--data", "csv:x1,x2,label\n1,2,0\n3,nan,1\n4,5,0\n"], "NaN"),
    "non-numeric CSV value": (["--data", "csv:x1,x2,label\n1,2,0\n3,abc,1\n4,5,0\n"], "not a number"),
    "label not 0/1": (["--data", "csv:x1,x2,label\n1,2,0\n3,4,2\n4,5,0\n"], "0 or 1"),
    "no label column": (["--data", "csv:x1,x2,y\n1,2,0\n3,4,1\n4,5,0\n"], "label"),
    "empty CSV": (["--data", "csv:"], "empty"),
    "ragged CSV row": (["--data", "csv:x1,x2,label\n1,2,0\n3,1\n"], "fields"),
    "label column named twice": (["--data", "csv:x1,label,label\n1,0,0\n3,1,1\n4,0,0\n"], "'label' more than"),
    "feature column named twice": (["--data", "csv:x1,x1,label\n1,2,0\n3,4,1\n4,5,0\n"], "'x1' more than"),
    "nameless column": (["--data", "csv:x1,,label\n1,2,0\n3,4,1\n4,5,0\n"], "no name"),
    "seeds above 2**63": (["--seeds", str(2**64)], "--seeds"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_input_exits_2_with_one_line_naming_the_problem(case, tmp_path, capsys):
    args, expected = BAD[case]
    args = [_csv(tmp_path, a[4:]) if a.startswith("csv:") else a.format(tmp=tmp_path) for a in args]
    code, err = run(["sweep", "--engine", "graph", "--quiet", "--out", str(tmp_path / "out"), *args], capsys)
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith("fastedf sweep: error: ") and expected in err[0]
    assert "Traceback" not in err[0]


def test_unknown_subcommand_exits_2(capsys):
    code, err = run(["sweeep"], capsys)
    assert code == 2 and len(err) == 1 and "sweeep" in err[0]


@pytest.mark.parametrize("argv", [["sweep", "--epochs", "-1"], ["sweep", "--data", "/nonexistent.csv"], ["swep"]])
def test_console_entry_exits_2_without_a_traceback(argv):
    done = subprocess.run([sys.executable, "-m", "fastedf", *argv], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_script_wrapper_runs_the_sweep(tmp_path):
    done = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "sweep.py"), *TINY, "--no-figures",
                           "--seeds", "1", "--out", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(read_rows(str(tmp_path))) == 3


# ---------------------------------------------------------------- memory

def test_memory_fills_peak_bytes_and_the_memory_claim(tmp_path, capsys):
    out = str(tmp_path)
    code, err = run(["sweep", *TINY, "--seeds", "1", "--epochs", "1", "--batch-sizes", "1,1050", "--memory",
                     "--out", out], capsys)
    assert code == 0, err
    peaks = {int(r["batch_size"]): int(r["peak_memory_bytes"]) for r in read_rows(out)}
    assert peaks[1] > 0 and peaks[1050] > peaks[1]  # a 1050-row batch holds more than a 1-row one
    assert os.path.exists(os.path.join(out, "memory_vs_batch_size.png"))
    assert "bytes per extra sample" in (tmp_path / "report.md").read_text()


# ---------------------------------------------------------------- the analysis

def _rows(field, values, scaling="none"):
    """Rows {batch_size, seed, field} from {(batch_size, seed): value}."""
    return [{"lr_scaling": scaling, "batch_size": b, "seed": s, field: v} for (b, s), v in values.items()]


def test_time_scaling_recovers_the_overhead_model():
    n, epochs, c_update, c_sample = 1024, 10, 50e-9, 5e-9
    sizes = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
    times = {(b, s): c_update * epochs * math.ceil(n / b) + c_sample * epochs * n for b in sizes for s in (0, 1)}
    ts = claims.time_scaling(_rows("train_time_s", times), n, epochs)
    assert ts.c_update == pytest.approx(c_update, rel=1e-6)
    assert ts.c_sample == pytest.approx(c_sample, rel=1e-6)
    assert ts.crossover == pytest.approx(10, rel=1e-6)
    # Doubling saves (c_u/B) / (2 (c_u/B + c_s)) of the time: half the ideal saving exactly at B = c_u / c_s.
    assert ts.stops_at == 16
    assert ts.max_model_error < 1e-9
    pure = {(b, s): 1.0 / b for b in sizes for s in (0, 1)}
    ideal = claims.time_scaling(_rows("train_time_s", pure), n, epochs)
    assert ideal.slope == pytest.approx(-1) and ideal.stops_at is None


def test_trend_verdicts_compare_each_seed_with_itself():
    sizes = [1, 2, 4, 8]
    # Seeds at very different levels, each worsening with B: a paired trend, despite the level spread.
    rising = {(b, s): 0.1 * s + 0.01 * np.log2(b) for b in sizes for s in range(4)}
    t = claims.trend(_rows("final_loss", rising), "final_loss", +1)
    assert t.verdict == "worsens" and t.change == pytest.approx(0.03)
    mixed = {(b, s): (-1) ** s * 0.01 * np.log2(b) for b in sizes for s in range(4)}
    assert claims.trend(_rows("final_loss", mixed), "final_loss", +1).verdict == "no consistent trend"
    falling_acc = {(b, s): 0.9 - 0.01 * np.log2(b) + 0.001 * s for b in sizes for s in range(3)}
    assert claims.trend(_rows("test_accuracy", falling_acc), "test_accuracy", -1).verdict == "worsens"


def test_equal_updates_attributes_a_loss_that_depends_only_on_updates_to_fewer_updates():
    n, epochs, sizes = 64, 40, [1, 2, 4, 8]

    def curve(b):  # loss as a function of the update count alone
        updates = (np.arange(epochs) + 0.5) * math.ceil(n / b)
        return list(1 / (1 + 0.01 * updates))

    runs = {("none", b, 0): {"epoch_loss": curve(b)} for b in sizes}
    eq = claims.equal_updates(runs, sizes, [0], n)
    assert len(eq.worse) == 3 and eq.gap_epochs > 0
    assert abs(eq.gap_updates) < 1e-3 * eq.gap_epochs  # at equal updates nothing is left to explain


def test_memory_growth_slope_is_bytes_per_sample():
    peaks = {(b, 0): 20_000 + 32 * b for b in (1, 64, 1024)}
    mg = claims.memory_growth(_rows("peak_memory_bytes", peaks))
    assert mg.per_sample == pytest.approx(32) and mg.grows
    flat = {(b, 0): 20_000 for b in (1, 64, 1024)}
    assert not claims.memory_growth(_rows("peak_memory_bytes", flat)).grows


# ---------------------------------------------------------------- timing a busy machine cannot fake

def beside_a_busy_thread(real, calls, busy_calls):
    """real (fit), with a Python thread spinning beside it during the calls numbered in busy_calls (from 0)."""

    def fit(*args, **options):
        busy = len(calls) in busy_calls
        stop = threading.Event()
        spinner = threading.Thread(target=lambda: [None for _ in iter(stop.is_set, True)])
        if busy:
            spinner.start()
        try:
            history = real(*args, **options)
        finally:
            stop.set()
            if busy:
                spinner.join()
        calls.append((busy, history.train_time_s))
        return history
    return fit


def test_a_run_slowed_by_a_busy_thread_is_flagged_and_measured_again(monkeypatch):
    calls, real = [], one_run.fit
    monkeypatch.setattr(one_run, "fit", beside_a_busy_thread(real, calls, {0}))
    # Graph engine, 2,625 updates: about 0.1 s of Python that the spinning thread takes the GIL from.
    fields = one_run.run_one(study_data(0), 8, 0, 0.1, 20, "graph", 1, False).fields
    print("timed runs (beside a busy thread, loop seconds):", calls, "kept:", fields)
    assert calls[0][0] and len(calls) >= 2  # the disturbed run was measured again
    assert fields["time_flag"] in ("remeasured", "unsettled")
    assert fields["train_time_s"] < calls[0][1]  # not the disturbed run's time
    assert fields["cpu_time_s"] > 0
    # Disturbed every time: measured again a bounded number of times, then flagged as unsettled.
    calls.clear()
    monkeypatch.setattr(one_run, "fit", beside_a_busy_thread(real, calls, set(range(100))))
    fields = one_run.run_one(study_data(0), 8, 0, 0.1, 20, "graph", 1, False).fields
    print("every run beside a busy thread:", calls, "kept:", fields)
    assert len(calls) == 1 + one_run.MORE_RUNS
    assert fields["time_flag"] == "unsettled"
    assert fields["train_time_s"] == min(seconds for _, seconds in calls)  # the fastest, flagged


def test_robust_time_keeps_the_fastest_undisturbed_runs_and_says_how_it_got_them():
    T = one_run.Timing
    calm = [T(0.10, 0.0, 0.101, 0.100), T(0.11, 0.0, 0.111, 0.110), T(0.12, 0.0, 0.121, 0.120)]
    assert one_run.robust_time(calm, 3) == {"train_time_s": 0.11, "cpu_time_s": 0.11, "time_spread_s":
                                            pytest.approx(0.02), "time_flag": "", "compile_time_s": 0.0}
    disturbed = T(0.30, 0.0, 0.301, 0.100)  # wall 3x its own CPU time
    assert disturbed.disturbed and not calm[0].disturbed
    assert not one_run._timing_unsettled(calm, 3, 3) and one_run._timing_unsettled([disturbed, *calm[:2]], 3, 3)
    assert one_run.robust_time([disturbed, *calm], 3)["time_flag"] == "remeasured"
    assert one_run.robust_time([disturbed, *calm], 3)["train_time_s"] == 0.11
    # Undisturbed repeats that disagree (one 3x the others) are measured again; the fastest agreeing ones stay.
    slow = T(0.33, 0.0, 0.331, 0.330)
    assert one_run._timing_unsettled([calm[0], slow, calm[1]], 3, 3)
    assert one_run.robust_time([calm[0], slow, calm[1], calm[2]], 3)["train_time_s"] == 0.11
    assert one_run.robust_time([disturbed, disturbed], 1)["time_flag"] == "unsettled"


def test_no_verdict_on_a_doubling_inside_the_measured_noise():
    n, epochs = 1024, 1
    # B = 1 -> 2 saves 40% of the ideal (below the 50% threshold, at a time of 0.75) and 2 -> 4 all of it.
    exact = {(1, 0): 1.0, (2, 0): 0.8, (4, 0): 0.3}
    ts = claims.time_scaling(_rows("train_time_s", exact), n, epochs)
    assert ts.stops_at == 1 and ts.within_noise == ()
    # The same medians, the seeds 0.2 apart at B = 2: 0.8 is within the noise of 0.75, so no verdict there.
    spread = {**{(b, s): t for (b, _), t in exact.items() for s in (0, 1, 2)}, (2, 0): 0.7, (2, 2): 0.9}
    ts = claims.time_scaling(_rows("train_time_s", spread), n, epochs)
    assert list(ts.noise) == pytest.approx([0.0, 0.2, 0.0])
    assert ts.within_noise == (1,) and ts.stops_at is None
    # The spread between a run's repeats counts too.
    rows = _rows("train_time_s", exact)
    rows[1]["time_spread_s"] = 0.1
    assert claims.time_scaling(rows, n, epochs).within_noise == (1,)
