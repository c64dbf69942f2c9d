"""The study's three claims (time, memory, loss and accuracy against the batch size), tested on the sweep's rows.

Rows are dicts with the fields of fastedf.study.results.ROW_FIELDS; the analysis
functions take runs mapping (lr_scaling, batch_size, seed) to
{"epoch_loss": [...], "parameters": [...]} (`study_runs` makes that map from
the sweep's runs, keyed (lr_scaling, batch_size, seed, lr, engine)).  Every
number of the claims in report.md (fastedf.study.report) is computed here from those; the thresholds that turn
numbers into verdicts are the constants below.  Sections 4 and 5 (steps to a
target, the noise scale) come from fastedf.study.lr_grid.
"""
import math
from dataclasses import dataclass

import numpy as np

from .batch_scaling import updates_per_epoch

# A step B -> B' "keeps halving" while it saves at least this share of the
# ideal saving 1 - U(B')/U(B) (U the updates; 1 - B/B' up to rounding).  For
# doubling that is a time ratio of at most 0.75, which the overhead model
# t = c_update * U + c_sample * N reaches exactly at B = c_update / c_sample:
# measured and modelled stopping points are comparable.
HALVING_EFFICIENCY = 0.5
# Memory "grows" when the peak at the largest batch exceeds the smallest's by this share.
MEMORY_GROWTH = 0.05


# ---------------------------------------------------------------- per batch size

@dataclass
class Summary:
    """One metric per batch size over seeds: arrays aligned with batch_sizes."""

    batch_sizes: np.ndarray
    mean: np.ndarray
    median: np.ndarray
    std: np.ndarray
    low: np.ndarray
    high: np.ndarray
    per_seed: dict  # seed -> array over batch_sizes (nan where missing)


def summarise(rows, field, scaling="none"):
    """`field` over seeds, per batch size, for the rows of one lr scaling (None values skipped)."""
    rows = [r for r in rows if r["lr_scaling"] == scaling and r[field] is not None]
    sizes = np.array(sorted({r["batch_size"] for r in rows}), dtype=np.int64)
    seeds = sorted({r["seed"] for r in rows})
    table = np.full((len(seeds), len(sizes)), np.nan)
    for r in rows:
        table[seeds.index(r["seed"]), np.searchsorted(sizes, r["batch_size"])] = r[field]
    if not len(rows):
        empty = np.zeros(0)
        return Summary(sizes, empty, empty, empty, empty, empty, {})
    return Summary(sizes, np.nanmean(table, 0), np.nanmedian(table, 0), np.nanstd(table, 0),
                   np.nanmin(table, 0), np.nanmax(table, 0), dict(zip(seeds, table)))


# ---------------------------------------------------------------- claim 1: time

@dataclass
class TimeScaling:
    """Training time against batch size (medians over seeds) and what explains it.

    slope: least-squares slope of log2(time) on log2(B) (-1 is time ~ 1/B).
    steps: (B, B', time ratio t(B')/t(B), ideal ratio U(B')/U(B), efficiency
    (1 - ratio) / (1 - ideal)) for consecutive batch sizes; the ideal is time
    proportional to the updates U(B) = epochs * ceil(n_train / B), which is
    1/B up to that rounding.
    stops_at: the first B whose step to the next size has efficiency below
    HALVING_EFFICIENCY (None when every step keeps it).
    Model t(B) = c_update * U(B) + c_sample * N, U the updates, N = epochs *
    n_train the samples processed, fitted by least squares on relative error;
    crossover = c_update / c_sample, the batch size where per-update overhead
    equals the per-sample work of an update.
    """

    summary: Summary
    updates: np.ndarray
    slope: float
    steps: list
    stops_at: int | None
    c_update: float
    c_sample: float
    crossover: float
    model: np.ndarray
    max_model_error: float


