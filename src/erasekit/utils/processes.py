"""The process group of a data-parallel run (`torchrun --nproc_per_node N`, or `accelerate launch` on GPUs)."""
from __future__ import annotations


def process_state():
    """accelerate's PartialState for this process: joins the group when launched as one of several (gloo on CPU,
    NCCL on GPUs); a single process otherwise."""
    import torch
    from accelerate import PartialState
    return PartialState(cpu=not torch.cuda.is_available())
