"""`fastedf sweep`: the batch-size study in one command, and the batch-size science past it.

For every (lr_scaling, batch_size, seed) the sweep trains a model (logistic
regression by default, `--model mlp` for an MLP; fastedf.study.training.ModelSpec)
with fastedf.fit and records one row: SGD updates, training time (median of
`repeats` runs, compilation excluded), compile time, the final mean loss over
the whole training set, test accuracy and, with --memory, the peak memory of
training at that batch size.  Options add runs, each one more row:

- `--lrs a,b,c` (or `--target-loss L`): every batch size and seed is trained
  at every learning rate of the grid, its whole-training-set loss measured
  after every update (fastedf.study.training.loss_records); rows gain the
  columns min_loss and diverged_at_update, runs.jsonl the loss records and a
  curve at geometrically spaced update counts, and the report counts the updates each batch size needs to
  reach a target loss (fastedf.study.lr_grid); a reference run measures the
  gradient noise scale during training (noise.csv);
- `--engine compiled,graph` and `--with-edf`: the fixed-lr runs again on the
  other engines and on the course's NumPy EDF loop, for the time comparison.

A run is a RunSpec; `execute(spec)` trains it and returns its row and curve, a
pure function of the spec (it could run on another worker).

Files in --out (default: a new directory results/<UTC time> per sweep, results/latest pointing at it):
  results.csv   one row per run, appended and flushed as each run finishes
                (columns ROW_FIELDS, then TARGET_FIELDS when the lr grid runs; the time
                columns from fastedf.study.one_run.robust_time)
  runs.jsonl    per run: the epoch loss curve, the trained parameters and,
                for grid runs, the checkpoints [[updates, training loss], ...]
                (written before the row, so every row has its curve)
  noise.csv     with the lr grid: B_simple along the reference run (NOISE_FIELDS)
  steps_to_target.csv  with the lr grid: every grid run's updates, epochs,
                examples and seconds to the target, and which lr was best
  results.json  configuration, environment and rows (rewritten at the start,
                on Ctrl-C and at the end; "complete" says which)
  *.png         the figures (fastedf.study.plots); report.md (fastedf.study.report)
  .fastedf.lock the lock: the pid of the sweep writing the directory

Guarantees:
- results are never lost: an --out holding an earlier sweep's files is refused
  unless --resume (which checks that the data and options are the same) or
  --overwrite (which removes only the files a sweep writes); a sweep leaves no
  earlier sweep's figures beside its report;
- one writer per --out: a second sweep on the same directory refuses (guardrails.DirectoryLock);
- a time disturbed by another process (wall beyond the training thread's CPU
  time) or repeats that disagree are measured again, and flagged (time_flag);
- a finished run survives Ctrl-C and a kill: its row is flushed to disk before
  the next run starts; Ctrl-C while a run trains stops it (that run is redone
  by --resume), Ctrl-C at any other moment waits until the current row is
  written; results.json then says complete: false, and the exit code is 130;
- --resume reads rows back through the same checks as rows produced
  (`row_problem`, `run_problem`, `noise_problem`): a hand-edited or damaged row
  is refused with one line naming the file and the line; only a last line cut
  short by a kill is dropped and its run redone;
- options this machine cannot finish (memory, disk, or a week at fastedf's
  fastest speed) are refused before anything runs, naming what fits.

On a Dask cluster (`--workers N`: a LocalCluster of N single-threaded worker
processes; `--scheduler ADDRESS`: a running cluster; fastedf.study.distributed):
the workers execute the runs and this process writes each row as it arrives,
in the same files, under the same lock, resumable the same way; the files
are put in the serial order at the end.  Times stay honest (the rule in
fastedf.study.distributed): with `--timing serial` (the default) a worker trains a
run once, for its loss, accuracy and curves, and this process times it with
--repeats runs while the workers have nothing to run; `--timing concurrent`
keeps the workers' own times, measured side by side.  The `timing` column
says which: serial (a sweep in one process), serial-client or
worker-concurrent.  A worker that dies loses only its run, which is redone
elsewhere and written once; Ctrl-C cancels what is still running and keeps
every row already written.
"""
import csv
import dataclasses
import functools
import json
import os
import sys

from ..errors import EXIT_INTERRUPTED
from ..guardrails import (LATEST, NO_GUARD, InterruptGuard, Progress, UsageError, environment,
                          existing_files, fresh_output_dir, latest_output_dir, path_error, refuse_earlier_results,
                          refuse_other_commands_files, remove_files)
