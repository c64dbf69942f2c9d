"""Steps to a target loss, the critical batch size and the gradient noise scale, read from a sweep's files.

The analysis behind sections 4 and 5 of report.md (fastedf.study.report renders
them) and behind steps_to_target.csv.  Inputs: the sweep's rows (dicts with
fastedf.study.results' row fields, min_loss among them), its runs ({key: run}, a run
holding "checkpoints": [[updates, training loss], ...]) and the noise points
of the reference run (fastedf.study.training.noise_trajectory).  The estimators
are fastedf.study.batch_scaling's; the rules that turn numbers into verdicts are the
constants below.
"""
import math
from dataclasses import dataclass

import numpy as np

from . import batch_scaling
from .batch_scaling import examples_seen
from .training import LossRecords

AGREEMENT_FACTOR = 3.0  # predicted and measured knee "agree" within this factor


def relative_target(rows, factor):
    """factor times the lowest min_loss of any of `rows` (None when none recorded one)."""
    losses = [r["min_loss"] for r in rows if r.get("min_loss") is not None]
    return factor * min(losses) if losses else None


def reachable_target(rows):
    """The default target of one seed's rows: the largest, over batch sizes, of each batch size's lowest loss.

    Every batch size's best lr reaches it (the worst batch size just does), so
    updates to target are measured at every batch size; a tighter target,
    such as 1.1 x the lowest loss of all, is often reached only by the
    smallest batches within the epochs given.  None when no row has a min_loss.
    """
    best = {}
    for r in rows:
        if r.get("min_loss") is not None:
            best[r["batch_size"]] = min(best.get(r["batch_size"], math.inf), r["min_loss"])
    return max(best.values()) if best else None


def seed_targets(rows, factor=None, loss=None):
    """{seed: target loss}: `loss` for every seed when given; else factor x the lowest loss of the seed's runs;
    else (the default) reachable_target of the seed's runs.

    Per seed because each seed trains on its own data (the study draws fresh
    Gaussians, other data are re-split), whose reachable losses differ.
    """
    seeds = sorted({r["seed"] for r in rows})
    if loss is not None:
        return {seed: loss for seed in seeds}
    rule = reachable_target if factor is None else (lambda mine: relative_target(mine, factor))
    targets = {seed: rule([r for r in rows if r["seed"] == seed]) for seed in seeds}
    return {seed: t for seed, t in targets.items() if t is not None}


@dataclass
class RunToTarget:
    """One run's cost to reach the target: updates until the loss stays at or below it, epochs, examples, seconds,
    and the first passage beside them."""

    batch_size: int
    seed: int
    lr: float
    updates: int | None  # None: the run ends above the target (or diverged first)
    epochs: float | None  # updates / updates per epoch
    examples: int | None
    seconds: float | None  # updates x the run's measured seconds per update
    first_passage: int | None = None  # the first update whose loss is <= target (the loss may rise above again)
    stride: int = 1  # the updates between loss measurements (1: every update)


def run_to_target(row, run, target, n_train):
    """RunToTarget of one run whose whole-training-set loss was measured after every update (training.LossRecords).

    updates: the first update after which the loss never goes above the target
    again within the run; first_passage: the first update at or below it.  With
    a loss stride k > 1 both are the first MEASURED update (every k-th) that
    qualifies.
    """
    b = row["batch_size"]
    records = LossRecords(run["lows"], run["highs"], run["stride"], run["last"]) if "lows" in run else None
    hit = records.stays_below(target) if records else None
    first = records.first_passage(target) if records else None
    stride = records.stride if records else 1
    if hit is None:
        return RunToTarget(b, row["seed"], row["lr"], None, None, None, None, first, stride)
    per_epoch = batch_scaling.updates_per_epoch(n_train, b)
    seconds = (hit * row["train_time_s"] / row["updates"]) if row.get("train_time_s") and row["updates"] else None
    return RunToTarget(b, row["seed"], row["lr"], hit, hit / per_epoch, examples_seen(hit, b, n_train), seconds,
                       first, stride)


