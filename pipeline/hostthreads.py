"""How many host threads run blocks: one on the CPU, several per GPU.

On a GPU the model is not what limits the segment stage: reading, normalizing, stitching,
counting and writing a block cost far more host time than its forward pass. So a GPU's blocks
run on several host threads that share the one model on the device (the GPU runs their batches
in turn), and each thread's batch takes its share of the GPU's free memory. On the CPU blocks
run one at a time and torch takes the cores.
"""

from __future__ import annotations

import os

__all__ = ["HOST_THREADS_PER_GPU", "available_cores", "gpu_host_threads", "host_threads"]

#: Host threads that feed one GPU, at most.
HOST_THREADS_PER_GPU = 4


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def gpu_host_threads(cores: int, gpus: int = 1) -> int:
    """Host threads per GPU: its share of ``cores``, at most :data:`HOST_THREADS_PER_GPU`."""
    return max(1, min(HOST_THREADS_PER_GPU, cores // max(1, gpus)))


def host_threads(device: str) -> int:
    """Host threads for the blocks of this process on ``device``: a GPU's share, 1 on the CPU."""
    import torch

    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return gpu_host_threads(available_cores()) if cuda else 1
