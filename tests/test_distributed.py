"""fastedf.study.distributed: grids on Dask, equal to the serial runs, with honest timing, retries and clean shutdown.

The run functions below are module-level so Dask can pickle them by reference:
LocalCluster workers inherit sys.path (tests/ is on it, see conftest.py); the
separately started workers get tests/ on PYTHONPATH.
"""
import functools
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import fastedf
from fastedf.guardrails import UsageError
from fastedf.models import logistic_regression
from fastedf.study.data import study_data
from fastedf.study.distributed import (DASK_MISSING, TIMING_CLIENT, TIMING_WORKERS, DaskMissing, Grid, require_dask,
                                       run_grid)

TESTS = pathlib.Path(__file__).resolve().parent
EPOCHS = 5
SPECS = [(batch_size, seed) for batch_size in (8, 32) for seed in (0, 1)]
TOLERANCE = 1e-12
SLOW_S = 0.5  # the pause of slow_fit: long enough to interrupt the grid while workers run
HOLD_S = 120  # held_fit's longest wait for its release: only a broken test waits that long

WARMED = False  # set in a worker process by warm_up_here


def fit_logistic(spec):
    """A real fastedf run: the study's logistic regression for spec = (batch_size, seed, ...)."""
    batch_size, seed = spec[:2]
    split = study_data(seed)
    model = logistic_regression(split.X_train.shape[1], seed=seed)
    history = fastedf.fit(model.loss, {model.x: split.X_train, model.y: split.y_train.reshape(-1, 1)},
                          batch_size=batch_size, epochs=EPOCHS, lr=0.1, engine="compiled")
    return {"pid": os.getpid(), "warmed": WARMED, "curve": history.epoch_loss.tolist(),
            "final_loss": model.mean_loss(split.X_train, split.y_train),
            "accuracy": model.accuracy(split.X_test, split.y_test), "train_time_s": history.train_time_s}


def slow_fit(spec):
    """fit_logistic after a pause, leaving a file `start-B-seed-pid` in spec[2] when it starts."""
    batch_size, seed, markers = spec
    pathlib.Path(markers, f"start-{batch_size}-{seed}-{os.getpid()}").touch()
    time.sleep(SLOW_S)
    return fit_logistic(spec)


def marked_fit(spec):
    """fit_logistic, leaving files `start-B-seed-pid` and then `done-B-seed-pid` in spec[2] around it."""
    batch_size, seed, markers = spec
    pathlib.Path(markers, f"start-{batch_size}-{seed}-{os.getpid()}").touch()
    result = fit_logistic(spec)
    pathlib.Path(markers, f"done-{batch_size}-{seed}-{os.getpid()}").touch()
    return result


def held_fit(spec):
    """fit_logistic once a file `release` exists in spec[2], leaving a file `start-B-seed-pid` there as it starts:
    until then, its worker is surely in the middle of a run."""
    batch_size, seed, markers = spec
    pathlib.Path(markers, f"start-{batch_size}-{seed}-{os.getpid()}").touch()
    deadline = time.monotonic() + HOLD_S
    while not pathlib.Path(markers, "release").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("held_fit was never released")
        time.sleep(0.01)
    return fit_logistic(spec)


def warm_up_here(markers):
    """A worker's warm-up: one small fit (compiles or loads the cache), then a file `warm-pid` in markers."""
    global WARMED
    fit_logistic((1050, 0))
    WARMED = True
    pathlib.Path(markers, f"warm-{os.getpid()}-{time.monotonic_ns()}").touch()


def assert_matches_serial(results, serial):
    assert sorted(results) == sorted(serial)
    for spec, result in results.items():
        reference = serial[spec]
        np.testing.assert_allclose(result["curve"], reference["curve"], rtol=0, atol=TOLERANCE)
        assert abs(result["final_loss"] - reference["final_loss"]) <= TOLERANCE
        assert result["accuracy"] == reference["accuracy"]


def collector():
    """(on_result, deliveries): every delivery recorded as (spec, result, timed), in order."""
    deliveries = []
    return (lambda spec, result, timed: deliveries.append((spec, result, timed))), deliveries


def live_children():
    """Pids of our running descendants, but multiprocessing's resource tracker (it lives as long as we do)."""
    import psutil
    return {p.pid for p in psutil.Process().children(recursive=True)
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
            and not any("resource_tracker" in part for part in p.cmdline())}


