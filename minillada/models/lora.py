"""LoRA from scratch: a low-rank update beside a frozen linear layer (Hu et al. 2021).

A linear layer y = x W^T gains two small matrices, A (r, in) and B (out, r), and computes

    y = x W^T + (alpha / r) * dropout(x) A^T B^T

W stays frozen; only A and B train, r (in + out) numbers per layer instead of in * out. B starts
at zero, so a fresh adapter leaves the model exactly as it was; A starts like a linear layer's own
weights (Kaiming-uniform, as in the reference implementation ``peft``), so the first gradient of B
is not zero.

The adapter hangs on the layer it adapts, as a child module ``lora`` and a forward hook, rather
than replacing the layer: lesson 4's LLaDA block shares each projection between two views (the
released flat names and its attention/MLP halves), and a replaced module would leave one view
pointing at the old layer. The base weights keep their released names; adapter weights appear as
``<layer>.lora.A`` and ``<layer>.lora.B``.

The reference policy of RL fine-tuning is the model with its adapters switched off
(``adapters_disabled``): it costs no second copy of the weights (d1 does the same with peft).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

# The projections of a LLaDA block (models.llada): attention q, k, v, out; SwiGLU gate, up, down.
LLADA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out")


def check_lora_settings(rank: int, dropout: float) -> None:
    if rank < 1:
        raise ValueError(f"LoRA rank must be at least 1, got {rank}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")


class LoRAAdapter(nn.Module):
    """The low-rank update of one linear layer: x (..., in) -> (alpha / r) * dropout(x) A^T B^T."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        generator: torch.Generator | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        check_lora_settings(rank, dropout)
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        self.dropout = dropout
        self.A = nn.Parameter(torch.empty(rank, in_features, device=device, dtype=dtype))
        self.B = nn.Parameter(torch.zeros(out_features, rank, device=device, dtype=dtype))
        bound = 1.0 / math.sqrt(in_features)  # nn.Linear's init, kaiming_uniform_(a=sqrt(5))
        with torch.no_grad():
            init = torch.empty(rank, in_features).uniform_(-bound, bound, generator=generator)
            self.A.copy_(init)
        self.enabled = True  # False: the layer computes its base output only (the reference)
        self.merged = False  # True: B A is folded into the base weight, the hook adds nothing

    def delta_weight(self) -> torch.Tensor:
        """The update folded into W by ``merge``: (alpha / r) B A, (out, in)."""
        return self.scaling * (self.B @ self.A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the adapter may be kept in float32 beside bf16 base weights (as d1 trains it)
        x = F.dropout(x.to(self.A.dtype), self.dropout, self.training)
        return F.linear(F.linear(x, self.A), self.B) * self.scaling  # (..., r) then (..., out)


def _add_update(layer: nn.Linear, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    adapter: LoRAAdapter = layer.lora
    if not adapter.enabled or adapter.merged:
        return output
    return output + adapter(inputs[0]).to(output.dtype)


def linear_layers(model: nn.Module) -> dict[str, nn.Linear]:
    """Every nn.Linear of ``model`` by its module name (each layer once, shared layers included)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def add_lora(
    model: nn.Module,
    targets: Sequence[str] = LLADA_PROJECTIONS,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    seed: int = 0,
    under: str = "blocks.",
) -> list[str]:
    """Attach an adapter to every linear layer whose last name is in ``targets`` (inside ``under``,
    a part of the module path: LLaDA's untied head is also called ``ff_out``, and the head is not
    adapted), freeze every other parameter, and return the names of the adapted layers.

    A target no layer of the model carries is an error, before anything changes: a typo would
    otherwise train nothing in that place and say nothing.
    """
    check_lora_settings(rank, dropout)
    layers = {n: m for n, m in linear_layers(model).items() if under in f"{n}."}
    last_names = {n.rsplit(".", 1)[-1] for n in layers}
    missing = [t for t in targets if t not in last_names]
    if missing:
        raise ValueError(
            f"LoRA targets {missing} match no linear layer under '{under}' of "
            f"{type(model).__name__}; its linear layers there are named {sorted(last_names)}"
        )
    chosen = [n for n in layers if n.rsplit(".", 1)[-1] in targets]
    if any(hasattr(layers[n], "lora") for n in chosen):
        raise ValueError("the model already has LoRA adapters; call remove_lora first")
    for p in model.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    for name in chosen:
        layer = layers[name]
        w = layer.weight
        layer.lora = LoRAAdapter(
            layer.in_features, layer.out_features, rank, alpha, dropout, g, w.device, w.dtype
        )
        layer._lora_hook = layer.register_forward_hook(_add_update)
    return chosen


def adapters(model: nn.Module) -> Iterator[LoRAAdapter]:
    return (m for m in model.modules() if isinstance(m, LoRAAdapter))


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters an optimizer trains: every adapter's A and B."""
    return [p for a in adapters(model) for p in (a.A, a.B)]


@contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block the model is its base (the RL reference policy); merged adapters are
    unmerged for the duration and merged again after."""
    state = [(a, a.enabled) for a in adapters(model)]
    merged = any(a.merged for a, _ in state)
    if merged:
        unmerge_lora(model)
    for a, _ in state:
        a.enabled = False
    try:
        yield model
    finally:
        for a, enabled in state:
            a.enabled = enabled
        if merged:
            merge_lora(model)


def _layers_with_adapters(model: nn.Module) -> Iterator[nn.Linear]:
    return (m for m in linear_layers(model).values() if hasattr(m, "lora"))


@torch.no_grad()
def merge_lora(model: nn.Module) -> None:
    """Fold each enabled adapter into its base weight, W += (alpha / r) B A: inference then costs
    what the base model costs. ``unmerge_lora`` undoes it (up to rounding in W's dtype)."""
    for layer in _layers_with_adapters(model):
        a = layer.lora
        if a.enabled and not a.merged:
            layer.weight += a.delta_weight().to(layer.weight.dtype)
            a.merged = True


@torch.no_grad()
def unmerge_lora(model: nn.Module) -> None:
    for layer in _layers_with_adapters(model):
        a = layer.lora
        if a.merged:
            layer.weight -= a.delta_weight().to(layer.weight.dtype)
            a.merged = False


def remove_lora(model: nn.Module, merge: bool = False) -> None:
    """Take every adapter off (folding it into the weights first with ``merge=True``) and make
    every parameter trainable again: the model is a plain model once more."""
    if merge:
        merge_lora(model)
    else:
        unmerge_lora(model)
    for layer in list(_layers_with_adapters(model)):
        layer._lora_hook.remove()
        del layer._lora_hook
        del layer.lora
    for p in model.parameters():
        p.requires_grad_(True)


class AdaptersOff:
    """The base model behind ``model``'s adapters, as a model of its own: calling it runs ``model``
    with every adapter switched off (the RL reference policy, at no memory cost). It answers the
    same questions a sampler or an estimator asks a model (config, positions, logits_from)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config
        for flag in ("supports_positions", "supports_logits_from", "supports_kv_cache"):
            setattr(self, flag, getattr(model, flag, False))

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        with adapters_disabled(self.model):
            return self.model(*args, **kwargs)


@contextmanager
def adapters_detached(model: nn.Module) -> Iterator[dict[str, LoRAAdapter]]:
    """Inside the block the model has no adapters at all (a plain model whose state_dict has only
    the released names, for the checkpoint writers and loaders); they are put back after, with
    their weights. Yields the adapters by layer name."""
    unmerge_lora(model)
    taken = {}
    for name, layer in linear_layers(model).items():
        if hasattr(layer, "lora"):
            taken[name] = (layer.lora, layer._lora_hook)
            layer._lora_hook.remove()
            del layer.lora, layer._lora_hook
    try:
        yield {name: adapter for name, (adapter, _) in taken.items()}
    finally:
        layers = linear_layers(model)
        for name, (adapter, _) in taken.items():
            layers[name].lora = adapter
            layers[name]._lora_hook = layers[name].register_forward_hook(_add_update)


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' weights by their names in ``model.state_dict()`` (``<layer>.lora.A``)."""
    return {k: v for k, v in model.state_dict().items() if ".lora." in k}
