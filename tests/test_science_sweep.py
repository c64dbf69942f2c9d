"""The sweep past the study: checkpointed runs, steps to a target, the lr grid, the noise-scale run,
other engines and the NumPy EDF loop, digits and MLPs end to end, and --resume over the new files."""
import csv
import dataclasses
import json
import math
import os
import shutil
import time

import numpy as np
import pytest

import fastedf
from fastedf.__main__ import main
from fastedf.models import mlp
from fastedf.study import data, lr_grid, one_run, options, results, sweep
from fastedf.study.batch_scaling import examples_seen
from fastedf.study.data import study_data
from fastedf.study.training import (BatchSampler, LossRecords, ModelSpec, checkpoint_schedule, loss_records,
                                    noise_epochs, sgd_path, train_numpy_edf)

# Graph engine on the study: nothing to compile, each run takes milliseconds.
GRID = ["--engine", "graph", "--epochs", "3", "--seeds", "2", "--batch-sizes", "16,128,1050", "--repeats", "1",
        "--lrs", "0.3,1,3", "--quiet", "--no-figures"]


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------- checkpointed training

def test_checkpoint_schedule_is_every_update_then_geometric():
    points = checkpoint_schedule(100_000)
    assert points[:13] == list(range(13))  # every update while 2**(k/8) steps by less than one
    assert points[-1] == 100_000 and points == sorted(set(points))
    ratios = np.diff(np.log2(points[13:-1]))
    assert np.all(ratios <= 1 / 8 + 0.1) and len(points) < 150  # at most ~9% apart, about 8 per doubling
    assert checkpoint_schedule(1) == [0, 1] and checkpoint_schedule(0) == [0]


@pytest.mark.parametrize("engine, shuffle, hidden", [("compiled", True, ()), ("graph", False, (5,)),
                                                    ("compiled", False, (5,))])
def test_loss_path_is_fit_update_for_update(engine, shuffle, hidden):
    """Measured after every update, a run ends with fit's weights (fit's step, node by node, fit's batches)."""
    split = study_data(0)
    X, y = split.X_train, split.y_train
    spec = ModelSpec(hidden, "tanh")
    whole = spec.build(2, 1, seed=3)
    fastedf.fit(whole.loss, {whole.x: X, whole.y: whole.labels(y)}, batch_size=64, epochs=3, lr=0.5,
                shuffle=shuffle, seed=3, engine=engine)
    cut = spec.build(2, 1, seed=3)
    measured, diverged = sgd_path(cut, X, cut.labels(y), 64, 51, 0.5, "shuffled" if shuffle else "fixed", 3,
                                  lambda m, u: m.mean_loss(X, y), range(52))
    for a, b in zip(whole.parameters, cut.parameters):
        np.testing.assert_allclose(b.value, a.value, rtol=1e-12, atol=1e-14)
    assert diverged is None and [u for u, _ in measured] == list(range(52))
    assert measured[-1][1] == pytest.approx(whole.mean_loss(X, y), rel=1e-12)


def test_a_diverging_run_stops_where_it_diverges():
    split = study_data(0)
    model = mlp(2, (), seed=0)  # weights grow by lr * x per step: inf within a few steps at lr 1e308
    measured, diverged = sgd_path(model, split.X_train * 1e3, model.labels(split.y_train), 1, 2100, 1e308,
                                  "fixed", 0, lambda m, u: 0.0, range(2101))
    assert diverged is not None and diverged < 2100 and measured[-1][0] < diverged


def numpy_sgd_losses(X, y, batch_size, updates, lr, sampling, seed):
    """Logistic regression by plain NumPy SGD, the whole-training-set BCE after every update (the reference)."""
    n = len(X)
    A = np.random.default_rng(seed).normal(0.0, 0.1, size=(X.shape[1], 1))  # fastedf.models.mlp's draw
    b = np.zeros(1)
    rng = np.random.default_rng(seed)
    losses, start = [], n
    for _ in range(updates):
        if sampling == "iid":
            rows = rng.integers(0, n, size=batch_size)  # the documented rule: with replacement, one call per update
        else:
            start = 0 if start >= n else start
            rows = np.arange(start, min(start + batch_size, n))
            start += batch_size
        p = 1 / (1 + np.exp(-(X[rows] @ A + b)))
        g = (p - y[rows].reshape(-1, 1)) / len(rows)
        A -= lr * X[rows].T @ g
        b -= lr * g.sum(axis=0)
        q = np.clip(1 / (1 + np.exp(-(X @ A + b))), 1e-12, 1 - 1e-12).ravel()
        losses.append(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))
    return np.array(losses)


