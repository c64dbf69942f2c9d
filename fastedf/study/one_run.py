"""One run of the sweep: a RunSpec, trained by `execute` into its row and curve (on this process or a worker)."""
import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from ..guardrails import NO_GUARD, UsageError
from ..trainer import fit
from .batch_scaling import updates_per_epoch
from .data import Dataset
from .distributed import TIMING_SERIAL
from .memory import measure_peaks
from .options import EDF_ENGINE, model_of
from .results import NOISE_FIELDS
from .training import ModelSpec, loss_records, noise_trajectory, sampling_of, train_numpy_edf

@dataclass(frozen=True)
class RunSpec:
    """Everything one run needs: the data (split by seed in the run), the model, its key and how to train.

    checkpoints: None, or checkpoints per doubling of the update count for a
    run whose training loss is measured along the way (the lr grid).
    Picklable: a worker elsewhere can execute it.
    """

    dataset: Dataset = field(repr=False, compare=False)
    model: ModelSpec
    lr_scaling: str
    batch_size: int
    seed: int
    lr: float
    engine: str
    epochs: int
    repeats: int
    shuffle: bool
    checkpoints: int | None = None
    remeasure: bool = True  # time disturbed runs again (run_one's more_runs); not for a time thrown away
    sampling: str | None = None  # training.SAMPLINGS for the loss-measuring run; None: from shuffle

    @property
    def key(self):
        return self.lr_scaling, self.batch_size, self.seed, self.lr, self.engine


@dataclass
class Trained:
    """What run_one returns: the row's measured fields, fit's epoch losses, the trained parameters, checkpoints."""

    fields: dict
    epoch_loss: list
    parameters: list
    checkpoints: list | None = None
    records: dict | None = None  # training.LossRecords' fields, for steps to any target


def execute(spec, guard=NO_GUARD):
    """Train one RunSpec; returns (row, run): the results.csv row and the runs.jsonl entry.

    A pure function of the spec (apart from the timings): the data are split
    by seed here, the model is built here.  peak_memory_bytes is left None
    (memory is measured per batch size, by the caller).
    """
    trained = run_one(spec.dataset.split(spec.seed), spec.batch_size, spec.seed, spec.lr, spec.epochs, spec.engine,
                      spec.repeats, spec.shuffle, guard=guard, model=spec.model, classes=spec.dataset.classes,
                      checkpoints=spec.checkpoints, more_runs=MORE_RUNS if spec.remeasure else 0,
                      sampling=spec.sampling)
    names = {"lr_scaling": spec.lr_scaling, "batch_size": spec.batch_size, "seed": spec.seed, "lr": spec.lr,
             "engine": spec.engine}
    row = {**names, "epochs": spec.epochs, **trained.fields, "peak_memory_bytes": None, "timing": TIMING_SERIAL}
    run = {**names, "epoch_loss": trained.epoch_loss, "parameters": trained.parameters}
    if trained.checkpoints is not None:
        run["checkpoints"] = trained.checkpoints
        run.update(trained.records)
    return row, run


def execute_on_worker(dataset, timing, spec):
    """execute(spec) on a Dask worker (study.distributed), the spec sent without its data (`dataset`, sent once).

    timing "serial": one training run, for the row's losses, accuracy and
    curves (the sweep's process times the run afterwards, `time_here`);
    "concurrent": spec.repeats runs, and the worker's times stand.
    """
    concurrent = timing == "concurrent"
    return execute(dataclasses.replace(spec, dataset=dataset, repeats=spec.repeats if concurrent else 1,
                                       remeasure=concurrent))


def time_here(spec, row):
    """The time fields of a run a worker trained, from spec.repeats runs in this process (None: it diverged)."""
    if row["train_time_s"] is None:
        return None
    timed, _ = execute(dataclasses.replace(spec, checkpoints=None))
    return {name: timed[name] for name in TIME_FIELDS}


def warm_up_worker(config, dataset):
    """warm_up on a Dask worker, before its first run."""
    warm_up(config, dataset.split(0))


# A timed run is disturbed when its wall time exceeds what the CPU time of the thread that trained explains,
# beyond the timers' noise: wall > 1.5 x CPU + 2 ms, both over the whole training call.  Another process or
# thread taking the core (or the GIL) adds wall time and no CPU time to this thread.
DISTURBED_RATIO, DISTURBED_SLACK_S = 1.5, 2e-3
# Undisturbed repeats disagree when the slowest takes more than 1.5 x the fastest + 2 ms.
REPEATS_RATIO = 1.5
MORE_RUNS = 3  # timed runs added, at most, to replace disturbed or disagreeing ones
TIME_FIELDS = ("train_time_s", "cpu_time_s", "time_spread_s", "time_flag", "compile_time_s")


