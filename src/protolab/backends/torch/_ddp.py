"""Multi-device PyTorch trials: DDP ranks that protolab launches itself (gloo on the CPU).

Why not ``Fabric(strategy="ddp").launch()``: Lightning starts every other rank by running
``sys.argv`` again, which under a sweep would run the whole sweep once more per rank. Here
the sweep process starts ``hardware.devices`` rank processes of its own
(``python -m protolab.backends.torch._ddp``, by the launcher contract of
``backends/_launch.py``, so no user ``__main__`` is re-imported) with
``MASTER_ADDR``/``MASTER_PORT``/``RANK``/``LOCAL_RANK``/``WORLD_SIZE`` set: Fabric sees an
already-launched environment, joins the process group and launches nothing.

Each rank trains its slice of every global batch (``train.batch_size`` split evenly), so
the loss curve is the single-device one. Only rank 0 talks to the sweep: it relays each
epoch's metrics to the caller's hook (which prunes by raising) and broadcasts the verdict
and its metrics to the other ranks, so every rank stops after the same epoch and takes the
same early-stopping decision. Rank 0 hands back the result and the trained weights; the
model is rebuilt here, so the trial's model outlives the ranks.

The ranks live as long as this process (like the jax worker: imports and the process group
are paid once), each with one CPU thread unless ``hardware.threads`` says otherwise. A rank
that dies fails the trial at once (the others are killed, fresh ranks start for the next
job); a rank stuck in a collective fails it after ``PROTOLAB_DDP_TIMEOUT_S`` (300 s).

The rendezvous store binds where ``MASTER_ADDR`` says (127.0.0.1): torch's own TCPStore
server listens on every interface whatever the address, so anyone on the network could join
or poison the process group. Rank 0 serves it on a socket bound to ``MASTER_ADDR`` instead
(:func:`host_store`), and every rank joins it as a client (``TORCHELASTIC_USE_AGENT_STORE``).
"""

from __future__ import annotations

import os
import pickle
import socket
import sys
import time
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any, NoReturn, cast

from protolab.backends._base import EpochHook, Job, JobResult
from protolab.backends._launch import (
    Call,
    Channel,
    Launcher,
    Stopped,
    WorkerDied,
    die_with_parent,
    dumps_job,
    picklable,
    spawn,
    worker_entry,
)

if TYPE_CHECKING:
    from protolab.backends._base import Backend

__all__ = ["RANK_ENV", "DDPLauncher", "ddp_strategy", "host_store", "in_rank"]

RANK_ENV = "PROTOLAB_DDP_RANK"  # set in a rank process: its global rank
TIMEOUT_ENV = "PROTOLAB_DDP_TIMEOUT_S"
_TIMEOUT_S = 300.0  # a collective that waits longer fails (a rank hung or gone)
_GRACE_S = 10.0  # after one rank failed: how long the others get to report theirs
_POLL_S = 0.5  # how often a waiting launcher checks that every rank is alive
_STORE: list[Any] = []  # rank 0: the store's socket and server, alive as long as the rank


def in_rank() -> bool:
    """True in a rank process this module launched (its jobs train in-process)."""
    return RANK_ENV in os.environ


def timeout_s() -> float:
    return float(os.environ.get(TIMEOUT_ENV, _TIMEOUT_S))