def time_scaling(rows, n_train, epochs, scaling="none"):
    """TimeScaling of the rows of one lr scaling, or None with fewer than two batch sizes or no training."""
    s = summarise(rows, "train_time_s", scaling)
    if len(s.batch_sizes) < 2 or epochs == 0 or not np.all(s.median > 0):
        return None
    sizes, t = s.batch_sizes.astype(float), s.median
    slope = float(np.polyfit(np.log2(sizes), np.log2(t), 1)[0])
    updates = np.array([epochs * updates_per_epoch(n_train, int(b)) for b in s.batch_sizes], dtype=float)
    steps = []
    for i in range(len(sizes) - 1):
        ratio, ideal = t[i + 1] / t[i], updates[i + 1] / updates[i]
        if ideal < 1:  # sizes with the same number of updates have no saving to measure
            steps.append((int(sizes[i]), int(sizes[i + 1]), ratio, ideal, (1 - ratio) / (1 - ideal)))
    stops_at = next((b for b, _, _, _, eff in steps if eff < HALVING_EFFICIENCY), None)
    samples = epochs * n_train
    c_update, c_fixed = _fit_overhead(updates, t)
    model = c_update * updates + c_fixed
    return TimeScaling(s, updates, slope, steps, stops_at, c_update, c_fixed / samples,
                       c_update / (c_fixed / samples) if c_fixed > 0 else math.inf,
                       model, float(np.max(np.abs(model / t - 1))))


def _fit_overhead(updates, t):
    """Non-negative (c_update, c_fixed) minimising sum(((c_update * U + c_fixed) / t - 1)^2)."""
    design = np.column_stack([updates / t, 1 / t])
    c_update, c_fixed = np.linalg.lstsq(design, np.ones_like(t), rcond=None)[0]
    if c_fixed < 0:  # one-parameter fits when the unconstrained one leaves the feasible set
        return float(np.sum(updates / t) / np.sum((updates / t) ** 2)), 0.0
    if c_update < 0:
        return 0.0, float(np.sum(1 / t) / np.sum((1 / t) ** 2))
    return float(c_update), float(c_fixed)


# ---------------------------------------------------------------- claim 2: memory

@dataclass
class MemoryGrowth:
    """Peak bytes against batch size: per_sample is the least-squares slope (bytes per extra sample)."""

    summary: Summary
    per_sample: float
    intercept: float
    growth: float  # peak(largest B) - peak(smallest B)
    relative: float  # growth / peak(smallest B)
    grows: bool


def memory_growth(rows, scaling="none"):
    """MemoryGrowth, or None when no peak was measured (or only at one batch size)."""
    s = summarise(rows, "peak_memory_bytes", scaling)
    if len(s.batch_sizes) < 2:
        return None
    per_sample, intercept = np.polyfit(s.batch_sizes.astype(float), s.median, 1)
    growth = float(s.median[-1] - s.median[0])
    relative = growth / s.median[0] if s.median[0] > 0 else math.inf
    return MemoryGrowth(s, float(per_sample), float(intercept), growth, relative,
                        bool(per_sample > 0 and relative > MEMORY_GROWTH))


# ---------------------------------------------------------------- claim 3: loss and accuracy

@dataclass
class Trend:
    """A metric against log2(B), compared within each seed (same data, same initial weights).

    slopes: per seed, the least-squares slope of the metric on log2(B), i.e. its
    change per doubling of B.  change and change_se: the mean slope times the
    log2 range of B (the fitted change over the sweep) and its standard error
    over seeds.  level_spread: the mean over batch sizes of the seeds' standard
    deviation, how much the seeds differ in level.  verdict: "worsens" /
    "improves" when every seed's slope points that way and |change| > 2
    change_se (one seed: the sign alone); "unchanged" when every slope is 0;
    else "no consistent trend".  worse_sign is +1 for loss, -1 for accuracy.
    """

    summary: Summary
    slopes: np.ndarray
    worse_sign: int
    change: float
    change_se: float
    level_spread: float
    verdict: str
    best_batch_size: int  # best mean over seeds


def trend(rows, field, worse_sign, scaling="none"):
    """Trend of `field` over batch sizes, or None with fewer than two batch sizes."""
    s = summarise(rows, field, scaling)
    if len(s.batch_sizes) < 2:
        return None
    x = np.log2(s.batch_sizes.astype(float))
    slopes = np.array([np.polyfit(x[np.isfinite(v)], v[np.isfinite(v)], 1)[0]
                       for v in s.per_seed.values() if np.isfinite(v).sum() >= 2])
    span = x[-1] - x[0]
    change = float(np.mean(slopes) * span) if len(slopes) else 0.0
    change_se = float(np.std(slopes, ddof=1) / math.sqrt(len(slopes)) * span) if len(slopes) > 1 else 0.0
    worse = slopes * worse_sign
    if len(slopes) == 0 or np.all(slopes == 0):
        verdict = "unchanged"
    elif (np.all(worse > 0) or np.all(worse < 0)) and abs(change) > 2 * change_se:
        verdict = "worsens" if worse[0] > 0 else "improves"
    else:
        verdict = "no consistent trend"
    best = int(s.batch_sizes[np.argmin(s.mean * worse_sign)])
    return Trend(s, slopes, worse_sign, change, change_se, float(np.mean(s.std)), verdict, best)


