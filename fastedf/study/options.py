"""The sweep's options: its command line, the configuration built from it, and what it would cost."""
import argparse
import math

from ..guardrails import (SECONDS_PER_ELEMENT, SECONDS_PER_FIT, SECONDS_PER_PROCESS, SECONDS_PER_UPDATE, ArgumentParser,
                          Cost, UsageError, available_memory_bytes, float_list, int_list, nonnegative_int,
                          positive_float, positive_int, refuse_unless_it_fits)
from ..models import ACTIVATIONS
from ..text import format_bytes
from ..trainer import ENGINES
from .batch_scaling import updates_per_epoch
from .data import Dataset, load_csv, load_digits_dataset
from .distributed import TIMING_CLIENT, TIMING_SERIAL, TIMING_WORKERS
from .training import (CHECKPOINTS_PER_DOUBLING, EXACT_NOISE_ROWS, LOSS_BUDGET, NOISE_B_BIG, NOISE_B_SMALL, NOISE_STEPS,
                       SAMPLINGS, ModelSpec, noise_epochs, sampling_of)

LR_SCALINGS = ("none", "linear", "sqrt")
EDF_ENGINE = "numpy_edf"  # --with-edf: the course loop on fastedf.numpy_edf, timed like an engine
ALLOWED_TIMINGS = {"serial": (TIMING_SERIAL, TIMING_CLIENT), "concurrent": (TIMING_WORKERS,)}  # per --timing
DIGITS = ("digits", "digits-binary")  # --data names of scikit-learn's 8x8 digits
RESULTS_ROOT = "results"  # where the default output directories are made, one per sweep
DEFAULT_NOISE_BATCH = 32  # the reference run's batch size for the noise scale (clipped to the training rows)


def default_batch_sizes(n_train):
    """1, 2, 4, ... while below n_train, then n_train itself (full-batch gradient descent)."""
    sizes = [2**k for k in range(n_train.bit_length()) if 2**k < n_train]
    return sizes + [n_train]


