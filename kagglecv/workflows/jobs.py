"""Training jobs (one experiment x one fold) and the two engines that run many of them: a local process pool and Ray.

A job is the command a user would type, ``kagglecv train CONFIG --set ... --fold K --resume``, run as its own
process: folds of one run already train in separate processes into separate ``fold<K>/`` folders and resume, so a
job that is stopped, killed or retried continues where it was. Each job's output goes to ``fold<K>/launch.log``.

* ``LocalPool``: a fixed number of slots on this machine; with GPUs one slot per GPU (``CUDA_VISIBLE_DEVICES``),
  else slots of ``cpus_per_job`` cores (``OMP_NUM_THREADS``).
* ``RayPool``: each job a Ray task with its resource request (``num_cpus``, ``num_gpus``) on the cluster at
  ``address`` or a local one; a job whose process or worker dies is retried (with ``--resume``) up to
  ``max_retries`` times. The run folders must be on storage every node sees: each task first checks that it sees a
  marker file the launcher wrote, and says which node cannot.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from kagglecv.core.errors import require_extra
from kagglecv.core.files import write_text
from kagglecv.core.runs import FoldDir

STOP_GRACE_SECONDS = 120     # a stopped job saves its exact state; this long is allowed before it is killed
KAGGLECV_ERROR_EXIT = 2      # a clear kagglecv error (bad config, missing file): retrying cannot help
PR_SET_PDEATHSIG = 1         # linux/prctl.h
LAUNCH_MARKER = ".kagglecv-launch"


@dataclass
class Job:
    """One (experiment, fold) and its state: queued, running, done, failed or stopped."""

    experiment: str
    config_path: Path
    overrides: list[str]
    folder: FoldDir
    state: str = "queued"
    error: str = ""
    started: float | None = None
    finished: float | None = None

    @property
    def fold(self) -> int:
        return self.folder.index

    @property
    def name(self) -> str:
        return f"{self.experiment}/fold{self.fold}"

    @property
    def log_path(self) -> Path:
        return self.folder.launch_log_path

    def command(self) -> list[str]:
        sets = [argument for override in self.overrides for argument in ("--set", override)]
        return [sys.executable, "-m", "kagglecv", "train", str(self.config_path), *sets, "--fold", str(self.fold),
                "--resume"]


def last_line(path: Path) -> str:
    """The last non-empty line of a job's log: the one-line error of a failed kagglecv command."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def run_job_process(command: list[str], cwd: str, log_path: str, env: dict[str, str] | None = None,
                    stop: threading.Event | None = None) -> int:
    """Run one job's command to its end (or until ``stop``: SIGTERM, which saves its state); returns the exit code."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                   preexec_fn=_own_session_dying_with_parent, env={**os.environ, **(env or {})})
        try:
            while process.poll() is None:
                if stop is not None and stop.is_set():
                    return _stop(process)
                time.sleep(0.2)
        except BaseException:  # Ctrl-C or a cancelled Ray task: the job saves its state before we go
            _stop(process)
            raise
    return process.returncode


def _own_session_dying_with_parent() -> None:
    """In the job's process before it starts: its own session (a terminal's Ctrl-C reaches the launcher, which stops
    the jobs itself), and on Linux SIGTERM when the launcher dies, even by SIGKILL (``prctl(PR_SET_PDEATHSIG)``), so
    a job never trains on as an orphan: it saves its state and stops, ready to resume."""
    os.setsid()
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop(process: subprocess.Popen) -> int:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


@dataclass
class LocalPool:
    """``slots`` jobs at once on this machine; ``gpus``: one GPU id per slot, or empty for CPU slots."""

    slots: int
    cpus_per_job: int
    gpus: list[int] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)

    def run(self, jobs: list[Job], cwd: Path, on_change) -> None:
        """Run every queued job, ``slots`` at a time; ``on_change()`` after every state change."""
        queue = deque(job for job in jobs if job.state == "queued")
        free = deque(range(self.slots))
        lock = threading.Lock()
        threads = []

        def work(job: Job, slot: int) -> None:
            env = {"OMP_NUM_THREADS": str(self.cpus_per_job), "MKL_NUM_THREADS": str(self.cpus_per_job)}
            if self.gpus:
                env["CUDA_VISIBLE_DEVICES"] = str(self.gpus[slot])
            try:
                code = run_job_process(job.command(), str(cwd), str(job.log_path), env, self.stop_event)
                _record_exit(job, code, self.stop_event.is_set())
            finally:
                with lock:
                    free.append(slot)
                on_change()

        try:
            self._schedule(queue, free, lock, threads, work, on_change)
        except KeyboardInterrupt:  # Ctrl-C: every running job saves its state and stops; queued ones never start
            self.stop_event.set()
            for thread in threads:
                thread.join()
            for job in queue:
                job.state = "stopped"
            on_change()
            raise

    def _schedule(self, queue: deque, free: deque, lock: threading.Lock, threads: list, work, on_change) -> None:
        while queue or any(thread.is_alive() for thread in threads):
            with lock:
                while queue and free and not self.stop_event.is_set():
                    job, slot = queue.popleft(), free.popleft()
                    job.state, job.started = "running", time.time()
                    thread = threading.Thread(target=work, args=(job, slot), daemon=True)
                    threads.append(thread)
                    thread.start()
                if self.stop_event.is_set():
                    for job in queue:
                        job.state = "stopped"
                    queue.clear()
            on_change()
            time.sleep(0.5)
        for thread in threads:
            thread.join()


def _record_exit(job: Job, code: int, stopping: bool) -> None:
    job.finished = time.time()
    if code == 0:
        job.state, job.error = "done", ""
    elif stopping:
        job.state, job.error = "stopped", "stopped; its state is saved: launch again to resume"
    else:
        job.state, job.error = "failed", last_line(job.log_path) or f"exit code {code}"


class JobFailed(Exception):
    """A job's process ended badly in a way a retry may fix (killed, out of memory, a lost node)."""


