"""The command line under hostile use: one writer per --out, Ctrl-C, sizes that cannot finish,
damaged inputs, and no traceback for anything the user typed or pointed at.

Real processes where the behaviour is about processes: the lock is held by
another process, SIGINT is a real signal, a killed lock holder is SIGKILLed.
"""
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

import fastedf
from fastedf.__main__ import main
from fastedf.guardrails import DirectoryLock, UsageError
from fastedf.study import data, memory, one_run, options, results, sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Graph engine, nothing to compile: each run takes milliseconds.
TINY = ["--engine", "graph", "--epochs", "2", "--seeds", "1", "--batch-sizes", "8,1050", "--repeats", "1",
        "--quiet", "--no-figures"]
# About half a second per run: long enough to catch a sweep in the middle.
SLOW = ["--engine", "graph", "--epochs", "60", "--seeds", "2", "--batch-sizes", "2,4,8", "--repeats", "1",
        "--quiet", "--no-figures"]


def read_rows(out):
    with open(os.path.join(out, "results.csv"), newline="", encoding="utf-8-sig") as handle:
        return list(csv.DictReader(handle))


def run(argv, capsys):
    """main(argv) in this process; returns (exit code, stderr lines)."""
    code = main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


def spawn(argv, **options):
    return subprocess.Popen([sys.executable, "-m", "fastedf", *argv], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, **options)


def cli(argv):
    """`python -m fastedf argv` to the end: (exit code, stderr lines)."""
    done = subprocess.run([sys.executable, "-m", "fastedf", *argv], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    return done.returncode, done.stderr.strip().splitlines()


def wait_for_rows(out, count, child, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and child.poll() is None:
        if os.path.exists(os.path.join(out, "results.csv")) and len(read_rows(out)) >= count:
            return
        time.sleep(0.01)
    raise AssertionError(f"the sweep did not reach {count} rows while running: {child.poll()}")


def assert_one_line(code, err, *expected, exit_code=2):
    assert code == exit_code, err
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    for text in expected:
        assert text in err[0], err


# ---------------------------------------------------------------- one writer per --out

LOCK_HOLDER = """
import sys, time
from fastedf.guardrails import DirectoryLock
DirectoryLock(sys.argv[1], "fastedf sweep").acquire()
print("locked", flush=True)
time.sleep(120)
"""


def hold_lock(out):
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, out], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_locked_out_is_refused_and_a_killed_holder_frees_it(tmp_path, capsys):
    out = str(tmp_path / "out")
    os.makedirs(out)
    holder = hold_lock(out)
    try:
        code, err = run(["sweep", *TINY, "--out", out], capsys)
        assert_one_line(code, err, out, f"pid {holder.pid}")
        assert not os.path.exists(os.path.join(out, "results.csv"))  # nothing written beside the owner
        with pytest.raises(UsageError, match=f"pid {holder.pid}"):
            memory.main(["--engine", "graph", "--batch-sizes", "2,4", "--samples", "8", "--out", out])
    finally:
        holder.kill()
        holder.wait()
    # The operating system released the dead process's lock: no stale lock to clean up.
    code, err = run(["sweep", *TINY, "--out", out], capsys)
    assert code == 0, err
    assert len(read_rows(out)) == 2


def test_two_sweeps_on_one_out_do_not_mix_rows(tmp_path, capsys):
    out = str(tmp_path)
    slower = [*SLOW, "--epochs", "150", "--batch-sizes", "2,8,32"]  # about a second per run at B = 2
    first = spawn(["sweep", *slower, "--out", out])
    try:
        wait_for_rows(out, 1, first)
        code, err = run(["sweep", *SLOW, "--epochs", "3", "--out", out], capsys)
        assert first.poll() is None, "the first sweep ended before the second tried"
        assert_one_line(code, err, out, f"pid {first.pid}")
    finally:
        first.kill()
        first.wait()
    rows = read_rows(out)
    assert {r["epochs"] for r in rows} == {"150"}  # only the first sweep's rows
    # --resume after the kill: the lock is free, the rows complete, each once.
    code, err = run(["sweep", *slower, "--out", out, "--resume"], capsys)
    assert code == 0, err
    after = read_rows(out)
    assert len(after) == 6 and len({(r["batch_size"], r["seed"]) for r in after}) == 6
    assert after[:len(rows)] == rows


def test_the_lock_is_released_when_the_sweep_ends(tmp_path, capsys):
    out = str(tmp_path)
    assert main(["sweep", *TINY, "--out", out]) == 0
    with DirectoryLock(out, "test"):  # would raise if the sweep still held it
        pass


# ---------------------------------------------------------------- Ctrl-C

def test_sigint_keeps_every_finished_row_and_resume_completes_them(tmp_path, capsys):
    out = str(tmp_path)
    child = spawn(["sweep", *SLOW, "--out", out])
    wait_for_rows(out, 2, child)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=30)
    err = stderr.strip().splitlines()
    assert_one_line(child.returncode, err, "interrupted", "--resume", exit_code=130)
    rows = read_rows(out)
    assert 2 <= len(rows) < 6
    with open(os.path.join(out, "results.json")) as handle:
        doc = json.load(handle)
    assert doc["complete"] is False
    assert [(r["batch_size"], r["seed"], r["final_loss"]) for r in doc["rows"]] == [
        (int(r["batch_size"]), int(r["seed"]), float(r["final_loss"])) for r in rows]
    with open(os.path.join(out, "runs.jsonl")) as handle:
        runs = [json.loads(line) for line in handle]
    assert {(r["batch_size"], r["seed"]) for r in runs} >= {(int(r["batch_size"]), int(r["seed"])) for r in rows}
    code, err = run(["sweep", *SLOW, "--out", out, "--resume"], capsys)
    assert code == 0, err
    after = read_rows(out)
    assert len(after) == 6 and after[:len(rows)] == rows


