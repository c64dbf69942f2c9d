"""A grid of independent runs on Dask distributed, with its timing kept honest.

A grid is a list of run specifications (picklable, in the serial order) and a
pure, module-level function `run_one(spec) -> result`.  `Grid` starts a
LocalCluster of single-threaded worker processes (`workers=N`) or connects to
a running Dask scheduler (`scheduler="tcp://host:port"`), runs every spec on
the workers and hands each result to `on_result(spec, result, timed)` in the
client, which is therefore the only writer.  Specs already done (a resumed
sweep) are simply not passed in.

The rule for time.  Runs that share cores distort each other's times, so a
time measured on a worker while other workers run is never passed off as a
quiet one; every delivered result carries a `Timed` saying how its time was
measured:
- without `time_one`, the workers' own times stand, labelled
  "worker-concurrent" (TIMING_WORKERS);
- with `time_one`, the workers run a chunk of specs (the quality part:
  losses, accuracies, curves), the cluster then has nothing to run, and the
  client times that chunk's specs one at a time, `time_one(spec, result)`,
  labelled "serial-client" (TIMING_CLIENT); then the next chunk goes out.
  Timed and untimed work never overlap, so timing costs what it costs
  serially: the workers speed up only the untimed part.
A serial sweep's own rows are "serial" (TIMING_SERIAL): one run at a time in one process.

Delivery.  on_result is called once per spec, in the client, as soon as that
spec's result is complete: with `time_one`, in the specs' order (a chunk is
timed in order, chunks go out in order); without it, in arrival order.  A
caller that wants its files in serial order sorts them at the end.

Workers compile once: each worker process calls `warm_up()` before its first
run of a grid (a restarted worker too), so no run pays for compilation; the
client is the caller's to warm before `time_one` needs it.

Failures.  A task that raises is retried `retries` times (Dask's retries),
then its exception is raised in the client.  A worker that dies (killed, out
of memory) loses only the task it was running: the scheduler reschedules it
on another worker, up to `retries` times on a LocalCluster started here (the
scheduler's allowed-failures; an external scheduler's own setting otherwise),
and its result is delivered once.  On an error or Ctrl-C, pending tasks are
cancelled; results already delivered stay delivered, results not yet
delivered are dropped (a resumed sweep redoes them); `close` (or leaving the
`with` block) shuts the LocalCluster down.
"""
import contextlib
import logging
import signal
import threading
import uuid
from collections import namedtuple

from ..guardrails import UsageError

TIMING_SERIAL = "serial"  # a serial sweep: one run at a time in one process
TIMING_CLIENT = "serial-client"  # timed by the client, one run at a time, while the workers had nothing to run
TIMING_WORKERS = "worker-concurrent"  # timed on a worker while other workers may have run
TIMINGS = (TIMING_SERIAL, TIMING_CLIENT, TIMING_WORKERS)

DASK_MISSING = "fastedf sweep --workers needs Dask: pip install 'dask[distributed]' (or pip install -e '.[dask]')"
CONNECT_TIMEOUT_S = 30  # default seconds to reach a scheduler and see its first worker
CHUNK_PER_THREAD = 4  # with time_one: specs per chunk for every worker thread (load balance vs. results at risk)

Timed = namedtuple("Timed", "how value")
Timed.__doc__ = """How a result's time was measured: `how` one of TIMINGS, `value` what time_one returned (or None)."""


class DaskMissing(UsageError, ImportError):
    """Dask distributed is not installed; the message says how to install it (one line, exit 2 on the CLI)."""


def require_dask():
    """The `distributed` package, or DaskMissing (an ImportError and a UsageError) saying what to install."""
    try:
        import distributed
    except ImportError:
        raise DaskMissing(DASK_MISSING) from None
    return distributed