def ddp_strategy(on_cpu: bool) -> Any:
    """Fabric's DDP strategy for a launched rank: gloo on the CPU, with a bounded timeout."""
    import logging
    from datetime import timedelta

    from lightning.fabric.strategies import DDPStrategy

    # Lightning sets its own logger to INFO on import: no per-rank "Initializing" banners
    for name in ("lightning", "lightning.fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.WARNING)

    backend = "gloo" if on_cpu else None  # None: Fabric's default for the device (nccl)
    return DDPStrategy(process_group_backend=backend, timeout=timedelta(seconds=timeout_s()))


class DDPLauncher(Launcher):
    """Starts and drives the rank processes of one backend (``target``: its class path)."""

    def __init__(self, name: str, target: str) -> None:
        self.name, self.target = name, target
        # what the next launch runs on (``run`` sets them from the job's hardware)
        self.world: int = 1
        self.threads: int | None = None
        self._ranks: list[Channel] = []
        self._threads: int | None = None  # what the running ranks were started with

    def run(self, job: Job, on_epoch: EpochHook | None = None) -> JobResult:
        """Train ``job`` on ``hardware.devices`` ranks; rank 0's result, the model rebuilt."""
        self.world, self.threads = job.hardware.devices, job.hardware.threads
        reply = self.launch(Call("run", dumps_job(job)), on_epoch)
        result, state = cast("tuple[JobResult, bytes]", reply)
        return _finish(self.name, job, result, state)

    def launch(self, call: Call, on_epoch: EpochHook | None = None) -> object:
        """Every rank runs ``call``; rank 0's reply (a job: its result and its weights)."""
        ranks = self._ensure(self.world, self.threads)
        try:
            for rank in ranks:
                rank.send.send(call)
            return self._collect(on_epoch)
        except KeyboardInterrupt:
            self.close()  # mid-job: the ranks' state is unknown, start afresh next time
            raise
        except OSError:  # a pipe to a rank broke: it is gone
            self._raise_dead(wait_s=5.0)
            raise

    def _ensure(self, world: int, threads: int | None) -> list[Channel]:
        """The live ranks for ``world`` devices, started (again) when missing or different."""
        alive = all(r.alive for r in self._ranks)
        if not alive or len(self._ranks) != world or self._threads != threads:
            self.close()
            self._start(world, threads)
        return self._ranks

    def _start(self, world: int, threads: int | None) -> None:
        port = _free_port()
        for rank in range(world):
            env = {
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "WORLD_SIZE": str(world),
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "NODE_RANK": "0",
                "OMP_NUM_THREADS": str(threads or 1),  # ranks share the cores: one each
                "TORCHELASTIC_USE_AGENT_STORE": "True",  # join rank 0's store (host_store)
                RANK_ENV: str(rank),
            }
            self._ranks.append(spawn(__name__, self.target, env))
        self._threads = threads

    def _collect(self, on_epoch: EpochHook | None) -> object:
        """Serve rank 0's epochs to the hook until every rank has replied (or one died)."""
        replies: dict[int, tuple[str, Any]] = {}
        hook_error: BaseException | None = None
        deadline = None
        while len(replies) < len(self._ranks):
            if deadline is not None and time.monotonic() > deadline:
                break  # a rank failed and the others hang in a collective: kill them all
            waiting = {id(r.recv): i for i, r in enumerate(self._ranks) if i not in replies}
            ready = wait([self._ranks[i].recv for i in waiting.values()], timeout=_POLL_S)
            if not ready:
                self._raise_dead()
            for i in (waiting[id(c)] for c in ready):
                try:
                    kind, value = self._ranks[i].recv.recv()
                except (EOFError, OSError):
                    self._died(i)
                if kind == "epoch":
                    hook_error = self._hook(on_epoch, value) or hook_error
                    continue
                replies[i] = (kind, value)
                if kind == "error" and not isinstance(value, Stopped) and deadline is None:
                    deadline = time.monotonic() + _GRACE_S
        if len(replies) < len(self._ranks):
            self.close()
        if hook_error is not None:
            raise hook_error
        errors = [v for k, v in replies.values() if k == "error" and not isinstance(v, Stopped)]
        if errors:
            kind, value = replies.get(0, ("error", errors[0]))
            raise value if kind == "error" and not isinstance(value, Stopped) else errors[0]
        return replies[0][1]

    def _hook(self, on_epoch: EpochHook | None, value: Any) -> BaseException | None:
        """Call the caller's hook for rank 0's epoch; tell rank 0 to go on or to stop."""
        try:
            if on_epoch is not None:
                on_epoch(*value)
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # pruned (or a failing hook): every rank stops now
            self._ranks[0].send.send(Call("stop"))
            return e
        self._ranks[0].send.send(Call("go"))
        return None

    def _raise_dead(self, wait_s: float = 0.0) -> None:
        """If a rank has exited, kill the others and fail the job saying which one."""
        for i, rank in enumerate(self._ranks):
            if rank.exit_code(wait_s) is not None:
                self._died(i)

    def _died(self, i: int) -> NoReturn:
        """Rank ``i`` closed its pipe: it exited (or is about to). Fail the job, no orphans."""
        code, world = self._ranks[i].exit_code(5), len(self._ranks)
        self.close()
        raise WorkerDied(
            f"the {self.name} DDP rank {i} of {world} died (exit code {code}); the trial "
            "fails and fresh ranks start for the next job"
        )

    def close(self) -> None:
        """Stop every rank (each also exits by itself when this process's pipes close)."""
        for rank in self._ranks:
            rank.close_pipes()
            rank.end(kill=True)  # a rank may hang in a collective: no polite terminate
        for rank in self._ranks:
            rank.exit_code(10)
        self._ranks = []


def host_store() -> None:
    """Serve the process group's TCPStore on ``MASTER_ADDR:MASTER_PORT`` only (rank 0).

    torch binds its server to every interface; handed a socket already bound to
    ``MASTER_ADDR`` (``master_listen_fd``), it listens there and nowhere else. The server
    lives as long as this process, like the process group.
    """
    from datetime import timedelta

    import torch.distributed as dist

    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    store = dist.TCPStore(
        host,
        port,
        is_master=True,
        master_listen_fd=sock.fileno(),
        wait_for_workers=False,
        timeout=timedelta(seconds=timeout_s()),
        use_libuv=True,
    )
    _STORE[:] = [sock, store]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _finish(name: str, job: Job, result: JobResult, state: bytes) -> JobResult:
    """Rank 0's result with its model rebuilt here from the trained weights.

    MFU is against every device the trial used: the peak was probed on one rank's thread.
    """
    import io

    import torch

    from protolab.backends.torch.export import TorchModel
    from protolab.backends.torch.nn import build_torch

    ds = job.dataset
    with torch.random.fork_rng(devices=[]):  # the throwaway init must not move our RNG
        module = build_torch(job.arch, ds.input_shape, ds.input_dtype)
    module.load_state_dict(torch.load(io.BytesIO(state), map_location="cpu", weights_only=True))
    result.model = TorchModel(name, module)
    world = float(job.hardware.devices)
    m = result.metrics
    if "device/peak_tflops" in m and "perf/tflops" in m:
        m["device/peak_tflops"] *= world
        m["perf/mfu"] = m["perf/tflops"] / m["device/peak_tflops"]
    return result


def _rank_hook(rank: int, recv: Connection, send: Connection) -> EpochHook:
    """Rank 0 asks the caller; every rank then gets its verdict and its metrics."""
    import torch.distributed as dist

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        box: list[Any] = [False, None]
        if rank == 0:
            send.send(("epoch", (epoch, metrics)))
            op, _ = recv.recv()
            box = [op == "stop", metrics]
        dist.broadcast_object_list(box, src=0)
        if rank:  # rank 0's figures: early stopping decides the same on every rank
            metrics.clear()
            metrics.update(box[1])
        if box[0]:
            raise Stopped(f"stopped by the caller after epoch {epoch}")

    return on_epoch


def _serve(backend: Backend, rank: int, recv: Connection, send: Connection) -> None:
    """A rank's loop: one job at a time until the launcher closes the pipe."""
    while True:
        try:
            op, arg = recv.recv()
        except EOFError:
            return
        if op != "run":
            continue
        try:
            result = backend.run(pickle.loads(arg), _rank_hook(rank, recv, send))
            if rank:
                send.send(("done", None))
                continue
            model, result.model = result.model, None
            module = getattr(model, "module", None)
            assert module is not None, "a torch job hands back its module"
            send.send(("result", (result, _weights(module))))
        except BaseException as e:  # every failure goes back to the launcher, as itself
            send.send(("error", picklable(e)))


def _weights(module: Any) -> bytes:
    """The trained weights as ``torch.save`` bytes: a tensor sent through a Connection
    would travel as a shared-memory handle that only related processes can open."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, buf)
    return buf.getvalue()


def main(argv: list[str]) -> None:
    die_with_parent()  # before the framework import: a rank never outlives its sweep
    backend, recv, send = worker_entry(argv)
    rank = int(os.environ[RANK_ENV])
    if rank == 0:
        host_store()
    _serve(backend, rank, recv, send)


if __name__ == "__main__":
    # Run the imported module's main (see backends/_process.py): what a rank pickles must
    # name protolab.backends.torch._ddp, which the launcher can import.
    from protolab.backends.torch import _ddp

    _ddp.main(sys.argv[1:])
