"""Data-parallel training across processes: torch.distributed as `torchrun` sets it up, and nothing home-made.

`torchrun --nproc_per_node N [--nnodes M ...] -m distill.cli train ...` starts N processes per machine with RANK,
WORLD_SIZE, LOCAL_RANK and the rendezvous in their environment; `start_world` joins them (NCCL on CUDA, gloo on
CPU) and gives each its device. The Trainer then wraps its model in DistributedDataParallel (gradients averaged)
and builds the quantizer with vector-quantize-pytorch's `sync_codebook` / `sync_kmeans`, so the codebooks' EMA
updates and k-means init are reduced over all ranks and stay one codebook.

Every collective must be reached by every rank in the same order, or the job hangs. So whatever one rank could
decide on its own (the wall-clock budget, Stop / Ctrl+C, when to log, validate or checkpoint) is decided on rank
0 and broadcast once per step (`decide`); sums the curves need are reduced (`reduce_sum`).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)  # a rank that stops answering ends the job after this


@dataclass(frozen=True)
class World:
    """This process's place in a run: rank of size, its local rank on its machine, the backend ("none" alone)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str = "none"

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes files, prints, and decides for all."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def record(self, device: torch.device) -> dict:
        """How the run was trained, for the model file (and `distill info`)."""
        return {"world_size": self.size, "backend": self.backend,
                "devices": f"{self.size} x {device.type}" if self.distributed else device.type}


def launched() -> bool:
    """True in a process torchrun started as one of several (WORLD_SIZE > 1 in its environment)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start_world(device_name: str) -> tuple[World, str]:
    """Join the process group torchrun describes (once per process) -> (World, the device name for this rank).

    CUDA: NCCL, one GPU per local rank ("cuda:LOCAL_RANK"); anything else: gloo on the CPU. Outside torchrun
    (or WORLD_SIZE 1): World() and `device_name` unchanged."""
    if not launched():
        return World(), device_name
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = (device_name == "auto" or device_name.startswith("cuda")) and torch.cuda.is_available()
    if device_name.startswith("cuda:"):
        raise RuntimeError(f"--device {device_name}: under torchrun each process takes the GPU of its LOCAL_RANK; "
                           "give --device cuda (choose the GPUs with CUDA_VISIBLE_DEVICES)")
    if device_name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but this machine has no CUDA GPU")
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    world = World(dist.get_rank(), dist.get_world_size(), local, dist.get_backend())
    return world, (f"cuda:{local}" if cuda else "cpu")


def decide(world: World, values: list[float], device: torch.device) -> list[float]:
    """Rank 0's `values`, on every rank (one broadcast): the flags and numbers all ranks must agree on."""
    if not world.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(t, 0)
    return t.tolist()


def step_plan(world: World, bad: bool, plan: list[float], device: torch.device) -> list[float]:
    """[how many ranks' steps were not finite, *rank 0's plan] on every rank: one all-reduce a step (the other
    ranks add zeros to the plan). Alone: [float(bad), *plan]."""
    values = [float(bad)] + (list(plan) if world.main else [0.0] * len(plan))
    return reduce_sum(world, values, device)


def reduce_sum(world: World, values: list[float], device: torch.device) -> list[float]:
    """The sum over all ranks of each value (one all-reduce)."""
    if not world.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def average_norm_statistics(world: World, model: torch.nn.Module) -> None:
    """Average BatchNorm's running statistics over the ranks (one all-reduce per buffer), so validation, the
    checkpoint and the saved model see every rank's crops. (SyncBatchNorm would do it per step, on GPUs only;
    the default model has no BatchNorm, the seed design does.)"""
    if not world.distributed:
        return
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            for t in (m.running_mean, m.running_var):
                if t is not None:
                    dist.all_reduce(t)
                    t.div_(world.size)


def lost_rank(exc: BaseException) -> bool:
    """Whether an error from a collective means another rank is gone (its connection closed, a timeout), not a
    mistake of this one."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc).lower()
    return any(w in text for w in ("gloo", "nccl", "connection", "connect", "timed out", "timeout", "peer"))


def finish(world: World) -> None:
    """Leave the process group (every rank, after its last collective)."""
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