@pytest.mark.parametrize("sampling, batch_size", [("fixed", 4), ("iid", 8)])
def test_step_counts_equal_a_per_update_numpy_reference(sampling, batch_size):
    split = study_data(1)
    X, y = split.X_train[:200], split.y_train[:200]
    epochs, lr = 6, 1.0
    reference = numpy_sgd_losses(X, y, batch_size, epochs * 200 // batch_size, lr, sampling, 1)
    model = mlp(2, (), seed=1)
    records, curve, diverged = loss_records(model, X, model.labels(y), batch_size, epochs, lr, sampling, 1)
    assert diverged is None and records.stride == 1 and records.last == len(reference)
    for target in np.quantile(reference, [0.02, 0.1, 0.3, 0.6, 0.95]):
        below = np.flatnonzero(reference <= target)
        above = np.flatnonzero(reference > target)
        assert records.first_passage(target) == below[0] + 1
        expected = None if above[-1] == len(reference) - 1 else above[-1] + 2  # 1-based: the update after it
        assert records.stays_below(target) == expected
    settled = reference[len(reference) // 2:].max()  # the loss stays at or below this from half-way at the latest
    assert records.stays_below(settled) == np.flatnonzero(reference > settled)[-1] + 2
    assert records.stays_below(settled) > records.first_passage(settled)  # noisy: it dips below before it stays
    assert curve[0][0] == 0 and curve[-1][0] == len(reference)


def test_loss_records_answer_for_any_target():
    points = [(0, 9.0), (1, 5.0), (2, 3.0), (3, 4.0), (4, 2.0), (5, 3.5), (6, 1.0), (7, 1.5)]
    records = LossRecords.of(points, 1)
    assert records.lows == [[1, 5.0], [2, 3.0], [4, 2.0], [6, 1.0]]
    assert records.highs == [[1, 5.0], [3, 4.0], [5, 3.5], [7, 1.5]]
    assert [records.first_passage(t) for t in (6, 3, 1.2, 0.5)] == [1, 2, 6, None]
    assert [records.stays_below(t) for t in (6, 3.9, 3, 1.2)] == [1, 4, 6, None]
    strided = LossRecords.of([(0, 9.0), (5, 3.0), (10, 4.0), (12, 1.0)], 5)
    assert strided.stays_below(3.5) == 12 and strided.stays_below(5) == 5


def test_iid_sampler_draws_rows_with_replacement_from_the_seed():
    X = np.arange(50, dtype=float).reshape(25, 2)
    Y = np.arange(25, dtype=float).reshape(25, 1)
    sampler = BatchSampler(X, Y, 10, "iid", 7)
    rng = np.random.default_rng(7)
    rows = []
    for _ in range(30):
        x, y = sampler.next()
        expected = rng.integers(0, 25, size=10)
        np.testing.assert_array_equal(y.ravel(), expected)
        np.testing.assert_array_equal(x, X[expected])
        rows.append(expected)
    drawn = np.concatenate(rows)
    assert any(len(set(r)) < len(r) for r in rows)  # a row twice within one batch: with replacement
    assert set(drawn) == set(range(25))  # every row can be drawn
    again = BatchSampler(X, Y, 10, "iid", 7).next()[1]
    other = BatchSampler(X, Y, 10, "iid", 8).next()[1]
    np.testing.assert_array_equal(again.ravel(), rows[0])
    assert not np.array_equal(other.ravel(), rows[0])


def test_fixed_and_shuffled_samplers_are_fits_epochs():
    X = np.arange(20, dtype=float).reshape(10, 2)
    Y = np.arange(10, dtype=float).reshape(10, 1)
    fixed = BatchSampler(X, Y, 4, "fixed", 0)
    assert [list(fixed.next()[1].ravel()) for _ in range(4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9], [0, 1, 2, 3]]
    shuffled = BatchSampler(X, Y, 4, "shuffled", 5)
    epoch = np.concatenate([shuffled.next()[1].ravel() for _ in range(3)])
    assert sorted(epoch) == list(range(10)) and list(epoch) != list(range(10))


def test_examples_seen_counts_the_partial_last_batch():
    assert examples_seen(33, 32, 1050) == 1050  # one epoch: 32 full batches and 26 rows
    assert examples_seen(34, 32, 1050) == 1050 + 32
    assert examples_seen(5, 32, 1050) == 160


@pytest.mark.parametrize("classes, hidden", [(1, ()), (3, (4,))])
def test_numpy_edf_loop_trains_like_fit(classes, hidden):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = (X[:, 0] > 0).astype(float) if classes == 1 else rng.integers(0, classes, 40).astype(float)
    spec = ModelSpec(hidden, "sigmoid")
    ours, ref = spec.build(3, classes, 1), spec.build(3, classes, 1)
    history = fastedf.fit(ours.loss, {ours.x: X, ours.y: ours.labels(y)}, batch_size=8, epochs=3, lr=0.3,
                          shuffle=True, seed=5, engine="graph")
    losses, seconds, values = train_numpy_edf(ref, X, ref.labels(y), 8, 3, 0.3, True, 5)
    assert seconds > 0
    np.testing.assert_allclose(losses, history.epoch_loss, rtol=1e-10)
    for p, value in zip(ours.parameters, values):
        np.testing.assert_allclose(value, p.value, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- steps to target, by hand

def _row(b, seed, lr, min_loss, time_s=1.0, updates=None, engine="graph"):
    return {"lr_scaling": "none", "batch_size": b, "seed": seed, "lr": lr, "engine": engine, "epochs": 2,
            "updates": updates or 2 * math.ceil(100 / b), "train_time_s": time_s, "min_loss": min_loss}


def test_steps_to_target_on_recorded_checkpoints_by_hand():
    # Two learning rates at B = 10 (10 updates per epoch of 100 rows) and one at B = 50 (2 per epoch).
    curves = {
        ("none", 10, 0, 0.1, "graph"): [[0, 0.7], [1, 0.6], [2, 0.39], [3, 0.45], [4, 0.40], [20, 0.35]],
        ("none", 10, 0, 1.0, "graph"): [[0, 0.7], [1, 0.5], [2, 0.41], [3, 0.39], [4, 0.3], [20, 0.2]],
        ("none", 50, 0, 1.0, "graph"): [[0, 0.7], [1, 0.6], [2, 0.45], [3, 0.44], [4, 0.38]],
    }
    runs = {key: {"checkpoints": c, **dataclasses.asdict(LossRecords.of(c, 1))} for key, c in curves.items()}
    rows = [_row(10, 0, 0.1, 0.35, 2.0), _row(10, 0, 1.0, 0.2, 2.0), _row(50, 0, 1.0, 0.38, 0.4)]
    assert lr_grid.seed_targets(rows) == {0: 0.38}  # B = 50's lowest loss: every batch size reaches it
    assert lr_grid.seed_targets(rows, factor=1.1) == {0: pytest.approx(1.1 * 0.2)}
    assert lr_grid.seed_targets(rows, loss=0.3) == {0: 0.3}
    results = lr_grid.all_to_target(rows, runs, {0: 0.40}, 100, "graph")
    got = {(t.batch_size, t.lr): t for t in results}
    assert got[10, 0.1].updates == 4  # 0.40 <= 0.40 at the fourth update, and it stays there
    assert got[10, 0.1].first_passage == 2  # the dip at the second update
    assert got[10, 1.0].updates == 3 and got[10, 1.0].epochs == pytest.approx(0.3)
    assert got[10, 1.0].examples == 30 and got[10, 1.0].seconds == pytest.approx(3 * 2.0 / 20)
    assert got[50, 1.0].updates == 4 and got[50, 1.0].examples == 200
    best = lr_grid.best_per_batch_and_seed(results)
    assert best[10, 0].lr == 1.0 and best[50, 0].updates == 4
    st = lr_grid.steps_by_batch_size(results, [0.1, 1.0], 1)
    assert st.batch_sizes == [10, 50] and st.median == [3.0, 4.0] and st.at_grid_end == 2
    assert st.first_passage == [3.0, 4.0]
    assert lr_grid.all_to_target(rows, runs, {0: 0.1}, 100, "graph")[0].updates is None  # never reached


def test_noise_at_target_and_agreement():
    points = [{"epoch": 0, "train_loss": 0.7, "b_simple": 2.0}, {"epoch": 1, "train_loss": 0.3, "b_simple": 9.0},
              {"epoch": 2, "train_loss": 0.2, "b_simple": 30.0}]
    assert lr_grid.noise_at_target(points, 0.35) == (points[1], True)
    assert lr_grid.noise_at_target(points, 0.1) == (points[2], False)
    assert lr_grid.agreement(10.0, 29.0) == (pytest.approx(2.9), True)
    assert lr_grid.agreement(10.0, 31.0)[1] is False and lr_grid.agreement(math.inf, 3.0) == (None, False)
    points = [{**p, "updates": 10 * p["epoch"], "b_simple_exact": None} for p in points]
    # linear between the points up to update 20, where the loss first is <= 0.25: ((2 + 9) / 2 + (9 + 30) / 2) / 2
    assert lr_grid.path_average(points, 0.25) == (pytest.approx(12.5), 3)
    assert lr_grid.path_average(points, 0.35) == (pytest.approx(5.5), 2)  # reached at the second point
    assert lr_grid.path_average(points[:1], 0.35) == (None, 1)


def test_noise_epochs():
    assert noise_epochs(3) == [0, 1, 2, 3]
    many = noise_epochs(100)
    assert many[0] == 0 and many[1] == 1 and many[-1] == 100 and len(many) <= 13


# ---------------------------------------------------------------- the sweep with the lr grid

@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("grid"))
    assert main(["sweep", *GRID, "--out", out]) == 0
    return out


def test_grid_rows_carry_the_target_columns(grid):
    rows = read_csv(os.path.join(grid, "results.csv"))
    assert list(rows[0]) == list(results.ROW_FIELDS + results.TARGET_FIELDS)
    assert len(rows) == 3 * 2 * 3  # batch sizes x seeds x lrs
    assert {float(r["lr"]) for r in rows} == {0.3, 1.0, 3.0}
    for r in rows:
        assert float(r["min_loss"]) <= float(r["final_loss"]) + 1e-12 and r["diverged_at_update"] == ""
    with open(os.path.join(grid, "runs.jsonl")) as handle:
        runs = [json.loads(line) for line in handle]
    for run in runs:
        u = [p[0] for p in run["checkpoints"]]
        assert u[0] == 0 and u[-1] == 3 * math.ceil(1050 / run["batch_size"])
    # the row's final loss is the last checkpoint's loss: the same weights
    run = next(r for r in runs if r["batch_size"] == 16 and r["seed"] == 1 and r["lr"] == 1.0)
    row = next(r for r in rows if r["batch_size"] == "16" and r["seed"] == "1" and float(r["lr"]) == 1.0)
    assert run["checkpoints"][-1][1] == pytest.approx(float(row["final_loss"]), rel=1e-12)


def test_steps_to_target_csv_and_report(grid):
    with open(os.path.join(grid, "results.json")) as handle:
        doc = json.load(handle)
    rows = read_csv(os.path.join(grid, "results.csv"))
    for seed in (0, 1):  # each seed its own data: the highest of its batch sizes' lowest losses
        best = {}
        for r in rows:
            if r["seed"] == str(seed):
                best[r["batch_size"]] = min(best.get(r["batch_size"], math.inf), float(r["min_loss"]))
        assert doc["target_loss"][str(seed)] == max(best.values())
    steps = read_csv(os.path.join(grid, "steps_to_target.csv"))
    assert len(steps) == len(rows)
    with open(os.path.join(grid, "runs.jsonl")) as handle:
        runs = {(r["batch_size"], r["seed"], r["lr"]): r for r in map(json.loads, handle)}
    for s in steps:  # each count against the run's stored loss records, by hand
        run = runs[int(s["batch_size"]), int(s["seed"]), float(s["lr"])]
        target = doc["target_loss"][s["seed"]]
        assert float(s["target_loss"]) == target and s["loss_stride"] == "1"
        first = next((u for u, loss in run["lows"] if loss <= target), None)
        assert s["first_passage"] == ("" if first is None else str(first))
        last_above = max((u for u, loss in run["highs"] if loss > target), default=0)
        stays = None if last_above == run["last"] else last_above + 1
        assert s["updates_to_target"] == ("" if stays is None else str(stays))
        assert all(loss <= target for u, loss in run["checkpoints"] if stays is not None and u >= stays)
    best = [s for s in steps if s["best"] == "1"]
    assert len({(s["batch_size"], s["seed"]) for s in best}) == len(best)
    text = open(os.path.join(grid, "report.md")).read()
    assert "## 4. How many updates" in text and "## 5. Does the gradient noise scale" in text
    assert "every batch size reaches it" in text and "B_crit" in text
    noise = read_csv(os.path.join(grid, "noise.csv"))
    assert [int(p["epoch"]) for p in noise] == [0, 1, 2, 3]
    for p in noise:  # the estimate near the closed form where B_simple is below the larger batch (512 rows)
        if float(p["b_simple_exact"]) < 512:
            assert 0.5 < float(p["b_simple"]) / float(p["b_simple_exact"]) < 2


def test_resume_keeps_grid_rows_checkpoints_and_noise(grid, tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "out")
    shutil.copytree(grid, out)
    with open(os.path.join(out, "results.csv")) as handle:
        lines = handle.readlines()
    with open(os.path.join(out, "results.csv"), "w") as handle:  # killed after 7 rows, one being written
        handle.writelines(lines[:8] + [lines[8][:20]])
    before = read_csv(os.path.join(out, "results.csv"))[:7]
    noise_before = open(os.path.join(out, "noise.csv")).read()
    calls = []
    real = one_run.run_one

    def counting(*args, **options):
        calls.append(options.get("checkpoints"))
        return real(*args, **options)

    monkeypatch.setattr(one_run, "run_one", counting)
    monkeypatch.setattr(sweep, "execute_noise", lambda *a, **k: pytest.fail("the noise run was complete"))
    assert main(["sweep", *GRID, "--out", out, "--resume"]) == 0
    after = read_csv(os.path.join(out, "results.csv"))
    assert after[:7] == before and len(after) == 18
    assert len(calls) == 1 + 11 and all(c == 8 for c in calls[1:])  # the warm-up, then the 11 missing runs
    assert open(os.path.join(out, "noise.csv")).read() == noise_before


@pytest.mark.parametrize("edit, expected", [
    (lambda row: {**row, "min_loss": "-1"}, "min_loss"),
    (lambda row: {**row, "lr": "0.5"}, "grid"),
    (lambda row: {**row, "diverged_at_update": "3"}, "should be empty"),
])
def test_resume_refuses_edited_grid_rows(grid, tmp_path, capsys, edit, expected):
    out = str(tmp_path / "out")
    shutil.copytree(grid, out)
    rows = read_csv(os.path.join(out, "results.csv"))
    with open(os.path.join(out, "results.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows([edit(rows[0])] + rows[1:])
    code = main(["sweep", *GRID, "--out", out, "--resume"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "line 2" in err[0] and expected in err[0], err


def test_resume_redoes_a_damaged_noise_file(grid, tmp_path, capsys):
    out = str(tmp_path / "out")
    shutil.copytree(grid, out)
    path = os.path.join(out, "noise.csv")
    lines = open(path).read().splitlines(keepends=True)
    with open(path, "w") as handle:
        handle.writelines(lines[:3])  # the reference run was cut after two points: redone whole
    assert main(["sweep", *GRID, "--out", out, "--resume"]) == 0
    assert len(read_csv(path)) == 4
    with open(path, "w") as handle:
        handle.writelines(lines[:2] + ["1,999,0.5,1,1,1,1\n"])  # a hand-edited point is refused
    code = main(["sweep", *GRID, "--out", out, "--resume"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and path in err[-1] and "updates" in err[-1]


BAD_OPTIONS = {
    "lr outside the grid": (["--lrs", "0.1,1", "--lr", "0.5"], "not in --lrs"),
    "grid and scaling": (["--lrs", "0.1,1", "--lr-scaling", "linear"], "--lr-scaling"),
    "hidden without mlp": (["--hidden", "8"], "--model mlp"),
    "digit without digits-binary": (["--digit", "3"], "--digit"),
    "label column with digits": (["--data", "digits", "--label-column", "y"], "--label-column"),
    "memory with an mlp": (["--model", "mlp", "--memory"], "--memory"),
    "noise batch without grid": (["--noise-batch", "8"], "--noise-batch"),
    "bad lr grid": (["--lrs", "0.1,x"], "--lrs"),
    "unknown engine in a list": (["--engine", "compiled,gpu"], "gpu"),
    "relative target below 1": (["--target-loss", "0.5x"], "factor >= 1"),
    "target not a number": (["--target-loss", "low"], "--target-loss"),
    "sampling without grid": (["--sampling", "iid"], "--sampling needs --lrs"),
    "sampling against shuffle": (["--lrs", "0.1", "--shuffle", "--sampling", "fixed"], "disagree"),
    "unknown sampling": (["--lrs", "0.1", "--sampling", "random"], "--sampling"),
}


def test_target_loss_is_a_loss_or_a_factor():
    assert options.target_value("0.25") == ("loss", 0.25)
    assert options.target_value("1.05x") == ("factor", 1.05)


@pytest.mark.parametrize("case", BAD_OPTIONS, ids=list(BAD_OPTIONS))
def test_options_that_do_not_fit_together_are_one_line(case, tmp_path, capsys):
    args, expected = BAD_OPTIONS[case]
    code = main(["sweep", "--engine", "graph", "--quiet", "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expected in err[0], err


# ---------------------------------------------------------------- engines and the NumPy EDF

def test_engines_and_the_numpy_edf_are_timed_on_the_same_runs(tmp_path, capsys):
    out = str(tmp_path)
    assert main(["sweep", "--engine", "graph,compiled", "--with-edf", "--epochs", "2", "--seeds", "1",
                 "--batch-sizes", "32,1050", "--repeats", "1", "--quiet", "--out", out]) == 0
    rows = read_csv(os.path.join(out, "results.csv"))
    assert list(rows[0]) == list(results.ROW_FIELDS)
    assert sorted((r["engine"], r["batch_size"]) for r in rows) == [
        ("compiled", "1050"), ("compiled", "32"), ("graph", "1050"), ("graph", "32"), ("numpy_edf", "1050"),
        ("numpy_edf", "32")]
    for b in ("32", "1050"):  # the same training, three implementations
        losses = [float(r["final_loss"]) for r in rows if r["batch_size"] == b]
        assert max(losses) - min(losses) < 1e-10 * max(losses)
    text = open(os.path.join(out, "report.md")).read()
    assert "### Claim 1 by implementation" in text and "NumPy EDF" in text
    assert os.path.exists(os.path.join(out, "time_vs_batch_size.png"))


# ---------------------------------------------------------------- digits, end to end

def test_digits_mlp_sweep_end_to_end_in_under_a_minute(tmp_path):
    pytest.importorskip("sklearn")
    out = str(tmp_path)
    start = time.perf_counter()
    assert main(["sweep", "--data", "digits", "--model", "mlp", "--hidden", "16", "--activation", "relu",
                 "--batch-sizes", "8,64,1348", "--seeds", "2", "--epochs", "3", "--lrs", "0.1,0.5",
                 "--repeats", "1", "--quiet", "--out", out]) == 0
    took = time.perf_counter() - start
    assert took < 60, took
    rows = read_csv(os.path.join(out, "results.csv"))
    assert len(rows) == 3 * 2 * 2
    assert all(0 <= float(r["test_accuracy"]) <= 1 for r in rows)
    best = max(float(r["test_accuracy"]) for r in rows)
    assert best > 0.5  # 10 classes (chance 0.1): a few epochs already learn
    with open(os.path.join(out, "results.json")) as handle:
        doc = json.load(handle)
    assert doc["config"]["classes"] == 10 and doc["config"]["n_train"] == 1348 and doc["complete"]
    assert "MLP 64 -> 16 -> 10" in doc["config"]["model"]
    for name in ("steps_to_target.png", "noise_scale.png", "time_vs_batch_size.png", "loss_curves.png"):
        assert os.path.getsize(os.path.join(out, name)) > 1000, name
    text = open(os.path.join(out, "report.md")).read()
    assert "all 10 classes" in text and "mean CE" in text and "## 4." in text


def test_digits_binary_is_one_digit_against_the_rest(tmp_path):
    pytest.importorskip("sklearn")
    dataset = data.load_digits_dataset(3)
    assert dataset.classes == 1 and set(np.unique(dataset.y)) == {0.0, 1.0}
    assert dataset.y.sum() == np.sum(data.load_digits_dataset().y == 3)


def test_a_run_spec_is_shippable_and_execute_is_pure():
    """execute(RunSpec) -> (row, run) is what a worker elsewhere would run: the spec pickles, and the
    same spec gives the same numbers (apart from timings)."""
    import pickle

    args = options.build_parser().parse_args(["--lrs", "0.3,1", "--epochs", "2", "--seeds", "1",
                                            "--batch-sizes", "64", "--engine", "graph", "--repeats", "1"])
    dataset = options.load_dataset(args)
    config = options.build_config(args, dataset, 1050, 350)
    specs = sweep.run_specs(config, dataset)
    assert [s.key for s in specs] == sweep._todo(config)
    shipped = pickle.loads(pickle.dumps(specs[1]))
    here, there = one_run.execute(specs[1]), one_run.execute(shipped)
    timing = set(one_run.TIME_FIELDS)
    assert {k: v for k, v in here[0].items() if k not in timing} == {k: v for k, v in there[0].items()
                                                                       if k not in timing}
    assert here[1] == there[1] and here[1]["checkpoints"][0][0] == 0
    assert results.row_problem(here[0], config) is None and results.run_problem(here[1], config) is None