def scaled_lr(lr, scaling, batch_size, base_batch_size):
    """The learning rate at a batch size: lr, lr * B/B0 (linear) or lr * sqrt(B/B0) (sqrt)."""
    ratio = batch_size / base_batch_size
    return lr * {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[scaling]


def lr_scalings(text):
    """An argparse type: lr scalings, comma-separated; 'none' (the study) is always run as the reference."""
    names = [name.strip() for name in text.split(",")]
    for name in names:
        if name not in LR_SCALINGS:
            raise argparse.ArgumentTypeError(f"unknown scaling {name!r} (choose from {', '.join(LR_SCALINGS)})")
    return ["none"] + [name for name in LR_SCALINGS[1:] if name in names]


def target_value(text):
    """An argparse type: ("loss", L) for a number L > 0, or ("factor", F) for 'Fx' with F >= 1 (e.g. '1.05x')."""
    text = text.strip()
    if text.lower().endswith("x"):
        factor = positive_float(text[:-1])
        if factor < 1:
            raise argparse.ArgumentTypeError(f"a relative target needs a factor >= 1, got {text!r}")
        return ("factor", factor)
    return ("loss", positive_float(text))


def engine_list(text):
    """An argparse type: fit's engines, comma-separated, each once, e.g. 'compiled,graph' (the first is primary)."""
    names = [name.strip() for name in text.split(",")]
    for name in names:
        if name not in ENGINES:
            raise argparse.ArgumentTypeError(f"unknown engine {name!r} (choose from {', '.join(ENGINES)})")
    return list(dict.fromkeys(names))


def build_parser():
    parser = ArgumentParser(
        prog="fastedf sweep",
        description="Train logistic regression (or an MLP) at batch sizes 1, 2, 4, ... and test the study's claims "
                    "(time ~ 1/B, memory grows with B, loss and accuracy worsen with B); with --lrs, also count "
                    "the updates each batch size needs to reach a target loss and measure the gradient noise scale.")
    study = parser.add_argument_group("study")
    study.add_argument("--batch-sizes", type=int_list, metavar="B,B,...",
                       help="batch sizes (default: 1, 2, 4, ... up to the training-set size, which is included)")
    study.add_argument("--epochs", type=nonnegative_int, default=100, help="epochs per run (default 100)")
    study.add_argument("--lr", type=positive_float, default=None,
                       help="learning rate (default 0.1; with --lrs, the grid's middle value)")
    study.add_argument("--lr-scaling", type=lr_scalings, default=["none"], metavar="none|linear|sqrt",
                       help="also run with lr * B/B0 (linear) or lr * sqrt(B/B0) (sqrt), B0 the smallest "
                            "batch size; comma-separated; the fixed lr is always run (default none)")
    study.add_argument("--seeds", type=positive_int, default=5,
                       help="data/initialisation seeds 0..K-1 (default 5)")
    study.add_argument("--shuffle", action="store_true", help="reshuffle the training rows every epoch")
    study.add_argument("--sampling", choices=SAMPLINGS, default=None,
                       help="with --lrs: how the runs that count updates to the target draw their batches: "
                            "fixed (the rows in order every epoch), shuffled (a fresh permutation each epoch) or "
                            "iid (every batch's rows drawn uniformly with replacement, seeded); default: fixed, "
                            "or shuffled with --shuffle")
    study.add_argument("--data", metavar="study|digits|digits-binary|CSV",
                       help="the study's two Gaussians (default); scikit-learn's 8x8 digits, 10 classes "
                            "(softmax/CE) or one digit against the rest (--digit); or a CSV with a header, "
                            "numeric features and a 0/1 label column")
    study.add_argument("--digit", type=int, choices=range(10), metavar="K",
                       help="with --data digits-binary: the digit labelled 1 (default 0)")
    study.add_argument("--label-column", metavar="NAME", help="the label column of --data CSV (default 'label')")
    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=("logistic", "mlp"), default="logistic",
                       help="logistic regression (default; softmax regression on 10 classes) or an MLP")
    model.add_argument("--hidden", type=int_list, metavar="H,H,...",
                       help="with --model mlp: hidden layer widths (default 64)")
    model.add_argument("--activation", choices=tuple(ACTIVATIONS), default=None,
                       help="with --model mlp: the hidden layers' activation (default sigmoid)")
    target = parser.add_argument_group("steps to a target loss")
    target.add_argument("--lrs", type=float_list, metavar="LR,LR,...",
                        help="learning-rate grid: every batch size and seed is trained at each, its training "
                             "loss measured at update counts 2**(k/8); the best lr per batch size and seed is "
                             "kept for the steps to target")
    target.add_argument("--target-loss", type=target_value, metavar="L|Fx",
                        help="the training loss to reach: a loss L, or Fx for F times the lowest training loss "
                             "any run of the same seed reaches (default: per seed, the highest of the batch sizes' "
                             "lowest losses, which every batch size reaches); without --lrs, the grid is --lr alone")
    target.add_argument("--noise-batch", type=positive_int, metavar="B",
                        help=f"batch size of the reference run whose gradient noise scale is measured "
                             f"(default {DEFAULT_NOISE_BATCH})")
    target.add_argument("--no-noise", dest="noise", action="store_false",
                        help="skip the gradient noise scale measurement")
    measure = parser.add_argument_group("measurement")
    measure.add_argument("--engine", type=engine_list, default=["compiled"], metavar="compiled|graph",
                         help="training engine(s), comma-separated; the first runs every run, the others the "
                              "fixed-lr runs for the time comparison (default compiled)")
    measure.add_argument("--with-edf", action="store_true",
                         help="also time the course's NumPy EDF loop (fastedf.numpy_edf) on the fixed-lr runs")
    measure.add_argument("--repeats", type=positive_int, default=3,
                         help="timing repeats per run; the median is kept (default 3)")
    measure.add_argument("--memory", action="store_true",
                         help="measure peak memory per batch size under memray (fastedf.study.memory)")
    cluster = parser.add_argument_group("on a Dask cluster (pip install -e '.[dask]')")
    where = cluster.add_mutually_exclusive_group()
    where.add_argument("--workers", type=positive_int, metavar="N",
                       help="train on a local Dask cluster of N single-threaded worker processes")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="train on a running Dask cluster, e.g. tcp://10.0.0.5:8786")
    cluster.add_argument("--timing", choices=tuple(ALLOWED_TIMINGS), default="serial",
                         help="serial (default): time every run here, one at a time, while the workers wait; "
                              "concurrent: keep the workers' times, measured side by side (faster, distorted)")
    output = parser.add_argument_group("output")
    output.add_argument("--out", metavar="DIR",
                        help=f"output directory, written by one sweep at a time; one holding an earlier sweep's "
                             f"results is refused unless --resume or --overwrite (default: a new directory "
                             f"{RESULTS_ROOT}/<UTC time>, with {RESULTS_ROOT}/latest pointing at it)")
    output.add_argument("--resume", action="store_true",
                        help="keep the finished rows in --out (checked as if just made) and run the rest "
                             f"(without --out: the sweep {RESULTS_ROOT}/latest points at)")
    output.add_argument("--overwrite", action="store_true",
                        help="remove the files an earlier sweep wrote in --out (no others) and start again")
    output.add_argument("--no-figures", dest="figures", action="store_false", help="skip the PNG figures")
    output.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def load_dataset(args):
    """The Dataset that --data names (the study's by default); UsageError for options that do not fit it."""
    for option, value in (("--data", args.data), ("--label-column", args.label_column)):
        if value is not None and not value.strip():  # `--data "$DATA"` with DATA unset must not train the study's
            raise UsageError(f"{option} is empty ({value!r}; an unset shell variable?): name it, or leave the "
                             "option out")
    data = args.data or "study"
    if args.label_column is not None and data in ("study", *DIGITS):
        raise UsageError("--label-column needs --data CSV")
    if args.digit is not None and data != "digits-binary":
        raise UsageError("--digit needs --data digits-binary")
    if data == "study":
        return Dataset("study")
    if data == "digits":
        return load_digits_dataset()
    if data == "digits-binary":
        return load_digits_dataset(0 if args.digit is None else args.digit)
    return load_csv(data, args.label_column or "label")


