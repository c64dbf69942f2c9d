"""report.md: the configuration, the three claims with their numbers and verdicts, and the lr grid's sections."""
import math

import numpy as np

from ..text import format_bytes, format_time, markdown_table
from . import batch_scaling
from .batch_scaling import updates_per_epoch
from .claims import (HALVING_EFFICIENCY, MEMORY_GROWTH, engine_rows, equal_updates, last_batch, loss_name,
                     memory_growth, paired_change, study_rows, study_runs, summarise, time_scaling, trend)
from .data import describe_data
from .distributed import TIMING_CLIENT, TIMING_WORKERS
from .lr_grid import AGREEMENT_FACTOR, regime_ranges
from .memory import PER_SAMPLE_BUFFERS, theoretical_bytes_per_sample

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
    lr_grid.Science for sections 4 and 5 (the lr grid), or None.
    """
    all_rows, rows, runs = rows, study_rows(rows, config), study_runs(runs, config)
    seeds = sorted({r["seed"] for r in rows})
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
        parts += render_steps(science, config, figures)
        parts += render_noise(science, config, figures)
    return "\n".join(parts) + "\n"


def _timing_phrase(rows):
    """How the rows' times were measured (their `timing` column, fastedf.study.distributed's rule), as a clause."""
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
    out += [markdown_table(("implementation", f"time at B = {config['batch_sizes'][0]}",
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
                      (f"{step[4]:.2f}" + (" (within noise)" if step[0] in ts.within_noise
                                           else " (time rose)" if step[4] < 0 else "")) if step else "",
                      f"{100 * ts.c_update * ts.updates[i] / ts.model[i]:.0f}%"))
    out += [markdown_table(("B", "updates", "time (median over seeds)", "min – max over seeds", "time ratio to next B",
                    "efficiency", "per-update share (model)"), table), ""]
    rose = [step for step in ts.steps if step[2] > 1]
    if rose:
        out += [f"The time rose from one batch size to the next at {_pair_names(rose)} (a negative efficiency). A "
                f"larger batch does the same arithmetic per sample in fewer updates, so a rise is not an effect of "
                f"batch size: it is the implementation's cost per sample at that batch size (its kernels change "
                f"strategy with the batch; `python benchmarks/bench_per_sample.py` measures fastedf's per-sample "
                f"cost for B = 1 to 64) or the machine's noise (compare the CPU times).", ""]
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
    if ts.within_noise:
        measured += (f". No verdict on the step(s) from B = {', '.join(map(str, ts.within_noise))}: the time "
                     f"measured at the next size is within the measured noise (the spread between seeds and "
                     f"between repeats) of the time that would save exactly {HALVING_EFFICIENCY:.0%} of the ideal")
    out += [
        f"Fitted slope of log2(time) against log2(B): **{ts.slope:.2f}** (time ~ 1/B would be -1). "
        f"Measured: {measured}.",
        "",
        _timing_note(rows),
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


def _timing_note(rows):
    """How many of the timed rows had disturbed timings (results.csv's time_flag), in one paragraph."""
    timed = [r for r in rows if r["train_time_s"] is not None]
    unchecked = sum(r.get("cpu_time_s") is None for r in timed)
    remeasured = sum(r.get("time_flag") == "remeasured" for r in timed)
    unsettled = sum(r.get("time_flag") == "unsettled" for r in timed)
    text = (f"Timing: each time is the median of a run's fastest undisturbed repeats; a repeat is disturbed when "
            f"its wall time exceeds 1.5 × the CPU time of the thread that trained + 2 ms (another process took the "
            f"core). {remeasured + unsettled} of {len(timed)} runs were flagged: {remeasured} measured again until "
            f"undisturbed, {unsettled} still disturbed after the extra repeats (their fastest time is used; "
            f"`time_flag` in results.csv).")
    if unchecked:
        text += f" {unchecked} run(s) from an older results.csv have no CPU time and were not checked."
    return text


def _least_bytes_per_sample(engine):
    """fastedf.study.memory's count of the bytes one extra batch sample needs in `engine` (None for another engine)."""
    return theoretical_bytes_per_sample(engine) if engine in PER_SAMPLE_BUFFERS else None


def _claim_memory(rows, config):
    out = ["## 2. Does memory grow with batch size?", ""]
    mg = memory_growth(rows)
    if mg is None:
        return out + ["Not measured in this run: rerun with `--memory` (peak bytes under memray, one fresh "
                      "process per batch size).", ""]
    s = mg.summary
    out += [markdown_table(("B", "peak memory"), [(b, format_bytes(p)) for b, p in zip(s.batch_sizes, s.median)]), ""]
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


def _qualitymarkdown_table(loss, acc, rows, scaling, n_train):
    lrs = {r["batch_size"]: r["lr"] for r in rows if r["lr_scaling"] == scaling}
    table = []
    for i, b in enumerate(loss.summary.batch_sizes):
        ls, ac = loss.summary, acc.summary
        rest, share = last_batch(int(b), n_train)
        table.append((b, f"{lrs[int(b)]:.3g}", _last_batch_words(int(b), n_train),
                      f"{ls.mean[i]:.4f} ± {ls.std[i]:.4f}", f"{ls.low[i]:.4f} – {ls.high[i]:.4f}",
                      f"{ac.mean[i]:.4f} ± {ac.std[i]:.4f}", f"{ac.low[i]:.4f} – {ac.high[i]:.4f}"))
    return markdown_table(("B", "lr", "last batch", "final loss (mean ± sd)", "loss min – max",
                   "test accuracy (mean ± sd)", "accuracy min – max"), table)


def _last_batch_words(batch_size, n_train):
    """'26 rows, 1 of 33 updates' for an epoch's partial last batch, or 'full'."""
    rest, share = last_batch(batch_size, n_train)
    return f"{rest} rows, 1 of {updates_per_epoch(n_train, batch_size)} updates" if share else "full"


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
            f"B = {b} a batch of {rest} rows makes 1 of every {updates_per_epoch(n, b)} updates. Batch sizes "
            f"that divide {n} have no such small, noisy step.", ""]


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
        out += [f"### {title}", "", _qualitymarkdown_table(loss, acc, rows, scaling, config["n_train"]), "",
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
    out += [markdown_table(("B → B'", "updates of B' (mid last epoch)", "loss of B'", "loss of B, same epochs", "loss of B, same updates"),
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


# ---------------------------------------------------------------- sections 4 and 5: the lr grid

def _direction(b_crit, b_simple):
    if not (b_crit and b_simple and math.isfinite(b_crit) and math.isfinite(b_simple)) or b_crit == b_simple:
        return ""
    return ": the knee lies below B_simple" if b_crit < b_simple else ": the knee lies above B_simple"


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
        f"for {config['epochs']} epochs, its batches drawn {_SAMPLING_WORDS[config.get('sampling') or 'fixed']}, "
        f"its loss over the whole training set measured after every update{_stride_words(sci)}. "
        f"A run's count is the first update after which its loss stays at or below the target for the rest of the "
        f"run; the first update at or below it (first passage) is shown beside: a constant-lr loss is noisy and "
        f"dips below the target before it stays there. "
        f"Per batch size and seed the learning rate staying at or below the target in the fewest updates is kept "
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
                      f"{_g(st.low[i], 4)} – {_g(st.high[i], 4)}", _g(st.first_passage[i], 4), _g(st.epochs[i]),
                      _g(st.examples[i], 4),
                      "–" if st.seconds[i] is None else format_time(st.seconds[i]),
                      ", ".join(f"{lr:g}" for lr in sorted(set(lrs))) or "–", by_b.get(b, "–")))
    out += [markdown_table(("B", "seeds reaching", "updates (median)", "min – max", "first passage (median)",
                            "epochs", "examples", "seconds", "best lr(s)", "regime"), table), ""]
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
                      if math.isfinite(fit.b_crit) and fit.b_crit > 0 else "")
                   + (f" Fitted to the median first passages instead, B_crit = {_g(st.fit_first_passage.b_crit)}: "
                      f"how much the criterion moves the knee." if st.fit_first_passage is not None else ""))
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