@dataclass(frozen=True)
class Timing:
    """One timed training run: fit's loop time and compile time, and the whole call's wall and thread CPU time."""

    train_s: float
    compile_s: float
    wall_s: float
    cpu_s: float

    @property
    def disturbed(self):
        return self.wall_s > DISTURBED_RATIO * self.cpu_s + DISTURBED_SLACK_S


def _kept(timings, repeats):
    """The `repeats` fastest undisturbed runs (fewer if there are not so many), fastest first."""
    return sorted((t for t in timings if not t.disturbed), key=lambda t: t.train_s)[:repeats]


def _settled(kept, repeats):
    """`repeats` undisturbed runs whose loop times agree: the slowest within REPEATS_RATIO x the fastest + 2 ms."""
    return len(kept) == repeats and kept[-1].train_s <= REPEATS_RATIO * kept[0].train_s + DISTURBED_SLACK_S


def _timing_unsettled(timings, repeats, more_runs):
    """Whether to time once more: not settled yet (_settled), and fewer than repeats + more_runs runs made."""
    return len(timings) < repeats + more_runs and not _settled(_kept(timings, repeats), repeats)


def robust_time(timings, repeats):
    """The row's time fields from its timed runs (see the constants above).

    The runs kept are the `repeats` fastest undisturbed ones (none undisturbed:
    the fastest run).  train_time_s: their median loop time; cpu_time_s: their
    median thread CPU time of the whole call (training, and fit's checks and
    compile: compile_time_s); time_spread_s: their loop times' max - min;
    time_flag: "" when the first `repeats` runs settled it (_settled),
    "remeasured" when more runs did, "unsettled" when MORE_RUNS more did not.
    """
    kept = _kept(timings, repeats)
    settled = _settled(kept, repeats)
    kept = kept or [min(timings, key=lambda t: t.train_s)]
    flag = "" if settled and len(timings) == repeats else "remeasured" if settled else "unsettled"
    return {"train_time_s": float(np.median([t.train_s for t in kept])),
            "cpu_time_s": float(np.median([t.cpu_s for t in kept])),
            "time_spread_s": float(kept[-1].train_s - kept[0].train_s if len(kept) > 1 else 0.0),
            "time_flag": flag, "compile_time_s": float(max(t.compile_s for t in timings))}


def run_one(split, batch_size, seed, lr, epochs, engine, repeats, shuffle, guard=NO_GUARD, model=ModelSpec(),
            classes=1, checkpoints=None, more_runs=MORE_RUNS, sampling=None):
    """Train `repeats` times from the same initialisation, more when disturbed; returns a Trained.

    The time fields are robust_time's: from the `repeats` fastest undisturbed
    runs, up to `more_runs` more runs made to replace disturbed or
    disagreeing ones; train_time_s is fit's training-loop time, which
    excludes compilation; compile_time_s is the largest compile time seen (the
    first run pays it, unless Numba's cache holds the program).  engine
    EDF_ENGINE runs the course loop on the NumPy EDF instead of fit
    (compile_time_s 0).  With `checkpoints` (per doubling), one more run first
    measures the whole-training-set loss after every update (or every
    training.loss_stride updates), its batches drawn by `sampling`
    (training.SAMPLINGS; None: fit's epochs, shuffled or not), keeping
    training.LossRecords and the curve at update counts 2**(k/checkpoints):
    fields gain min_loss and diverged_at_update, and a run that diverges there
    is recorded as such (no timed runs).  The timed runs are fit's epochs
    (an iid batch costs what an epoch's batch costs).  Only the training calls are interruptible (`guard`, an
    InterruptGuard).  A ValueError from training (the data or the lr make it
    fail) is a UsageError naming the run.
    """
    X, y = split.X_train, split.y_train
    where = f"batch size {batch_size}, seed {seed}, lr {lr:g}"
    total = epochs * updates_per_epoch(len(X), min(batch_size, len(X)))  # the updates of this run
    if checkpoints:
        probe = model.build(X.shape[1], classes, seed)
        try:
            with guard.training():
                records, curve, diverged = loss_records(probe, X, probe.labels(y), batch_size, epochs, lr,
                                                        sampling_of(shuffle, sampling), seed, checkpoints)
        except ValueError as error:
            raise UsageError(f"{where}: {error}") from None
        kept = dataclasses.asdict(records)
        extra = {"min_loss": records.lows[-1][1] if records.lows else None, "diverged_at_update": diverged}
        if diverged is not None:
            fields = {"updates": total, "train_time_s": None, "cpu_time_s": None, "time_spread_s": None,
                      "time_flag": "", "compile_time_s": 0.0, "final_loss": None, "test_accuracy": None, **extra}
            return Trained(fields, [], [], curve, kept)
    timings = []
    while _timing_unsettled(timings, repeats, more_runs):
        trained = model.build(X.shape[1], classes, seed)
        labels = trained.labels(y)
        try:
            with guard.training():
                wall, cpu = time.perf_counter(), time.thread_time()
                if engine == EDF_ENGINE:
                    epoch_loss, seconds, values = train_numpy_edf(trained, X, labels, batch_size, epochs, lr,
                                                                  shuffle, seed)
                    for p, value in zip(trained.parameters, values):
                        p.value = value
                    compile_s, updates = 0.0, total
                else:
                    history = fit(trained.loss, {trained.x: X, trained.y: labels}, batch_size=batch_size,
                                  epochs=epochs, lr=lr, shuffle=shuffle, seed=seed, engine=engine)
                    epoch_loss, updates = history.epoch_loss, history.updates
                    seconds, compile_s = history.train_time_s, history.compile_time_s
                timings.append(Timing(seconds, compile_s, time.perf_counter() - wall, time.thread_time() - cpu))
        except ValueError as error:
            raise UsageError(f"{where}: {error}") from None
    fields = {
        "updates": int(updates),
        **robust_time(timings, repeats),
        "final_loss": trained.mean_loss(split.X_train, split.y_train),
        "test_accuracy": trained.accuracy(split.X_test, split.y_test),
    }
    if checkpoints:
        fields.update(extra)
    parameters = [p.value.tolist() for p in trained.parameters]
    return Trained(fields, np.asarray(epoch_loss, dtype=float).tolist(), parameters,
                   curve if checkpoints else None, kept if checkpoints else None)


