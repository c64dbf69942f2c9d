"""The sweep's figures, one function per figure, drawn with matplotlib's Agg backend into PNG files.

Each figure states in its title what was run, so it reads without the code;
every line it draws has a legend entry, legends sit beside the axes (never over
the data), log axes say so, and the layout is matplotlib's constrained layout,
so no label is cut off.  Bands across seeds are the interquartile range (the
middle half of the seeds), not min-max, which one outlying seed stretches.
The numbers come from fastedf.study.report's summaries of the sweep rows.
"""
import os

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import ticker  # noqa: E402

from ..text import format_time  # noqa: E402
from . import batch_scaling  # noqa: E402
from .batch_scaling import updates_per_epoch  # noqa: E402
from .claims import engine_rows, loss_name, memory_growth, study_rows, study_runs, summarise, time_scaling  # noqa: E402
from .lr_grid import best_per_batch_and_seed  # noqa: E402
from .report import engine_label  # noqa: E402

DPI = 110
SCALING_LABELS = {"none": "fixed lr", "linear": "lr × B/B0", "sqrt": "lr × sqrt(B/B0)"}


def _subtitle(config):
    engines = config.get("engines") or [config["engine"]]
    engine = f"{config['engine']} engine" if len(engines) == 1 else f"engines {', '.join(engines)}"
    return (f"{engine}, {config['epochs']} epochs, lr {config['lr']:g}, "
            f"{config['seeds']} seed(s), {config['n_train']} training rows")


def _figure(width=9.0, height=4.5, ncols=1, **options):
    """A figure with constrained layout (labels, titles and outside legends all fit the canvas)."""
    return plt.subplots(1, ncols, figsize=(width, height), layout="constrained", **options)


def _legend(ax, handles=None):
    """The axes' legend, outside it on the right."""
    kwargs = {} if handles is None else {"handles": handles}
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kwargs)


def _quartiles(summary):
    """(25th, 75th) percentile over seeds per batch size: the band of the figures."""
    table = np.array(list(summary.per_seed.values()), dtype=float)
    if not table.size:
        return summary.low, summary.high
    return np.nanpercentile(table, 25, axis=0), np.nanpercentile(table, 75, axis=0)


BAND_LABEL = "band: middle half of the seeds (25th-75th percentile)"


def _log2_axis(ax, sizes):
    """A log2 x axis with a labelled tick per batch size; a label too close to the previous drops a line."""
    sizes = sorted({int(b) for b in sizes})
    labels = [str(b) for b in sizes]
    for i in range(1, len(sizes)):
        if np.log2(sizes[i] / sizes[i - 1]) < 0.5 and not labels[i - 1].startswith("\n"):
            labels[i] = "\n" + labels[i]  # e.g. 1024 and the full batch 1050
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes)
    ax.set_xticklabels(labels, fontsize=8)
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    if len(sizes) == 1:  # one batch size: an octave either side, so the single tick is not at an edge
        ax.set_xlim(sizes[0] / 2, sizes[0] * 2)
    ax.set_xlabel("batch size B (log2 scale)")
    ax.grid(True, which="major", alpha=0.3)


def _save(fig, out_dir, name):
    fig.savefig(os.path.join(out_dir, name), dpi=DPI)
    plt.close(fig)
    return name


def plot_time(rows, config, out_dir, name="time_vs_batch_size.png", all_rows=None):
    """Training time against B: median over seeds, min–max band, the ideal 1/B line and the overhead model.

    With more than one engine (all_rows holding their rows), one set of lines per engine.
    """
    engines = config.get("engines") or [config["engine"]]
    if len(engines) > 1 and all_rows is not None:
        return _plot_time_by_engine(all_rows, config, out_dir, name, engines)
    s = summarise(rows, "train_time_s")
    fig, ax = _figure()
    ax.fill_between(s.batch_sizes, *_quartiles(s), alpha=0.25, label=BAND_LABEL)
    ax.plot(s.batch_sizes, s.median, "o-", label="median over seeds")
    ax.plot(s.batch_sizes, s.median[0] * s.batch_sizes[0] / s.batch_sizes, "k--", lw=1,
            label=f"ideal 1/B from B = {s.batch_sizes[0]}")
    ts = time_scaling(rows, config["n_train"], config["epochs"])
    if ts is not None:
        ax.plot(s.batch_sizes, ts.model, ":", color="C3",
                label=f"fit: {format_time(ts.c_update)} per update + {format_time(ts.c_sample)} per sample")
    ax.set_yscale("log")
    _log2_axis(ax, s.batch_sizes)
    ax.set_ylabel(f"training time per run, s (log scale;\nmedian of {config['repeats']}, no compilation)")
    ax.set_title(f"Training time vs batch size\n{_subtitle(config)}", fontsize=10)
    _legend(ax)
    return _save(fig, out_dir, name)