def test_sigint_after_training_finished_keeps_that_run(tmp_path, capsys, monkeypatch):
    # The signal lands between the end of training and the row reaching the disk (as it can right after a
    # compiled run that had ignored Ctrl-C): the row must be written, then the sweep stops.
    real = results.row_problem
    sent = []

    def check_and_interrupt(row, config):
        if not sent:
            sent.append(row)
            os.kill(os.getpid(), signal.SIGINT)
        return real(row, config)

    monkeypatch.setattr(sweep, "row_problem", check_and_interrupt)
    out = str(tmp_path)
    code, err = run(["sweep", *TINY, "--seeds", "2", "--out", out], capsys)
    assert_one_line(code, err, "interrupted", "1 of 4 runs", exit_code=130)
    rows = read_rows(out)
    assert [(int(r["batch_size"]), int(r["seed"])) for r in rows] == [(8, 0)]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the sweep put Python's handler back


def test_sigint_in_a_memory_child_is_an_interrupt_not_a_crash():
    with pytest.raises(KeyboardInterrupt):
        memory.run_child([sys.executable, "-c", "raise SystemExit(130)"], "test point")
    with pytest.raises(KeyboardInterrupt):
        memory.run_child([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGINT)"],
                         "test point")


# ---------------------------------------------------------------- values that can never finish

HUGE = {
    "sweep epochs 10**13": (["sweep", "--epochs", str(10**13)], ["--epochs 10000000000000", "most that fits"]),
    "sweep seeds 10**9": (["sweep", "--seeds", str(10**9)], ["--seeds 1000000000", "most that fits"]),
    "sweep seeds 10**9, no epochs": (["sweep", "--seeds", str(10**9), "--epochs", "0"], ["--seeds", "fits"]),
    "sweep repeats 10**14": (["sweep", "--repeats", str(10**14)], ["--repeats", "at least", "most that fits"]),
    "sweep seeds 2**64": (["sweep", "--seeds", str(2**64)], ["--seeds", "too large"]),
    "sweep epochs with 5000 digits": (["sweep", "--epochs", "9" * 5000], ["--epochs", "not an integer"]),
    "memory samples 10**14": (["memory", "--samples", str(10**14)], ["--samples", "most that fits"]),
    "memory features 10**11": (["memory", "--features", str(10**11)], ["--features", "most that fits"]),
    "memory epochs 10**11": (["memory", "--epochs", str(10**11)], ["--epochs", "most that fits"]),
    "memory seed 2**64": (["memory", "--seed", str(2**64)], ["--seed", "2**64"]),
}


@pytest.mark.parametrize("case", HUGE, ids=list(HUGE))
def test_sizes_that_cannot_finish_are_refused_at_once(case, tmp_path, capsys):
    argv, expected = HUGE[case]
    out = str(tmp_path / "out")
    start = time.perf_counter()
    code, err = run([*argv, "--out", out], capsys)
    assert_one_line(code, err, *expected)
    assert time.perf_counter() - start < 10
    assert not os.path.exists(out)  # refused before anything was written


def test_the_value_named_as_fitting_does_fit(tmp_path):
    args = options.build_parser().parse_args(["--seeds", str(10**9)])
    dataset = data.Dataset("study")
    config = options.build_config(args, dataset, 1050, 350)
    data_bytes = 1400 * 3 * 8
    with pytest.raises(UsageError, match="most that fits") as refused:
        options.refuse_what_cannot_finish(config, data_bytes, str(tmp_path))
    fits = int(str(refused.value).split("--seeds ")[-1].split()[0])
    options.refuse_what_cannot_finish({**config, "seeds": fits}, data_bytes, str(tmp_path))  # accepted
    with pytest.raises(UsageError):
        options.refuse_what_cannot_finish({**config, "seeds": fits + 1}, data_bytes, str(tmp_path))


