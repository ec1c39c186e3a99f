"""The Ray backend of :func:`xattr_lab.evaluation.distributed.shards.run_sharded`: shards on actors, retried when one dies.

:func:`run` connects to Ray (:func:`connect`), starts ``workers`` actors that each build their
worker once (``make_worker()``: load the model; one GPU per actor when the cluster has GPUs; ``make_worker``
is put in Ray's object store once and every actor reads it from there), keeps
one shard in flight per actor, and hands each shard's rows to ``on_result`` as it arrives (the
caller writes them). A shard whose actor died (killed, out of memory, its machine gone) is queued
again and the actor replaced by a fresh one, up to ``retries`` times per shard; an error raised by
the work itself is re-raised as it is (it would fail again). Actors are killed at the end; a Ray
runtime that :func:`connect` started is shut down, one that was running is left running.

Connecting: with no ``address`` a local runtime starts in this machine (``ray.init`` with
``num_cpus``, no dashboard, logs kept out of the driver); ``address="auto"`` joins the cluster
started on this machine with ``ray start``, ``"host:port"`` or ``"ray://host:port"`` one elsewhere,
after checking within ``timeout`` seconds that the port answers. Ray's usage statistics are switched
off (``RAY_USAGE_STATS_ENABLED=0`` unless set): nothing leaves the machines of the cluster. Ray on a
loaded machine may miss its own fixed 30 s limit for the node to start; a local start is tried up to
:data:`LOCAL_ATTEMPTS` times. Ray itself is imported only here.
"""
from __future__ import annotations

import math
import os
import socket
from collections import Counter, deque
from typing import Any, Callable, Sequence

from ...errors import BackendError

INSTALL = "pip install 'xattr-lab[ray]'"
#: Ray settings (unless set): no usage statistics sent to Ray's servers (no network beyond the cluster);
#: agents on a loaded machine may take long to register
LOCAL_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_agent_register_timeout_ms": "120000"}
#: attempts to start a local runtime: Ray gives the raylet a fixed 30 s to register and the raylet gives the
#: dashboard agent a fixed 15 s to report its port; on the loaded 2-core machine about one start in three misses
LOCAL_ATTEMPTS = 5


def _error(message: str) -> BackendError:
    return BackendError(message)


def import_ray():
    """The ``ray`` module, or a :class:`BackendError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise _error(f"the ray backend needs Ray, which is not installed: {INSTALL}") from None
    return ray


def gpu_count() -> int:
    """CUDA devices visible to this process (0 without torch or CUDA)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _host_port(address: str) -> tuple[str, int] | None:
    """("host", port) of "host:port" or "ray://host:port"; None for "auto" (or no port)."""
    text = address.split("://", 1)[-1]
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float) -> None:
    """A :class:`BackendError` unless a TCP connection to the address's host and port opens within ``timeout``."""
    target = _host_port(address)
    if target is None:
        return
    try:
        socket.create_connection(target, timeout=timeout).close()
    except OSError as error:
        raise _error(f"cannot reach the Ray cluster at {address!r} within {timeout:g} s ({error}); start it with "
                     "`ray start --head` there, or omit --address to run a local Ray runtime") from None


def connect(address: str | None = None, workers: int | None = None, timeout: float = 120.0) -> bool:
    """Make sure this process is connected to Ray; True when this call started the runtime (shut it down after)."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    common = dict(log_to_driver=False, configure_logging=False, ignore_reinit_error=True)
    for name, value in LOCAL_ENV.items():
        os.environ.setdefault(name, value)
    if address:
        check_reachable(address, min(timeout, 30.0))
        try:
            ray.init(address=address, **common)
        except (ConnectionError, RuntimeError, TimeoutError) as error:
            raise _error(f"cannot join the Ray cluster at {address!r}: {error}") from None
        return True
    for attempt in range(1, LOCAL_ATTEMPTS + 1):
        try:
            ray.init(num_cpus=max(workers or 0, os.cpu_count() or 1), num_gpus=gpu_count(), include_dashboard=False,
                     **common)
            return True
        except Exception as error:  # noqa: BLE001 - Ray raises a bare Exception when its node times out
            ray.shutdown()
            if attempt == LOCAL_ATTEMPTS:
                raise _error(f"the local Ray runtime did not start in {LOCAL_ATTEMPTS} attempts: {error}") from None
    return True


class ShardActor:
    """Builds the worker once, then runs shards: ``run(task) -> rows``."""

    def __init__(self, make_worker: Callable[[], Any], run_task: Callable, work: Callable):
        self.state = make_worker()
        self.run_task, self.work = run_task, work

    def run(self, task):
        return self.run_task(self.state, self.work, task)

    def pid(self) -> int:
        return os.getpid()


def actor_count(ray, workers: int | None, n_tasks: int) -> int:
    """``workers``, or one per GPU of the cluster (one per CPU without GPUs); never more than the shards."""
    if workers is None:
        resources = ray.cluster_resources()
        workers = int(resources.get("GPU", 0)) or int(resources.get("CPU", 1))
    return max(1, min(workers, n_tasks))


def gpus_per_actor(ray, count: int) -> float:
    """1 GPU per actor when the cluster has one for each, a fair fraction when fewer, 0 without GPUs."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    return 0.0 if gpus == 0 else 1.0 / math.ceil(count / gpus)


def run(tasks: Sequence, make_worker: Callable[[], Any], run_task: Callable, work: Callable,
        on_result: Callable[[list], Any], *, address: str | None = None, workers: int | None = None,
        timeout: float = 120.0, retries: int = 3) -> None:
    """Run every task (a shard) on Ray actors; ``on_result(rows)`` in this process as each one finishes."""
    ray = import_ray()
    started = connect(address, workers, timeout)
    actors: list = []
    try:
        count = actor_count(ray, workers, len(tasks))
        remote = ray.remote(ShardActor).options(num_cpus=1, num_gpus=gpus_per_actor(ray, count), max_restarts=0)
        maker = ray.put(make_worker)  # once in the object store (it may hold a model's weights), not once per actor
        actors.extend(remote.remote(maker, run_task, work) for _ in range(count))
        _schedule(ray, remote, actors, list(tasks), (maker, run_task, work), on_result, retries)
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()


def _schedule(ray, remote, actors: list, tasks: list, arguments: tuple, on_result: Callable, retries: int) -> None:
    """Keep one task in flight per actor; requeue a dead actor's task on a fresh actor."""
    from ray.exceptions import RayActorError, RayTaskError

    queue, in_flight, failures = deque(range(len(tasks))), {}, Counter()

    def submit(actor) -> None:
        if queue:
            index = queue.popleft()
            in_flight[actor.run.remote(tasks[index])] = (actor, index)

    for actor in actors:
        submit(actor)
    while in_flight:
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        actor, index = in_flight.pop(ready[0])
        try:
            rows = ray.get(ready[0])
        except RayTaskError as error:  # the work raised: the same error here
            raise error.as_instanceof_cause() from None
        except RayActorError as error:
            if getattr(error, "actor_init_failed", False):  # make_worker raised: every actor would
                raise _error(f"the Ray actors could not build their worker (load the model): {error}") from None
            failures[index] += 1
            if failures[index] > retries:
                raise _error(f"a shard failed {failures[index]} times because its actor died; last: {error}") from None
            queue.appendleft(index)
            actors.remove(actor)
            ray.kill(actor)
            actor = remote.remote(*arguments)
            actors.append(actor)
        else:
            on_result(rows)
        submit(actor)