def _plot_time_by_engine(rows, config, out_dir, name, engines):
    """plot_time with one colour per engine: median and band over seeds, its ideal 1/B line, its overhead model."""
    fig, ax = _figure(10, 5)
    for i, engine in enumerate(engines):
        mine = engine_rows(rows, config, engine)
        s = summarise(mine, "train_time_s")
        if not len(s.batch_sizes):
            continue
        label = engine_label(engine)
        ax.fill_between(s.batch_sizes, *_quartiles(s), color=f"C{i}", alpha=0.2)
        ax.plot(s.batch_sizes, s.median, "o-", color=f"C{i}", label=f"{label}: median over seeds ({BAND_LABEL})")
        ax.plot(s.batch_sizes, s.median[0] * s.batch_sizes[0] / s.batch_sizes, "--", color=f"C{i}", lw=0.8,
                alpha=0.7, label=f"{label}: ideal 1/B from B = {s.batch_sizes[0]}")
        ts = time_scaling(mine, config["n_train"], config["epochs"])
        if ts is not None:
            ax.plot(s.batch_sizes, ts.model, ":", color=f"C{i}", lw=1.2,
                    label=f"{label} fit: {format_time(ts.c_update)}/update + {format_time(ts.c_sample)}/sample")
    ax.set_yscale("log")
    lowest = min(np.min(summarise(engine_rows(rows, config, e), "train_time_s").low, initial=np.inf)
                 for e in engines)
    if np.isfinite(lowest):
        ax.set_ylim(bottom=lowest / 3)  # the ideal lines would pull the axis far below the data
    _log2_axis(ax, config["batch_sizes"])
    ax.set_ylabel(f"training time per run, s (log scale;\nmedian of {config['repeats']}, no compilation)")
    ax.set_title(f"Training time vs batch size, by implementation\n{_subtitle(config)}", fontsize=10)
    _legend(ax)
    return _save(fig, out_dir, name)


def plot_metric(rows, config, out_dir, field, label, name):
    """One metric against B: median over seeds with the interquartile band, one line per lr scaling."""
    fig, ax = _figure()
    for i, scaling in enumerate(config["lr_scaling"]):
        s = summarise(rows, field, scaling)
        ax.fill_between(s.batch_sizes, *_quartiles(s), color=f"C{i}", alpha=0.2)
        ax.plot(s.batch_sizes, s.median, "o-", color=f"C{i}",
                label=f"{SCALING_LABELS[scaling]}: median over seeds,\n{BAND_LABEL}")
    _log2_axis(ax, config["batch_sizes"])
    ax.set_ylabel(label)
    ax.set_title(f"{label} vs batch size\n{_subtitle(config)}", fontsize=10)
    _legend(ax)
    return _save(fig, out_dir, name)


def plot_memory(rows, config, out_dir, name="memory_vs_batch_size.png"):
    """Peak memory against B with the least-squares line (bytes per extra sample)."""
    mg = memory_growth(rows)
    s = mg.summary
    fig, ax = _figure()
    ax.plot(s.batch_sizes, s.median / 2**10, "o-", label="peak memory (memray, one epoch, seed 0)")
    ax.plot(s.batch_sizes, (mg.intercept + mg.per_sample * s.batch_sizes) / 2**10, "k--", lw=1,
            label=f"fit: {mg.per_sample:.3g} bytes per extra sample")
    _log2_axis(ax, s.batch_sizes)
    ax.set_ylim(bottom=0)  # from zero: a few KiB of growth must not look like an explosion
    ax.set_ylabel("peak memory, KiB (axis from 0)")
    ax.set_title(f"Peak memory of training vs batch size\n{_subtitle(config)}", fontsize=10)
    _legend(ax)
    return _save(fig, out_dir, name)