@pytest.fixture(scope="module")
def serial():
    """Every spec of SPECS run here, one after another: the reference."""
    return {spec: fit_logistic(spec) for spec in SPECS}


@pytest.fixture(scope="module")
def local_grid():
    pytest.importorskip("distributed")
    with Grid(workers=2) as grid:
        yield grid


# ---------------------------------------------------------------- without Dask

def test_dask_missing_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed now raises ImportError
    with pytest.raises(DaskMissing) as caught:
        require_dask()
    assert str(caught.value) == DASK_MISSING
    assert isinstance(caught.value, ImportError) and isinstance(caught.value, UsageError)
    with pytest.raises(DaskMissing):
        Grid(workers=2).open()


def test_grid_takes_workers_or_scheduler():
    for kwargs in ({}, {"workers": 2, "scheduler": "tcp://127.0.0.1:1"}, {"workers": 0}, {"workers": True},
                   {"workers": 1, "retries": -1}):
        with pytest.raises(ValueError):
            Grid(**kwargs)


# ---------------------------------------------------------------- a LocalCluster

def test_local_cluster_matches_serial_and_warms_each_worker_once(local_grid, serial, tmp_path):
    on_result, deliveries = collector()
    delivered = local_grid.run(fit_logistic, SPECS, on_result=on_result,
                               warm_up=functools.partial(warm_up_here, str(tmp_path)))
    assert delivered == len(SPECS) == len(deliveries)
    client = local_grid.client
    assert local_grid.open().client is client  # opening an open grid starts nothing
    assert_matches_serial({spec: result for spec, result, _ in deliveries}, serial)
    assert all(timed.how == TIMING_WORKERS and timed.value is None for _, _, timed in deliveries)
    assert all(result["warmed"] and result["pid"] != os.getpid() for _, result, _ in deliveries)
    warmed = [name.split("-")[1] for name in os.listdir(tmp_path)]
    assert len(warmed) == len(set(warmed)) <= 2  # once per worker process
    assert {str(result["pid"]) for _, result, _ in deliveries} <= set(warmed)


def test_time_one_runs_in_the_client_in_order_while_the_cluster_is_idle(local_grid, serial, tmp_path):
    timings = []

    def runs_on_workers():
        """(started, finished) runs by the workers' own marker files."""
        names = [name.split("-", 1) for name in os.listdir(tmp_path)]
        return {rest for kind, rest in names if kind == "start"}, {rest for kind, rest in names if kind == "done"}

    def time_one(spec, result):
        before = runs_on_workers()
        again = fit_logistic(spec)  # the timed run, here in the client
        timings.append((os.getpid(), before[0] == before[1], runs_on_workers() == before))
        assert again["curve"] == result["curve"]
        return again["train_time_s"]

    on_result, deliveries = collector()
    specs = [(*spec, str(tmp_path)) for spec in SPECS]
    local_grid.run(marked_fit, specs, on_result=on_result, time_one=time_one, chunk=3)
    assert [spec[:2] for spec, _, _ in deliveries] == SPECS  # the specs' order, across chunks of 3 and 1
    assert_matches_serial({spec[:2]: result for spec, result, _ in deliveries}, serial)
    assert all(timed.how == TIMING_CLIENT and timed.value > 0 for _, _, timed in deliveries)
    # in this process; every run on the workers had finished, and none started while it was timed
    assert timings == [(os.getpid(), True, True)] * len(SPECS)


def test_a_task_error_is_raised_in_the_client(local_grid):
    on_result, deliveries = collector()
    with pytest.raises(ValueError, match="batch_size"):
        local_grid.run(fit_logistic, [(0, 0)], on_result=on_result)  # fit refuses batch size 0
    assert deliveries == []
    assert local_grid.run(fit_logistic, SPECS[:1], on_result=on_result) == 1  # the grid still works


def test_ctrl_c_cancels_the_rest_and_stops_the_cluster(tmp_path):
    pytest.importorskip("distributed")
    specs = [(8, seed, str(tmp_path)) for seed in range(8)]
    deliveries = []

    def on_result(spec, result, timed):
        deliveries.append(spec)
        raise KeyboardInterrupt  # as Ctrl-C while the caller writes its first row

    before = live_children()
    with pytest.raises(KeyboardInterrupt):
        run_grid(slow_fit, specs, workers=2, on_result=on_result)
    assert len(deliveries) == 1
    assert live_children() - before == set()  # every worker process has exited
    started = {name.split("-")[2] for name in os.listdir(tmp_path)}
    assert len(started) < len(specs)  # the pending runs were cancelled, not run to the end


