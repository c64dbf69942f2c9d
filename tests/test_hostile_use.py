"""fastedf tried as a careful, hostile user would: options typed almost right, signals, closed pipes,
directories of the other subcommand, odd CSV files, and fit given what it cannot train.

Each case gets one line naming the problem (exit 2 on the command line, a
ValueError from fit), never a traceback, a hang or a silent wrong answer.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fastedf
from fastedf import BCE, Input, Linear, Parameter, Sigmoid
from fastedf.__main__ import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--engine", "graph", "--epochs", "2", "--seeds", "1", "--batch-sizes", "8,1050", "--repeats", "1",
        "--quiet", "--no-figures"]


def run(argv, capsys):
    """main(argv) in this process; returns (exit code, stderr lines)."""
    code = main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


def one_line(code, err, *expected):
    assert code == 2, err
    assert len(err) == 1 and "Traceback" not in err[0], err
    for text in expected:
        assert text in err[0], err


# ---------------------------------------------------------------- options typed almost right

@pytest.mark.parametrize("argv, meant", [(["sweep", "--seed", "3"], "--seeds"),
                                         (["sweep", "--batch-size", "4"], "--batch-sizes"),
                                         (["sweep", "--epoch=3"], "--epochs"),
                                         (["memory", "--seeds", "3"], "--seed")])
def test_a_prefix_of_an_option_is_not_taken_for_it(argv, meant, tmp_path, capsys, monkeypatch):
    # `sweep --seed 3` once ran --seeds 3 (seeds 0, 1, 2) without a word.
    monkeypatch.chdir(tmp_path)
    code, err = run(argv, capsys)
    one_line(code, err, "unrecognized arguments", f"did you mean {meant}")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- signals and pipes

def test_sigterm_keeps_finished_rows_like_ctrl_c_and_exits_143(tmp_path):
    out = str(tmp_path / "out")
    slow = ["--engine", "graph", "--epochs", "60", "--seeds", "2", "--batch-sizes", "2,4,8", "--repeats", "1",
            "--quiet", "--no-figures"]
    child = subprocess.Popen([sys.executable, "-m", "fastedf", "sweep", *slow, "--out", out], cwd=ROOT,
                             stderr=subprocess.PIPE, text=True)
    csv_path = os.path.join(out, "results.csv")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and child.poll() is None:
        if os.path.exists(csv_path) and open(csv_path).read().count("\n") >= 2:  # a header and a row
            break
        time.sleep(0.01)
    child.send_signal(signal.SIGTERM)
    err = child.communicate(timeout=30)[1].strip().splitlines()
    assert child.returncode == 128 + signal.SIGTERM, err
    assert err and "interrupted" in err[-1] and "--resume" in err[-1], err
    text = open(os.path.join(out, "results.json")).read()
    assert '"complete": false' in text and '"interrupted": true' in text


def test_sigterm_stops_the_memory_measurement_and_its_child(tmp_path):
    out = str(tmp_path / "out")
    child = subprocess.Popen([sys.executable, "-m", "fastedf", "memory", "--engine", "graph", "--batch-sizes",
                              "1,2", "--samples", "20000", "--out", out], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline().startswith("fastedf memory:")  # the first child is starting
    time.sleep(0.5)
    child.send_signal(signal.SIGTERM)
    err = child.communicate(timeout=30)[1]
    assert child.returncode == 128 + signal.SIGTERM, err
    # Its measuring child died with it: nothing runs "--child" under this --out's parent any more.
    listing = subprocess.run(["ps", "-o", "ppid=,args=", "-e"], capture_output=True, text=True).stdout
    assert not [line for line in listing.splitlines() if line.split()[0] == str(child.pid)]
    assert '"interrupted": true' in open(os.path.join(out, "memory.json")).read()


@pytest.mark.parametrize("argv", [["--version"], ["sweep", "--bogus"]])
def test_a_closed_pipe_is_a_quiet_exit_not_a_traceback(argv):
    # The reader is gone before fastedf writes: `fastedf --version | true`.
    reader, writer = os.pipe()
    os.close(reader)
    done = subprocess.run([sys.executable, "-m", "fastedf", *argv], cwd=ROOT, stdout=writer, stderr=writer,
                          check=False)
    os.close(writer)
    assert done.returncode == 128 + signal.SIGPIPE


# ---------------------------------------------------------------- a directory of the other subcommand

def test_a_sweep_is_not_written_beside_a_memory_measurement_nor_the_reverse(tmp_path, capsys):
    measured = tmp_path / "measured"
    assert main(["memory", "--engine", "compiled", "--batch-sizes", "1", "--samples", "8", "--features", "2",
                 "--epochs", "1", "--no-plot", "--out", str(measured)]) == 0
    capsys.readouterr()
    before = {name: (measured / name).read_bytes() for name in os.listdir(measured) if name != ".fastedf.lock"}
    for extra in ([], ["--resume"], ["--overwrite"]):  # once a sweep started writing beside memory.csv
        code, err = run(["sweep", *TINY, "--out", str(measured), *extra], capsys)
        one_line(code, err, "memory.csv", "fastedf memory", "another --out")
    assert {name: (measured / name).read_bytes() for name in os.listdir(measured) if name != ".fastedf.lock"} == before
    swept = tmp_path / "swept"
    assert main(["sweep", *TINY, "--out", str(swept)]) == 0
    capsys.readouterr()
    code, err = run(["memory", "--batch-sizes", "1,2", "--samples", "8", "--out", str(swept), "--overwrite"],
                    capsys)
    one_line(code, err, "results.csv", "fastedf sweep", "another --out")
    assert not (swept / "memory.csv").exists() and (swept / "results.csv").exists()


def test_memory_measures_a_repeated_batch_size_once_and_refuses_a_micro_batch_that_changes_nothing(
        tmp_path, capsys):
    out = tmp_path / "out"
    common = ["memory", "--engine", "compiled", "--samples", "8", "--features", "2", "--epochs", "1", "--no-plot"]
    code, err = run([*common, "--batch-sizes", "2,4", "--micro-batch", "4", "--out", str(out)], capsys)
    one_line(code, err, "--micro-batch 4", "largest is 4")
    assert not out.exists()
    assert main([*common, "--batch-sizes", "2,2", "--out", str(out)]) == 0
    assert (out / "memory.csv").read_text().count("\n") == 2  # the header and one row


# ---------------------------------------------------------------- CSV files as people make them

ROWS = "".join(f"{i % 7},{(i * 3) % 5},{i % 2}\n" for i in range(12))


@pytest.mark.parametrize("name, text, expected", [
    ("one_class", "a,b,label\n" + ROWS.replace(",0\n", ",1\n"), ["every row's label", "is 1", "both classes"]),
    ("nul", "a,b,label\0\n" + ROWS, ["'label\\x00'", "control character"]),
    ("tabs", ("a,b,label\n" + ROWS).replace(",", "\t"), ["holds tabs", "comma-separated"]),
])
def test_a_csv_that_cannot_train_the_study_is_refused_naming_why(name, text, expected, tmp_path, capsys):
    path = tmp_path / f"{name}.csv"
    path.write_text(text)
    code, err = run(["sweep", *TINY[:-4], "--batch-sizes", "2", "--quiet", "--no-figures", "--data", str(path),
                     "--out", str(tmp_path / "out")], capsys)
    one_line(code, err, str(path), *expected)
    assert not (tmp_path / "out" / "results.csv").exists()


def test_blank_lines_before_the_header_are_skipped(tmp_path, capsys):
    path = tmp_path / "data.csv"
    path.write_text("\n\r\n  \na,b,label\n" + ROWS)
    out = tmp_path / "out"
    code, err = run(["sweep", *TINY[:-4], "--batch-sizes", "2", "--quiet", "--no-figures", "--data", str(path),
                     "--out", str(out)], capsys)
    assert code == 0, err
    assert '"features": [\n   "a",\n   "b"\n  ]' in (out / "results.json").read_text()


# ---------------------------------------------------------------- fit given what it cannot train

def logistic(rows=20):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, 2))
    x, y = Input(), Input()
    A, b = Parameter(np.array([[0.1], [-0.2]])), Parameter(np.zeros(1))
    return x, y, A, b, BCE(y, Sigmoid(Linear(x, A, b))), X, (X[:, :1] > 0).astype(float)


def test_fit_refuses_options_that_python_would_read_as_true():
    # shuffle="no" is a true string: it once shuffled without a word.
    x, y, A, b, loss, X, Y = logistic()
    for name in ("shuffle", "progress"):
        with pytest.raises(ValueError, match=f"{name} must be True or False, got 'no'"):
            fastedf.fit(loss, {x: X, y: Y}, epochs=1, **{name: "no"})
    assert np.array_equal(A.value, [[0.1], [-0.2]])  # nothing trained
    fastedf.fit(loss, {x: X, y: Y}, epochs=1, shuffle=np.True_, seed=0)


def test_fit_refuses_complex_feeds_instead_of_dropping_their_imaginary_parts():
    x, y, A, b, loss, X, Y = logistic()
    with pytest.raises(ValueError, match=r"Input#\d+: feed is complex"):
        fastedf.fit(loss, {x: X + 1j, y: Y}, epochs=1)


def test_fit_refuses_a_graph_without_data_or_without_weights():
    p = Parameter(np.ones(1))
    with pytest.raises(ValueError, match=r"Parameter#\d+ depends on no Input"):
        fastedf.fit(p, {}, epochs=1)  # once a StopIteration from inside fit
    x, y, A, b, loss, X, Y = logistic()
    frozen = BCE(y, Sigmoid(x))
    with pytest.raises(ValueError, match=r"BCE#\d+ depends on no Parameter, so fit would train nothing"):
        fastedf.fit(frozen, {x: X[:, :1], y: Y}, epochs=1)


def test_fit_names_a_cycle_in_the_graph():
    x, y, A, b, loss, X, Y = logistic()
    linear = loss.inputs[1].inputs[0]
    linear.inputs.append(loss)  # the loss made an input of its own layer
    with pytest.raises(ValueError, match=rf"cycle: {linear} takes {loss} as an input"):
        fastedf.fit(loss, {x: X, y: Y}, epochs=1)


def test_class_indices_fed_to_ce_are_refused_with_the_one_hot_call():
    from fastedf.models import mlp

    model = mlp(2, (3,), classes=3)
    indices = np.arange(12, dtype=float).reshape(12, 1) % 3
    with pytest.raises(ValueError, match=r"class indices\? .*model\.labels\(y\)"):
        fastedf.fit(model.loss, {model.x: np.ones((12, 2)), model.y: indices}, epochs=1)


def test_an_enormous_argument_is_named_on_one_readable_line():
    x, y, A, b, loss, X, Y = logistic()
    with pytest.raises(ValueError) as error:
        fastedf.fit(loss, {x: X, y: Y}, epochs=1, lr=10**400)
    assert len(str(error.value)) < 120 and "401 characters" in str(error.value)


@pytest.mark.parametrize("target, why", [("nowhere", "does not exist"), ("loop", "loop of links")])
def test_an_out_that_is_a_broken_link_is_named_as_one(target, why, tmp_path, capsys):
    link = tmp_path / "out"
    os.symlink(str(tmp_path / target), str(link))
    if target == "loop":
        os.symlink(str(link), str(tmp_path / "loop"))
    code, err = run(["sweep", *TINY, "--out", str(link)], capsys)
    one_line(code, err, f"--out {link} is a symbolic link", why)


# ---------------------------------------------------------------- damaged results under --resume

@pytest.fixture
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "out"
    assert main(["sweep", *TINY, "--out", str(out)]) == 0
    return out


def damaged_copy(finished, tmp_path, edit):
    import json
    import shutil

    out = tmp_path / "out"
    shutil.copytree(finished, out)
    document = json.loads((out / "results.json").read_text())
    (out / "results.json").write_text(edit(document))
    return out


@pytest.mark.parametrize("edit, expected", [
    (lambda d: json.dumps({**d, "config": {**d["config"], "data_identity": "x"}}), "data_identity"),
    (lambda d: json.dumps({**d, "config": {**d["config"], "data_identity": [1]}}), "data_identity"),
    (lambda d: '{"config": ' + "[" * 100_000 + "]" * 100_000 + "}", "results.json is unreadable"),
])
def test_resume_of_a_damaged_results_json_is_one_line(edit, expected, finished, tmp_path, capsys):
    out = damaged_copy(finished, tmp_path, edit)
    before = (out / "results.csv").read_bytes()
    code, err = run(["sweep", *TINY, "--out", str(out), "--resume"], capsys)
    one_line(code, err, "--resume", expected)
    assert (out / "results.csv").read_bytes() == before


# ---------------------------------------------------------------- what cannot run, refused before it starts

@pytest.mark.parametrize("argv, expected", [
    (["--data", ""], "--data is empty"),  # `--data "$DATA"` once trained the study's data instead
    (["--data", "x.csv", "--label-column", " "], "--label-column is empty"),
    (["--workers", "100000"], "--workers 100000: the sweep needs about"),  # once started 100000 processes
    (["--model", "mlp", "--hidden", "100000000"], "use fewer --hidden units or smaller --batch-sizes"),
])
def test_options_that_cannot_mean_what_was_meant_are_refused_before_anything_starts(argv, expected, tmp_path,
                                                                                    capsys):
    out = tmp_path / "out"
    started = time.monotonic()
    code, err = run(["sweep", "--epochs", "1", "--seeds", "1", "--quiet", "--no-figures", *argv, "--out", str(out)],
                    capsys)
    one_line(code, err, expected)
    assert time.monotonic() - started < 3 and not out.exists()


def test_resume_without_results_json_keeps_the_rows_it_cannot_check(finished, tmp_path, capsys):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(finished, out)
    (out / "results.json").unlink()
    before = (out / "results.csv").read_bytes()
    code, err = run(["sweep", *TINY, "--out", str(out), "--resume"], capsys)  # once: retrained, rows replaced
    one_line(code, err, "results.json is missing", "results.csv")
    assert (out / "results.csv").read_bytes() == before


def test_resume_of_a_latest_that_was_removed_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("results")
    os.symlink("20260101T000000Z", os.path.join("results", "latest"))
    code, err = run(["sweep", *TINY, "--resume"], capsys)
    one_line(code, err, "results/latest", "is gone")
    assert os.listdir("results") == ["latest"]


@pytest.mark.parametrize("name, link", [("results.json.tmp", os.symlink), ("runs.jsonl", os.symlink),
                                        ("results.csv", os.link)])
def test_resume_never_writes_through_a_link_out_of_its_directory(name, link, finished, tmp_path, capsys):
    # The lock file was guarded against links; the files written beside it were not: --resume once
    # rewrote the file a results.json.tmp link pointed at.
    import shutil

    out = tmp_path / "out"
    shutil.copytree(finished, out)
    victim = tmp_path / "victim"
    victim.write_bytes((out / name).read_bytes() if (out / name).exists() else b"keep\n")
    before = victim.read_bytes()
    (out / name).unlink(missing_ok=True)
    link(str(victim), str(out / name))
    code, err = run(["sweep", *TINY, "--out", str(out), "--resume"], capsys)
    one_line(code, err, f"{out / name} ", "regular files of its own")
    assert victim.read_bytes() == before
