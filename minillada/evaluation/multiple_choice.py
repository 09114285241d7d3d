"""Multiple choice by likelihood: score (context, option) pairs, pick the most likely option.

This is how lm-eval runs ARC, HellaSwag, PIQA or MMLU on a language model, and how LLaDA reports
them (ML-GSAI/LLaDA's eval_llada.py and the paper's Table 1): each option's log-likelihood given
the context is estimated (for a diffusion model with LLaDA's conditional estimator,
``minillada.diffusion.likelihood.estimate_conditional_nll``; for an AR model exactly), and the
prediction is the option with the highest score, raw ("acc") or divided by the option's length
("acc_norm", which stops long options from losing just for being long).

Everything takes token ids, so the planned lesson 7 can run it unchanged on LLaDA-8B:
pass the model (ids -> logits, or an object with ``.logits``) and its mask id, and
encode strings with ``encode_choices``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from minillada.diffusion.confidence import confidence_scores
from minillada.diffusion.likelihood import estimate_conditional_nll
from minillada.evaluation.autoregressive import continuation_log_prob

# scorer(context_ids, option_ids) -> (log-likelihood estimate in nats, its standard error)
Scorer = Callable[[torch.Tensor, torch.Tensor], tuple[float, float]]


def mdm_scorer(
    model,
    mask_id: int | None = None,
    mc_num: int = 128,
    batch_size: int = 16,
    cfg_scale: float = 0.0,
    seed: int = 0,
) -> Scorer:
    """Score with a masked diffusion model: LLaDA's l-estimator (exact for one-token options).

    Every option is scored with the same seed (common random numbers), so options of equal length
    see the same mask counts and positions and their difference is less noisy than each score.
    """

    def score(context: torch.Tensor, option: torch.Tensor) -> tuple[float, float]:
        est = estimate_conditional_nll(
            model, context, option, mask_id, mc_num, batch_size, cfg_scale, "l", seed
        )
        return est.log_likelihood, est.stderr

    return score


def confidence_scorer(model, mask_id: int | None = None, eos_id: int | None = None) -> Scorer:
    """Score with iLLaDA's confidence score (``minillada.diffusion.confidence``): deterministic,
    L forward passes per option, a ranking score rather than a likelihood; standard error 0.
    ``eos_id``: the authors' ``padd_eos`` option. Its ``score_all(context, options)`` scores every
    option in one batch per step (``confidence_scores``: each equal to its score alone), which
    ``choose`` uses."""

    def score_all(context: torch.Tensor, options: list[torch.Tensor]) -> list[tuple[float, float]]:
        return [(s.score, 0.0) for s in confidence_scores(model, context, options, mask_id, eos_id)]

    def score(context: torch.Tensor, option: torch.Tensor) -> tuple[float, float]:
        return score_all(context, [option])[0]

    score.score_all = score_all  # type: ignore[attr-defined]
    return score


def ar_scorer(model: torch.nn.Module, bos_id: int) -> Scorer:
    """Score with an autoregressive model: log p(option | context) exactly, standard error 0."""

    def score(context: torch.Tensor, option: torch.Tensor) -> tuple[float, float]:
        return continuation_log_prob(model, context, option, bos_id), 0.0

    return score


@dataclass
class ChoiceResult:
    """The scores of every option and the two predictions lm-eval reports."""

    loglik: list[float]  # estimated log p(option | context), nats
    stderr: list[float]  # standard error of each estimate (0 when exact)
    lengths: list[int]  # what acc_norm divides by (tokens by default; characters via choose_text)

    @property
    def normalised(self) -> list[float]:
        return [s / n for s, n in zip(self.loglik, self.lengths, strict=True)]

    @property
    def raw_choice(self) -> int:
        """argmax of the raw log-likelihood (lm-eval "acc")."""
        return max(range(len(self.loglik)), key=self.loglik.__getitem__)

    @property
    def normalised_choice(self) -> int:
        """argmax of the length-normalised log-likelihood (lm-eval "acc_norm")."""
        norm = self.normalised
        return max(range(len(norm)), key=norm.__getitem__)


def choose(
    scorer: Scorer,
    context: torch.Tensor | Sequence[int],
    options: Sequence[torch.Tensor | Sequence[int]],
    lengths: Sequence[int] | None = None,
) -> ChoiceResult:
    """Score every option after ``context`` (token ids); ``lengths`` defaults to token counts. A
    scorer with a ``score_all(context, options)`` scores them all in one batch."""
    context = torch.as_tensor(context, dtype=torch.long).reshape(-1)
    options = [torch.as_tensor(o, dtype=torch.long).reshape(-1) for o in options]
    if not options or any(len(o) == 0 for o in options):
        raise ValueError("Every option needs at least one token (and there must be options).")
    score_all = getattr(scorer, "score_all", None)
    scores = score_all(context, options) if score_all else [scorer(context, o) for o in options]
    lengths = list(lengths) if lengths is not None else [len(o) for o in options]
    return ChoiceResult([s for s, _ in scores], [e for _, e in scores], lengths)


def encode_choices(
    encode: Callable[[str], Sequence[int] | torch.Tensor], context: str, options: Sequence[str]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """lm-eval's encoding: trailing spaces of the context move to the options; each option is
    enc(context + option) minus the context's tokens, so tokens merging across the boundary are
    handled as the model would see them. ``encode``: str -> ids (a CharTokenizer's ``encode``, or
    ``lambda s: hf_tokenizer(s)["input_ids"]``)."""
    stripped = context.rstrip(" ")
    moved = context[len(stripped) :]
    ctx = torch.as_tensor(list(encode(stripped)) if stripped else [], dtype=torch.long)
    outs = []
    for option in options:
        whole = torch.as_tensor(list(encode(stripped + moved + option)), dtype=torch.long)
        if not torch.equal(whole[: len(ctx)], ctx):
            raise ValueError(
                f"Encoding context + option changed the context's tokens (option {option!r}); "
                f"the tokenizer merges across the boundary in a way lm-eval does not expect."
            )
        outs.append(whole[len(ctx) :])
    return ctx, outs


def choose_text(
    scorer: Scorer,
    encode: Callable[[str], Sequence[int] | torch.Tensor],
    context: str,
    options: Sequence[str],
) -> ChoiceResult:
    """``choose`` on strings; acc_norm divides by the options' length in characters, as lm-eval."""
    ctx, opts = encode_choices(encode, context, options)
    stripped = context.rstrip(" ")
    moved = len(context) - len(stripped)
    return choose(scorer, ctx, opts, lengths=[len(o) + moved for o in options])
