"""Can this machine run a model of this size, and if not, what would? (lesson 7)

``check_device`` adds up the weights and one forward pass (``minillada.models.sizing``) and
compares the sum with the GPU's free memory and its bf16 support; it raises ``DeviceError`` when
the model cannot run. ``device_advice`` says what would work instead: which GPUs hold the model at
this context, and what the CPU would take, in host memory and in minutes per answer, from the
forward pass's FLOPs (``forward_flops``) and a short measurement of this CPU's matrix-product rate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from minillada.models.llada import LLaDAConfig
from minillada.models.sizing import activation_memory, count_parameters, forward_flops


class DeviceError(RuntimeError):
    """The device cannot hold the model (or cannot compute in the dtype asked for)."""


@dataclass(frozen=True)
class DeviceReport:
    device: torch.device
    name: str
    total_bytes: int | None  # None: the CPU (host memory is not checked)
    free_bytes: int | None
    bf16: bool
    needed_bytes: int  # weights + one forward at full context, batch 1

    def __str__(self) -> str:
        need = f"needs {self.needed_bytes / 2**30:.1f} GiB"
        if self.total_bytes is None:
            return f"device       {self.name}: no GPU; the model {need} of host memory"
        return (
            f"device       {self.name}: {self.free_bytes / 2**30:.1f} of "
            f"{self.total_bytes / 2**30:.1f} GiB free, bf16 {'yes' if self.bf16 else 'no'}; "
            f"the model {need}"
        )


def memory_needed(
    config: LLaDAConfig, dtype: torch.dtype = torch.bfloat16, seq_len: int | None = None
) -> int:
    """Bytes for the weights in ``dtype`` plus one batch-1 forward at ``seq_len`` (default: the
    whole context), by ``minillada.models.sizing``'s count."""
    size = torch.empty((), dtype=dtype).element_size()
    weights = count_parameters(config).total * size
    L = seq_len or config.max_sequence_length
    return weights + activation_memory(config, 1, L, bytes_per_value=size)["peak"]


# GPUs with native bf16 (compute capability 8.0 or newer) and their memory in GiB as torch reports
# it (a "24 GB" card has 24 GiB, an "80 GB" H100 79.2 GiB): the ones a learner is likely to rent
BF16_GPUS: dict[str, float] = {
    "RTX 3090 / 4090": 24.0,
    "L4": 22.0,
    "A10": 22.0,
    "RTX 5090": 32.0,
    "A100 40GB": 39.4,
    "L40S / RTX 6000 Ada": 44.5,
    "A100 80GB / H100": 79.2,
    "H200": 139.8,
}


def cpu_flops_per_second(dtype: torch.dtype = torch.bfloat16, seconds: float = 0.3) -> float:
    """This CPU's rate for a large matrix product in ``dtype``, measured for about ``seconds``
    with torch's threads (a proxy for the 8B model's linear layers, which dominate its FLOPs)."""
    n = 1024
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b  # warm-up: thread pool and kernels
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or runs < 2:
        a @ b
        runs += 1
    return 2 * n**3 * runs / (time.perf_counter() - start)


def positions_per_answer(prompt: int, answer: int, block: int = 32) -> list[int]:
    """The length of every forward pass of iLLaDA's variable-length sampler at one token per pass:
    ``block`` passes over prompt + 1 block, ``block`` over prompt + 2 blocks, ... until the blocks
    hold the answer."""
    blocks = -(-answer // block)
    return [prompt + block * k for k in range(1, blocks + 1) for _ in range(block)]


def cpu_minutes_per_answer(
    config: LLaDAConfig,
    flops_per_second: float,
    prompt: int = 150,
    answer: int = 600,
    block: int = 32,
) -> float:
    """Minutes for one answer of ``answer`` tokens to a ``prompt``-token question with the paper's
    one token per forward pass, at ``flops_per_second`` (compute-bound: on a CPU it is)."""
    flops = sum(forward_flops(config, L) for L in positions_per_answer(prompt, answer, block))
    return flops / flops_per_second / 60


def device_advice(
    config: LLaDAConfig,
    dtype: torch.dtype = torch.bfloat16,
    seq_len: int | None = None,
    flops_per_second: float | None = None,
) -> str:
    """What would run a model of ``config``: the GPUs that hold it at ``seq_len`` tokens (default:
    the whole context), and the CPU's memory and minutes per answer."""
    need = memory_needed(config, dtype, seq_len) / 2**30
    L = seq_len or config.max_sequence_length
    fits = ", ".join(name for name, gib in BF16_GPUS.items() if gib >= need)
    rate = flops_per_second if flops_per_second is not None else cpu_flops_per_second(dtype)
    minutes = cpu_minutes_per_answer(config, rate)
    weights = count_parameters(config).total * torch.empty((), dtype=dtype).element_size() / 2**30
    return (
        f"What would run it: a GPU with bf16 (compute capability 8.0+) and {need:.1f} GiB free for "
        f"the weights and one forward at {L:,} tokens: {fits or 'none of the usual ones'}"
        f"; or this CPU, with about {weights:.1f} GiB of free host memory, at about "
        f"{minutes:,.0f} minutes per 600-token answer to a 150-token question (one token per "
        f"forward pass; {rate / 1e9:,.0f} GFLOP/s measured for a {dtype} matrix product here). "
        "To run it on the CPU anyway, set MINILLADA_REHEARSAL=1."
    )


def _gpu_facts(device: torch.device) -> tuple[str, int, int, tuple[int, int]]:
    """Name, free and total bytes, compute capability: one place that asks CUDA (tests replace
    it to play a GPU they do not have)."""
    free, total = torch.cuda.mem_get_info(device)
    return (
        torch.cuda.get_device_name(device),
        free,
        total,
        torch.cuda.get_device_capability(device),
    )


def check_device(
    config: LLaDAConfig,
    device: torch.device | str,
    dtype: torch.dtype = torch.bfloat16,
    seq_len: int | None = None,
) -> DeviceReport:
    """Whether ``device`` can hold a model of ``config`` in ``dtype`` and run a forward at
    ``seq_len``; raises DeviceError with the numbers when it cannot."""
    device = torch.device(device)
    needed = memory_needed(config, dtype, seq_len)
    if device.type != "cuda":
        return DeviceReport(device, "CPU", None, None, True, needed)
    name, free, total, capability = _gpu_facts(device)
    # native bf16 arithmetic needs compute capability 8.0 (Ampere); torch's is_bf16_supported()
    # also counts the slow emulation on older GPUs, which is not what an 8B model needs
    bf16 = capability >= (8, 0)
    report = DeviceReport(device, name, total, free, bf16, needed)
    if dtype == torch.bfloat16 and not bf16:
        raise DeviceError(
            f"{name} (compute capability {capability[0]}.{capability[1]}) cannot compute in "
            "bfloat16: it needs compute capability 8.0 or newer (an A100, L4, RTX 30xx/40xx or "
            "H100). float16 would overflow in an 8B model trained in bf16."
        )
    if free < needed:
        raise DeviceError(
            f"{name} has {free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB, but the model "
            f"needs about {needed / 2**30:.1f} GiB ({count_parameters(config).total / 1e9:.2f}B "
            f"parameters in {dtype} plus one forward at "
            f"{seq_len or config.max_sequence_length:,} tokens). Free the GPU (other processes, "
            "other models in this kernel), or use a GPU with more memory."
        )
    return report
