"""Choose the torch device for a job, giving concurrent Snakemake jobs different GPUs.

Snakemake counts GPUs as a resource but does not say which one a job gets. When a scheduler
(SLURM, a container runtime) has narrowed ``CUDA_VISIBLE_DEVICES`` to one GPU, that GPU is the
job's. Otherwise the job claims the first GPU whose lock file it can lock exclusively
(``fcntl.flock``); the lock lives as long as the process, so the kernel releases it even when
the job is killed.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import torch

LOCK_DIR_ENV = "BRAINAGE_GPU_LOCK_DIR"
# Locks claimed by select_device; held here so they live for the process, not the call.
_held_locks: list[BinaryIO] = []


def default_lock_dir() -> Path:
    """``$BRAINAGE_GPU_LOCK_DIR``, else a per-machine folder under the system temp dir."""
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "brainage-gpu-locks")


def claim_gpu(
    device_count: int,
    lock_dir: str | Path,
    physical_ids: Sequence[str] | None = None,
    timeout_s: float = 0.0,
    poll_s: float = 1.0,
) -> tuple[int, BinaryIO]:
    """Lock the first free GPU of ``device_count`` and return (its index, the open lock file).

    The lock is released when the returned file is closed or the process ends, so the caller
    must keep the handle. ``physical_ids`` name the lock files (default: the indices), so
    processes that see different ``CUDA_VISIBLE_DEVICES`` still agree on which GPU is which.
    Waits up to ``timeout_s`` for a GPU to free up, then raises RuntimeError.
    """
    if device_count < 1:
        raise ValueError(f"device_count must be at least 1, got {device_count}")
    ids = list(physical_ids) if physical_ids is not None else [str(i) for i in range(device_count)]
    if len(ids) != device_count:
        raise ValueError(f"{len(ids)} physical ids given for {device_count} devices")
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    while True:
        for index, physical in enumerate(ids):
            # Append mode: opening must not wipe the holder's pid before we hold the lock.
            # The open handle is the lock: returned and held, so no `with` (SIM115).
            handle = open(lock_dir / f"gpu{re.sub(r'[^A-Za-z0-9_.-]', '_', physical)}.lock", "ab")  # noqa: SIM115
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            handle.truncate(0)
            handle.write(f"{os.getpid()}\n".encode())
            handle.flush()
            return index, handle
        if time.monotonic() >= deadline:
            raise RuntimeError(f"all {device_count} GPUs are claimed by other jobs (lock files in {lock_dir})")
        time.sleep(poll_s)


def select_device(
    requested: str = "auto", lock_dir: str | Path | None = None, timeout_s: float = 3600.0
) -> torch.device:
    """Resolve ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` to a device.

    ``auto`` is CUDA when available, else CPU. ``cuda:N`` is taken as given. For ``auto`` and
    ``cuda`` with several visible GPUs, a free one is claimed with :func:`claim_gpu` and its lock
    is kept for the rest of the process.
    """
    if requested == "cpu":
        return torch.device("cpu")
    if requested not in ("auto", "cuda") and not re.fullmatch(r"cuda:\d+", requested):
        raise ValueError(f"unknown device {requested!r}; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        if requested == "auto":
            return torch.device("cpu")
        raise RuntimeError(f"device {requested!r} requested but CUDA is not available")
    if requested.startswith("cuda:"):
        return torch.device(requested)
    count = torch.cuda.device_count()
    if count == 1:
        # A single visible GPU: the scheduler's assignment, or the only one there is.
        return torch.device("cuda:0")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    physical = [v.strip() for v in visible.split(",")][:count] if visible else None
    index, handle = claim_gpu(count, lock_dir or default_lock_dir(), physical, timeout_s)
    _held_locks.append(handle)
    return torch.device(f"cuda:{index}")


def job_device(requested: str, threads: int) -> torch.device:
    """:func:`select_device` for one Snakemake job: on the CPU, torch computes with the job's
    ``threads`` (its share of the machine's cores), not with every core it sees."""
    device = select_device(requested)
    if device.type == "cpu":
        torch.set_num_threads(threads)
    return device
