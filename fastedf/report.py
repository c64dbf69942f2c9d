"""The study's three claims, tested against the sweep's rows: analysis functions and report.md.

Rows are dicts with the fields of fastedf.sweep.ROW_FIELDS; the analysis
functions take runs mapping (lr_scaling, batch_size, seed) to
{"epoch_loss": [...], "parameters": [...]} (`study_runs` makes that map from
the sweep's runs, keyed (lr_scaling, batch_size, seed, lr, engine)).  Every
number in the report is computed here from those; the thresholds that turn
numbers into verdicts are the constants below.  Sections 4 and 5 (steps to a
target, the noise scale) come from fastedf.report_science.
"""
import math
from dataclasses import dataclass

import numpy as np

from .distributed import TIMING_CLIENT, TIMING_WORKERS
from .science import updates_per_epoch

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


# ---------------------------------------------------------------- report.md

def loss_name(config):
    """'BCE' (0/1 labels) or 'CE' (softmax over classes)."""
    return "CE" if config.get("classes", 1) > 1 else "BCE"


def format_time(seconds):
    """Seconds with a readable unit: 1.23 ms."""
    if seconds == 0:
        return "0 s"
    for unit, scale in (("s", 1), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(seconds) >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def format_bytes(n):
    """Bytes with a binary unit: 1.5 KiB."""
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def study_rows(rows, config):
    """The rows of the study's claims: the primary engine, at the study's lr (its scaled lr for other scalings)."""
    engine = config["engine"]
    return [r for r in rows if r["engine"] == engine
            and (r["lr_scaling"] != "none" or math.isclose(r["lr"], config["lr"], rel_tol=1e-12))]


def study_runs(runs, config):
    """{(lr_scaling, batch_size, seed): run} for the runs of study_rows (runs keyed as fastedf.sweep keys them)."""
    engine = config["engine"]
    return {key[:3]: run for key, run in runs.items() if len(key) < 5 or (
        key[4] == engine and (key[0] != "none" or math.isclose(key[3], config["lr"], rel_tol=1e-12)))}


def _model_phrase(config):
    """'Logistic regression' (the study), 'Softmax regression' or 'An MLP 64 → 16 → 10 (relu hidden layers, ...)'."""
    classes, hidden = config.get("classes", 1), config.get("hidden") or []
    head = "sigmoid/BCE" if classes == 1 else "softmax/CE"
    if not hidden:
        return "Logistic regression" if classes == 1 else f"Softmax regression over {classes} classes"
    widths = " → ".join(map(str, [len(config["features"]), *hidden, classes]))
    return f"An MLP {widths} ({config['activation']} hidden layers, {head} head)"


def render(rows, runs, config, env, figures=(), warmup_compile_s=0.0, science=None):
    """report.md as a string: configuration, then each claim with its numbers and verdict.

    rows and runs: every run of the sweep; the claims read the study's runs
    (study_rows), claim 1 compares every engine; science: a
    report_science.Science for sections 4 and 5 (the lr grid), or None.
    """
    all_rows, rows, runs = rows, study_rows(rows, config), study_runs(runs, config)
    seeds = sorted({r["seed"] for r in rows})
    from .sweep import describe_data
    parts = [
        "# Batch-size sweep: the study's claims tested",
        "",
        f"Data: {describe_data(config)}, "
        f"{config['n_train']} training and {config['n_test']} test rows, {len(config['features'])} features. "
        f"{_model_phrase(config)} trained by mini-batch SGD ({'reshuffled' if config['shuffle'] else 'row order'}), "
        f"{config['epochs']} epochs, lr {config['lr']:g}, engine `{config['engine']}`, "
        f"{len(seeds)} seed(s) ({', '.join(map(str, seeds))}: data split and initial weights), "
        f"batch sizes {', '.join(map(str, config['batch_sizes']))}. "
        f"Times are the median of {config['repeats']} run(s), compilation excluded, on {env['cpu']} "
        f"({env['timing']}){_timing_phrase(all_rows)}; an untimed warm-up run came first and spent "
        f"{format_time(warmup_compile_s)} compiling (0 when Numba's cache held the program).",
        "",
    ]
    if figures:
        parts += ["Figures: " + ", ".join(f"[{f}]({f})" for f in figures), ""]
    parts += _claim_time(rows, config)
    parts += _other_engines(all_rows, config, figures)
    parts += _claim_memory(rows, config)
    parts += _claim_quality(rows, runs, config, seeds)
    if science is not None:
        from .report_science import render_noise, render_steps
        parts += render_steps(science, config, figures)
        parts += render_noise(science, config, figures)
    return "\n".join(parts) + "\n"


def _timing_phrase(rows):
    """How the rows' times were measured (their `timing` column, fastedf.distributed's rule), as a clause."""
    kinds = {r.get("timing", "serial") for r in rows}
    if TIMING_WORKERS in kinds:
        return (", measured on Dask workers while other runs shared the cores (`--timing concurrent`): "
                "they include that interference and are not comparable with times measured alone")
    if TIMING_CLIENT in kinds:
        return ", each run timed alone by the sweep's process while the Dask workers waited"
    return ""


ENGINE_NAMES = {"compiled": "fastedf compiled (`fit`, one Numba program)",
                "graph": "fastedf graph engine (nodes one by one)",
                "numpy_edf": "the course's NumPy EDF loop"}


def engine_label(engine):
    """An engine's name without its explanation: 'fastedf compiled'."""
    return ENGINE_NAMES.get(engine, engine).split(" (")[0]


def engine_rows(rows, config, engine):
    """The fixed-lr rows of one engine (the runs every engine makes)."""
    return [r for r in rows if r["engine"] == engine and r["lr_scaling"] == "none"
            and math.isclose(r["lr"], config["lr"], rel_tol=1e-12)]


def _other_engines(rows, config, figures=()):
    """Claim 1 for every engine of the sweep side by side (only with more than one)."""
    engines = config.get("engines") or [config["engine"]]
    if len(engines) < 2:
        return []
    out = ["### Claim 1 by implementation", "",
           "The same fixed-lr runs (same batches, same updates; the engines agree to rounding) timed on each "
           "implementation: the per-update overhead sets how far halving holds."
           + (" Figure: [time_vs_batch_size.png](time_vs_batch_size.png)." if "time_vs_batch_size.png" in figures
              else ""), ""]
    table = []
    for engine in engines:
        ts = time_scaling(engine_rows(rows, config, engine), config["n_train"], config["epochs"])
        if ts is None:
            table.append((ENGINE_NAMES.get(engine, engine), "–", "–", "–", "–", "–", "–"))
            continue
        s = ts.summary
        table.append((ENGINE_NAMES.get(engine, engine), format_time(s.median[0]), format_time(s.median[-1]),
                      f"{ts.slope:.2f}", format_time(ts.c_update), f"{ts.crossover:.3g}",
                      "whole range" if ts.stops_at is None else f"up to B = {ts.stops_at}"))
    out += [_table(("implementation", f"time at B = {config['batch_sizes'][0]}",
                    f"time at B = {config['batch_sizes'][-1]}", "slope (log2 t vs log2 B)", "per update",
                    "c_update / c_sample (B where halving stops in the model)", "halving holds"), table), ""]
    times = {e: summarise(engine_rows(rows, config, e), "train_time_s").median for e in engines}
    if all(len(t) for t in times.values()):
        base = engines[0]
        ratios = [f"{engine_label(e)} {np.median(times[e] / times[base]):.3g}x"
                  for e in engines[1:]]
        out += [f"Median time relative to {engine_label(base)} over the batch sizes: "
                + ", ".join(ratios) + ". **Verdict: the claim holds for an implementation only while its "
                "per-update overhead dominates the per-sample work; the more overhead per update, the larger the "
                "batch size up to which doubling halves the time.**", ""]
    return out


def _claim_time(rows, config):
    out = ["## 1. Does doubling the batch size halve the training time?", ""]
    ts = time_scaling(rows, config["n_train"], config["epochs"])
    if ts is None:
        return out + ["Not testable in this run: it needs two or more batch sizes and at least one epoch.", ""]
    s = ts.summary
    by_from = {step[0]: step for step in ts.steps}
    table = []
    for i, b in enumerate(s.batch_sizes):
        step = by_from.get(int(b))
        table.append((b, int(ts.updates[i]), format_time(s.median[i]),
                      f"{format_time(s.low[i])} – {format_time(s.high[i])}",
                      f"{step[2]:.2f} (ideal {step[3]:.2f})" if step else "",
                      f"{step[4]:.2f}" if step else "",
                      f"{100 * ts.c_update * ts.updates[i] / ts.model[i]:.0f}%"))
    out += [_table(("B", "updates", "time (median over seeds)", "min – max over seeds", "time ratio to next B",
                    "efficiency", "per-update share (model)"), table), ""]
    if ts.stops_at is None:
        measured = (f"every step keeps at least {HALVING_EFFICIENCY:.0%} of the ideal saving, so time stays "
                    f"close to 1/B over the whole range")
    else:
        held = [step for step in ts.steps if step[0] < ts.stops_at]
        measured = (f"halving holds up to B = {ts.stops_at}" if held else "halving fails from the first step")
        measured += (f": the step from B = {ts.stops_at} saves under {HALVING_EFFICIENCY:.0%} of the ideal "
                     f"(efficiency = (1 - time ratio) / (1 - ideal ratio), the ideal being time "
                     f"proportional to updates; 1 is ideal, 0 no gain)")
    if ts.stops_at is None:
        verdict = "holds over the whole range"
    elif ts.stops_at == s.batch_sizes[0]:
        verdict = "does not hold, from the smallest batch on"
    else:
        verdict = f"holds up to B = {ts.stops_at}, then stops"
    out += [
        f"Fitted slope of log2(time) against log2(B): **{ts.slope:.2f}** (time ~ 1/B would be -1). "
        f"Measured: {measured}.",
        "",
        f"Why: a fit of time = c_update × updates + c_sample × samples (samples = epochs × training rows, "
        f"the same for every B) gives c_update = {format_time(ts.c_update)} per update and c_sample = "
        f"{format_time(ts.c_sample)} per sample (largest relative error of the fit {ts.max_model_error:.0%}). "
        f"Halving B's number of updates halves only the first term; once a batch has more than "
        f"c_update / c_sample ≈ {ts.crossover:.3g} samples the per-sample work dominates and doubling B saves "
        f"less than a quarter of the time. "
        f"Near the full batch the updates per epoch, ceil({config['n_train']}/B), fall by less than half "
        f"per doubling, so even the ideal ratio there is above 0.5.",
        "",
        f"**Verdict: the claim {verdict}** for engine `{config['engine']}` (a step counts as halving while it "
        f"saves at least {HALVING_EFFICIENCY:.0%} of the ideal). The stopping point moves with the per-update "
        f"overhead: an engine that runs the nodes one by one in Python (`--engine graph`, or the course's "
        f"NumPy EDF) pays far more per update and keeps halving to larger batches.",
        "",
    ]
    return out


def _least_bytes_per_sample(engine):
    """fastedf.memory's count of the bytes one extra batch sample needs in `engine`, or None without that module."""
    try:
        from .memory import theoretical_bytes_per_sample
    except ImportError:
        return None
    return theoretical_bytes_per_sample(engine)


def _claim_memory(rows, config):
    out = ["## 2. Does memory grow with batch size?", ""]
    mg = memory_growth(rows)
    if mg is None:
        return out + ["Not measured in this run: rerun with `--memory` (peak bytes under memray, one fresh "
                      "process per batch size).", ""]
    s = mg.summary
    out += [_table(("B", "peak memory"), [(b, format_bytes(p)) for b, p in zip(s.batch_sizes, s.median)]), ""]
    out += [
        f"Least-squares slope: **{mg.per_sample:.3g} bytes per extra sample** in the batch (one training row "
        f"is {8 * (len(config['features']) + 1)} bytes of float64 features and label"
        + (f"; a Linear → Sigmoid → BCE step needs at least {least} bytes per sample for its activations and "
           f"their gradients" if (least := _least_bytes_per_sample(config['engine'])) else "")
        + f"). From B = {s.batch_sizes[0]} to B = {s.batch_sizes[-1]} the peak "
        f"changes by {format_bytes(mg.growth)} ({mg.relative:+.1%}). Peaks are measured once per batch size "
        f"(seed 0, one epoch: every epoch allocates the same).",
        "",
        f"**Verdict: memory {'grows' if mg.grows else 'does not grow meaningfully'} with batch size** "
        f"(rule: a positive slope and more than {MEMORY_GROWTH:.0%} growth over the range).",
        "",
    ]
    return out


def _quality_table(loss, acc, rows, scaling, n_train):
    lrs = {r["batch_size"]: r["lr"] for r in rows if r["lr_scaling"] == scaling}
    table = []
    for i, b in enumerate(loss.summary.batch_sizes):
        ls, ac = loss.summary, acc.summary
        rest, share = last_batch(int(b), n_train)
        table.append((b, f"{lrs[int(b)]:.3g}", f"{rest} rows, {share:.0%} of updates" if share else "full",
                      f"{ls.mean[i]:.4f} ± {ls.std[i]:.4f}", f"{ls.low[i]:.4f} – {ls.high[i]:.4f}",
                      f"{ac.mean[i]:.4f} ± {ac.std[i]:.4f}", f"{ac.low[i]:.4f} – {ac.high[i]:.4f}"))
    return _table(("B", "lr", "last batch", "final loss (mean ± sd)", "loss min – max",
                   "test accuracy (mean ± sd)", "accuracy min – max"), table)


def _trend_sentence(t, name):
    s = t.summary
    worse_in = int(np.sum(t.slopes * t.worse_sign > 0))
    text = (f"{name}: mean {s.mean[0]:.4f} at B = {s.batch_sizes[0]} and {s.mean[-1]:.4f} at "
            f"B = {s.batch_sizes[-1]}. Within each seed, the slope per doubling of B is "
            f"{np.mean(t.slopes):+.4f} on average (range {np.min(t.slopes):+.4f} to {np.max(t.slopes):+.4f}), "
            f"worse with larger B in {worse_in} of {len(t.slopes)} seed(s); fitted change over the sweep "
            f"{t.change:+.4f} ± {t.change_se:.4f} (standard error over seeds), while the seeds' levels differ by "
            f"a standard deviation of {t.level_spread:.4f}. ")
    best = int(np.searchsorted(s.batch_sizes, t.best_batch_size))
    if 0 < best < len(s.batch_sizes) - 1:  # not monotone: say how each side moves, seed by seed
        left, right = paired_change(s, 0, best), paired_change(s, best, len(s.batch_sizes) - 1)
        text += (f"The best mean is in the middle, at B = {t.best_batch_size}: going from the smallest B to it, "
                 f"{name.lower()} changes by {np.mean(left):+.4f} (better in {int(np.sum(left * t.worse_sign < 0))}"
                 f" of {len(left)} seeds); from it to the largest B by {np.mean(right):+.4f} (worse in "
                 f"{int(np.sum(right * t.worse_sign > 0))} of {len(right)} seeds). ")
    else:
        text += f"The best mean is at B = {t.best_batch_size}. "
    return text + f"**{name}: {t.verdict}** as B grows."


def _claim3_verdict(loss, acc):
    worse = [name for name, t in (("loss", loss), ("accuracy", acc)) if t.verdict == "worsens"]
    if len(worse) == 2:
        return "supported: both loss and accuracy worsen"
    if worse:
        return f"partly supported: only the {worse[0]} worsens"
    return "not supported: neither loss nor accuracy worsens consistently across seeds"


def _partial_batches(config):
    """A sentence on the epochs' partial last batches, when the sweep has any."""
    n = config["n_train"]
    partial = [(b, *last_batch(b, n)) for b in config["batch_sizes"] if n % b]
    if not partial:
        return []
    b, rest, share = max(partial, key=lambda p: p[2])
    return [f"With {n} training rows an epoch's last batch is partial for {len(partial)} of the batch sizes "
            f"(column 'last batch'); it is averaged over its own rows and stepped with the same lr, so for "
            f"B = {b} a batch of {rest} rows makes {share:.0%} of the updates. Batch sizes that divide {n} "
            f"have no such small, noisy step.", ""]


def _claim_quality(rows, runs, config, seeds):
    out = ["## 3. Do final loss and test accuracy get worse as the batch size grows?", "",
           f"Final loss is the mean {loss_name(config)} over the whole training set at the final weights. "
           "Seeds are compared with themselves (each seed has its own data and initial weights): a metric "
           "'worsens' only when its least-squares slope against log2(B) points the bad way in every seed and the "
           "mean change over the sweep exceeds twice its standard error over seeds.", ""]
    verdicts = {}
    for scaling in config["lr_scaling"]:
        loss = trend(rows, "final_loss", +1, scaling)
        acc = trend(rows, "test_accuracy", -1, scaling)
        if loss is None or acc is None:
            return out + ["Not testable in this run: it needs two or more batch sizes.", ""]
        verdicts[scaling] = (loss.verdict, acc.verdict)
        short = "fixed lr" if scaling == "none" else f"lr scaled {scaling}"
        title = ("fixed lr (the study)" if scaling == "none"
                 else f"lr scaled {scaling} in B/B0, B0 = {config['base_batch_size']}")
        out += [f"### {title}", "", _quality_table(loss, acc, rows, scaling, config["n_train"]), "",
                _trend_sentence(loss, "Final loss"), "", _trend_sentence(acc, "Test accuracy"), "",
                f"**Verdict on claim 3, {short}: {_claim3_verdict(loss, acc)}.**", ""]
        if scaling == "none":
            out += _partial_batches(config)
        out += _fewer_updates(runs, config, seeds, scaling)
    out += ["### Does lr scaling change the verdict?", ""]
    if len(verdicts) == 1:
        out += ["Not tested in this run (fixed lr only): rerun with `--lr-scaling linear,sqrt` to add runs with "
                "lr × B/B0 and lr × sqrt(B/B0).", ""]
    else:
        base = verdicts["none"]
        for scaling, (lv, av) in verdicts.items():
            if scaling == "none":
                continue
            changed = (lv, av) != base
            out.append(f"- `{scaling}`: loss {lv}, accuracy {av} (fixed lr: loss {base[0]}, accuracy {base[1]}) "
                       f"— the verdict **{'changes' if changed else 'does not change'}**.")
        out.append("")
    return out


def _pair_names(pairs):
    return ", ".join(f"{a} → {b}" for a, b, *_ in pairs)


def _fewer_updates(runs, config, seeds, scaling):
    eq = equal_updates(runs, config["batch_sizes"], seeds, config["n_train"], scaling)
    out = ["Fewer updates or larger batch? At a fixed number of epochs a batch twice as large makes half the "
           "updates. Each batch size is compared with the next at equal epochs and at equal updates, reading "
           "the smaller batch's epoch loss curve where it had made as many updates as the larger batch made in "
           "all (curve losses are per-epoch means during training, so they differ from the final loss above).", ""]
    if eq is None:
        return out + ["No pair of batch sizes could be compared (it needs two batch sizes and a curve with "
                      "enough epochs).", ""]
    table = [(f"{a} → {b}", f"{u:.0f}", f"{ll:.4f}", f"{le:.4f}", f"{lu:.4f}") for a, b, u, ll, le, lu in eq.pairs]
    out += [_table(("B → B'", "updates of B' (mid last epoch)", "loss of B'", "loss of B, same epochs", "loss of B, same updates"),
                   table), ""]
    if eq.worse:
        share = 1 - eq.gap_updates / eq.gap_epochs
        out.append(f"Where the larger batch ends worse at equal epochs ({_pair_names(eq.worse)}), its loss is "
                   f"higher by {eq.gap_epochs:.4f} in sum; at equal updates the gap is {eq.gap_updates:+.4f}. "
                   f"**Fewer updates account for {share:.0%} of the worsening**; the remaining "
                   f"{eq.gap_updates:+.4f} is the larger batch itself, its updates compared one for one "
                   f"(positive: worse per update, a small partial last batch included; negative: better).")
    else:
        out.append("In no pair does the larger batch end worse at equal epochs: there is no worsening to explain.")
    better = [p for p in eq.pairs if p not in eq.worse]
    if better:
        drift = max(abs(p[5] - p[4]) for p in better)
        gap = min(abs(p[3] - p[4]) for p in better)
        text = (f"Where the larger batch ends better or equal ({_pair_names(better)}), the smaller batch's loss "
                f"at equal updates differs from its final one by at most {drift:.4f}")
        if drift < gap:
            text += (f", less than the smallest gap between the pair ({gap:.4f}): the smaller batch had stopped "
                     "improving and the larger batch settles at a lower loss")
        out.append(text + ".")
    return out + [""]