def all_to_target(rows, runs, targets, n_train, engine):
    """RunToTarget of every checkpointed run of `engine`, each against its seed's target ({seed: loss})."""
    out = []
    for row in rows:
        if row["engine"] != engine or "min_loss" not in row or row["seed"] not in targets:
            continue
        key = (row["lr_scaling"], row["batch_size"], row["seed"], row["lr"], row["engine"])
        if key in runs:
            out.append(run_to_target(row, runs[key], targets[row["seed"]], n_train))
    return out


def best_per_batch_and_seed(results, lrs=None):
    """{(B, seed): the RunToTarget with the fewest updates over the lrs (ties: the smaller lr), or None if none reached}.

    lrs: only these learning rates (a sub-grid, for the sensitivity check); default all.
    """
    best = {}
    for t in results:
        if lrs is not None and not any(math.isclose(t.lr, lr, rel_tol=1e-12) for lr in lrs):
            continue
        key = (t.batch_size, t.seed)
        best.setdefault(key, None)
        if t.updates is None:
            continue
        old = best[key]
        if old is None or (t.updates, t.lr) < (old.updates, old.lr):
            best[key] = t
    return best


@dataclass
class StepsToTarget:
    """Per batch size (sorted), the best-lr updates to target over seeds, and what they say.

    median/low/high: updates until the loss stays at or below the target, over
    the seeds that reached it; first_passage: the median first passage of the
    same runs;
    reached/seeds: how many seeds reached it with some lr of the grid;
    epochs, examples, seconds: medians, likewise; best_lrs: the best lr per
    seed.  fitted_sizes: the batch sizes reached by at least half the seeds;
    fit: batch_scaling.critical_batch_size on their medians (median examples per
    median update as the batch size); regimes: batch_scaling.regimes on them.
    """

    batch_sizes: list
    median: list
    low: list
    high: list
    reached: list
    seeds: int
    epochs: list
    examples: list
    seconds: list
    best_lrs: list
    fitted_sizes: list
    regimes: list
    fit: object  # batch_scaling.CriticalBatch or None
    at_grid_end: int
    best_points: int
    first_passage: list
    fit_first_passage: object = None  # the same fit on the median first passages (nominal B)


def steps_by_batch_size(results, lrs, seeds, lrs_subset=None):
    """StepsToTarget from RunToTarget results (all_to_target) and the lr grid; None when nothing reached the target."""
    best = best_per_batch_and_seed(results, lrs_subset)
    grid = sorted(lrs_subset if lrs_subset is not None else lrs)
    sizes = sorted({b for b, _ in best})
    med, low, high, reached, epochs, examples, seconds, best_lrs, first = ([] for _ in range(9))
    for b in sizes:
        points = [t for (bb, _), t in sorted(best.items()) if bb == b and t is not None]
        reached.append(len(points))
        best_lrs.append([t.lr for t in points])
        u = [t.updates for t in points]
        med.append(float(np.median(u)) if u else None)
        low.append(min(u) if u else None)
        high.append(max(u) if u else None)
        first.append(float(np.median([t.first_passage for t in points])) if points else None)
        epochs.append(float(np.median([t.epochs for t in points])) if points else None)
        examples.append(float(np.median([t.examples for t in points])) if points else None)
        secs = [t.seconds for t in points if t.seconds is not None]
        seconds.append(float(np.median(secs)) if secs else None)
    points = [t for t in best.values() if t is not None]
    if not points:
        return None
    fitted = [b for b, m, r in zip(sizes, med, reached) if m is not None and 2 * r >= seeds]
    labels = (batch_scaling.regimes(fitted, [med[sizes.index(b)] for b in fitted]) if len(fitted) >= 2 else [])
    fit = None
    if len(fitted) >= 2:  # the medians over seeds: one outlying seed does not bend the curve
        fit = batch_scaling.critical_batch_size(fitted, [med[sizes.index(b)] for b in fitted],
                                          examples=[examples[sizes.index(b)] for b in fitted])
    first_fit = None
    if fit is not None and all(first[sizes.index(b)] for b in fitted):
        first_fit = batch_scaling.critical_batch_size(fitted, [first[sizes.index(b)] for b in fitted])
    ends = (grid[0], grid[-1]) if len(grid) > 1 else ()
    at_end = sum(any(math.isclose(t.lr, e, rel_tol=1e-12) for e in ends) for t in points)
    return StepsToTarget(batch_sizes=sizes, median=med, low=low, high=high,
                         reached=reached, seeds=seeds, epochs=epochs, examples=examples, seconds=seconds,
                         best_lrs=best_lrs, fitted_sizes=fitted, regimes=labels, fit=fit, at_grid_end=at_end,
                         best_points=len(points), first_passage=first, fit_first_passage=first_fit)


