"""Where a sweep's runs execute: local processes (the default) or a Ray cluster.

A backend only decides where the per-run function runs. :func:`prunedyn.run.sweeps.run_sweep`
builds the jobs, skips finished runs and writes ``summary.csv`` the same way for every
backend; a backend takes the jobs still to do and yields ``(index, summary)`` as runs finish.

``process``: a pool of spawned processes on this machine (one run in-process with one worker).
GPU runs share the GPUs: each worker has a number (``$PRUNEDYN_WORKER_SLOT``), and a run with
``device: cuda`` takes GPU ``slot % n_gpus`` (:func:`prunedyn.run.device.worker_gpu`), so
``--workers 4`` on a one-GPU machine trains four configs at once on that GPU (each process its
own CUDA context, some 0.5 GB; small models leave most of a large GPU idle when trained one at a
time, so several at once raise the throughput; the kernels of the processes time-share the GPU,
or run concurrently under NVIDIA MPS). Without ``--workers`` the pool has one worker per CPU
core, also for GPU runs: give ``--workers`` for those.

``ray``: one Ray task per run, on the cluster at ``address`` (``ray://host:10001`` through Ray
Client, ``host:6379`` from a cluster node, or ``$RAY_ADDRESS``; with neither, Ray starts a
local instance). A task asks for one GPU when the run's device is ``cuda`` or ``auto`` and the
cluster has GPUs, else for as many CPUs as the run's torch threads (at least 1). Every node
needs prunedyn installed (the same version) and must see the sweep folder and the data at the
same paths: for more than one node, put ``--out`` (and ``$PRUNEDYN_DATA``) on shared storage.
``$PRUNEDYN_DATA`` set where the sweep is started is passed on to the tasks. A task lost with
its node is retried by Ray and resumes from the run's last checkpoint.

Ray is an optional dependency (``pip install 'prunedyn[ray]'``), imported only here and only
when the ``ray`` backend is asked for.
"""
from __future__ import annotations

import os
import socket
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from prunedyn.run.config import ConfigError

BACKENDS = ("process", "ray")
RAY_PIN = "ray[default]==2.60.0"  # the pin of requirements.txt and pyproject's `ray` extra
# The environment variable holding a process-pool worker's number (read by prunedyn.run.device.resolve_device)
WORKER_SLOT = "PRUNEDYN_WORKER_SLOT"


class BackendError(ConfigError):
    """The backend cannot be used (Ray missing, cluster unreachable): bad input, exit code 2."""


@dataclass
class Job:
    """One run to do: ``fn(*args)`` computes it; ``device`` and ``threads`` size its resources."""

    index: int
    args: Tuple[Any, ...]
    device: str = "cpu"
    threads: int = 1


def execute(
    fn: Callable[..., dict],
    jobs: Sequence[Job],
    backend: str = "process",
    workers: Optional[int] = None,
    address: Optional[str] = None,
) -> Iterator[Tuple[int, dict]]:
    """Run ``fn`` for every job on ``backend``; yields ``(job.index, result)`` in completion order.

    ``workers``: parallel runs (process: the pool size, default one per core; ray: at most this
    many tasks in flight, default as many as the cluster schedules)."""
    if backend == "process":
        return _process(fn, jobs, workers or os.cpu_count() or 1)
    if backend == "ray":
        return _ray(fn, jobs, workers, address)
    raise BackendError(f"unknown sweep backend {backend!r}; choose from {', '.join(BACKENDS)}")


def _process(fn, jobs: Sequence[Job], workers: int) -> Iterator[Tuple[int, dict]]:
    if not jobs:
        return
    if workers == 1:
        for job in jobs:
            yield job.index, fn(*job.args)
        return
    # spawn: a fresh interpreter per worker (a fork of a process that holds torch threads can hang)
    ctx = get_context("spawn")
    slots = ctx.Value("i", 0)
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx,
                             initializer=init_worker, initargs=(slots, os.getpid())) as pool:
        futures = {pool.submit(fn, *job.args): job.index for job in jobs}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()


def init_worker(counter, parent: int) -> None:
    """Pool initializer: :func:`take_worker_slot`, and die with the process that started the
    pool (a killed sweep leaves no worker training on and holding its memory)."""
    take_worker_slot(counter)
    die_with_parent(parent)


