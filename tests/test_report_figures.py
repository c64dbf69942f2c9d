"""Every figure of every sweep variant, rendered: no text leaves the canvas, every plotted line is in a legend;
every table of every report variant has as many cells per row as its header."""
import os
import re

import matplotlib
import pytest

from fastedf.__main__ import main
from fastedf.study import plots
from fastedf.study.claims import memory_growth
from fastedf.text import markdown_table

matplotlib.use("Agg")

BASE = ["--engine", "graph", "--epochs", "3", "--seeds", "2", "--repeats", "1", "--quiet"]
VARIANTS = {
    "study": ["--batch-sizes", "16,128,1050"],
    "lr grid": ["--batch-sizes", "16,128,1050", "--lrs", "0.3,1,3"],
    "lr grid, iid batches": ["--batch-sizes", "16,128,1050", "--lrs", "0.3,1,3", "--sampling", "iid"],
    "engines": ["--batch-sizes", "16,128,1050", "--with-edf"],
    "lr scaling": ["--batch-sizes", "16,128,1050", "--lr-scaling", "linear,sqrt"],
    "one batch size": ["--batch-sizes", "32"],
}


def figure_problems(fig):
    """What is wrong with a drawn figure: text outside the canvas, lines missing from every legend."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    width, height = fig.get_size_inches()
    box = fig.get_tightbbox(renderer)  # every drawn artist, in inches (what bbox_inches="tight" would keep)
    problems = []
    if box.x0 < -0.01 or box.y0 < -0.01 or box.x1 > width + 0.01 or box.y1 > height + 0.01:
        outside = [t.get_text() for t in fig.findobj(matplotlib.text.Text)
                   if t.get_visible() and t.get_text().strip() and t.axes is None or t in fig.texts]
        problems.append(f"drawn outside the {width:.3g} x {height:.3g} in canvas: {box} ({outside[:3]})")
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)
    entries = {t.get_text() for legend in legends for t in legend.get_texts()}
    for ax in fig.axes:
        for line in ax.lines:
            if len(line.get_xdata()) and line.get_label() not in entries:
                problems.append(f"line {line.get_label()!r} has no legend entry")
    return problems


@pytest.fixture
def checked_figures(monkeypatch):
    """plots._save, checking each figure before it is written: {file name: problems}."""
    seen = {}
    save = plots._save

    def checking(fig, out_dir, name, **kwargs):
        seen[name] = figure_problems(fig)
        seen[name + " axes"] = fig.axes
        return save(fig, out_dir, name, **kwargs)

    monkeypatch.setattr(plots, "_save", checking)
    return seen


def table_problems(text):
    """Markdown tables whose rows do not all have the header's number of cells (an unescaped | splits one)."""
    problems, table = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            counts = [len(re.split(r"(?<!\\)\|", row.strip())) - 2 for row in table]
            if len(set(counts)) > 1 or not re.fullmatch(r"\|(---\|)+", table[1]):
                problems.append(f"a table with {counts} cells per row, beginning {table[0][:60]!r}")
            table = []
    return problems


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_figure_and_table_of_a_sweep_variant(variant, checked_figures, tmp_path):
    out = str(tmp_path / "out")
    assert main(["sweep", *BASE, *VARIANTS[variant], "--out", out]) == 0
    names = [n for n in checked_figures if not n.endswith(" axes")]
    assert names and set(names) <= set(os.listdir(out))
    for name in names:
        assert checked_figures[name] == [], (variant, name)
    report = open(os.path.join(out, "report.md"), encoding="utf-8").read()
    assert table_problems(report) == [] and (report.count("\n|---") >= 2 or variant == "one batch size")
    if variant == "one batch size":  # one tick, the batch size, inside the axis
        for ax in checked_figures["loss_vs_batch_size.png axes"]:
            low, high = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if low <= t <= high]
            assert ticks == [32] and low < 32 < high
    if variant.startswith("lr grid"):
        assert "steps_to_target.png" in names and "noise_scale.png" in names
        assert "stays at or below the target" in report and "first passage" in report
        assert ("every batch's rows uniformly and independently" in report) == variant.endswith("iid batches")


def test_memory_figure_starts_at_zero_and_fits(checked_figures, tmp_path):
    rows = [{"lr_scaling": "none", "batch_size": b, "seed": 0, "peak_memory_bytes": 58_000 + 40 * b}
            for b in (1, 32, 1050)]
    config = {"engine": "compiled", "epochs": 1, "lr": 0.1, "seeds": 1, "n_train": 1050}
    assert memory_growth(rows) is not None
    plots.plot_memory(rows, config, str(tmp_path))
    assert checked_figures["memory_vs_batch_size.png"] == []
    (ax,) = checked_figures["memory_vs_batch_size.png axes"]
    assert ax.get_ylim()[0] == 0


def test_the_figure_check_finds_cut_labels_and_unnamed_lines():
    fig, ax = matplotlib.pyplot.subplots(figsize=(3, 2))
    ax.plot([1, 2], [1, 2], label="named")
    ax.plot([1, 2], [2, 1])
    ax.legend(handles=ax.lines[:1])
    ax.set_ylabel("a label much too long for this small figure to hold without cutting it off\n" * 3)
    problems = figure_problems(fig)
    matplotlib.pyplot.close(fig)
    assert any("outside" in p for p in problems) and any("no legend entry" in p for p in problems)


def test_markdown_cells_are_escaped():
    table = markdown_table(("epoch", "|G|²"), [(1, "a|b")])
    assert table.splitlines()[0] == "| epoch | \\|G\\|² |" and table_problems(table + "\n") == []
    assert table_problems("| a | b |\n|---|---|\n| 1 | 2 | 3 |\n")
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        markdown_table(("a", "b", "c"), [(1, 2)])