def warm_up(config, split, guard=NO_GUARD):
    """One untimed one-epoch run per engine, so compilation and first-call costs land before the timed runs.

    Returns the primary engine's compile time in seconds (0 when Numba's
    on-disk cache held the program).
    """
    seconds = None
    for engine in config["engines"]:
        trained = run_one(split, config["batch_sizes"][0], 0, config["lr"], min(config["epochs"], 1),
                          engine, 1, config["shuffle"], guard=guard, model=model_of(config),
                          classes=config["classes"], more_runs=0)
        seconds = trained.fields["compile_time_s"] if seconds is None else seconds
    return seconds


@dataclass(frozen=True)
class NoiseSpec:
    """The reference run of the noise-scale measurement (config["noise"]), as a unit a worker can execute."""

    dataset: Dataset = field(repr=False, compare=False)
    model: ModelSpec
    batch_size: int
    lr: float
    seed: int
    at_epochs: tuple
    engine: str
    shuffle: bool
    b_small: int
    b_big: int
    steps: int
    exact: bool
    sampling: str | None = None


def noise_spec(config, dataset):
    """The NoiseSpec of a configuration, or None when it measures no noise scale."""
    noise = config.get("noise")
    if not noise:
        return None
    return NoiseSpec(dataset, model_of(config), noise["batch_size"], noise["lr"], noise["seed"],
                     tuple(noise["at_epochs"]), config["engine"], config["shuffle"], noise["b_small"],
                     noise["b_big"], noise["steps"], noise["exact"], config.get("sampling"))


def execute_noise(spec, guard=NO_GUARD):
    """B_simple along the reference run: a list of noise.csv rows (dicts with NOISE_FIELDS), one per epoch asked."""
    split = spec.dataset.split(spec.seed)
    model = spec.model.build(split.X_train.shape[1], spec.dataset.classes, spec.seed)
    try:
        with guard.training():
            points = noise_trajectory(model, split.X_train, split.y_train, spec.batch_size,
                                      max(spec.at_epochs), spec.lr, sampling_of(spec.shuffle, spec.sampling),
                                      spec.seed, list(spec.at_epochs), spec.b_small, spec.b_big, spec.steps, spec.exact)
    except ValueError as error:
        raise UsageError(f"noise-scale run (batch size {spec.batch_size}, lr {spec.lr:g}): {error}") from None
    return [{name: point[name] for name in NOISE_FIELDS} for point in points]


def measure_memory(engine, batch_size, features, samples):
    """Peak bytes of one epoch of training at `batch_size`, from fastedf.study.memory (memray, in a fresh process)."""
    try:
        rows = measure_peaks(engine, [batch_size], features=features, samples=samples, epochs=1, seed=0)
    except ValueError as error:  # the child rejected the arguments
        raise UsageError(f"--memory: {error}") from None
    return int(rows[0]["peak_bytes"])