def take_worker_slot(counter) -> None:
    """Give this worker process the next number (``$PRUNEDYN_WORKER_SLOT``), which spreads
    ``device: cuda`` runs over the machine's GPUs."""
    with counter.get_lock():
        slot = counter.value
        counter.value += 1
    os.environ[WORKER_SLOT] = str(slot)


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when ``parent`` exits (Linux; a no-op elsewhere). If ``parent`` is
    already gone, exit now."""
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - no prctl
        return
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


#: The reaper of a local Ray instance (standard library only, run with ``python -c``): every 0.5 s it
#: notes the processes descended from the sweep (pid and start time, from /proc); when the sweep's
#: process is gone without having stopped it, it SIGKILLs those still running. Ray's own agents
#: outlive a SIGKILLed driver otherwise (seen with Ray 2.60: DashboardAgent, RuntimeEnvAgent).
REAPER = r"""
import os, signal, sys, time
parent = int(sys.argv[1])
def stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[1]), fields[19]  # ppid, start time
    except (OSError, IndexError, ValueError):
        return None
seen = {}
while True:
    table = {int(p): stat(int(p)) for p in os.listdir("/proc") if p.isdigit()}
    if table.get(parent) is None:
        break
    children = {}
    for pid, st in table.items():
        if st is not None:
            children.setdefault(st[0], []).append(pid)
    todo = [parent]
    while todo:
        for child in children.get(todo.pop(), []):
            if child != os.getpid() and child not in seen:
                seen[child] = table[child][1]
            todo.append(child)
    time.sleep(0.5)
for pid, start in seen.items():
    st = stat(pid)
    if st is not None and st[1] == start:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
"""


def start_reaper():
    """Start :data:`REAPER` for this process (Linux); returns it, to ``kill()`` after a clean shutdown,
    or ``None`` where there is no /proc."""
    import subprocess
    import sys

    if not os.path.isdir("/proc/self"):
        return None
    return subprocess.Popen([sys.executable, "-c", REAPER, str(os.getpid())], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def import_ray():
    """``ray``, or a :class:`BackendError` saying how to install it."""
    try:
        import ray
    except ImportError as e:
        raise BackendError(
            f"the ray backend needs Ray, which is not installed: pip install 'prunedyn[ray]' (or '{RAY_PIN}')"
        ) from e
    return ray


def ray_resources(device: str, threads: int, cluster_gpus: float) -> Dict[str, float]:
    """A run's Ray task resources: one GPU for a cuda/auto run on a cluster with GPUs, else its CPU threads."""
    if device in ("cuda", "auto") and cluster_gpus > 0:
        return {"num_gpus": 1, "num_cpus": 1}
    return {"num_gpus": 0, "num_cpus": max(1, int(threads or 1))}


def _check_reachable(target: Optional[str], timeout: float = 10.0) -> None:
    """Fail fast on a ``host:port`` / ``ray://host:port`` nobody listens on (Ray itself retries for minutes)."""
    if not target or target in ("auto", "local"):
        return
    hostport = target.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return  # leave other forms to Ray
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise BackendError(f"cannot connect to the Ray cluster at {target}: {e}") from e


def _forwarded_env() -> Dict[str, str]:
    return {k: v for k, v in os.environ.items() if k == "PRUNEDYN_DATA"}


def _ray(fn, jobs: Sequence[Job], workers: Optional[int], address: Optional[str]) -> Iterator[Tuple[int, dict]]:
    if not jobs:
        return
    ray = import_ray()
    connected_here = not ray.is_initialized()
    if connected_here:
        target = address or os.environ.get("RAY_ADDRESS")
        kwargs: Dict[str, Any] = {"address": target, "logging_level": "WARNING"}
        if not target and workers:
            kwargs["num_cpus"] = workers  # a local Ray instance: no more CPUs than asked for
        env = _forwarded_env()
        if env:
            kwargs["runtime_env"] = {"env_vars": env}
        _check_reachable(target)
        reaper = None if target else start_reaper()  # a local instance dies with this process
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            if reaper is not None:
                reaper.kill()
            raise BackendError(f"cannot connect to the Ray cluster at {target or '(local)'}: {e}") from e
    remote = ray.remote(fn)
    gpus = float(ray.cluster_resources().get("GPU", 0))
    pending: Dict[Any, int] = {}
    queue: List[Job] = list(jobs)
    limit = workers or len(queue)
    try:
        while queue or pending:
            while queue and len(pending) < limit:
                job = queue.pop(0)
                ref = remote.options(**ray_resources(job.device, job.threads, gpus)).remote(*job.args)
                pending[ref] = job.index
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                index = pending.pop(ref)
                yield index, ray.get(ref)
    finally:
        for ref in pending:  # interrupted: stop this sweep's runs (they resume from their checkpoints)
            try:
                ray.cancel(ref, force=True)
            except Exception:  # pragma: no cover - already finished or the cluster is gone
                pass
        if connected_here:
            ray.shutdown()
            if reaper is not None:
                reaper.kill()
                reaper.wait()
