"""The sweep's files in --out: the checks every row passes (produced or read back) and ResultsDir."""
import csv
import io
import json
import math
import os

from ..guardrails import DirectoryLock, UsageError, make_output_dir, open_output, path_error, write_atomically
from .batch_scaling import updates_per_epoch
from .distributed import TIMING_SERIAL
from .options import ALLOWED_TIMINGS, scaled_lr

ROW_FIELDS = ("lr_scaling", "batch_size", "seed", "lr", "engine", "epochs", "updates",
              "train_time_s", "cpu_time_s", "time_spread_s", "time_flag", "compile_time_s", "final_loss",
              "test_accuracy", "peak_memory_bytes", "timing")
# train_time_s: the robust figure of the run's timed runs (fastedf.study.one_run.robust_time): the median loop
# time of the fastest undisturbed runs; cpu_time_s: their thread CPU time (of the whole fit call); time_spread_s:
# their spread; time_flag: "" (settled by the first runs), remeasured, or unsettled.  Files from before these
# columns read as unchecked: the three empty.
# timing: how train_time_s was measured (fastedf.study.distributed.TIMINGS): serial (one run at a time, in the sweep's
# process), serial-client (the same, the run's other fields from a Dask worker), worker-concurrent (on a worker,
# beside other runs: --timing concurrent).  Files from before the column read as serial.
TIME_FLAGS = ("", "remeasured", "unsettled")  # time_flag's values
_LATER_COLUMNS = {"timing": TIMING_SERIAL, "cpu_time_s": "", "time_spread_s": "", "time_flag": ""}  # results.csv columns added later: their value in files without them
# With the lr grid (--lrs or --target-loss), after ROW_FIELDS:
#   min_loss            the lowest whole-training-set loss at any checkpoint after the first update
#                       (empty for runs without checkpoints: other engines);
#   diverged_at_update  empty, or the checkpoint the run did not reach because the loss became NaN/inf
#                       (then train_time_s, final_loss and test_accuracy are empty).
TARGET_FIELDS = ("min_loss", "diverged_at_update")
# noise.csv: B_simple = tr(Sigma) / |G|^2 after `epoch` epochs (`updates` SGD updates) of the reference run;
# train_loss the whole-training-set loss there; trace_sigma, g_sq, b_simple McCandlish's two-batch estimates
# (fastedf.study.batch_scaling.measure_noise_scale); b_simple_exact from every per-sample gradient (empty above
# fastedf.study.training.EXACT_NOISE_ROWS training rows).
NOISE_FIELDS = ("epoch", "updates", "train_loss", "trace_sigma", "g_sq", "b_simple", "b_simple_exact")
_INT_FIELDS = {"batch_size", "seed", "epochs", "updates", "peak_memory_bytes", "diverged_at_update"}
_STR_FIELDS = {"lr_scaling", "engine", "timing", "time_flag"}
_OPTIONAL_FIELDS = {"peak_memory_bytes", "min_loss", "diverged_at_update",  # "" reads as None
                    "cpu_time_s", "time_spread_s",  # (these two: also in rows from before the columns)
                    "train_time_s", "final_loss", "test_accuracy"}  # (these three: only in a diverged run)
# Configuration entries that must match for --resume to reuse rows.
_RESUME_KEYS = ("data", "label_column", "batch_sizes", "seeds", "epochs", "lr", "lr_scaling",
                "engine", "repeats", "shuffle", "memory", "n_train", "n_test", "features",
                "engines", "hidden", "activation", "classes", "digit", "lrs", "checkpoints_per_doubling", "noise",
                "timing", "sampling")
_RESUME_DEFAULTS = {"timing": "serial"}  # configuration entries added later: their value in older results.json


def row_fields(config):
    """The columns of results.csv for this sweep: ROW_FIELDS, plus TARGET_FIELDS when the lr grid runs."""
    return ROW_FIELDS + (TARGET_FIELDS if config.get("lrs") else ())


def _key(entry):
    """(lr_scaling, batch_size, seed, lr, engine): what names a run, in results.csv and in runs.jsonl."""
    return (entry["lr_scaling"], int(entry["batch_size"]), int(entry["seed"]), float(entry["lr"]),
            entry["engine"])