def plot_loss_curves(runs, config, out_dir, name="loss_curves.png"):
    """Per-epoch training loss (mean over seeds) per batch size, against epochs and against updates."""
    fig, (by_epoch, by_update) = _figure(12, 4.5, ncols=2, sharey=True)
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(config["batch_sizes"])))
    for colour, b in zip(colours, config["batch_sizes"]):
        curves = [runs[k]["epoch_loss"] for k in runs if k[0] == "none" and k[1] == b]
        if not curves or not curves[0]:
            continue
        mean = np.mean(curves, axis=0)
        epochs = np.arange(1, len(mean) + 1)
        by_epoch.plot(epochs, mean, color=colour, label=f"B = {b}")
        by_update.plot((epochs - 0.5) * updates_per_epoch(config["n_train"], b), mean, color=colour, label=f"B = {b}")
    by_epoch.set_xlabel("epoch")
    by_epoch.set_ylabel(f"mean training {loss_name(config)} of the epoch's batches (log scale)")
    by_epoch.set_title("against epochs", fontsize=10)
    by_update.set_xscale("log")
    by_update.set_xlabel("SGD updates (log scale, epoch midpoints)")
    by_update.set_title("against updates: curves that overlap\ndiffer only in update count", fontsize=10)
    for ax in (by_epoch, by_update):
        ax.set_yscale("log")  # the early epochs span far more than the late ones
        ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 1.5, 2, 3, 5, 7)))
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.2g"))
        ax.yaxis.set_minor_locator(ticker.NullLocator())
        ax.grid(True, alpha=0.3)
    _legend(by_update)
    fig.suptitle(f"Loss curves per batch size (fixed lr, mean over seeds)\n{_subtitle(config)}", fontsize=10)
    return _save(fig, out_dir, name)


def boundary_batch_sizes(batch_sizes, count=3):
    """A few batch sizes spread over the sweep: smallest, largest and evenly between on log2 B."""
    picks = np.unique(np.round(np.linspace(0, len(batch_sizes) - 1, min(count, len(batch_sizes)))).astype(int))
    return [batch_sizes[i] for i in picks]


def plot_decision_boundaries(runs, config, split, out_dir, seed=0, name="decision_boundaries.png"):
    """The training data of `seed` with the line p = 0.5 of the model trained at a few batch sizes.

    Logistic regression's boundary is where x @ A + b = 0, drawn as a contour of
    that score over a grid spanning the data.
    """
    X, y = split.X_train, split.y_train
    fig, ax = _figure(9, 5.5)
    for label, marker in ((0, "o"), (1, "^")):
        ax.scatter(*X[y == label].T, s=8, marker=marker, alpha=0.45, label=f"class {label} (training)")
    pad = 0.05 * (X.max(0) - X.min(0))
    g0, g1 = np.meshgrid(np.linspace(X[:, 0].min() - pad[0], X[:, 0].max() + pad[0], 200),
                         np.linspace(X[:, 1].min() - pad[1], X[:, 1].max() + pad[1], 200))
    handles = []
    for i, b in enumerate(boundary_batch_sizes(config["batch_sizes"])):
        run = runs.get(("none", b, seed))
        if run is None:
            continue
        A, bias = (np.asarray(p, dtype=float) for p in run["parameters"])
        score = g0 * A[0, 0] + g1 * A[1, 0] + bias.ravel()[0]
        ax.contour(g0, g1, score, levels=[0.0], colors=[f"C{i + 2}"], linewidths=2)
        handles.append(plt.Line2D([], [], color=f"C{i + 2}", lw=2, label=f"boundary, B = {b}"))
    _legend(ax, ax.get_legend_handles_labels()[0] + handles)
    ax.set_xlabel(config["features"][0])
    ax.set_ylabel(config["features"][1])
    ax.set_title(f"Decision boundaries p = 0.5 (seed {seed}, fixed lr)\n{_subtitle(config)}", fontsize=9)
    return _save(fig, out_dir, name)


# Every figure make_figures can write: a sweep with --overwrite or --no-figures removes them from --out.
FIGURES = ("time_vs_batch_size.png", "loss_vs_batch_size.png", "accuracy_vs_batch_size.png",
           "memory_vs_batch_size.png", "loss_curves.png", "decision_boundaries.png", "steps_to_target.png",
           "steps_to_target_by_lr.png", "noise_scale.png")


def make_figures(rows, runs, config, split, out_dir, science=None):
    """Every figure the rows support; returns the file names written in out_dir.

    rows and runs: every run of the sweep (runs keyed as fastedf.study.sweep keys
    them); science: a lr_grid.Science for the steps-to-target and
    noise-scale figures, or None.
    """
    all_rows, rows, runs = rows, study_rows(rows, config), study_runs(runs, config)
    names = [plot_time(rows, config, out_dir, all_rows=all_rows)] if config["epochs"] > 0 else []
    names += [plot_metric(rows, config, out_dir, "final_loss", f"final training loss (mean {loss_name(config)})",
                         "loss_vs_batch_size.png"),
             plot_metric(rows, config, out_dir, "test_accuracy", "test accuracy", "accuracy_vs_batch_size.png")]
    if memory_growth(rows) is not None:
        names.append(plot_memory(rows, config, out_dir))
    if config["epochs"] > 0:
        names.append(plot_loss_curves(runs, config, out_dir))
    if len(config["features"]) == 2 and not config.get("hidden") and config.get("classes", 1) == 1:
        names.append(plot_decision_boundaries(runs, config, split, out_dir))  # a line in the plane of the data
    if science is not None and science.steps is not None:
        names.append(plot_steps_to_target(science, config, out_dir))
        if len(config["lrs"]) > 1:
            names.append(plot_steps_by_lr(science, config, out_dir))
    if science is not None and science.noise:
        names.append(plot_noise_scale(science, config, out_dir))
    return names