def test_huge_epochs_from_the_console_give_one_line_not_a_memory_error():
    code, err = cli(["sweep", "--engine", "graph", "--epochs", str(10**13), "--seeds", "1"])
    assert_one_line(code, err, "--epochs", "memory")


def test_each_seed_is_split_only_when_its_run_starts(tmp_path, monkeypatch):
    split, run_one = data.Dataset.split, one_run.run_one
    seen, at_first_run = [], []

    def counting_split(self, seed):
        seen.append(seed)
        return split(self, seed)

    def first_run(*args, **options):
        if args[4] == 2 and not at_first_run:  # the first timed run (the warm-up trains 1 epoch)
            at_first_run.append(set(seen))
        return run_one(*args, **options)

    monkeypatch.setattr(data.Dataset, "split", counting_split)
    monkeypatch.setattr(one_run, "run_one", first_run)
    assert main(["sweep", *TINY, "--seeds", "50", "--batch-sizes", "1050", "--out", str(tmp_path)]) == 0
    assert at_first_run == [{0}]
    assert sorted(set(seen)) == list(range(50))


# ---------------------------------------------------------------- CSV input and --resume

def test_a_csv_with_a_byte_order_mark_reads_its_first_column(tmp_path, capsys):
    data = tmp_path / "data.csv"
    rows = [f"{i % 2},{(i % 2) * 4 - 2 + 0.1 * i},{0.5 * i}" for i in range(40)]
    data.write_text("\ufefflabel,x1,x2\n" + "\n".join(rows) + "\n", encoding="utf-8")
    out = str(tmp_path / "out")
    code, err = run(["sweep", *TINY, "--batch-sizes", "4", "--data", str(data), "--out", out], capsys)
    assert code == 0, err
    with open(os.path.join(out, "results.json")) as handle:
        assert json.load(handle)["config"]["features"] == ["x1", "x2"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny sweep (2 rows); tests copy it before editing."""
    out = str(tmp_path_factory.mktemp("finished"))
    assert main(["sweep", *TINY, "--out", out]) == 0
    return out


def edited(finished, tmp_path, edit):
    out = str(tmp_path / "out")
    shutil.copytree(finished, out)
    path = os.path.join(out, "results.csv")
    with open(path, newline="") as handle:
        lines = handle.read().splitlines(keepends=True)
    with open(path, "w", newline="") as handle:
        handle.write("".join(edit(lines)))
    return out


def replace_field(name, value, line=1):
    def edit(lines):
        header = lines[0].strip().split(",")
        cells = lines[line].rstrip("\r\n").split(",")
        cells[header.index(name)] = value
        return lines[:line] + [",".join(cells) + "\r\n"] + lines[line + 1:]
    return edit


BAD_ROWS = {
    "accuracy 7": (replace_field("test_accuracy", "7"), "test_accuracy"),
    "NaN loss": (replace_field("final_loss", "nan"), "final_loss"),
    "negative time": (replace_field("train_time_s", "-1"), "train_time_s"),
    "batch size 8.0": (replace_field("batch_size", "8.0"), "not an integer"),
    "unknown engine": (replace_field("engine", "gpu"), "engine"),
    "unknown scaling": (replace_field("lr_scaling", "cubic"), "lr_scaling"),
    "seed out of range": (replace_field("seed", "7"), "seed"),
    "wrong lr": (replace_field("lr", "0.5"), "lr"),
    "wrong updates": (replace_field("updates", "3"), "updates"),
    "memory in a sweep without": (replace_field("peak_memory_bytes", "1000"), "peak_memory_bytes"),
    "row twice": (lambda lines: lines + [lines[1]], "is already on line 2"),
    "missing field": (lambda lines: lines[:1] + [lines[1].replace(",graph,", ",")] + lines[2:], "fields"),
}


@pytest.mark.parametrize("case", BAD_ROWS, ids=list(BAD_ROWS))
def test_resume_refuses_a_hand_edited_row_naming_file_and_line(case, finished, tmp_path, capsys):
    edit, expected = BAD_ROWS[case]
    out = edited(finished, tmp_path, edit)
    before = read_rows(out)
    code, err = run(["sweep", *TINY, "--out", out, "--resume"], capsys)
    line = "line 4" if case == "row twice" else "line 2"
    assert_one_line(code, err, os.path.join(out, "results.csv"), line, expected)
    assert read_rows(out) == before  # refused before touching anything


def test_resume_reads_results_saved_with_a_byte_order_mark(finished, tmp_path, capsys):
    out = edited(finished, tmp_path, lambda lines: ["\ufeff" + lines[0]] + lines[1:])
    code, err = run(["sweep", *TINY, "--out", out, "--resume"], capsys)
    assert code == 0, err
    with open(os.path.join(out, "results.json")) as handle:
        assert json.load(handle)["resumed_rows"] == 2


def test_resume_reruns_a_last_line_cut_short_and_refuses_a_damaged_curve(finished, tmp_path, capsys):
    out = str(tmp_path / "cut")
    shutil.copytree(finished, out)
    runs_path = os.path.join(out, "runs.jsonl")
    with open(runs_path) as handle:
        lines = handle.readlines()
    with open(runs_path, "w") as handle:  # killed while writing a third curve
        handle.writelines(lines + [lines[0][:30]])
    code, err = run(["sweep", *TINY, "--out", out, "--resume"], capsys)
    assert code == 0, err
    with open(os.path.join(out, "results.json")) as handle:
        assert json.load(handle)["resumed_rows"] == 2
    with open(runs_path, "w") as handle:  # a damaged line in the middle is not an interruption
        handle.writelines([lines[0][:30] + "\n", lines[1]])
    code, err = run(["sweep", *TINY, "--out", out, "--resume"], capsys)
    assert_one_line(code, err, runs_path, "line 1")


# ---------------------------------------------------------------- no traceback for the user's mistakes

def unwritable_dir(tmp_path):
    """A directory this process cannot write: read-only by mode, or (as root) one on a read-only file system."""
    candidates = [str(tmp_path / "readonly")]
    os.makedirs(candidates[0])
    os.chmod(candidates[0], 0o555)
    candidates += ["/sys", "/proc"]
    for path in candidates:
        try:
            with open(os.path.join(path, ".fastedf-probe"), "w"):
                pass
            os.remove(os.path.join(path, ".fastedf-probe"))
        except OSError:
            return path
    pytest.skip("no unwritable directory available (running as root on writable file systems)")


def test_paths_the_user_named_give_one_line(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    csv_dir = tmp_path / "csv_dir"
    os.makedirs(csv_dir / "results.csv")
    readonly = unwritable_dir(tmp_path)
    cases = [
        (["memory", "--out", str(a_file)], str(a_file)),
        (["memory", "--engine", "graph", "--batch-sizes", "2,4", "--samples", "8", "--out", readonly], readonly),
        (["sweep", *TINY, "--out", str(a_file)], str(a_file)),
        (["sweep", *TINY, "--out", str(csv_dir)], os.path.join(str(csv_dir), "results.csv")),
        (["sweep", *TINY, "--out", readonly], readonly),
    ]
    for argv, expected in cases:
        code, err = cli(argv)
        assert_one_line(code, err, expected)
    os.chmod(tmp_path / "readonly", 0o755)


def test_an_oserror_at_a_user_path_is_one_line(tmp_path, capsys, monkeypatch):
    def denied(*args, **options):
        raise PermissionError(13, "Permission denied", "/somewhere/results.csv")

    monkeypatch.setattr(sweep, "environment", denied)
    code, err = run(["sweep", *TINY, "--out", str(tmp_path)], capsys)
    assert_one_line(code, err, "/somewhere/results.csv", "Permission denied")


def test_a_bug_shows_its_traceback_and_asks_for_a_report(tmp_path, capsys, monkeypatch):
    def broken(*args, **options):
        return {}["a bug"]

    monkeypatch.setattr(sweep, "build_config", broken)
    code = main(["sweep", *TINY, "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[0].startswith("Traceback") and "KeyError" in err[-2]
    assert err[-1] == "fastedf sweep: internal error; please report it with the traceback above"


def test_a_training_failure_names_the_run_in_one_line(tmp_path, capsys, monkeypatch):
    def diverges(*args, **options):
        raise ValueError("training diverged at epoch 1; lower lr")

    monkeypatch.setattr(one_run, "fit", diverges)
    code, err = run(["sweep", *TINY, "--out", str(tmp_path)], capsys)
    assert_one_line(code, err, "batch size 8", "lower lr")


LR = {
    "complex": (["--lr", "1j"], "not a real number"),
    "overflowing": (["--lr", "1e400"], "finite"),
    "infinite once scaled": (["--lr", "1e307", "--lr-scaling", "linear"], "lr = inf"),
}


@pytest.mark.parametrize("case", LR, ids=list(LR))
def test_learning_rates_that_are_not_finite_reals_are_refused(case, tmp_path, capsys):
    args, expected = LR[case]
    code, err = run(["sweep", *TINY, *args, "--out", str(tmp_path / "out")], capsys)
    assert_one_line(code, err, "--lr", expected)


def test_version_prints_the_package_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"fastedf {fastedf.__version__}\n"
    done = subprocess.run([sys.executable, "-m", "fastedf", "--version"], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    assert (done.returncode, done.stdout) == (0, f"fastedf {fastedf.__version__}\n")
    assert re.fullmatch(r"\d+\.\d+\.\d+", fastedf.__version__)