def _parse_row(raw, fields=ROW_FIELDS):
    """A results.csv row ({field: text}) with typed values; ValueError naming the first field that is not.

    An empty optional field (_OPTIONAL_FIELDS) reads as None; row_problem says where None is allowed.
    """
    row = {}
    for name in fields:
        text = raw.get(name, _LATER_COLUMNS.get(name))
        if text is None:
            raise ValueError(f"no {name} field")
        text = text.strip()
        if name in _OPTIONAL_FIELDS and text == "":
            row[name] = None
        elif name in _STR_FIELDS:
            row[name] = text
        else:
            try:
                row[name] = int(text) if name in _INT_FIELDS else float(text)
            except ValueError:
                kind = "an integer" if name in _INT_FIELDS else "a number"
                raise ValueError(f"{name} {text!r} is not {kind}") from None
    return row


def checkpointed(config, scaling, engine):
    """Whether the run (lr_scaling, engine) of this sweep measures its loss at checkpoints (the lr grid)."""
    return bool(config.get("lrs")) and scaling == "none" and engine == config["engine"]


def planned_lrs(config, scaling, batch_size, engine):
    """The learning rates this sweep runs at (scaling, batch_size, engine)."""
    if checkpointed(config, scaling, engine):
        return list(config["lrs"])
    return [scaled_lr(config["lr"], scaling, batch_size, config["base_batch_size"])]


def _finite(value, minimum=None):
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and (minimum is None or value >= minimum))


def row_problem(row, config):
    """What is wrong with a row of this sweep (one line), or None: the same checks for rows made and rows read back."""
    scaling, b, seed, engine = row["lr_scaling"], row["batch_size"], row["seed"], row["engine"]
    engines = config.get("engines") or [config["engine"]]
    if scaling not in config["lr_scaling"]:
        return f"lr_scaling {scaling!r} is not one of this sweep's ({', '.join(config['lr_scaling'])})"
    if engine not in engines or (scaling != "none" and engine != engines[0]):
        return f"engine {engine!r} is not this sweep's ({', '.join(engines)})"
    if b not in config["batch_sizes"]:
        return f"batch_size {b} is not one of this sweep's"
    if not 0 <= seed < config["seeds"]:
        return f"seed {seed} is outside this sweep's 0..{config['seeds'] - 1}"
    if row["epochs"] != config["epochs"]:
        return f"epochs {row['epochs']} is not this sweep's ({config['epochs']})"
    lrs = planned_lrs(config, scaling, b, engine)
    if not any(math.isclose(row["lr"], lr, rel_tol=1e-12) for lr in lrs):
        if len(lrs) > 1:
            return f"lr {row['lr']!r} is not in this sweep's grid ({', '.join(map(repr, lrs))})"
        return f"lr {row['lr']!r} is not the {scaling!r} learning rate at batch size {b} ({lrs[0]!r})"
    updates = config["epochs"] * updates_per_epoch(config["n_train"], b)
    if row["updates"] != updates:
        return f"updates {row['updates']} is not {config['epochs']} epochs of batch size {b} ({updates})"
    diverged = row.get("diverged_at_update")
    if config.get("lrs"):
        problem = _target_problem(row, checkpointed(config, scaling, engine), updates)
        if problem:
            return problem
    for name in ("train_time_s", "compile_time_s", "final_loss"):
        if not (diverged is not None and name != "compile_time_s" and row[name] is None) and not _finite(row[name], 0):
            return f"{name} {row[name]!r} is not a finite number >= 0"
    for name in ("cpu_time_s", "time_spread_s"):
        if row[name] is not None and not _finite(row[name], 0):
            return f"{name} {row[name]!r} is not a finite number >= 0"
    if row["time_flag"] not in TIME_FLAGS:
        return f"time_flag {row['time_flag']!r} is not one of {', '.join(map(repr, TIME_FLAGS))}"
    accuracy = row["test_accuracy"]
    if not (diverged is not None and accuracy is None) and not (_finite(accuracy) and 0 <= accuracy <= 1):
        return f"test_accuracy {accuracy!r} is outside [0, 1]"
    peak = row["peak_memory_bytes"]
    if config["memory"] and not (isinstance(peak, int) and peak > 0):
        return f"peak_memory_bytes {peak!r} is not a byte count (this sweep measures memory)"
    if not config["memory"] and peak is not None:
        return f"peak_memory_bytes {peak!r} should be empty (this sweep does not measure memory)"
    allowed = ALLOWED_TIMINGS[config.get("timing", "serial")]
    if row["timing"] not in allowed:
        return f"timing {row['timing']!r} is not how this sweep measures time ({' or '.join(allowed)})"
    return None