class JobRefused(Exception):
    """A job that cannot succeed on a retry: a kagglecv error, or a node that cannot see the run folder."""


def ray_job(command: list[str], cwd: str, log_path: str, marker: str, env: dict[str, str]) -> str:
    """The body of a Ray task: check the shared run folder is visible here, then run the job with ``--resume``."""

    if not Path(marker).is_file():
        raise JobRefused(f"node {socket.gethostname()} cannot see {Path(marker).parent} (no {Path(marker).name}): "
                         "runs/ must be on storage every node of the Ray cluster sees")
    code = run_job_process(command, cwd, log_path, env)
    if code == KAGGLECV_ERROR_EXIT:
        raise JobRefused(last_line(Path(log_path)) or "kagglecv error")
    if code != 0:
        raise JobFailed(f"exit code {code}: {last_line(Path(log_path))}")
    return socket.gethostname()


@dataclass
class RayPool:
    """Jobs as Ray tasks: on the cluster at ``address`` (``ray start --head``), or a local one of ``local_cpus``."""

    cpus_per_job: float
    gpus_per_job: float
    address: str | None = None
    local_cpus: int | None = None
    max_retries: int = 2
    marker: Path | None = None

    def run(self, jobs: list[Job], cwd: Path, on_change) -> None:
        import ray

        init_ray(self.address, self.local_cpus)
        task = ray.remote(ray_job).options(num_cpus=self.cpus_per_job, num_gpus=self.gpus_per_job,
                                           max_retries=self.max_retries, retry_exceptions=[JobFailed])
        env = {"OMP_NUM_THREADS": str(max(1, int(self.cpus_per_job)))}
        pending = {}
        for job in jobs:
            if job.state == "queued":
                job.state, job.started = "running", time.time()
                pending[task.remote(job.command(), str(cwd), str(job.log_path), str(self.marker), env)] = job
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    self._collect(ray, ref, pending.pop(ref))
                on_change()
        except KeyboardInterrupt:  # Ctrl-C: cancelled tasks stop their job, which saves its state
            for ref in pending:
                ray.cancel(ref)
            for ref, job in pending.items():
                self._collect(ray, ref, job)
            on_change()
            raise

    def _collect(self, ray, ref, job: Job) -> None:
        job.finished = time.time()
        try:
            ray.get(ref)
            job.state, job.error = "done", ""
        except ray.exceptions.TaskCancelledError:
            job.state, job.error = "stopped", "stopped; its state is saved: launch again to resume"
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            job.state, job.error = "failed", str(cause).strip().splitlines()[-1][:300]
        except ray.exceptions.RayError as exc:
            job.state, job.error = "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"


def init_ray(address: str | None, local_cpus: int | None = None) -> None:
    """Connect to the cluster at ``address``, or start a local one. Call it from the main thread: Ray ties its
    local processes to the thread that starts them (PR_SET_PDEATHSIG), so a worker thread's exit would end them."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, num_cpus=None if address else local_cpus, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)


def require_ray() -> None:
    require_extra("ray", "ray", "--backend ray")


def write_marker(runs_dir: Path) -> Path:
    """A file in the runs folder that every Ray task must see before it trains (the shared storage check)."""
    marker = Path(runs_dir).resolve() / LAUNCH_MARKER
    write_text(marker, f"written by kagglecv at {time.time()}\n")
    return marker


def run_on_ray(job: Job, stop: threading.Event) -> int:
    """One job as a Ray task (for ``tune --backend ray``, after :func:`init_ray`): its exit code, 0 when done;
    ``stop`` cancels it (the job saves its state)."""
    import ray

    marker = write_marker(job.folder.path.parent.parent)
    ref = ray.remote(ray_job).options(num_cpus=1, retry_exceptions=[JobFailed], max_retries=2).remote(
        job.command(), str(Path.cwd()), str(job.log_path), str(marker), {})
    while True:
        ready, _ = ray.wait([ref], timeout=0.5)
        if ready:
            try:
                ray.get(ref)
                return 0
            except ray.exceptions.RayError:
                return 1
        if stop.is_set():
            ray.cancel(ref)
            return 1