def paired_change(summary, i, j):
    """Per seed, the metric at batch-size index j minus at index i (seeds missing either are skipped)."""
    d = np.array([v[j] - v[i] for v in summary.per_seed.values()])
    return d[np.isfinite(d)]


@dataclass
class EqualUpdates:
    """Consecutive batch sizes compared at equal epochs and at equal updates, from the epoch loss curves.

    Each epoch's loss is the mean loss of that epoch's batches, so it is placed
    at the epoch's middle update, (e - 1/2) * U_epoch(B).  For each pair
    (B, B' > B) and seed: loss_large is B''s last epoch; loss_same_epochs is
    B's last epoch; loss_same_updates is B's curve interpolated at B''s last
    update count.  pairs hold means over seeds.  The sums run over the pairs
    where the larger batch ends worse at equal epochs (the worsening to explain):
    gap_epochs = sum(loss_large - loss_same_epochs), gap_updates =
    sum(loss_large - loss_same_updates); their difference is the part that
    fewer updates explain.
    """

    pairs: list  # (B, B', updates of B' at its last epoch, loss_large, loss_same_epochs, loss_same_updates)
    worse: list  # the pairs with loss_large > loss_same_epochs
    gap_epochs: float
    gap_updates: float


def equal_updates(runs, batch_sizes, seeds, n_train, scaling="none"):
    """EqualUpdates for one lr scaling, or None when no pair can be compared (epochs 0, one batch size)."""
    pairs = []
    for small, large in zip(batch_sizes, batch_sizes[1:]):
        values = []
        for seed in seeds:
            a, b = runs.get((scaling, small, seed)), runs.get((scaling, large, seed))
            if a is None or b is None or not a["epoch_loss"]:
                continue
            curve_small, curve_large = np.array(a["epoch_loss"]), np.array(b["epoch_loss"])
            middle = np.arange(len(curve_small)) + 0.5
            at_small = middle * updates_per_epoch(n_train, small)
            target = (len(curve_large) - 0.5) * updates_per_epoch(n_train, large)
            if target < at_small[0]:
                continue  # the smaller batch's first epoch already had more updates
            values.append((curve_large[-1], curve_small[-1], np.interp(target, at_small, curve_small), target))
        if values:
            v = np.mean(values, axis=0)
            pairs.append((small, large, float(v[3]), float(v[0]), float(v[1]), float(v[2])))
    if not pairs:
        return None
    worse = [p for p in pairs if p[3] > p[4]]
    return EqualUpdates(pairs, worse, sum(p[3] - p[4] for p in worse), sum(p[3] - p[5] for p in worse))


def last_batch(batch_size, n_train):
    """(rows in an epoch's last batch, its share of the updates); (batch_size, 0.0) when every batch is full."""
    rest = n_train % batch_size
    return (rest, 1 / updates_per_epoch(n_train, batch_size)) if rest else (batch_size, 0.0)


# ---------------------------------------------------------------- the rows of the study

def loss_name(config):
    """'BCE' (0/1 labels) or 'CE' (softmax over classes)."""
    return "CE" if config.get("classes", 1) > 1 else "BCE"


def study_rows(rows, config):
    """The rows of the study's claims: the primary engine, at the study's lr (its scaled lr for other scalings)."""
    engine = config["engine"]
    return [r for r in rows if r["engine"] == engine
            and (r["lr_scaling"] != "none" or math.isclose(r["lr"], config["lr"], rel_tol=1e-12))]


def study_runs(runs, config):
    """{(lr_scaling, batch_size, seed): run} for the runs of study_rows (runs keyed as the sweep keys them)."""
    engine = config["engine"]
    return {key[:3]: run for key, run in runs.items() if len(key) < 5 or (
        key[4] == engine and (key[0] != "none" or math.isclose(key[3], config["lr"], rel_tol=1e-12)))}


def engine_rows(rows, config, engine):
    """The fixed-lr rows of one engine (the runs every engine makes)."""
    return [r for r in rows if r["engine"] == engine and r["lr_scaling"] == "none"
            and math.isclose(r["lr"], config["lr"], rel_tol=1e-12)]