def _target_problem(row, with_checkpoints, updates):
    """What is wrong with a row's TARGET_FIELDS (one line), or None."""
    least, diverged = row.get("min_loss"), row.get("diverged_at_update")
    if not with_checkpoints:
        if least is not None or diverged is not None:
            return "min_loss and diverged_at_update should be empty (this run has no checkpoints)"
        return None
    if diverged is not None:
        if not (isinstance(diverged, int) and 1 <= diverged <= updates):
            return f"diverged_at_update {diverged!r} is not an update count in 1..{updates}"
        unmeasured = [name for name in ("train_time_s", "final_loss", "test_accuracy") if row[name] is not None]
        if unmeasured:
            return f"{unmeasured[0]} should be empty: the run diverged at update {diverged}"
    if least is None and diverged is None and updates > 0:
        return "min_loss is empty but the run made updates and did not diverge"
    if least is not None and not _finite(least, 0):
        return f"min_loss {least!r} is not a finite number >= 0"
    return None


def run_problem(run, config):
    """What is wrong with a runs.jsonl entry of this sweep (one line), or None."""
    if not isinstance(run, dict):
        return "not a JSON object"
    for name, kind in (("lr_scaling", str), ("batch_size", int), ("seed", int), ("lr", float), ("engine", str),
                       ("epoch_loss", list), ("parameters", list)):
        value = run.get(name)
        ok = isinstance(value, (int, float) if kind is float else kind) and not isinstance(value, bool)
        if not ok:
            return f"{name} is missing or not a{'n' if kind is int else ''} {kind.__name__}"
    curve = run["epoch_loss"]
    complete = True
    if checkpointed(config, run["lr_scaling"], run["engine"]):
        problem, complete = _checkpoints_problem(run, config)
        if problem:
            return problem
    if (len(curve) != config["epochs"]) if complete else (len(curve) > config["epochs"]):
        return f"epoch_loss has {len(curve)} values, not this sweep's {config['epochs']} epochs"
    if not all(_finite(v, 0) for v in curve):
        return "epoch_loss holds a value that is not a finite number >= 0"
    return None


def _checkpoints_problem(run, config):
    """(problem or None, whether the checkpoints reach the last update) for a grid run's checkpoints."""
    points = run.get("checkpoints")
    if not isinstance(points, list) or not points:
        return "checkpoints is missing or empty (a grid run records its loss at checkpoints)", False
    total = config["epochs"] * updates_per_epoch(config["n_train"], max(1, int(run["batch_size"])))
    last = -1
    for point in points:
        if not (isinstance(point, list) and len(point) == 2 and isinstance(point[0], int)
                and not isinstance(point[0], bool) and last < point[0] <= total and _finite(point[1], 0)):
            return (f"checkpoints holds {str(point)[:40]}, not [updates, loss >= 0] with updates increasing "
                    f"up to {total}"), False
        last = point[0]
    if points[0][0] != 0:
        return "checkpoints must start at update 0 (the loss before training)", False
    return None, last == total


def noise_problem(point, config):
    """What is wrong with a noise.csv row of this sweep (one line), or None."""
    noise = config["noise"]
    epoch = point["epoch"]
    if epoch not in noise["at_epochs"]:
        return f"epoch {epoch!r} is not one this sweep measures ({', '.join(map(str, noise['at_epochs']))})"
    updates = epoch * updates_per_epoch(config["n_train"], noise["batch_size"])
    if point["updates"] != updates:
        return f"updates {point['updates']!r} is not {epoch} epochs of batch size {noise['batch_size']} ({updates})"
    for name in ("train_loss", "trace_sigma", "g_sq"):
        if not _finite(point[name], 0 if name == "train_loss" else None):
            return f"{name} {point[name]!r} is not a finite number"
    if not isinstance(point["b_simple"], float) or math.isnan(point["b_simple"]) and point["g_sq"] > 0:
        return f"b_simple {point['b_simple']!r} is not a number"
    exact = point["b_simple_exact"]
    if noise["exact"] != (exact is not None) or (exact is not None and not _finite(exact)):
        return f"b_simple_exact {exact!r} should be {'a finite number' if noise['exact'] else 'empty'}"
    return None


