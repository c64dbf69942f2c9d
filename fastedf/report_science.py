"""Steps to a target loss, the critical batch size and the gradient noise scale, read from a sweep's files.

The analysis behind sections 4 and 5 of report.md (fastedf.report renders
them) and behind steps_to_target.csv.  Inputs: the sweep's rows (dicts with
fastedf.sweep's row fields, min_loss among them), its runs ({key: run}, a run
holding "checkpoints": [[updates, training loss], ...]) and the noise points
of the reference run (fastedf.experiment.noise_trajectory).  The estimators
are fastedf.science's; the rules that turn numbers into verdicts are the
constants below.
"""
import math
from dataclasses import dataclass

import numpy as np

from . import science
from .experiment import examples_seen
from .report import _table, format_time

AGREEMENT_FACTOR = 2.0  # predicted and measured knee "agree" within this factor


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
    """One run's cost to reach the target: updates (a checkpoint count), epochs, examples, seconds."""

    batch_size: int
    seed: int
    lr: float
    updates: int | None  # None: not reached within the run (or the run diverged first)
    epochs: float | None  # updates / updates per epoch
    examples: int | None
    seconds: float | None  # updates x the run's measured seconds per update


def run_to_target(row, run, target, n_train):
    """RunToTarget of one checkpointed run: the first checkpoint whose whole-training-set loss is <= target.

    Checkpoints are 2**(1/8) apart (fastedf.experiment), so the count is at
    most 9% above the first update that reached the target.
    """
    b = row["batch_size"]
    trained = [(u, loss) for u, loss in run.get("checkpoints") or [] if u > 0]
    first = science.steps_to_target([loss for _, loss in trained], target) if trained else None
    hit = None if first is None else trained[first - 1][0]
    if hit is None:
        return RunToTarget(b, row["seed"], row["lr"], None, None, None, None)
    per_epoch = science.updates_per_epoch(n_train, b)
    seconds = (hit * row["train_time_s"] / row["updates"]) if row.get("train_time_s") and row["updates"] else None
    return RunToTarget(b, row["seed"], row["lr"], hit, hit / per_epoch, examples_seen(hit, b, n_train), seconds)


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

    median/low/high: updates to target over the seeds that reached it;
    reached/seeds: how many seeds reached it with some lr of the grid;
    epochs, examples, seconds: medians, likewise; best_lrs: the best lr per
    seed.  fitted_sizes: the batch sizes reached by at least half the seeds;
    fit: science.critical_batch_size on their medians (median examples per
    median update as the batch size); regimes: science.regimes on them.
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
    fit: object  # science.CriticalBatch or None
    at_grid_end: int
    best_points: int


def steps_to_target(results, lrs, seeds, lrs_subset=None):
    """StepsToTarget from RunToTarget results (all_to_target) and the lr grid; None when nothing reached the target."""
    best = best_per_batch_and_seed(results, lrs_subset)
    grid = sorted(lrs_subset if lrs_subset is not None else lrs)
    sizes = sorted({b for b, _ in best})
    med, low, high, reached, epochs, examples, seconds, best_lrs = ([] for _ in range(8))
    for b in sizes:
        points = [t for (bb, _), t in sorted(best.items()) if bb == b and t is not None]
        reached.append(len(points))
        best_lrs.append([t.lr for t in points])
        u = [t.updates for t in points]
        med.append(float(np.median(u)) if u else None)
        low.append(min(u) if u else None)
        high.append(max(u) if u else None)
        epochs.append(float(np.median([t.epochs for t in points])) if points else None)
        examples.append(float(np.median([t.examples for t in points])) if points else None)
        secs = [t.seconds for t in points if t.seconds is not None]
        seconds.append(float(np.median(secs)) if secs else None)
    points = [t for t in best.values() if t is not None]
    if not points:
        return None
    fitted = [b for b, m, r in zip(sizes, med, reached) if m is not None and 2 * r >= seeds]
    labels = (science.regimes(fitted, [med[sizes.index(b)] for b in fitted]) if len(fitted) >= 2 else [])
    fit = None
    if len(fitted) >= 2:  # the medians over seeds: one outlying seed does not bend the curve
        fit = science.critical_batch_size(fitted, [med[sizes.index(b)] for b in fitted],
                                          examples=[examples[sizes.index(b)] for b in fitted])
    ends = (grid[0], grid[-1]) if len(grid) > 1 else ()
    at_end = sum(any(math.isclose(t.lr, e, rel_tol=1e-12) for e in ends) for t in points)
    return StepsToTarget(batch_sizes=sizes, median=med, low=low, high=high,
                         reached=reached, seeds=seeds, epochs=epochs, examples=examples, seconds=seconds,
                         best_lrs=best_lrs, fitted_sizes=fitted, regimes=labels, fit=fit, at_grid_end=at_end,
                         best_points=len(points))


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