from . import memory, plots, report
from .distributed import Grid, probe_scheduler, require_dask
from .lr_grid import analyse, best_per_batch_and_seed
from .options import RESULTS_ROOT, build_config, build_parser, load_dataset, model_of, refuse_what_cannot_finish
from .results import ResultsDir, checkpointed, noise_problem, planned_lrs, row_problem, run_problem
from .one_run import (RunSpec, execute, execute_noise, execute_on_worker, measure_memory, noise_spec, time_here,
                      warm_up, warm_up_worker)

def run_specs(config, dataset):
    """The RunSpec of every run of the sweep, in sweep order (_todo)."""
    model = model_of(config)
    return [RunSpec(dataset, model, scaling, b, seed, lr, engine, config["epochs"], config["repeats"],
                    config["shuffle"], config["checkpoints_per_doubling"] if checkpointed(config, scaling, engine)
                    else None, config.get("sampling"))
            for scaling, b, seed, lr, engine in _todo(config)]


def sweep_batch_sizes(config, dataset, out, done, quiet=False, guard=NO_GUARD):
    """Run every run of the sweep not in `done` ({key: row}, updated in place).

    Batch sizes run in order, so an interrupted sweep has its small batches
    complete; each seed's split is made when its run starts (execute),
    never all at once.  Returns all rows in sweep order.
    """
    todo = _todo(config)
    peaks = {key[1]: row["peak_memory_bytes"] for key, row in done.items()}
    remaining = [spec for spec in run_specs(config, dataset) if spec.key not in done]
    bar = Progress(len(todo), len(todo) - len(remaining), "fastedf sweep", quiet)
    try:
        for spec in remaining:
            bar.describe(f"B={spec.batch_size} seed={spec.seed} lr={spec.lr:g} {spec.engine}")
            _measure_peak(config, spec, peaks, guard)
            row, run = execute(spec, guard)
            _record(config, out, done, spec, row, run, peaks)
            bar.update()
            guard.check()  # a Ctrl-C that came after training stops the sweep here, its row safe
    finally:
        bar.close()
    return [done[key] for key in todo]


def sweep_on_cluster(config, dataset, out, done, grid, quiet=False, guard=NO_GUARD):
    """sweep_batch_sizes with the runs executed on a Dask cluster (grid: an open fastedf.study.distributed.Grid).

    Each row is written here as it arrives (timed here first with --timing
    serial, while the workers wait); memory is measured here, one batch size
    at a time; the files are put in sweep order at the end.  Returns all rows
    in sweep order.
    """
    todo = _todo(config)
    peaks = {key[1]: row["peak_memory_bytes"] for key, row in done.items()}
    remaining = [spec for spec in run_specs(config, dataset) if spec.key not in done]
    bar = Progress(len(todo), len(todo) - len(remaining), f"fastedf sweep on {grid.threads} workers", quiet)

    def on_result(spec, result, timed):
        row, run = result
        row.update(timed.value or {}, timing=timed.how)
        _measure_peak(config, spec, peaks, guard)
        _record(config, out, done, spec, row, run, peaks)
        bar.update()
        guard.check()  # a Ctrl-C that came while the row was written stops the sweep here, its row safe

    def time_one(spec, result):  # in this process, while the workers have nothing to run
        return time_here(dataclasses.replace(spec, dataset=dataset), result[0])

    try:
        grid.run(functools.partial(execute_on_worker, dataset, config["timing"]),
                 [dataclasses.replace(spec, dataset=None) for spec in remaining], on_result=on_result,
                 time_one=time_one if config["timing"] == "serial" else None,
                 warm_up=functools.partial(warm_up_worker, config, dataset), interruptible=guard.training)
    finally:
        bar.close()
    rows = [done[key] for key in todo]
    out.put_in_order(rows)
    return rows


def _measure_peak(config, spec, peaks, guard):
    """With --memory, the peak memory at this run's batch size, measured once per batch size (in `peaks`)."""
    if config["memory"] and peaks.get(spec.batch_size) is None:
        with guard.training():
            peaks[spec.batch_size] = measure_memory(config["engine"], spec.batch_size, len(config["features"]),
                                                    config["n_train"])


def _record(config, out, done, spec, row, run, peaks):
    """Check a finished run as --resume would, write its curve and row (out.append) and add the row to done."""
    if config["memory"]:
        row["peak_memory_bytes"] = peaks.get(spec.batch_size)
    problem = row_problem(row, config) or run_problem(run, config)
    if problem:
        raise RuntimeError(f"fastedf made a row it would not read back: {problem}")
    out.append(row, run)
    done[spec.key] = row


