"""Thin helpers over ``torch.distributed`` so the trainer reads the same with 1 or N processes.

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK; everything here degrades to single-process no-ops
when they are absent, so no code path needs ``if distributed:`` around it.
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Dict, Optional

import torch
import torch.distributed as dist


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def init_distributed(device: Optional[str] = None, timeout_minutes: float = 30.0) -> torch.device:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on CPU); return this rank's device.

    ``device`` is "cpu", "cuda", "cuda:N", "mps" or None (cuda when available); one that is no device or that this
    machine does not have is a :class:`blazekit.engine.cli.UsageError`. Without torchrun's variables it only
    resolves the device.
    """
    from .cli import check_device

    want_cuda = (check_device(device) or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if env_world_size() > 1 and not is_dist():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if want_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if want_cuda else "gloo",
                                timeout=timedelta(minutes=timeout_minutes))
    if want_cuda:
        if device and ":" in device:
            return torch.device(device)
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("mps" if device == "mps" else "cpu")


def cleanup() -> None:
    if is_dist():
        dist.destroy_process_group()


def all_reduce_mean(values: Dict[str, float], device: torch.device) -> Dict[str, float]:
    """Average scalar metrics over ranks (one collective for all keys)."""
    if not is_dist() or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= get_world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def all_true(flag: bool, device: torch.device) -> bool:
    """True only if ``flag`` holds on every rank (so all ranks take the same branch, e.g. skip a step)."""
    if not is_dist():
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