REGIME_COLOURS = {"perfect scaling": "C2", "diminishing returns": "C1", "no benefit": "C3"}


def _loglog_axis(ax, sizes):
    _log2_axis(ax, sizes)
    ax.set_yscale("log")


def plot_steps_to_target(sci, config, out_dir, name="steps_to_target.png"):
    """Updates until the loss stays at or below the target against B (log-log): each seed's best-lr count, the
    median coloured by regime, the median first passage, the perfect-scaling line S ~ 1/B through the smallest B,
    the fit S_min (1 + B_crit / B) and the noise scale's predictions."""
    st = sci.steps
    fig, ax = _figure(10.5, 5)
    points = [t for t in best_per_batch_and_seed(sci.results).values() if t is not None]
    ax.plot([t.batch_size for t in points], [t.updates for t in points], ".", color="0.6", ms=5,
            label="each seed (its best lr)")
    sizes = [b for b, m in zip(st.batch_sizes, st.median) if m is not None]
    med = [m for m in st.median if m is not None]
    ax.plot(sizes, med, "-", color="0.3", lw=1, label="median over seeds")
    first = [(b, f) for b, f in zip(st.batch_sizes, st.first_passage) if f is not None]
    if first:
        ax.plot(*zip(*first), "x:", color="0.45", ms=5, label="median first passage (the first update at or below "
                "the target;\nthe loss may rise above it again)")
    labels = dict(zip(st.fitted_sizes, st.regimes))
    for regime, colour in REGIME_COLOURS.items():
        xs = [b for b in sizes if labels.get(b) == regime]
        if xs:
            ax.plot(xs, [med[sizes.index(b)] for b in xs], "o", color=colour, ms=7, label=f"median: {regime}")
    rest = [b for b in sizes if b not in labels]
    if rest:
        ax.plot(rest, [med[sizes.index(b)] for b in rest], "o", mfc="none", color="0.3", ms=7,
                label="median, fewer than half the seeds reached")
    grid = np.geomspace(min(st.batch_sizes), max(st.batch_sizes), 100)
    ax.plot(grid, med[0] * sizes[0] / grid, "k--", lw=1, label=f"perfect scaling S ~ 1/B from B = {sizes[0]}")
    if st.fit is not None and st.fit.s_min > 0:
        ax.plot(grid, batch_scaling.predicted_steps(grid, st.fit.s_min, st.fit.e_min), ":", color="C0", lw=1.5,
                label=f"fit S_min (1 + B_crit/B): S_min = {st.fit.s_min:.3g}")
        if np.isfinite(st.fit.b_crit) and grid[0] <= st.fit.b_crit <= grid[-1]:
            ax.axvline(st.fit.b_crit, color="C0", lw=0.8, alpha=0.6, label=f"B_crit = {st.fit.b_crit:.3g}")
    for value, what, style in ((sci.path_average, "B_simple averaged along the reference run", "-."),
                               (sci.b_simple_at_target, "B_simple where the reference run reached the target", ":")):
        if value is None or not np.isfinite(value) or value <= 0:
            continue
        label = f"{what}: {value:.3g}"
        if grid[0] / 2 <= value <= grid[-1] * 2:
            ax.axvline(value, color="C4", lw=1, ls=style, label=label)
        else:  # far outside the batch sizes: named, not drawn (it would squash the axis)
            ax.plot([], [], " ", label=label + " (off the axis)")
    _loglog_axis(ax, config["batch_sizes"])
    lowest = min([t.updates for t in points] + med + [f for _, f in first])
    ax.set_ylim(bottom=max(0.5, lowest / 3))  # the perfect-scaling line would pull the axis far below the data
    ax.set_ylabel("SGD updates until the whole-training-set loss\nstays at or below the target (log scale)")
    ax.set_title(f"Updates to the target, lr tuned per B over {len(config['lrs'])} values\n"
                 f"target: {sci.target_short}\n{_subtitle(config)}", fontsize=9)
    _legend(ax)
    return _save(fig, out_dir, name)