def regime_ranges(sizes, labels):
    """[(label, first B, last B)] for consecutive runs of the same label."""
    out = []
    for b, label in zip(sizes, labels):
        if out and out[-1][0] == label:
            out[-1] = (label, out[-1][1], b)
        else:
            out.append((label, b, b))
    return out


def noise_at_target(points, target):
    """The noise point where the reference run's training loss first is <= target (else its last point) and
    whether the target was reached; None without points."""
    if not points:
        return None, False
    hit = next((p for p in points if p["train_loss"] <= target), None)
    return (hit, True) if hit is not None else (points[-1], False)


def path_average(points, target):
    """B_simple (exact when measured) averaged over the reference run's updates until its loss first is <= target
    (all of it when it never is), linearly interpolated between the measured points (the trapezoid rule), and
    the number of points it rests on.  McCandlish et al. compare the critical batch size with the noise scale
    averaged along training, not with its value at the target, where |G| -> 0 makes it largest.  (None, points)
    without two points or with a non-finite one."""
    values = [(p["updates"], p["b_simple_exact"] if p.get("b_simple_exact") is not None else p["b_simple"])
              for p in points]
    end = next((i for i, p in enumerate(points) if p["train_loss"] <= target), len(points) - 1)
    span = values[:end + 1]
    if len(span) < 2 or not all(math.isfinite(v) for _, v in span) or span[-1][0] <= span[0][0]:
        return None, len(span)
    u, v = np.array(span, dtype=float).T
    return float(np.sum(np.diff(u) * (v[1:] + v[:-1]) / 2) / (u[-1] - u[0])), len(span)


def agreement(predicted, measured, factor=AGREEMENT_FACTOR):
    """max/min ratio of two positive batch sizes and whether it is <= factor (None when either is not finite > 0)."""
    if not (predicted and measured and math.isfinite(predicted) and math.isfinite(measured)
            and predicted > 0 and measured > 0):
        return None, False
    ratio = max(predicted, measured) / min(predicted, measured)
    return ratio, ratio <= factor


# ---------------------------------------------------------------- the analysis of one sweep