def model_spec(args):
    """The ModelSpec of --model, --hidden and --activation."""
    if args.model == "logistic":
        if args.hidden is not None or args.activation is not None:
            raise UsageError("--hidden and --activation need --model mlp")
        return ModelSpec()
    return ModelSpec(tuple(args.hidden or (64,)), args.activation or "sigmoid")


def middle_lr(lrs):
    """The grid's middle value (the lower of the two middle ones for an even count)."""
    grid = sorted(lrs)
    return grid[(len(grid) - 1) // 2]


def build_config(args, dataset, n_train, n_test):
    """The sweep's configuration as a JSON-ready dict; the batch sizes checked against n_train."""
    sizes = sorted(set(args.batch_sizes)) if args.batch_sizes else default_batch_sizes(n_train)
    too_big = [b for b in sizes if b > n_train]
    if too_big:
        raise UsageError(f"batch size {too_big[0]} exceeds the {n_train} training rows")
    grid = sorted(set(args.lrs)) if args.lrs else None
    lr = args.lr if args.lr is not None else (middle_lr(grid) if grid else 0.1)
    if grid is None and args.target_loss is not None:
        grid = [lr]
    kind, value = args.target_loss or (None, None)
    if grid is not None:
        if args.lr_scaling != ["none"]:
            raise UsageError("--lrs and --target-loss tune the lr per batch size; --lr-scaling fixes how it "
                             "depends on B: use one or the other")
        if not any(math.isclose(lr, g, rel_tol=1e-12) for g in grid):
            raise UsageError(f"--lr {lr:g} is not in --lrs ({', '.join(f'{g:g}' for g in grid)}); the study's "
                             "fixed-lr analyses use the runs at --lr")
    for scaling in args.lr_scaling:
        scaled = scaled_lr(lr, scaling, sizes[-1], sizes[0])
        if not math.isfinite(scaled):
            raise UsageError(f"--lr {lr!r} with --lr-scaling {scaling} gives lr = {scaled} at batch size "
                             f"{sizes[-1]}; use a smaller --lr")
    spec = model_spec(args)
    if args.memory and (spec.hidden or dataset.classes > 1):
        raise UsageError("--memory measures logistic regression on 0/1 labels (fastedf memory); drop --memory "
                         "for this model")
    engines = list(args.engine) + ([EDF_ENGINE] if args.with_edf else [])
    noise = None
    if grid is not None and args.noise:
        b = min(args.noise_batch or DEFAULT_NOISE_BATCH, n_train)
        noise = {"batch_size": b, "lr": lr, "seed": 0, "at_epochs": noise_epochs(args.epochs),
                 "b_small": NOISE_B_SMALL, "b_big": NOISE_B_BIG, "steps": NOISE_STEPS,
                 "exact": n_train <= EXACT_NOISE_ROWS}
    elif args.noise_batch is not None:
        raise UsageError("--noise-batch needs --lrs or --target-loss")
    if args.sampling is not None and grid is None:
        raise UsageError("--sampling needs --lrs or --target-loss (the timed runs use fit's epochs)")
    if args.sampling is not None and args.shuffle and args.sampling != "shuffled":
        raise UsageError(f"--shuffle and --sampling {args.sampling} disagree: give one")
    return {
        "data": dataset.source, "data_identity": dataset.identity(), "label_column": (args.label_column or "label") if dataset.X is not None
        and dataset.source not in DIGITS else None,
        "features": list(dataset.feature_names), "n_train": n_train, "n_test": n_test,
        "batch_sizes": sizes, "seeds": args.seeds, "epochs": args.epochs, "lr": lr,
        "lr_scaling": args.lr_scaling, "base_batch_size": sizes[0], "engine": engines[0],
        "repeats": args.repeats, "shuffle": args.shuffle, "memory": args.memory,
        "model": spec.describe(len(dataset.feature_names), dataset.classes),
        "engines": engines, "hidden": list(spec.hidden), "activation": spec.activation,
        "classes": dataset.classes, "digit": (0 if args.digit is None else args.digit)
        if dataset.source == "digits-binary" else None,
        "lrs": grid, "target_loss": value if kind == "loss" else None,
        "target_factor": value if kind == "factor" else None,
        "checkpoints_per_doubling": CHECKPOINTS_PER_DOUBLING if grid is not None else None, "noise": noise,
        "timing": args.timing, "sampling": sampling_of(args.shuffle, args.sampling) if grid is not None else None,
    }


def model_of(config):
    """The ModelSpec a configuration trains."""
    return ModelSpec(tuple(config.get("hidden") or ()), config.get("activation") or "sigmoid")


# Memory and disk per unit of the sweep, measured (peak RSS and file sizes, CPython 3.11) and rounded up.
BYTES_PER_EPOCH_KEPT = 112  # a loss value of every run's curve, held by the report and the figures (measured 60-100)
BYTES_PER_EPOCH_LIVE = 128  # the run being recorded: fit's float64 array, its list and its JSON line
BYTES_PER_EPOCH_ON_DISK = 24  # a loss value in runs.jsonl: up to 22 characters and ", " (measured 21)
BYTES_PER_RUN = 4096  # a row and its key in memory, in results.csv, results.json and runs.jsonl
DATA_COPIES = 4  # the data set, one seed's split, a shuffled copy of it, the evaluation's buffers
EDF_SECONDS_PER_UPDATE = 1e-6  # the NumPy EDF course loop's fixed cost per step, a lower bound (measured 3e-5)


BYTES_PER_WORKER = 100 * 2**20  # a Dask worker process: Python, NumPy, Numba and fastedf loaded (measured 103 MB)
BYTES_PER_MODEL_VALUE = 16  # a parameter or an activation of the run in training: its value and its gradient


def model_bytes(config):
    """Memory of the model in training, a lower bound: its parameters and every layer's output at the largest B."""
    parameters = model_of(config).n_parameters(len(config["features"]), config.get("classes", 1))
    widths = sum(config.get("hidden") or ()) + config.get("classes", 1)  # every layer's output, per sample
    return BYTES_PER_MODEL_VALUE * (parameters + max(config["batch_sizes"]) * widths)


def sweep_cost(config, data_bytes, epochs, seeds, repeats, workers=0):
    """The Cost of a sweep with `config` but these epochs, seeds and repeats.

    Time is a lower bound (guardrails.SECONDS_PER_*): per fit a fixed cost, per SGD
    step the engine's step cost, per epoch every parameter's work for every
    training row once (for logistic regression, every training value).
    Grid runs (the lr grid) train once more node by node, measuring the whole
    training set's loss after every update (at most training.LOSS_BUDGET
    multiply-adds of it per run).  Memory: DATA_COPIES of the data, one run's curve
    being written, every run's curve and row, which the report holds at
    the end, the model in training (its parameters and its activations at
    the largest batch size) and `workers` local Dask worker processes.
    Disk: runs.jsonl and the rows.
    """
    n, sizes = config["n_train"], config["batch_sizes"]
    work = model_of(config).n_parameters(len(config["features"]), config.get("classes", 1))
    engines = config.get("engines") or [config["engine"]]
    grid = len(config.get("lrs") or ()) or 1
    runs = seconds = 0.0
    for scaling in config["lr_scaling"]:
        for engine in engines if scaling == "none" else engines[:1]:
            lrs = grid if engine == engines[0] and scaling == "none" else 1
            trainings = repeats + (1 if config.get("lrs") and engine == engines[0] else 0)
            step = SECONDS_PER_UPDATE.get(engine, EDF_SECONDS_PER_UPDATE)
            steps = sum(updates_per_epoch(n, b) for b in sizes)
            runs += lrs * len(sizes) * seeds
            seconds += lrs * seeds * (len(sizes) * trainings * SECONDS_PER_FIT
                                      + trainings * epochs * (steps * step + len(sizes) * n * work
                                                              * SECONDS_PER_ELEMENT))
    if config.get("lrs"):  # each grid run trains once more node by node, its loss measured after every update
        grid_steps = grid * seeds * epochs * sum(updates_per_epoch(n, b) for b in sizes)
        seconds += grid_steps * SECONDS_PER_UPDATE["graph"] + min(grid_steps * n * work, runs * LOSS_BUDGET) \
            * SECONDS_PER_ELEMENT
    seconds += SECONDS_PER_FIT  # the warm-up
    if config["memory"]:
        seconds += len(sizes) * SECONDS_PER_PROCESS
    memory = DATA_COPIES * data_bytes + BYTES_PER_EPOCH_LIVE * epochs + runs * (BYTES_PER_RUN
                                                                               + BYTES_PER_EPOCH_KEPT * epochs)
    memory += model_bytes(config) + workers * BYTES_PER_WORKER
    disk = runs * (BYTES_PER_RUN + BYTES_PER_EPOCH_ON_DISK * epochs)
    return Cost(seconds, memory, disk)


def refuse_what_cannot_finish(config, data_bytes, out, workers=None):
    """A UsageError naming the option to lower when the sweep cannot fit this machine's memory, disk or a week.

    workers: --workers, the local Dask cluster's processes (None: none started here).
    """
    available = available_memory_bytes()
    if available is not None and model_bytes(config) > available:  # no count of runs can help: name the model
        raise UsageError(f"the model ({config['model']}) at batch size {max(config['batch_sizes'])} needs about "
                         f"{format_bytes(model_bytes(config))} of memory and {format_bytes(available)} is available; "
                         "use fewer --hidden units or smaller --batch-sizes")
    default = build_parser().get_default
    options = {"--epochs": (config["epochs"], default("epochs"), 0),
               "--seeds": (config["seeds"], default("seeds"), 1),
               "--repeats": (config["repeats"], default("repeats"), 1)}
    if workers:
        options["--workers"] = (workers, 1, 1)
    refuse_unless_it_fits(
        lambda v: sweep_cost(config, data_bytes, v["--epochs"], v["--seeds"], v["--repeats"], v.get("--workers", 0)),
        options, "the sweep", out)