_SAMPLING_WORDS = {"fixed": "in the training set's order every epoch",
                   "shuffled": "from a fresh permutation of the rows every epoch",
                   "iid": "with replacement, every batch's rows uniformly and independently (`--sampling iid`)"}


def _stride_words(sci):
    """'' when every run measured its loss after every update, else which runs did so only every k-th."""
    strided = sorted({(t.batch_size, t.stride) for t in sci.results if t.stride > 1})
    if not strided:
        return ""
    return (" (where that costs too much, every k-th update: " + ", ".join(f"k = {k} at B = {b}" for b, k in strided)
            + "; counts there are the first measured update that qualifies)")


def _regime_sentence(st):
    if len(st.fitted_sizes) < 2:
        return "Too few batch sizes reached the target in at least half the seeds to name regimes."
    ranges = regime_ranges(st.fitted_sizes, st.regimes)
    parts = [f"{label} for B = {a}" + (f"–{b}" if b != a else "") for label, a, b in ranges]
    seen = {label for label, _, _ in ranges}
    missing = [r for r in batch_scaling.REGIMES if r not in seen]
    text = (f"**Regimes** (local slope of log S against log B below {batch_scaling.PERFECT_SLOPE} is perfect scaling, "
            f"above {batch_scaling.NO_BENEFIT_SLOPE} no benefit): " + "; ".join(parts) + ".")
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
    out += [markdown_table(("epoch", "updates", "training loss", "tr(Σ)", "|G|²", "B_simple (estimate)",
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
    on_path = [best(p) for p in sci.noise[:max(sci.path_points, 1)]]
    low, high = min(on_path), max(on_path)
    ratio, agrees = sci.agreement
    verdict = ("cannot be compared (B_crit is not finite, or the reference run has too few points)"
               if ratio is None else
               f"**{'agree' if agrees else 'do not agree'} within a factor of {AGREEMENT_FACTOR:g}** "
               f"(ratio {ratio:.2g})")
    out += [f"Predicted knee (McCandlish et al.'s comparison): B_simple averaged over the reference run's updates "
            f"until it reaches the target, {_g(sci.path_average)} (linear between the {sci.path_points} points "
            f"measured on that stretch, whose B_simple ranges from {_g(low)} to {_g(high)}; with few points the average is "
            f"rough, and one high point, such as the start, can carry it). Beside it, B_simple {where}: "
            f"{_g(sci.b_simple_at_target)} ({which}); at the target |G|² is smallest, so that value is the "
            f"largest along the path and overstates the knee. Measured knee: B_crit = {_g(b_crit)} from the "
            f"updates until the loss stays at or below the target. The path average and B_crit "
            f"{verdict}{_direction(b_crit, sci.path_average)}. B_simple is the noise scale without the Hessian "
            f"(B_noise = tr(HΣ) / (GᵀHG) weights the same quantities by the curvature); the two coincide when H is "
            f"a multiple of the identity. The reference run draws its batches as the grid does "
            f"({config.get('sampling') or 'fixed'}): the theory assumes batches drawn independently (`--sampling "
            f"iid`); epochs in a fixed order make a batch size's steps depend on which rows come last.", ""]
    return out