# ---------------------------------------------------------------- a scheduler and workers started apart

@pytest.fixture
def dask_cluster(tmp_path):
    """start(n) -> (scheduler address, [worker Popen]): `dask scheduler` and n `dask worker`s on 127.0.0.1.

    Each process gets its own session; every one is killed at the end, whatever happened.
    """
    pytest.importorskip("distributed")
    processes = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}

    def launch(module, *args):
        with open(tmp_path / f"{module.rsplit('_', 1)[-1]}-{len(processes)}.log", "w") as log:
            process = subprocess.Popen([sys.executable, "-m", module, *args], stdout=log, stderr=subprocess.STDOUT,
                                       env=env, start_new_session=True)
        processes.append(process)
        return process

    def start(n_workers):
        scheduler_file = tmp_path / "scheduler.json"
        scheduler = launch("distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
                           "--no-dashboard", "--scheduler-file", str(scheduler_file))
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() or not scheduler_file.read_text().strip():
            assert scheduler.poll() is None and time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        workers = [launch("distributed.cli.dask_worker", address, "--nthreads", "1", "--no-nanny",
                          "--host", "127.0.0.1", "--no-dashboard") for _ in range(n_workers)]
        return address, workers

    try:
        yield start
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: only the processes it started
            process.wait()


def wait_for_workers(address, n):
    """Block until n workers have joined the scheduler at address."""
    from distributed import Client
    with Client(address, timeout=30) as client:
        client.wait_for_workers(n, timeout=60)


def test_scheduler_address_runs_on_the_separate_workers(dask_cluster, serial):
    address, workers = dask_cluster(2)
    wait_for_workers(address, 2)
    on_result, deliveries = collector()
    assert run_grid(fit_logistic, SPECS, scheduler=address, on_result=on_result) == len(SPECS)
    assert_matches_serial({spec: result for spec, result, _ in deliveries}, serial)
    assert {result["pid"] for _, result, _ in deliveries} <= {worker.pid for worker in workers}
    assert all(worker.poll() is None for worker in workers)  # leaving the grid left the cluster running


def test_a_killed_worker_loses_nothing_and_duplicates_nothing(dask_cluster, serial, tmp_path):
    address, workers = dask_cluster(2)
    wait_for_workers(address, 2)
    markers = tmp_path / "markers"
    markers.mkdir()
    specs = [(batch_size, seed, str(markers)) for batch_size in (8, 32) for seed in range(4)]
    pids = {worker.pid: worker for worker in workers}
    deliveries, killed = [], {}

    def kill_one_mid_run():
        """Kill the first worker to start a run (held_fit holds it there), then let every run go on."""
        deadline = time.monotonic() + HOLD_S
        while not killed and not (markers / "release").exists() and time.monotonic() < deadline:
            for name in filter(lambda name: name.startswith("start-"), os.listdir(markers)):
                _, b, seed, pid = name.split("-")
                if int(pid) in pids:
                    os.kill(int(pid), signal.SIGKILL)
                    pids[int(pid)].wait()
                    killed.update(pid=int(pid), spec=(int(b), int(seed)))
                    break
            time.sleep(0.01)
        (markers / "release").touch()

    killer = threading.Thread(target=kill_one_mid_run)
    killer.start()
    try:
        run_grid(held_fit, specs, scheduler=address, retries=2,
                 on_result=lambda spec, result, timed: deliveries.append((spec, result)))
    finally:
        (markers / "release").touch()
        killer.join()
    assert killed, "no worker started a run"
    delivered = [spec[:2] for spec, _ in deliveries]
    assert sorted(delivered) == sorted(spec[:2] for spec in specs)  # every run once: none lost, none twice
    results = {spec[:2]: result for spec, result in deliveries}
    assert results[killed["spec"]]["pid"] != killed["pid"]  # the killed worker's run was redone elsewhere
    assert_matches_serial({spec: results[spec] for spec in SPECS}, serial)


def test_no_scheduler_at_the_address_is_a_usage_error():
    pytest.importorskip("distributed")
    import socket
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(UsageError, match=f"cannot reach a Dask scheduler at tcp://127.0.0.1:{port}"):
        Grid(scheduler=f"tcp://127.0.0.1:{port}", timeout=1).open()