def dask_setup(worker):
    """Dask's preload hook, run as each worker process of a LocalCluster started here begins (Grid.open).

    A terminal's Ctrl-C reaches every process of the foreground group; the
    client decides what stops (it cancels and closes the cluster), so these
    workers ignore SIGINT instead of dying with a traceback each.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


_warmed = set()  # per worker process: the grids whose warm_up already ran here


def _hold(functions):
    """The task that holds (run_one, warm_up) on the cluster: shipped once, fetched once per worker."""
    return functions


def _run_task(functions, grid_key, spec):
    """One spec on a worker, after warm_up the first time this process sees the grid."""
    run_one, warm_up = functions
    if warm_up is not None and grid_key not in _warmed:
        warm_up()
        _warmed.add(grid_key)
    return run_one(spec)


class Grid:
    """A Dask cluster for running grids: `with Grid(workers=2) as grid: grid.run(...)`.

    workers=N starts a LocalCluster of N single-threaded worker processes on
    127.0.0.1 (its dashboard on a free port: `dashboard_link`);
    scheduler=ADDRESS connects to a running cluster instead.  Exactly one of
    the two.  timeout: seconds to reach the scheduler and see a worker.
    Problems the user can fix (Dask missing, no scheduler at the
    address, no workers) are UsageErrors.
    """

    def __init__(self, workers=None, scheduler=None, retries=2, timeout=CONNECT_TIMEOUT_S):
        if (workers is None) == (scheduler is None):
            raise ValueError("give exactly one of workers=N and scheduler=ADDRESS")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
        self.workers, self.scheduler, self.retries, self.timeout = workers, scheduler, retries, timeout
        self.client = self.cluster = None

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()

    def open(self):
        """Start the LocalCluster or connect to the scheduler, and wait for a first worker (once: open stays open)."""
        if self.client is not None:
            return self
        distributed = require_dask()
        import dask
        try:
            if self.workers is not None:
                # The LocalCluster's scheduler lives in this process and reads allowed-failures when it starts.
                with dask.config.set({"distributed.scheduler.allowed-failures": self.retries}):
                    self.cluster = distributed.LocalCluster(
                        n_workers=self.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                        dashboard_address=":0", silence_logs=logging.ERROR, preload=[__name__])
                self.client = distributed.Client(self.cluster)
            else:
                try:
                    self.client = distributed.Client(self.scheduler, timeout=self.timeout)
                except (OSError, TimeoutError, ValueError) as error:
                    raise UsageError(f"cannot reach a Dask scheduler at {self.scheduler}: "
                                     f"{' '.join(str(error).split())}") from None
                try:
                    self.client.wait_for_workers(1, timeout=self.timeout)
                except TimeoutError:
                    raise UsageError(f"the Dask scheduler at {self.scheduler} has no workers "
                                     f"(none joined within {self.timeout:g} s); start some with "
                                     f"`dask worker {self.scheduler} --nthreads 1`") from None
        except BaseException:
            self.close()
            raise
        return self

    def close(self):
        """Disconnect and, for a LocalCluster started here, stop its workers (safe to call twice)."""
        client, cluster, self.client, self.cluster = self.client, self.cluster, None, None
        try:
            if client is not None:
                client.close()
        finally:
            if cluster is not None:
                cluster.close()

    @property
    def threads(self):
        """Worker threads connected now."""
        return sum(self.client.nthreads().values())

    @property
    def dashboard_link(self):
        return self.client.dashboard_link

    def run(self, run_one, specs, *, on_result, time_one=None, warm_up=None, chunk=None,
            interruptible=contextlib.nullcontext):
        """Run `run_one(spec)` on the workers for every spec; `on_result(spec, result, timed)` in the client.

        run_one, warm_up: picklable (module-level functions, or partials of
        them); they go to the cluster once per call, not with every task.
        time_one(spec, result): called in the client, one spec at a time while
        the cluster has nothing to run; its return value is `timed.value`.  chunk: specs per round with
        time_one (default CHUNK_PER_THREAD per worker thread).  interruptible:
        a context-manager factory wrapped around every wait for the workers and
        every time_one call (a sweep passes its InterruptGuard.training, so
        Ctrl-C there stops at once).  Returns the number of results delivered.
        """
        specs = list(specs)
        if not specs:
            return 0
        if self.client is None:
            raise RuntimeError("Grid.run needs an open grid: use `with Grid(...) as grid`")
        # (run_one, warm_up) travel once, as a task's result: a worker fetches it from a peer, and if every
        # copy dies with its workers the scheduler recomputes it (scattered data would be lost instead).
        functions = self.client.submit(_hold, (run_one, warm_up), pure=False, retries=self.retries)
        grid_key = f"fastedf-grid-{uuid.uuid4().hex}"
        running = {}  # future -> (index in its batch, spec), until its result is taken
        try:
            if time_one is None:
                self._submit(running, functions, grid_key, specs)
                for _, spec, result in self._finished(running, interruptible):
                    on_result(spec, result, Timed(TIMING_WORKERS, None))
                return len(specs)
            chunk = chunk or CHUNK_PER_THREAD * max(self.threads, 1)
            for start in range(0, len(specs), chunk):
                part = specs[start:start + chunk]
                self._submit(running, functions, grid_key, part)
                results = {i: result for i, _, result in self._finished(running, interruptible)}
                for i, spec in enumerate(part):  # nothing runs on the workers now: time one spec at a time, in order
                    with interruptible():
                        value = time_one(spec, results[i])
                    on_result(spec, results.pop(i), Timed(TIMING_CLIENT, value))
            return len(specs)
        except BaseException:
            with contextlib.suppress(Exception):  # a lost connection must not hide the error being raised
                self.client.cancel(list(running), force=True)
            raise
        finally:
            with contextlib.suppress(Exception):
                self.client.cancel([functions], force=True)

    def _submit(self, running, functions, grid_key, specs):
        """One task per spec, added to `running` as future -> (index, spec)."""
        for i, spec in enumerate(specs):
            future = self.client.submit(_run_task, functions, grid_key, spec, retries=self.retries, pure=False)
            running[future] = (i, spec)

    def _finished(self, running, interruptible):
        """(index, spec, result) of each task in `running` as it finishes; it leaves `running` (its worker drops it)."""
        from distributed import KilledWorker, as_completed
        finished = as_completed(list(running))
        while True:
            with interruptible():
                future = next(finished, None)
            if future is None:
                return
            i, spec = running.pop(future)
            try:
                result = future.result()
            except KilledWorker:
                raise UsageError(f"the run {spec!r} was lost: the workers that ran it died, "
                                 "as many times as the scheduler allows (killed, or out of memory?)") from None
            yield i, spec, result


def run_grid(run_one, specs, *, on_result, workers=None, scheduler=None, retries=2, time_one=None, warm_up=None,
             chunk=None, interruptible=contextlib.nullcontext):
    """Start a Grid (workers=N or scheduler=ADDRESS), run the specs (Grid.run), close it; returns results delivered."""
    with Grid(workers=workers, scheduler=scheduler, retries=retries) as grid:
        return grid.run(run_one, specs, on_result=on_result, time_one=time_one, warm_up=warm_up, chunk=chunk,
                        interruptible=interruptible)