def _direction(b_crit, b_simple):
    if not (b_crit and b_simple and math.isfinite(b_crit) and math.isfinite(b_simple)) or b_crit == b_simple:
        return ""
    return ": the knee lies below B_simple" if b_crit < b_simple else ": the knee lies above B_simple"


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
    """Everything sections 4 and 5 of report.md say, computed once (fastedf.sweep writes it to results.json too).

    targets ({seed: loss}) and target_rule: the loss to reach and how it was chosen; results:
    RunToTarget per grid run; steps: StepsToTarget with the whole grid;
    sensitivity: {name: StepsToTarget} with the grid's top or bottom lr
    removed; noise: the reference run's points; at_target: the point where
    its training loss reached the target (or its last) and whether it did;
    agreement: (ratio, within AGREEMENT_FACTOR) of B_crit and that B_simple.
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
    steps = steps_to_target(results, lrs, seeds)
    sensitivity = {}
    if len(lrs) >= 3:
        grid = sorted(lrs)
        for name, subset in ((f"without the largest lr ({grid[-1]:g})", grid[:-1]),
                             (f"without the smallest lr ({grid[0]:g})", grid[1:])):
            sensitivity[name] = steps_to_target(results, lrs, seeds, subset)
    noise_seed = (config.get("noise") or {}).get("seed", 0)
    at, reached = noise_at_target(noise, targets.get(noise_seed, values[0]))
    sci = Science(targets, rule, short, results, steps, sensitivity, noise, at, reached, (None, False))
    b_crit = steps.fit.b_crit if steps and steps.fit else None
    sci.agreement = agreement(b_crit, sci.b_simple_at_target)
    return sci


# ---------------------------------------------------------------- report.md, sections 4 and 5

def _g(x, digits=3):
    return "–" if x is None else f"{x:.{digits}g}"


def _figure(figures, name):
    return f" Figure: [{name}]({name})." if name in figures else ""


def render_steps(sci, config, figures=()):
    """Section 4 of report.md: updates to the target per batch size, the regimes, the grid's influence."""
    out = ["## 4. How many updates does each batch size need to reach a target loss?", ""]
    grid = sorted(config["lrs"])
    out.append(
        f"Every batch size and seed was trained at each learning rate of the grid {', '.join(f'{g:g}' for g in grid)} "
        f"for {config['epochs']} epochs, its loss over the whole training set measured at update counts "
        f"2^(k/{config['checkpoints_per_doubling']}) (so an update count read off them is at most "
        f"{2 ** (1 / config['checkpoints_per_doubling']) - 1:.0%} above the first update that reached the target; "
        f"per-epoch losses would be off by up to a whole epoch, {config['n_train']} updates at B = 1). "
        f"Per batch size and seed the learning rate reaching the target in the fewest updates is kept "
        f"(Shallue et al. 2018). Target: {sci.target_rule}.")
    out.append("")
    st = sci.steps
    if st is None:
        return out + ["No run reached the target: lower --target-loss or train longer (--epochs).", ""]
    table = []
    by_b = dict(zip(st.fitted_sizes, st.regimes))
    for i, b in enumerate(st.batch_sizes):
        lrs = st.best_lrs[i]
        table.append((b, f"{st.reached[i]}/{st.seeds}", _g(st.median[i], 4),
                      f"{_g(st.low[i], 4)} – {_g(st.high[i], 4)}", _g(st.epochs[i]), _g(st.examples[i], 4),
                      "–" if st.seconds[i] is None else format_time(st.seconds[i]),
                      ", ".join(f"{lr:g}" for lr in sorted(set(lrs))) or "–", by_b.get(b, "–")))
    out += [_table(("B", "seeds reaching", "updates (median)", "min – max", "epochs", "examples", "seconds",
                    "best lr(s)", "regime"), table), ""]
    out.append(_regime_sentence(st) + _figure(figures, "steps_to_target.png"))
    out.append("")
    fit = st.fit
    if fit is not None:
        b_crit = "∞ (no knee inside the data)" if not math.isfinite(fit.b_crit) else f"{fit.b_crit:.3g}"
        out.append(f"Fitting S(B) = S_min (1 + B_crit / B) (McCandlish et al. 2018, eq. 2.11, relative least "
                   f"squares on the medians above, the batch sizes reached by at least half the seeds) gives S_min = {fit.s_min:.4g} updates, "
                   f"E_min = {fit.e_min:.4g} examples and **B_crit = E_min / S_min = {b_crit}**: below B_crit "
                   f"doubling B nearly halves the updates, above it the updates approach S_min."
                   + (f" On the fitted curve the slope crosses the regime thresholds at B_crit / 4 = "
                      f"{fit.b_crit / 4:.3g} and 4 B_crit = {4 * fit.b_crit:.3g}: perfect scaling below the first, "
                      f"no benefit above the second (read off the fit, these boundaries are steadier than the "
                      f"labels above, each of which rests on two neighbouring medians)."
                      if math.isfinite(fit.b_crit) and fit.b_crit > 0 else ""))
        out.append("")
    ends = len(grid) > 1
    if ends:
        share = st.at_grid_end / st.best_points if st.best_points else 0.0
        text = (f"The best lr sits at an end of the grid in {st.at_grid_end} of {st.best_points} (batch size, seed) "
                f"pairs ({share:.0%})")
        text += (": the grid brackets the optimum for most batch sizes." if share < 0.25 else
                 ": a wider grid could lower those counts, so read them as upper bounds.")
        sens = []
        for name, other in sci.sensitivity.items():
            if other is None or other.fit is None:
                sens.append(f"{name}: no fit")
                continue
            sens.append(f"{name}: B_crit {_g(other.fit.b_crit)}, median updates at B = {st.batch_sizes[0]} "
                        f"{_g(other.median[0], 4)} and at B = {st.batch_sizes[-1]} {_g(other.median[-1], 4)}")
        if sens:
            text += " Dropping an end of the grid: " + "; ".join(sens) + "."
        out += [text + _figure(figures, "steps_to_target_by_lr.png"), ""]
    return out


