"""Lesson 3's autoregressive twin: the same TinyTransformer with a causal mask and next-token loss.

The AR model shares the diffusion model's vocabulary. The id reserved for the mask token, which an
AR model never needs, doubles as its start-of-window token (BOS): the input is [BOS, x_1..x_{L-1}]
and the targets are x_1..x_L, so an AR forward pass costs exactly what a diffusion forward pass
costs (L positions) and it scores *every* token of a window, the first one included. That makes its
exact NLL comparable, token for token, with the diffusion model's bound on the same window.

Shapes: N = number of sequences, L = sequence length, V = vocabulary, P = prompt length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from minillada.estimate import Estimate
from minillada.runtime import context_length, model_device, upcast
from minillada.sampling.primitives import gumbel_argmax


def shift_right(x: torch.Tensor, bos_id: int) -> torch.Tensor:
    """[x_1..x_L] -> [BOS, x_1..x_{L-1}]: the AR model's input for targets ``x``.

    (N, L) -> (N, L).
    """
    bos = torch.full_like(x[:, :1], bos_id)  # (N, 1)
    return torch.cat([bos, x[:, :-1]], dim=1)


def next_token_loss(model: torch.nn.Module, x: torch.Tensor, bos_id: int) -> torch.Tensor:
    """Mean next-token cross-entropy of a causal model on windows ``x`` (N, L), nats per token:
    -1/(N L) sum_i log p(x_i | BOS, x_<i) (the GPT pre-training loss)."""
    logits = model(shift_right(x, bos_id))  # (N, L, V)
    return F.cross_entropy(upcast(logits).transpose(1, 2), x)


def ar_loss_fn(model: torch.nn.Module, batch: torch.Tensor, generator, bos_id: int) -> torch.Tensor:
    """``next_token_loss`` with the loss signature of minillada.training.loop.train.

    It draws no random numbers.
    """
    return next_token_loss(model, batch, bos_id)


@torch.no_grad()
def token_log_probs(
    model: torch.nn.Module, x: torch.Tensor, bos_id: int, batch_size: int = 64
) -> torch.Tensor:
    """Exact log p(x_i | BOS, x_<i) for every position, float64 (N, L). One forward pass per
    sequence: a causal model reads all its conditionals at once (teacher forcing)."""
    device = model_device(model)
    out = torch.empty(x.shape, dtype=torch.float64)
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device)
        logp = model(shift_right(xb, bos_id)).double().log_softmax(dim=-1)  # (b, L, V)
        out[start : start + len(xb)] = logp.gather(-1, xb[..., None]).squeeze(-1).cpu()
    return out


def exact_nll(
    model: torch.nn.Module, windows: torch.Tensor, bos_id: int, batch_size: int = 64
) -> Estimate:
    """Exact validation NLL of a causal model on ``windows`` (N, L), nats per token: no Monte
    Carlo, so the standard error is the spread of the text between windows."""
    was_training = model.training
    model.eval()
    per_seq = -token_log_probs(model, windows, bos_id, batch_size).mean(dim=1)  # (N,)
    model.train(was_training)
    detail = f"exact, {len(per_seq)} sequences x {windows.shape[1]} tokens"
    return Estimate.of(per_seq, relation="=", detail=detail)


@torch.no_grad()
def continuation_log_prob(
    model: torch.nn.Module, context: torch.Tensor, continuation: torch.Tensor, bos_id: int
) -> float:
    """Exact log p(continuation | BOS, context) under a causal model, nats (a sum over the
    continuation's tokens). context (P,), continuation (C,) ids."""
    seq = torch.cat([torch.as_tensor(context), torch.as_tensor(continuation)]).reshape(1, -1)
    logp = token_log_probs(model, seq, bos_id)[0]  # (P + C,)
    return logp[len(context) :].sum().item()


@torch.no_grad()
def generate_ar(
    model: torch.nn.Module,
    prompt: torch.Tensor,
    new_tokens: int,
    bos_id: int,
    temperature: float = 1.0,
    banned: list[int] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Left-to-right sampling: prompt (N, P) ids (P may be 0) -> (N, P + new_tokens).

    Sampling is float64 Gumbel-max (``minillada.sampling.primitives.gumbel_argmax``), temperature
    0 = greedy.
    ``banned`` ids (e.g. the BOS/mask id) get probability 0. No KV cache: each step re-reads the
    whole sequence, which is simple and fast enough at this size.
    """
    device = model_device(model)
    x = torch.as_tensor(prompt).to(device)
    if x.dim() == 1:
        x = x[None]
    context = context_length(model)
    if context is not None and x.shape[1] + new_tokens > context:
        raise ValueError(
            f"prompt ({x.shape[1]}) + new_tokens ({new_tokens}) exceeds the model's context "
            f"of {context} (the BOS token occupies the first slot); generate fewer tokens."
        )
    for _ in range(new_tokens):
        bos = torch.full((x.shape[0], 1), bos_id, dtype=torch.long, device=device)
        logits = model(torch.cat([bos, x], dim=1))[:, -1].double()  # (N, V): next-token logits
        if banned:
            logits[:, banned] = float("-inf")
        nxt = gumbel_argmax(logits, temperature, generator)  # (N,)
        x = torch.cat([x, nxt[:, None].to(device)], dim=1)
    return x.cpu()


@dataclass(frozen=True)
class GenerativePerplexity:
    """How likely an AR 'judge' finds a batch of samples, next to how varied they are."""

    nll: Estimate  # exact NLL per token under the judge, one value per sample
    entropy_bits: float  # mean per-sample unigram entropy of the tokens, bits

    @property
    def ppl(self) -> float:
        """exp(mean NLL per token) under the judge."""
        return math.exp(self.nll.nats)


def unigram_entropy(samples: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Entropy (bits) of each sample's token histogram, (N,): low when a sample repeats itself."""
    counts = F.one_hot(samples, vocab_size).sum(dim=1).double()  # (N, V)
    p = counts / counts.sum(dim=1, keepdim=True)
    return -(p * torch.log2(p.clamp_min(1e-300))).sum(dim=1)


def generative_perplexity(
    judge: torch.nn.Module, samples: torch.Tensor, bos_id: int, vocab_size: int | None = None
) -> GenerativePerplexity:
    """Generative perplexity of ``samples`` (N, L) under the AR ``judge``, with their entropy.

    Low gen-PPL alone is not quality: repeating 'the the the' scores well. Read it next to the
    entropy, and sample in float64 (float32 Gumbel noise truncates the tail, lowering both).
    """
    vocab_size = vocab_size or judge.config.vocab_size
    per_seq = -token_log_probs(judge, samples, bos_id).mean(dim=1)  # (N,)
    detail = f"exact, {len(per_seq)} samples x {samples.shape[1]} tokens"
    nll = Estimate.of(per_seq, relation="=", detail=detail)
    return GenerativePerplexity(nll, unigram_entropy(samples, vocab_size).mean().item())