def _parse_noise(raw):
    """A noise.csv row with typed values (b_simple may be inf or nan; b_simple_exact may be empty)."""
    point = {}
    for name in NOISE_FIELDS:
        text = (raw.get(name) or "").strip()
        if name == "b_simple_exact" and text == "":
            point[name] = None
            continue
        try:
            point[name] = int(text) if name in ("epoch", "updates") else float(text)
        except ValueError:
            kind = "an integer" if name in ("epoch", "updates") else "a number"
            raise ValueError(f"{name} {text!r} is not {kind}") from None
    return point


def _refuse_other_data(previous, config):
    """A UsageError when the data of a sweep to resume are not those its kept rows were trained on."""
    then, now, data = previous.get("data_identity"), config["data_identity"], config["data"]
    if then is not None and not isinstance(then, dict):
        raise UsageError(f"--resume: the data_identity saved in results.json is {str(then)[:40]!r}, not what "
                         "fastedf writes there, so the kept rows cannot be checked; use another --out")
    if previous.get("data") != data or then == now:
        return  # another name: _RESUME_KEYS says so
    if then is None and "sha256" not in now:
        return  # saved before data_identity: generated data and the digits are named by config["data"] alone
    if then is None:
        raise UsageError(f"--resume: {data}: the kept rows were saved without their data's identity (by an older "
                         "fastedf), so they cannot be checked against these data; use another --out")
    if "sha256" in now and "sha256" in then:
        raise UsageError(f"--resume: {data} changed since the kept rows were trained on it (SHA-256 "
                         f"{then['sha256'][:12]}... then, {now['sha256'][:12]}... now); use another --out, or "
                         "--overwrite to train on the new data")
    changed = [name for name in sorted(set(then) | set(now)) if then.get(name) != now.get(name)]
    raise UsageError(f"--resume: the {data} data changed since the kept rows were trained on them "
                     f"({', '.join(changed)}); use another --out, or --overwrite to start again")


