"""The sweep's figures, one function per figure, drawn with matplotlib's Agg backend into PNG files.

Each figure states in its title what was run, so it reads without the code.
The numbers come from fastedf.report's summaries of the sweep rows.
"""
import os

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import ticker  # noqa: E402

from .report import format_time, memory_growth, summarise, time_scaling, updates_per_epoch  # noqa: E402

DPI = 110
SCALING_LABELS = {"none": "fixed lr", "linear": "lr × B/B0", "sqrt": "lr × sqrt(B/B0)"}


def _subtitle(config):
    return (f"{config['engine']} engine, {config['epochs']} epochs, lr {config['lr']:g}, "
            f"{config['seeds']} seed(s), {config['n_train']} training rows")


def _log2_axis(ax, sizes):
    """A log2 x axis with a labelled tick per batch size; a label too close to the previous drops a line."""
    sizes = [int(b) for b in sizes]
    labels = [str(b) for b in sizes]
    for i in range(1, len(sizes)):
        if np.log2(sizes[i] / sizes[i - 1]) < 0.5 and not labels[i - 1].startswith("\n"):
            labels[i] = "\n" + labels[i]  # e.g. 1024 and the full batch 1050
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes)
    ax.set_xticklabels(labels, fontsize=8)
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlabel("batch size B (log2 scale)")
    ax.grid(True, which="major", alpha=0.3)


def _save(fig, out_dir, name, **margins):
    # Fixed margins: tight_layout would measure every label and cost more than the drawing.
    fig.subplots_adjust(**{"left": 0.12, "right": 0.97, "bottom": 0.14, "top": 0.86, **margins})
    fig.savefig(os.path.join(out_dir, name), dpi=DPI)
    plt.close(fig)
    return name


def plot_time(rows, config, out_dir, name="time_vs_batch_size.png"):
    """Training time against B: median over seeds, min–max band, the ideal 1/B line and the overhead model."""
    s = summarise(rows, "train_time_s")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.fill_between(s.batch_sizes, s.low, s.high, alpha=0.25, label="min – max over seeds")
    ax.plot(s.batch_sizes, s.median, "o-", label="median over seeds")
    ax.plot(s.batch_sizes, s.median[0] * s.batch_sizes[0] / s.batch_sizes, "k--", lw=1,
            label=f"ideal 1/B from B = {s.batch_sizes[0]}")
    ts = time_scaling(rows, config["n_train"], config["epochs"])
    if ts is not None:
        ax.plot(s.batch_sizes, ts.model, ":", color="C3",
                label=f"fit: {format_time(ts.c_update)} per update + {format_time(ts.c_sample)} per sample")
    ax.set_yscale("log")
    _log2_axis(ax, s.batch_sizes)
    ax.set_ylabel(f"training time per run, s (median of {config['repeats']}, no compilation)")
    ax.set_title(f"Training time vs batch size\n{_subtitle(config)}", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, out_dir, name)


def plot_metric(rows, config, out_dir, field, label, name):
    """One metric against B: mean over seeds with a min–max band, one line per lr scaling."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, scaling in enumerate(config["lr_scaling"]):
        s = summarise(rows, field, scaling)
        ax.fill_between(s.batch_sizes, s.low, s.high, color=f"C{i}", alpha=0.2)
        ax.plot(s.batch_sizes, s.mean, "o-", color=f"C{i}",
                label=f"{SCALING_LABELS[scaling]}: mean, band min – max over seeds")
    _log2_axis(ax, config["batch_sizes"])
    ax.set_ylabel(label)
    ax.set_title(f"{label} vs batch size\n{_subtitle(config)}", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, out_dir, name)


def plot_memory(rows, config, out_dir, name="memory_vs_batch_size.png"):
    """Peak memory against B with the least-squares line (bytes per extra sample)."""
    mg = memory_growth(rows)
    s = mg.summary
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(s.batch_sizes, s.median / 2**10, "o-", label="peak memory (memray, one epoch, seed 0)")
    ax.plot(s.batch_sizes, (mg.intercept + mg.per_sample * s.batch_sizes) / 2**10, "k--", lw=1,
            label=f"fit: {mg.per_sample:.3g} bytes per extra sample")
    _log2_axis(ax, s.batch_sizes)
    ax.set_ylabel("peak memory, KiB")
    ax.set_title(f"Peak memory of training vs batch size\n{_subtitle(config)}", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, out_dir, name)


def plot_loss_curves(runs, config, out_dir, name="loss_curves.png"):
    """Per-epoch training loss (mean over seeds) per batch size, against epochs and against updates."""
    fig, (by_epoch, by_update) = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(config["batch_sizes"])))
    for colour, b in zip(colours, config["batch_sizes"]):
        curves = [runs[k]["epoch_loss"] for k in runs if k[0] == "none" and k[1] == b]
        if not curves or not curves[0]:
            continue
        mean = np.mean(curves, axis=0)
        epochs = np.arange(1, len(mean) + 1)
        by_epoch.plot(epochs, mean, color=colour, label=f"B = {b}")
        by_update.plot((epochs - 0.5) * updates_per_epoch(b, config["n_train"]), mean, color=colour)
    by_epoch.set_xlabel("epoch")
    by_epoch.set_ylabel("mean training BCE of the epoch's batches")
    by_epoch.set_title("against epochs", fontsize=10)
    by_update.set_xscale("log")
    by_update.set_xlabel("SGD updates (log scale, epoch midpoints)")
    by_update.set_title("against updates: curves that overlap differ only in update count", fontsize=10)
    for ax in (by_epoch, by_update):
        ax.set_yscale("log")  # the early epochs span far more than the late ones
        ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 1.5, 2, 3, 5, 7)))
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.2g"))
        ax.yaxis.set_minor_locator(ticker.NullLocator())
        ax.grid(True, alpha=0.3)
    by_epoch.legend(fontsize=7, ncol=2)
    fig.suptitle(f"Loss curves per batch size (fixed lr, mean over seeds)\n{_subtitle(config)}", fontsize=10)
    return _save(fig, out_dir, name, left=0.07, right=0.99, bottom=0.12, top=0.82, wspace=0.05)


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
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
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
    ax.legend(handles=ax.get_legend_handles_labels()[0] + handles, fontsize=8, loc="best")
    ax.set_xlabel(config["features"][0])
    ax.set_ylabel(config["features"][1])
    ax.set_title(f"Decision boundaries p = 0.5 (seed {seed}, fixed lr)\n{_subtitle(config)}", fontsize=9)
    return _save(fig, out_dir, name)


def make_figures(rows, runs, config, split, out_dir):
    """Every figure the rows support; returns the file names written in out_dir."""
    names = [plot_time(rows, config, out_dir)] if config["epochs"] > 0 else []  # no time to plot on a log axis
    names += [plot_metric(rows, config, out_dir, "final_loss", "final training loss (mean BCE)",
                         "loss_vs_batch_size.png"),
             plot_metric(rows, config, out_dir, "test_accuracy", "test accuracy", "accuracy_vs_batch_size.png")]
    if memory_growth(rows) is not None:
        names.append(plot_memory(rows, config, out_dir))
    if config["epochs"] > 0:
        names.append(plot_loss_curves(runs, config, out_dir))
    if len(config["features"]) == 2:  # a boundary in the plane of the data
        names.append(plot_decision_boundaries(runs, config, split, out_dir))
    return names