def _regime_sentence(st):
    if len(st.fitted_sizes) < 2:
        return "Too few batch sizes reached the target in at least half the seeds to name regimes."
    ranges = regime_ranges(st.fitted_sizes, st.regimes)
    parts = [f"{label} for B = {a}" + (f"–{b}" if b != a else "") for label, a, b in ranges]
    seen = {label for label, _, _ in ranges}
    missing = [r for r in science.REGIMES if r not in seen]
    text = (f"**Regimes** (local slope of log S against log B below {science.PERFECT_SLOPE} is perfect scaling, "
            f"above {science.NO_BENEFIT_SLOPE} no benefit): " + "; ".join(parts) + ".")
    if missing:
        text += f" Not seen in this range: {', '.join(missing)}."
    unreached = [b for b in st.batch_sizes if b not in st.fitted_sizes]
    if unreached:
        text += (f" Batch sizes reaching the target in fewer than half the seeds (left out of the regimes): "
                 f"{', '.join(map(str, unreached))}.")
    return text


def render_noise(sci, config, figures=()):
    """Section 5 of report.md: B_simple along the reference run, against the B_crit of section 4."""
    out = ["## 5. Does the gradient noise scale predict the knee?", ""]
    noise = config.get("noise")
    if not noise or not sci.noise:
        return out + ["Not measured in this run (`--no-noise`, or no lr grid).", ""]
    out.append(
        f"A reference run (batch size {noise['batch_size']}, lr {noise['lr']:g}, seed {noise['seed']}) was "
        f"stopped after the epochs below; at each stop B_simple = tr(Σ) / |G|² was estimated from "
        f"{noise['steps']} pairs of batches of {noise['b_small']} and {noise['b_big']} rows drawn with replacement "
        f"(McCandlish et al. 2018, appendix A: the two batch sizes' squared gradient norms give unbiased "
        f"estimates of tr(Σ) and |G|², averaged over the pairs and then divided)"
        + (", and computed exactly from every per-sample gradient." if noise["exact"] else "."))
    out.append("")
    table = [(p["epoch"], p["updates"], f"{p['train_loss']:.4g}", _g(p["trace_sigma"]), _g(p["g_sq"]),
              _g(p["b_simple"]), _g(p["b_simple_exact"])) for p in sci.noise]
    out += [_table(("epoch", "updates", "training loss", "tr(Σ)", "|G|²", "B_simple (estimate)",
                    "B_simple (exact)"), table), ""]
    def best(p):  # the exact value where it was computed
        return p["b_simple_exact"] if p["b_simple_exact"] is not None else p["b_simple"]

    first, last = sci.noise[0], sci.noise[-1]
    which = " (exact values)" if noise["exact"] else ""
    text = (f"B_simple{which} grows from {_g(best(first))} at the start to {_g(best(last))} after "
            f"{last['epoch']} epochs: as the loss falls the mean gradient |G|² shrinks faster than the "
            f"per-sample spread tr(Σ), so larger batches stay useful for longer."
            if best(last) > best(first) else
            f"B_simple{which} goes from {_g(best(first))} at the start to {_g(best(last))} after "
            f"{last['epoch']} epochs.")
    if noise["exact"]:
        off = [p for p in sci.noise if not 0.5 <= p["b_simple"] / p["b_simple_exact"] <= 2]
        if off:
            text += (f" The two-batch estimate is off by more than a factor of 2 at {len(off)} of {len(sci.noise)} "
                     f"points, where B_simple is far above the larger batch ({noise['b_big']}): |G|² is then "
                     f"smaller than the noise of a {noise['b_big']}-row batch and its estimate can even be negative "
                     f"(B_simple = inf); more steps or a larger batch would be needed there.")
        else:
            text += " The two-batch estimate stays within a factor of 2 of the exact value at every point."
    out += [text + _figure(figures, "noise_scale.png"), ""]
    at = sci.at_target
    b_crit = sci.steps.fit.b_crit if sci.steps and sci.steps.fit else None
    if at is None or b_crit is None:
        return out + ["No B_crit to compare with (section 4 has no fit).", ""]
    seed = config["noise"]["seed"]
    where = (f"where the reference run's training loss first reached its seed's target (epoch {at['epoch']}, loss "
             f"{at['train_loss']:.4g})" if sci.target_reached_in_noise_run else
             f"at the reference run's last point (epoch {at['epoch']}, loss {at['train_loss']:.4g}; it never "
             f"reached seed {seed}'s target {sci.targets.get(seed, float('nan')):.4g})")
    which = "exact" if at.get("b_simple_exact") is not None else "estimated"
    ratio, agrees = sci.agreement
    verdict = ("cannot be compared (B_crit is not finite: the knee lies outside the data)" if ratio is None else
               f"**{'agree' if agrees else 'do not agree'} within a factor of {AGREEMENT_FACTOR:g}** "
               f"(ratio {ratio:.2g})")
    out += [f"Predicted knee: B_simple = {_g(sci.b_simple_at_target)} ({which}) {where}. Measured knee: "
            f"B_crit = {_g(b_crit)} "
            f"from the steps to target. The two {verdict}{_direction(b_crit, sci.b_simple_at_target)}. "
            f"McCandlish et al. predict the critical batch size by B_noise = tr(HΣ) / (GᵀHG), H the Hessian; "
            f"B_simple, measured here, equals it only when H is a multiple of the identity, so with uneven "
            f"curvature a gap between the two is expected and the factor-of-{AGREEMENT_FACTOR:g} test is strict.", ""]
    return out