class ResultsDir:
    """The --out directory: results.csv and runs.jsonl appended run by run, results.json at the end.

    With a noise-scale run, noise.csv holds its points, written together when
    that run finishes.  `claim` locks the directory (guardrails.DirectoryLock) until
    `close`: one sweep writes it at a time.  Every OSError at these paths is a
    UsageError naming the path.
    """

    FILES = ("results.csv", "runs.jsonl", "results.json", "noise.csv")  # what this class writes

    def __init__(self, path):
        self.path = path
        self.csv_path = os.path.join(path, "results.csv")
        self.runs_path = os.path.join(path, "runs.jsonl")
        self.json_path = os.path.join(path, "results.json")
        self.noise_path = os.path.join(path, "noise.csv")
        self.lock = DirectoryLock(path, "fastedf sweep")
        self._csv = self._runs = None
        self.fields = ROW_FIELDS
        self.noise_points = []
        self._order = []  # the keys of the rows in results.csv, in file order

    def claim(self):
        """Create the directory and lock it: a second sweep on it refuses from now until `close`."""
        make_output_dir(self.path)
        self.lock.acquire()

    def start(self, config, env, resume):
        """Open the files for appending (after `claim`); returns {key: row} of the rows kept from an earlier sweep.

        The noise points kept (all of them, or none: the reference run is one
        unit) are in `noise_points`.
        """
        self.fields = row_fields(config)
        rows, runs = (self._read_previous(config) if resume else ({}, {}))
        self.noise_points = self._read_noise(config) if resume and config.get("noise") else []
        # Rewrite the files with the complete entries only, then append.
        self._csv = self._open(self.csv_path)
        self._writer = csv.DictWriter(self._csv, self.fields)
        self._writer.writeheader()
        self._writer.writerows(_csv_row(row, self.fields) for row in rows.values())
        self._csv.flush()
        self._order = list(rows)
        if config.get("noise"):
            self.write_noise(self.noise_points)
        self._runs = self._open(self.runs_path)
        self._runs.writelines(json.dumps(runs[key]) + "\n" for key in rows)
        self._runs.flush()
        self.write_json(config, env, list(rows.values()), complete=False)
        return rows

    def _open(self, path):
        return open_output(path, newline="" if path.endswith(".csv") else None)

    def _read_text(self, path):
        try:
            with open(path, newline="", encoding="utf-8-sig") as handle:
                return handle.read()
        except OSError as error:
            raise path_error(error, path, "read") from None
        except UnicodeDecodeError:
            raise UsageError(f"--resume: {path} is not UTF-8 text; use a fresh --out") from None

    def _refuse(self, path, line, problem):
        return UsageError(f"--resume: {path} line {line}: {problem}; correct or delete that line, "
                          "or use a fresh --out")

    def _read_previous(self, config):
        """The rows and runs of an earlier sweep with the same configuration, each checked as if just made."""
        if not os.path.exists(self.json_path):
            kept = [path for path in (self.csv_path, self.runs_path) if _has_entries(path)]
            if kept:  # rows that cannot be checked would be retrained and replaced: refuse instead
                raise UsageError(f"--resume: {self.json_path} is missing, so the runs in {kept[0]} cannot be "
                                 "checked against these options; restore it, or use --overwrite to start again")
            return {}, {}
        if not os.path.exists(self.csv_path):
            return {}, {}
        try:
            previous = json.loads(self._read_text(self.json_path))["config"]
            if not isinstance(previous, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: JSON nested beyond reading
            raise UsageError(f"--resume: {self.json_path} is unreadable; use a fresh --out") from None
        _refuse_other_data(previous, config)
        for name in _RESUME_KEYS:
            if previous.get(name, _RESUME_DEFAULTS.get(name)) != config[name]:
                raise UsageError(f"--resume: {self.path} holds a sweep with {name} = {previous.get(name)!r}, "
                                 f"not {config[name]!r}; use the same options or another --out")
        runs = self._read_runs(config)
        rows = {}
        text = self._read_text(self.csv_path)
        reader = csv.reader(io.StringIO(text))
        try:
            header = [name.strip() for name in next(reader, [])]
            missing = [name for name in self.fields if name not in header and name not in _LATER_COLUMNS]
            if missing or len(set(header)) != len(header):
                raise self._refuse(self.csv_path, 1, f"the header must name the columns {', '.join(self.fields)} "
                                                      "once each")
            records = [(reader.line_num, cells) for cells in reader]
        except csv.Error as error:
            raise self._refuse(self.csv_path, reader.line_num, str(error)) from None
        cut = not text.endswith(("\n", "\r"))  # the last line was being written when the sweep was killed
        seen = {}
        for i, (line, cells) in enumerate(records):
            if not any(cell.strip() for cell in cells):
                continue
            try:
                if len(cells) != len(header):
                    raise ValueError(f"{len(cells)} fields, but the header has {len(header)}")
                row = _parse_row(dict(zip(header, cells)), self.fields)
                problem = row_problem(row, config)
            except ValueError as error:
                problem = str(error)
            if problem and cut and i == len(records) - 1:
                continue  # cut short: its run is redone
            if problem:
                raise self._refuse(self.csv_path, line, problem)
            key = _key(row)
            if key in seen:
                raise self._refuse(self.csv_path, line, f"the run {key} is already on line {seen[key]}")
            if key not in runs:
                raise self._refuse(self.csv_path, line, f"the run {key} has no loss curve in {self.runs_path}")
            seen[key] = line
            rows[key] = row
        return rows, runs

    def _read_runs(self, config):
        """{key: run} from runs.jsonl, each checked; a last line cut short by a kill is dropped."""
        if not os.path.exists(self.runs_path):
            return {}
        text = self._read_text(self.runs_path)
        lines = text.split("\n")
        runs = {}
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                run = json.loads(line)
                problem = run_problem(run, config)
            except (ValueError, RecursionError):
                problem = "not valid JSON"
            if problem and number == len(lines):  # no newline after it: cut short
                continue
            if problem:
                raise self._refuse(self.runs_path, number, problem)
            runs[_key(run)] = run  # a run recorded twice (its row was lost in between): the later one
        return runs

    def append(self, row, run):
        """Record one finished run: its curve first, then its row, each flushed to disk."""
        try:
            self._runs.write(json.dumps(run) + "\n")
            self._runs.flush()
            self._writer.writerow(_csv_row(row, self.fields))
            self._csv.flush()
        except OSError as error:
            raise path_error(error, self.path, "write to") from None
        self._order.append(_key(row))

    def put_in_order(self, rows):
        """Rewrite results.csv and runs.jsonl in the order of `rows` (all rows written), each file replaced whole.

        A sweep on a cluster appends rows as they arrive; this gives its files
        the serial sweep's order.  The files are closed for appending afterwards.
        """
        keys = [_key(row) for row in rows]
        if keys == self._order:
            return
        runs = self.runs()
        for handle in (self._csv, self._runs):
            handle.close()
        self._csv = self._runs = None
        table = io.StringIO()
        writer = csv.DictWriter(table, self.fields)
        writer.writeheader()
        writer.writerows(_csv_row(row, self.fields) for row in rows)
        for path, text in ((self.runs_path, "".join(json.dumps(runs[key]) + "\n" for key in keys)),
                           (self.csv_path, table.getvalue())):
            write_atomically(path, text)  # never a half-written file: the old order or the new one

    def _read_noise(self, config):
        """The points of noise.csv when they are this sweep's complete reference run, each checked; else []."""
        if not os.path.exists(self.noise_path):
            return []
        text = self._read_text(self.noise_path)
        if not text.endswith(("\n", "\r")):
            return []  # empty, or cut short while being written: the reference run is redone
        reader = csv.DictReader(io.StringIO(text))
        points = []
        try:
            if [name.strip() for name in reader.fieldnames or []] != list(NOISE_FIELDS):
                raise self._refuse(self.noise_path, 1, f"the header must be {','.join(NOISE_FIELDS)}")
            for raw in reader:
                try:
                    point = _parse_noise(raw)
                    problem = noise_problem(point, config)
                except ValueError as error:
                    problem = str(error)
                if problem:
                    raise self._refuse(self.noise_path, reader.line_num, problem)
                points.append(point)
        except csv.Error as error:
            raise self._refuse(self.noise_path, reader.line_num, str(error)) from None
        complete = [p["epoch"] for p in points] == list(config["noise"]["at_epochs"])
        return points if complete else []  # an unfinished reference run is redone whole

    def write_noise(self, points):
        """Write noise.csv whole: its header and `points` (the reference run's, all at once), flushed."""
        try:
            with open_output(self.noise_path, newline="") as handle:
                writer = csv.DictWriter(handle, NOISE_FIELDS)
                writer.writeheader()
                writer.writerows({k: ("" if v is None else v) for k, v in p.items()} for p in points)
        except OSError as error:
            raise path_error(error, self.noise_path, "write") from None
        self.noise_points = list(points)

    def close(self):
        """Close the files and release the lock (every finished row is already on disk)."""
        for handle in (self._csv, self._runs):
            if handle is not None:
                try:
                    handle.close()
                except OSError:
                    pass  # a full disk: the error was raised where the write failed
        self._csv = self._runs = None
        self.lock.release()

    def runs(self):
        """{key: run} from runs.jsonl."""
        text = self._read_text(self.runs_path)
        return {_key(run): run for run in (json.loads(line) for line in text.splitlines() if line.strip())}

    def write_json(self, config, env, rows, complete, extra=None):
        document = {"config": config, "environment": env, "complete": complete, "rows": rows, **(extra or {})}
        write_atomically(self.json_path, json.dumps(document, indent=1))  # never a half-written results.json


def _has_entries(path):
    """Whether a results.csv holds a row, or a runs.jsonl a line (not merely a header): work --resume would keep."""
    try:
        with open(path, "rb") as handle:
            lines = [line for line in handle.read(1 << 16).splitlines() if line.strip()]
    except OSError:
        return False
    return len(lines) > (1 if path.endswith(".csv") else 0)


def _csv_row(row, fields=ROW_FIELDS):
    return {name: ("" if row[name] is None else row[name]) for name in fields}