def plot_steps_by_lr(sci, config, out_dir, name="steps_to_target_by_lr.png"):
    """Median updates to the target against B for each lr of the grid (over the seeds that reached it)."""
    fig, ax = _figure(10, 5)
    lrs = sorted(config["lrs"])
    colours = plt.cm.plasma(np.linspace(0, 0.85, len(lrs)))
    for colour, lr in zip(colours, lrs):
        by_b = {}
        for t in sci.results:
            if np.isclose(t.lr, lr, rtol=1e-12) and t.updates is not None:
                by_b.setdefault(t.batch_size, []).append(t.updates)
        sizes = sorted(by_b)
        if sizes:
            ax.plot(sizes, [np.median(by_b[b]) for b in sizes], "o-", color=colour, ms=4, label=f"lr {lr:g}")
        else:  # named in the legend all the same: a missing lr would read as forgotten
            ax.plot([], [], "o-", color=colour, ms=4, label=f"lr {lr:g}: no batch size stays at or below the target")
    st = sci.steps
    sizes = [b for b, m in zip(st.batch_sizes, st.median) if m is not None]
    ax.plot(sizes, [m for m in st.median if m is not None], "k-", lw=2, alpha=0.4, label="best lr per B and seed")
    _loglog_axis(ax, config["batch_sizes"])
    ax.set_ylabel("SGD updates to the target (log scale;\nmedian over the seeds that reached it)")
    ax.set_title(f"Updates to the target for each learning rate\ntarget: {sci.target_short}\n"
                 f"{_subtitle(config)}", fontsize=9)
    _legend(ax)
    return _save(fig, out_dir, name)


def plot_noise_scale(sci, config, out_dir, name="noise_scale.png"):
    """B_simple along the reference run (estimate and exact), with B_crit from the steps to target."""
    points = sci.noise
    noise = config["noise"]
    fig, (ax, loss_ax) = _figure(13, 5, ncols=2)
    x = np.array([p["epoch"] for p in points], dtype=float)
    shown = np.maximum(x, 0.5)  # epoch 0 drawn at 0.5 on the log axis
    est = np.array([p["b_simple"] for p in points], dtype=float)
    ax.plot(shown, np.where(est > 0, est, np.nan), "o-", label=f"estimate ({noise['steps']} pairs of "
            f"B = {noise['b_small']}, {noise['b_big']})")
    if noise["exact"]:
        ax.plot(shown, [p["b_simple_exact"] for p in points], "k+", ms=9, label="exact, all per-sample gradients")
    if sci.steps is not None and sci.steps.fit is not None and np.isfinite(sci.steps.fit.b_crit):
        ax.axhline(sci.steps.fit.b_crit, color="C3", ls="--", lw=1,
                   label=f"B_crit from steps to target: {sci.steps.fit.b_crit:.3g}")
    if sci.path_average is not None:
        ax.axhline(sci.path_average, color="C4", ls="-.", lw=1,
                   label=f"B_simple averaged over the run to the target: {sci.path_average:.3g}")
    if sci.at_target is not None:
        ax.plot(max(sci.at_target["epoch"], 0.5), sci.b_simple_at_target, "s", mfc="none", color="C3", ms=12,
                label="where the training loss first reached the target" if sci.target_reached_in_noise_run
                else "last point (target not reached)")
    for a in (ax, loss_ax):
        a.set_xscale("log")
        a.set_xlabel("epochs trained (log scale; the start drawn at 0.5)")
        a.grid(True, alpha=0.3)
    ax.set_yscale("log")
    ax.set_ylabel("B_simple = tr(Σ) / |G|² (log scale)")
    ax.set_title("Gradient noise scale during training", fontsize=10)
    _legend(ax)
    loss_ax.plot(shown, [p["train_loss"] for p in points], "o-", color="C2", label="training loss")
    target = sci.targets.get(noise["seed"])
    if target is not None:
        loss_ax.axhline(target, color="k", ls=":", lw=1, label=f"seed {noise['seed']}'s target {target:.4g}")
    _legend(loss_ax)
    loss_ax.set_yscale("log")
    loss_ax.set_ylabel(f"training loss (log scale;\nmean {loss_name(config)}, whole training set)")
    loss_ax.set_title(f"The reference run: B = {noise['batch_size']}, lr {noise['lr']:g}, seed {noise['seed']}",
                      fontsize=10)
    fig.suptitle(f"B_simple over training\n{_subtitle(config)}", fontsize=10)
    return _save(fig, out_dir, name)