def measure_noise(config, dataset, out, guard=NO_GUARD):
    """The reference run's noise points: those kept by --resume, else measured now and written to noise.csv."""
    spec = noise_spec(config, dataset)
    if spec is None:
        return []
    if out.noise_points:
        return out.noise_points
    points = execute_noise(spec, guard)
    for point in points:
        problem = noise_problem(point, config)
        if problem:
            raise RuntimeError(f"fastedf made a noise point it would not read back: {problem}")
    out.write_noise(points)
    guard.check()
    return points


def _todo(config):
    """Every run's key (lr_scaling, batch_size, seed, lr, engine): by batch size, then scaling, lr, engine, seed.

    The primary engine runs every scaling (and, with the grid, every lr); the
    other engines only the fixed lr.
    """
    engines = config.get("engines") or [config["engine"]]
    keys = []
    for b in config["batch_sizes"]:
        for scaling in config["lr_scaling"]:
            for engine in engines if scaling == "none" else engines[:1]:
                for lr in planned_lrs(config, scaling, b, engine):
                    keys += [(scaling, b, seed, lr, engine) for seed in range(config["seeds"])]
    return keys


STEPS_FIELDS = ("batch_size", "seed", "lr", "target_loss", "updates_to_target", "epochs_to_target",
                "examples_to_target", "seconds_to_target", "first_passage", "loss_stride", "best")


def write_steps_to_target(path, results, targets):
    """steps_to_target.csv: every grid run's cost to the target (empty: not reached), best = 1 for the lr kept.

    updates_to_target: the first update after which the whole-training-set loss stays at or below the target;
    first_passage: the first update at or below it; loss_stride: the updates between loss measurements.

    results: lr_grid.RunToTarget per run; targets: {seed: loss}; best: the fewest updates for its
    (batch_size, seed), ties to the smaller lr.
    """
    best = {id(t) for t in best_per_batch_and_seed(results).values() if t is not None}
    try:
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, STEPS_FIELDS)
            writer.writeheader()
            for t in results:
                writer.writerow({"batch_size": t.batch_size, "seed": t.seed, "lr": t.lr, "target_loss": targets[t.seed],
                                 "updates_to_target": "" if t.updates is None else t.updates,
                                 "epochs_to_target": "" if t.epochs is None else t.epochs,
                                 "examples_to_target": "" if t.examples is None else t.examples,
                                 "seconds_to_target": "" if t.seconds is None else t.seconds,
                                 "first_passage": "" if t.first_passage is None else t.first_passage,
                                 "loss_stride": t.stride, "best": int(id(t) in best)})
    except OSError as error:
        raise path_error(error, path, "write") from None


def _sweep_on_cluster(args, config, dataset, out, done, guard):
    """sweep_on_cluster on the cluster --workers or --scheduler names; a LocalCluster is stopped afterwards."""
    grid = Grid(workers=args.workers, scheduler=args.scheduler)
    try:
        with guard.training():  # Ctrl-C while the cluster starts stops at once
            grid.open()
        if not args.quiet:
            print(f"fastedf sweep: {grid.threads} Dask worker threads; dashboard {grid.dashboard_link}",
                  file=sys.stderr)
        return sweep_on_cluster(config, dataset, out, done, grid, quiet=args.quiet, guard=guard)
    finally:
        grid.close()


STEPS_FILE, REPORT_FILE = "steps_to_target.csv", "report.md"


def _output_dir(args):
    """--out, or for the default output a new directory in RESULTS_ROOT (with --resume: the latest one)."""
    if args.out is not None:
        return args.out
    if not args.resume:
        return fresh_output_dir(RESULTS_ROOT)
    latest = latest_output_dir(RESULTS_ROOT)
    if latest is None:
        raise UsageError(f"--resume without --out resumes {os.path.join(RESULTS_ROOT, LATEST)}, and there is "
                         "none: name the sweep's directory with --out")
    if not os.path.isdir(latest):  # removed since: resuming would start an empty sweep under its name
        raise UsageError(f"--resume without --out resumes {os.path.join(RESULTS_ROOT, LATEST)}, which names "
                         f"{latest}, and that directory is gone: name the sweep's directory with --out")
    return latest


def _derived_files(out):
    """The files a sweep makes from all rows at the end (report, steps to target, figures: this version's and those
    its results.json lists), which a resumed sweep rewrites."""
    return [REPORT_FILE, STEPS_FILE, *plots.FIGURES, *_figures_listed(out.json_path)]


