"""Executors: where a stage's training jobs run. Each one is a :class:`Trainer`, so stages stay as is.

- local: the chosen engine in this process (the population engine by default, or the per-model
  reference); with ``workers > 1``, in that many local processes, one engine each
  (:func:`auto_workers`: what ``zoo-build`` uses unless told otherwise).
- ray: the jobs are split into batches of models, each batch trains as one Ray task (one engine
  per worker) and its results come back to the driver, which stages each unit as it arrives.
  Staging on the driver keeps workers free of any shared-filesystem assumption; a killed task is
  retried by Ray, and a killed driver resumes with ``--resume``, redoing only unstaged units.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

import torch
import torch.multiprocessing

from zoo_dataset.data import ImageData
from zoo_dataset.errors import WorkerError, ZooError, ZooSpecError
from zoo_dataset.jobs import EpochCallback
from zoo_dataset.training import JobResult, ReferenceTrainer, Trainer, TrainJob
from zoo_dataset.training.engine import PopulationEngine, group_key

# engine name -> factory(device, max_models): max_models caps the population engine's groups (a
# store's recorded chunk); the reference trains one model at a time and has no groups
ENGINES: dict[str, Callable[[str, int | None], Trainer]] = {
    "population": PopulationEngine,
    "reference": lambda device, _max_models: ReferenceTrainer(device),
}
EXECUTORS = ("local", "ray")
RAY_TASK_RETRIES = 3  # Ray's default (ray_constants.DEFAULT_TASK_MAX_RETRIES), made explicit
RAY_CONNECT_TIMEOUT_S = 10
PROGRESS_POLL_S = 1.0  # how often the driver relays the workers' epoch progress
PARENT_POLL_S = 1.0  # how often a worker checks that its driver is alive
# host memory one CPU worker may need: a 64-model CNN-l VD group peaked at ~0.75 GB (torch included)
WORKER_MEMORY_BYTES = 3 << 29  # 1.5 GiB


def auto_workers(executor: str = "local", device: str = "cpu") -> int:
    """Worker processes for a local CPU build: one engine per torch thread (tiny CNNs train ~1.1-1.5x
    faster per core so than as one engine over every thread; docs/performance.md), no more than the
    machine's cores, as many as the host's memory holds at WORKER_MEMORY_BYTES each. One elsewhere:
    a GPU takes one engine, and Ray sizes its own workers."""
    if executor != "local" or torch.device(device).type != "cpu":
        return 1
    threads = min(torch.get_num_threads(), os.cpu_count() or 1)
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): no memory cap
        return threads
    return max(1, min(threads, memory // WORKER_MEMORY_BYTES))


def make_engine(engine: str, device: str = "cpu", max_models: int | None = None) -> Trainer:
    """A fresh ``engine``; ``max_models`` caps the population engine's groups (a store's recorded chunk)."""
    if engine not in ENGINES:
        raise ZooSpecError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    return ENGINES[engine](device, max_models)


def make_trainer(executor: str = "local", engine: str = "population", device: str = "cpu",
                 address: str | None = None, models_per_task: int | None = None, workers: int = 1) -> Trainer:
    """The trainer a build uses: ``engine`` run locally (in ``workers`` processes), or over a Ray cluster."""
    if torch.device(device).type == "cuda":
        if not torch.cuda.is_available():
            raise ZooSpecError(f"--device {device}: this torch {torch.__version__} sees no CUDA device")
        if workers != 1:
            raise ZooSpecError("--workers is for CPU builds; on cuda one engine trains groups sized to the device")
    if executor != "local" and workers != 1:
        raise ZooSpecError("--workers is for the local executor; Ray sizes its workers from the cluster")
    cores = os.cpu_count() or 1
    if not 1 <= workers <= cores:  # more processes than cores only slow each other down
        raise ZooSpecError(f"--workers must be 1 to {cores} (this machine's cores), got {workers}")
    if executor == "local":
        return ProcessTrainer(engine, device, workers) if workers > 1 else make_engine(engine, device)
    if executor == "ray":
        return RayTrainer(engine, device, address, models_per_task)
    raise ZooSpecError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")




def run_chunks(trainer: Trainer, chunks: Sequence[Sequence[TrainJob]], data: ImageData,
               on_epoch: EpochCallback | None = None) -> Iterator[JobResult]:
    """Train each chunk of jobs as one whole (never grouped with another chunk's jobs): in parallel
    where the trainer can (``run_chunks``: worker processes, Ray tasks), else chunk after chunk."""
    if hasattr(trainer, "run_chunks"):
        yield from trainer.run_chunks(chunks, data, on_epoch)
        return
    for chunk in chunks:
        yield from trainer.run(chunk, data, on_epoch=on_epoch)


_progress_queue = None  # in a worker process: where epoch progress goes to the driver


def _start_worker(threads: int, progress, driver: int) -> None:
    global _progress_queue
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle: it stops the workers
    _exit_with(driver)
    torch.set_num_threads(threads)
    _progress_queue = progress


def _exit_with(driver: int) -> None:
    """End this worker once ``driver``, the process that started it, is gone.

    A driver killed with SIGKILL cannot stop its workers, and a worker that outlives it holds its
    memory (~0.5 GB) for as long as its share trains. An orphan is adopted by another process, so
    its parent id changes: a daemon thread compares it every PARENT_POLL_S (from the start, so a
    driver that died while this worker started is seen too). This works on every POSIX system and
    whichever thread of the driver started the pool (Linux's parent-death signal would follow
    that thread, not the process).
    """
    def watch() -> None:
        while os.getppid() == driver:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-driver", daemon=True).start()


def _train_batch(engine: str, device: str, jobs: list[TrainJob], data: ImageData,
                 max_models: int | None = None) -> list[JobResult]:
    """What one worker process or Ray task does: train a batch of jobs with a fresh engine (a worker
    process also reports each finished epoch to the driver)."""
    def report(epoch: int, epochs: int, models: int) -> None:
        _progress_queue.put((epoch, epochs, models))

    on_epoch = report if _progress_queue is not None else None
    return list(make_engine(engine, device, max_models).run(jobs, data, on_epoch=on_epoch))


class ProcessTrainer:
    """Trains jobs in ``workers`` local processes, one engine each.

    Tiny CNNs scale poorly over threads, so one engine per core beats one engine with every
    thread (docs/performance.md); this is the Ray executor's layout without Ray. Stages call
    :meth:`run_chunks`: each training chunk trains whole in one worker, so a worker's groups are
    those a single engine forms (a plain :meth:`run` deals equal shares of the engine's group
    order instead). The data reaches the workers through shared memory (torch.multiprocessing);
    results come back as each chunk finishes and are staged by this process, and the workers'
    finished epochs reach ``on_epoch`` meanwhile. A worker exits with this process, even when it
    is killed with SIGKILL (:func:`_exit_with`). Workers are spawned, so a script that uses this
    trainer must start under ``if __name__ == "__main__":`` (the ``zoo-build`` command does).
    """

    def __init__(self, engine: str = "population", device: str = "cpu", workers: int = 2):
        make_engine(engine, device)  # fail early on a bad engine name
        self.engine, self.device, self.workers = engine, device, workers
        self._pool: ProcessPoolExecutor | None = None
        self._progress = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:  # started once, on first use: each worker imports torch (seconds)
            context = torch.multiprocessing.get_context("spawn")
            threads = max(1, torch.get_num_threads() // self.workers)
            self._progress = context.SimpleQueue()
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_start_worker,
                                             initargs=(threads, self._progress, os.getpid()))
        return self._pool

    def close(self) -> None:
        """Stop the worker processes and wait for them (they also stop when the interpreter exits)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def run(
        self, jobs: Sequence[TrainJob], data: ImageData, on_epoch: EpochCallback | None = None
    ) -> Iterator[JobResult]:
        """Yield results share by share; ``on_epoch`` hears every epoch a worker finishes."""
        jobs = sorted(jobs, key=group_key)
        share = -(-len(jobs) // self.workers) if jobs else 1
        yield from self._run_batches([jobs[i : i + share] for i in range(0, len(jobs), share)], data, on_epoch)

    def run_chunks(self, chunks: Sequence[Sequence[TrainJob]], data: ImageData,
                   on_epoch: EpochCallback | None = None) -> Iterator[JobResult]:
        """Each chunk trains whole in one worker (one engine call), chunks spread over the workers."""
        yield from self._run_batches([list(c) for c in chunks if c], data, on_epoch)

    def _run_batches(self, batches: list[list[TrainJob]], data: ImageData,
                     on_epoch: EpochCallback | None) -> Iterator[JobResult]:
        pending = {self._executor().submit(_train_batch, self.engine, self.device, batch, data) for batch in batches}
        try:
            while pending:
                done, pending = wait(pending, timeout=PROGRESS_POLL_S, return_when=FIRST_COMPLETED)
                self._relay_progress(on_epoch)
                for future in done:
                    yield from future.result()
        except BrokenProcessPool:
            self._stop_workers()  # unusable now; the next run starts fresh workers
            raise WorkerError("a training worker process died (killed, or out of memory?); finished units are "
                              "kept: run the same zoo-build command with --resume") from None
        except BaseException:  # Ctrl-C, or the caller stopped consuming: nobody will take these results
            self._stop_workers()
            raise

    def _stop_workers(self) -> None:
        """Terminate the workers now, mid-share (a pool shutdown would wait for their shares to end)."""
        if self._pool is None:
            return
        for process in list((self._pool._processes or {}).values()):  # no public API before Python 3.14
            process.terminate()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None

    def _relay_progress(self, on_epoch: EpochCallback | None) -> None:
        while not self._progress.empty():
            update = self._progress.get()
            if on_epoch:
                on_epoch(*update)


class RayTrainer:
    """Trains job batches as Ray tasks on the cluster at ``address`` (default, as ``ray.init`` has it:
    ``RAY_ADDRESS``, else the cluster ``ray start`` began on this machine, else a new local one)."""

    def __init__(self, engine: str = "population", device: str = "cpu", address: str | None = None,
                 models_per_task: int | None = None):
        try:
            import ray
        except ImportError:
            raise ZooSpecError("--executor ray needs Ray: pip install 'zoo-twins[ray]'") from None
        make_engine(engine, device)  # fail early on a bad engine name
        head = address or os.environ.get("RAY_ADDRESS")
        if head:  # before a store is created
            _check_reachable(head)
        self.ray, self.engine, self.device = ray, engine, device
        self.address, self.models_per_task = address, models_per_task
        self.max_models: int | None = None  # a build on cuda sets its store's chunk: groups as recorded
        num_gpus = 1 if device.startswith("cuda") else 0
        self.task = ray.remote(num_gpus=num_gpus, max_retries=RAY_TASK_RETRIES)(_train_batch)

    def _connect(self) -> None:
        """Join the cluster once; a head that refuses us (another token, another Ray version) is one line."""
        if self.ray.is_initialized():
            return
        try:
            self.ray.init(address=self.address, ignore_reinit_error=True, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError, self.ray.exceptions.RayError) as exc:
            address = self.address or os.environ.get("RAY_ADDRESS") or "a new local instance"
            raise WorkerError(f"cannot join the Ray cluster at {address}: {_first_line(exc)} (Ray's warnings above say "
                              "why; a head with token authentication needs its token here too: RAY_AUTH_TOKEN, "
                              "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)") from None

    def task_size(self, n_jobs: int) -> int:
        """Models per task: as asked, else an even split over the cluster's CPUs."""
        if self.models_per_task:
            return self.models_per_task
        workers = max(1, int(self.ray.cluster_resources().get("CPU", 1)))
        return max(1, -(-n_jobs // workers))

    def run(
        self, jobs: Sequence[TrainJob], data: ImageData, on_epoch: EpochCallback | None = None
    ) -> Iterator[JobResult]:
        """Yield results task by task; epochs run remotely, so ``on_epoch`` is not called."""
        self._connect()
        jobs = list(jobs)
        size = self.task_size(len(jobs))
        yield from self._run_batches([jobs[i : i + size] for i in range(0, len(jobs), size)], data)

    def run_chunks(self, chunks: Sequence[Sequence[TrainJob]], data: ImageData,
                   on_epoch: EpochCallback | None = None) -> Iterator[JobResult]:
        """One Ray task per chunk: a chunk trains whole, as it would in one local engine."""
        self._connect()
        yield from self._run_batches([list(c) for c in chunks if c], data)

    def _run_batches(self, batches: list[list[TrainJob]], data: ImageData) -> Iterator[JobResult]:
        """Tasks lost with a node or a killed worker are rerun by Ray (``max_retries``, system failures
        only); once a task's retries are spent the build stops with one line. Tasks left over when the
        build stops are cancelled: a long-lived driver would otherwise keep the cluster busy."""
        data_ref = self.ray.put(data)
        pending = [self.task.remote(self.engine, self.device, batch, data_ref, self.max_models) for batch in batches]
        try:
            while pending:
                done, pending = self.ray.wait(pending, num_returns=1)
                yield from self.ray.get(done[0])
        except self.ray.exceptions.RayTaskError as exc:  # raised by our code in the task
            if isinstance(exc.cause, ZooError):
                raise exc.cause from None  # as the engine would have raised it here
            raise
        except self.ray.exceptions.RayError as exc:  # a system failure Ray no longer retries
            raise WorkerError(f"a Ray task failed after {RAY_TASK_RETRIES} retries ({_first_line(exc)}); finished "
                              "units are kept: run the same zoo-build command with --resume") from None
        finally:
            with contextlib.suppress(self.ray.exceptions.RayError):  # a cluster already gone has nothing to cancel
                for ref in pending:
                    self.ray.cancel(ref, force=True)


def _first_line(error: BaseException) -> str:
    """The gist of a Ray error (many span a page), at most 200 characters."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _check_reachable(address: str) -> None:
    """A ``host:port`` head must accept a connection within RAY_CONNECT_TIMEOUT_S: ``ray.init`` retries
    an unreachable head for minutes, printing a warning every few seconds. Other forms (``auto``,
    ``ray://...``) are left to Ray."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=RAY_CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise WorkerError(f"cannot reach the Ray cluster at {address} ({reason}); is its head node running "
                          "(ray start --head)?") from None