@dataclass
class Science:
    """Everything sections 4 and 5 of report.md say, computed once (fastedf.study.sweep writes it to results.json too).

    targets ({seed: loss}) and target_rule: the loss to reach and how it was chosen; results:
    RunToTarget per grid run; steps: StepsToTarget with the whole grid;
    sensitivity: {name: StepsToTarget} with the grid's top or bottom lr
    removed; noise: the reference run's points; at_target: the point where
    its training loss reached the target (or its last) and whether it did;
    path_average: B_simple averaged along the reference run until it reaches the target (path_average);
    agreement: (ratio, within AGREEMENT_FACTOR) of B_crit and that average (McCandlish et al.'s comparison).
    """

    targets: dict
    target_rule: str
    target_short: str
    results: list
    steps: StepsToTarget | None
    sensitivity: dict
    noise: list
    at_target: dict | None
    target_reached_in_noise_run: bool
    agreement: tuple
    path_average: float | None = None
    path_points: int = 0

    @property
    def b_simple_at_target(self):
        """B_simple where the reference run reached the target: the exact value when measured, else the estimate."""
        if self.at_target is None:
            return None
        exact = self.at_target.get("b_simple_exact")
        return exact if exact is not None else self.at_target["b_simple"]

    def summary(self):
        """A JSON-ready digest for results.json."""
        fit = self.steps.fit if self.steps else None
        return {"target_loss": {str(k): v for k, v in self.targets.items()}, "target_rule": self.target_rule,
                "b_crit": None if fit is None else _json_number(fit.b_crit),
                "s_min": None if fit is None else fit.s_min, "e_min": None if fit is None else fit.e_min,
                "b_simple_at_target": None if self.at_target is None else _json_number(self.b_simple_at_target),
                "b_simple_path_average": self.path_average,
                "knee_ratio": self.agreement[0], "knee_agrees": self.agreement[1]}


def _json_number(x):
    return x if x is None or math.isfinite(x) else str(x)


def analyse(rows, runs, noise, config):
    """The Science of a sweep with the lr grid: targets, steps to them, B_crit, the noise scale, their agreement."""
    engine = config["engine"]
    mine = [r for r in rows if r["engine"] == engine]
    given, factor = config.get("target_loss"), config.get("target_factor")
    targets = seed_targets(mine, factor, given)
    values = sorted(targets.values())
    per_seed = (f"{', '.join(f'{targets[s]:.4g}' for s in sorted(targets))} for seeds "
                f"{', '.join(map(str, sorted(targets)))}")
    if given is not None:
        rule, short = f"given with --target-loss ({given:.6g})", f"training loss {given:.4g}"
    elif not values:
        rule, short = "none: no run recorded a training loss", "–"
    elif factor is not None:
        rule = (f"{factor:g} × the lowest training loss any run of the seed reached (`--target-loss {factor:g}x`), "
                f"per seed (each seed has its own data): {per_seed}")
        short = f"{factor:g} × each seed's lowest training loss ({values[0]:.3g} – {values[-1]:.3g})"
    else:
        rule = ("the default, per seed (each seed has its own data): the highest of the batch sizes' lowest "
                "training losses, so that every batch size reaches it with its best lr (the worst one just does): "
                f"{per_seed}. `--target-loss L` sets a loss, `--target-loss 1.1x` 1.1 × each seed's lowest "
                "loss; changing it with `--resume` retrains nothing")
        short = f"the loss every batch size reaches ({values[0]:.3g} – {values[-1]:.3g} over seeds)"
    if not targets:
        return Science({}, rule, short, [], None, {}, noise, None, False, (None, False))
    results = all_to_target(rows, runs, targets, config["n_train"], engine)
    lrs, seeds = config["lrs"], config["seeds"]
    steps = steps_by_batch_size(results, lrs, seeds)
    sensitivity = {}
    if len(lrs) >= 3:
        grid = sorted(lrs)
        for name, subset in ((f"without the largest lr ({grid[-1]:g})", grid[:-1]),
                             (f"without the smallest lr ({grid[0]:g})", grid[1:])):
            sensitivity[name] = steps_by_batch_size(results, lrs, seeds, subset)
    noise_seed = (config.get("noise") or {}).get("seed", 0)
    target = targets.get(noise_seed, values[0])
    at, reached = noise_at_target(noise, target)
    average, on_path = path_average(noise, target) if noise else (None, 0)
    b_crit = steps.fit.b_crit if steps and steps.fit else None
    sci = Science(targets, rule, short, results, steps, sensitivity, noise, at, reached,
                  agreement(b_crit, average), average, on_path)
    return sci