def _figures_listed(json_path):
    """The figure names an earlier sweep's results.json lists (plain .png names only), or none."""
    try:
        with open(json_path, encoding="utf-8") as handle:
            figures = json.load(handle).get("figures", [])
    except (OSError, ValueError, AttributeError, RecursionError):
        return []
    return [name for name in figures if isinstance(name, str) and name.endswith(".png")
            and os.path.basename(name) == name and not name.startswith(".")]


def main(argv=None):
    """`fastedf sweep [options]`; returns the exit code.  Bad input raises UsageError (exit 2 in fastedf.__main__)."""
    args = build_parser().parse_args(argv)
    if args.resume and args.overwrite:
        raise UsageError("--resume keeps the rows in --out and --overwrite removes them: give one of the two")
    if args.scheduler is not None and not args.scheduler.strip():
        raise UsageError(f"--scheduler is empty ({args.scheduler!r}; an unset shell variable?): give the scheduler's "
                         "address, e.g. tcp://10.0.0.5:8786, or leave the option out to train here")
    if args.timing != "serial" and not (args.workers or args.scheduler):
        raise UsageError(f"--timing {args.timing} needs --workers or --scheduler")
    if args.workers or args.scheduler:
        require_dask()  # before anything is read or written: one line saying what to install
    if args.scheduler:
        probe_scheduler(args.scheduler)  # nothing listening is known at once, before the data are read
    dataset = load_dataset(args)
    first = dataset.split(0)
    n_train, n_test = len(first.y_train), len(first.y_test)
    if n_train == 0 or n_test == 0:
        raise UsageError(f"{dataset.source}: too few rows for a train/test split ({n_train} train, {n_test} test)")
    config = build_config(args, dataset, n_train, n_test)
    refuse_what_cannot_finish(config, (n_train + n_test) * (len(config["features"]) + 1) * 8,
                              args.out or RESULTS_ROOT, args.workers)
    out = ResultsDir(_output_dir(args))
    out.claim()
    try:
        foreign = existing_files(out.path, memory.OUTPUT_FILES)
        if foreign:
            raise refuse_other_commands_files(out.path, foreign, "fastedf memory")
        derived = _derived_files(out)  # before out.start rewrites results.json without its figure list
        earlier = existing_files(out.path, [*ResultsDir.FILES, *derived])
        if earlier and not (args.resume or args.overwrite):
            raise refuse_earlier_results(out.path, earlier, "an earlier sweep's results",
                                         "add --resume to finish that sweep or --overwrite to replace it")
        if args.overwrite:
            remove_files(earlier)
        env = environment()
        done = out.start(config, env, args.resume)
        remove_files(existing_files(out.path, derived))  # rewritten from all rows
        resumed = len(done)
        todo = _todo(config)
        with InterruptGuard() as guard:
            try:
                warmup_compile_s = (warm_up(config, first, guard) if resumed < len(todo) else 0.0)
                if args.workers or args.scheduler:
                    rows = _sweep_on_cluster(args, config, dataset, out, done, guard)
                else:
                    rows = sweep_batch_sizes(config, dataset, out, done, quiet=args.quiet, guard=guard)
                noise = measure_noise(config, dataset, out, guard)
            except KeyboardInterrupt:
                kept = [done[key] for key in todo if key in done]
                out.write_json(config, env, kept, complete=False, extra={"interrupted": True,
                                                                         "resumed_rows": resumed})
                print(f"fastedf sweep: interrupted; {len(kept)} of {len(todo)} runs kept in "
                      f"{out.csv_path}; rerun with --resume to finish", file=sys.stderr)
                return EXIT_INTERRUPTED
        runs = out.runs()
        science = None
        if config.get("lrs"):
            science = analyse(rows, runs, noise, config)
            write_steps_to_target(os.path.join(out.path, STEPS_FILE), science.results, science.targets)
        figures = []
        if args.figures:
            figures = plots.make_figures(rows, runs, config, first, out.path, science)
        report_path = os.path.join(out.path, REPORT_FILE)
        text = report.render(rows, runs, config, env, figures, warmup_compile_s, science)
        try:
            with open(report_path, "w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as error:
            raise path_error(error, report_path, "write") from None
        extra = {"figures": figures, "resumed_rows": resumed, "warmup_compile_time_s": warmup_compile_s}
        if science is not None:
            extra.update(science.summary())
        out.write_json(config, env, rows, complete=True, extra=extra)
    finally:
        out.close()  # every finished row is already on disk; this releases the files and the lock
    if not args.quiet:
        print(f"{len(rows)} runs ({resumed} resumed) -> {out.csv_path}, {report_path}", file=sys.stderr)
    return 0
