"""Group policy-gradient RL for a masked diffusion LM, through the course's one training loop.

One *rollout* every ``inner_updates`` iterations: ``prompts_per_step`` prompts, each answered
``group_size`` times by one of the course's own samplers at ``temperature`` (``sampler="fixed"``:
LLaDA's canvas, batched; ``"variable"``: iLLaDA's block-at-a-time sampler, which stops each answer
after the block holding its stop id), graded by a reward function, turned into group advantages.
Each of the ``inner_updates`` iterations that follow is one optimizer step on that rollout (d1's
mu), with its own mask draw, shared by the current, the old (rollout-time) and the reference policy
(``minillada.diffusion.policy``).

* ``method="grpo"``: d1's clipped token-level loss with a k3 KL (``estimator="one_step"``), or a
  sequence-level ratio exp((B_theta - B_old) / C) of ELBO estimates (``estimator="elbo"``, ESPO's
  form), clipped the same way; or per token along the rollout's own trajectory
  (``estimator="trajectory"``, TraceRL's replay: each token scored from the canvas the sampler
  chose it on, ``trajectory_group`` steps per pass; no mask draws at all); or d1's estimate block
  by block on the variable-length sampler's canvases (``estimator="block"``: each block masked
  after the blocks before it, nothing after it), the estimate that matches ``sampler="variable"``.
* ``method="wd1"``: wd1's ratio-free weighted likelihood; no old policy is needed.

A completion is the generated canvas of ``gen_length`` tokens. As d1 (and TRL's GRPO) does, the
loss counts its tokens up to and including the first stop id: the answer and where it ends. With
``count_padding=True`` every token of the canvas counts, the end-of-text padding after the answer
too (LLaDA's SFT trains those as answer tokens). Measured on lesson 6's model: with the padding
counted, the loss is mostly about padding (about 27 of 32 tokens), and at lr 1e-4 the policy learnt
to stop early and fell from 61% to 29% held-out exact match in 100 iterations. (The sequence ELBO
estimator scores the whole canvas either way.)

Every rollout draws from a generator seeded by (seed, rollout index), so a run resumed from a
checkpoint written at a rollout boundary (iteration a multiple of ``inner_updates``) continues
exactly as if never stopped. Rows b*G .. b*G+G-1 of a rollout are prompt b's group.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from minillada.data.tokenizer import LLaDATokenizer
from minillada.diffusion.policy import (
    block_logprobs,
    check_p_mask,
    draw_elbo,
    draw_one_step,
    draw_trajectory,
    one_step_logprobs,
    sequence_elbo,
    trajectory_logprobs,
)
from minillada.runtime import model_device
from minillada.sampling.generate import generate
from minillada.sampling.variable_length import until_stop, var_generate_batch
from minillada.training.llada import step_generator
from minillada.training.loop import Step, TrainConfig, TrainState, train_loop
from minillada.training.policy_gradient import (
    check_rewards,
    clipped_policy_loss,
    group_advantages,
    weighted_likelihood_loss,
)

# grade(prompt_index, answer_text) -> reward: the answer decoded up to its first stop id
Grade = Callable[[int, str], float]


@dataclass
class RLConfig(TrainConfig):
    max_iters: int = 300  # optimizer steps (inner updates count one each)
    lr: float = 3e-5
    min_lr: float = 3e-5  # constant learning rate, as d1 trains
    warmup_iters: int = 0
    weight_decay: float = 0.0
    eval_interval: int = 0
    prompts_per_step: int = 8
    group_size: int = 8  # G completions per prompt
    inner_updates: int = 2  # mu: optimizer steps per rollout
    method: Literal["grpo", "wd1"] = "grpo"
    estimator: Literal["one_step", "elbo", "trajectory", "block"] = "one_step"
    sampler: Literal["fixed", "variable"] = "fixed"  # the rollouts' sampler
    p_mask: float = 0.0  # one-step: probability of masking each prompt token (d1: 0.15)
    elbo_draws: int = 2  # elbo: mask draws per completion
    complementary: bool = False  # elbo: add each draw's complement
    trajectory_group: int = 1  # trajectory: sampler steps scored by one pass
    clip_eps: float = 0.2
    beta: float = 0.0  # weight of the k3 KL to the reference (d1: 0.04)
    advantage_scale: Literal["none", "std"] = "none"
    gen_length: int = 32
    block_length: int = 8
    steps: int = 32  # denoising steps of a whole canvas (variable: steps / blocks per block)
    temperature: float = 1.0
    count_padding: bool = False  # True: every canvas token is in the loss; False: to the first stop

    def check(self) -> None:
        """Every setting an RL run reads, checked before any rollout is generated."""
        if self.method not in ("grpo", "wd1"):
            raise ValueError(f"method must be 'grpo' or 'wd1', got {self.method!r}")
        if self.estimator not in ("one_step", "elbo", "trajectory", "block"):
            raise ValueError(
                "estimator must be 'one_step', 'elbo', 'trajectory' or 'block', got "
                f"{self.estimator!r}"
            )
        if self.sampler not in ("fixed", "variable"):
            raise ValueError(f"sampler must be 'fixed' or 'variable', got {self.sampler!r}")
        blocks, rest = divmod(self.gen_length, max(self.block_length, 1))
        if self.block_length < 1 or rest or blocks < 1 or self.steps % blocks:
            raise ValueError(
                f"gen_length={self.gen_length} must be whole blocks of block_length="
                f"{self.block_length}, and steps={self.steps} a multiple of the {blocks} blocks"
            )
        if self.sampler == "variable" and self.estimator == "trajectory":
            raise ValueError(
                "estimator='trajectory' replays the fixed canvas's recorded steps; the variable-"
                "length sampler records none. Use estimator='block' (its canvases) or 'one_step'."
            )
        if self.group_size < 2:
            raise ValueError(
                f"group_size must be at least 2 (the group's mean is the baseline), got "
                f"{self.group_size}"
            )
        counts = (self.inner_updates, self.prompts_per_step, self.elbo_draws, self.trajectory_group)
        if min(counts) < 1:
            raise ValueError(
                "inner_updates, prompts_per_step, elbo_draws and trajectory_group must be >= 1"
            )
        check_p_mask(self.p_mask)
        if self.temperature <= 0:
            raise ValueError(
                f"rollouts need temperature > 0 (a group of identical greedy answers has no "
                f"spread to learn from), got {self.temperature}"
            )


@dataclass
class Rollout:
    """One rollout batch: B = prompts x G rows."""

    prompt: torch.Tensor  # (B, P) left-padded prompt ids
    prompt_keep: torch.Tensor  # (B, P) bool, real prompt tokens
    completion: torch.Tensor  # (B, C) generated ids
    rewards: torch.Tensor  # (B,)
    advantages: torch.Tensor  # (B,)
    zero_variance_groups: int
    answer_tokens: torch.Tensor  # (B,) tokens before the first stop id
    completion_mask: torch.Tensor  # (B, C) bool: the tokens the loss counts
    draws: list  # one mask draw per inner update
    old: list  # per inner update: the rollout-time policy's estimate, or None
    reference: list  # per inner update: the reference policy's estimate, or None
    chosen: list[int]  # the prompts' indices, one per group


def _estimate(model, r: Rollout, cfg: RLConfig, draw, mask_id: int) -> torch.Tensor:
    """The policy's log-probabilities on ``draw``: (B, C) per token (one-step, trajectory) or
    (B,) per sequence (ELBO)."""
    if cfg.estimator == "one_step":
        return one_step_logprobs(model, r.prompt, r.completion, mask_id, draw, r.prompt_keep)
    if cfg.estimator == "trajectory":
        return trajectory_logprobs(model, r.prompt, r.completion, mask_id, draw, r.prompt_keep)
    if cfg.estimator == "block":  # blocks past every counted token are skipped
        return block_logprobs(model, r.prompt, r.completion, mask_id, cfg.block_length, draw,
                              r.prompt_keep, needed=r.completion_mask)  # fmt: skip
    return sequence_elbo(model, r.prompt, r.completion, mask_id, draw, r.prompt_keep)


def prompt_room(prompts: Sequence[Sequence[int]], cfg: RLConfig, context_length: int) -> None:
    """Every prompt plus ``gen_length`` must fit the model's context: checked before training."""
    longest = max(len(p) for p in prompts)
    if longest + cfg.gen_length > context_length:
        raise ValueError(
            f"the longest prompt has {longest} tokens, and with gen_length {cfg.gen_length} the "
            f"canvas needs {longest + cfg.gen_length} positions; the model's context is "
            f"{context_length}. Shorten gen_length or leave out the longest prompts."
        )


@torch.no_grad()
def make_rollout(
    model,
    tokenizer: LLaDATokenizer,
    prompts: Sequence[Sequence[int]],
    grade: Grade,
    cfg: RLConfig,
    generator: torch.Generator,
    reference: Callable | None = None,
) -> Rollout:
    """Draw ``prompts_per_step`` prompts, generate G answers each, grade them, draw the masks of
    every inner update and score the old and the reference policy on them."""
    chosen = torch.randint(len(prompts), (cfg.prompts_per_step,), generator=generator).tolist()
    rows = [list(prompts[i]) for i in chosen for _ in range(cfg.group_size)]
    padded = tokenizer.pad_left(rows)
    was_training = model.training
    model.eval()
    replay = cfg.estimator == "trajectory"
    P = padded.input_ids.shape[1]
    if cfg.sampler == "variable":
        completion = _variable_length_rollout(model, tokenizer, rows, cfg, generator)
    else:
        canvas = generate(
            model, padded.input_ids, cfg.gen_length, cfg.block_length, cfg.steps,
            tokenizer.mask_id, temperature=cfg.temperature, attention_mask=padded.attention_mask,
            pad_id=tokenizer.pad_id, generator=generator, trace=replay,
        )  # fmt: skip
        if replay:
            canvas, trace = canvas
            reveal_step = trace.reveal_step()[:, P:].cpu()  # (B, C)
        completion = canvas[:, P:]  # (B, C)
    rewards, lengths = [], []
    for b, row in enumerate(completion.cpu()):
        answer = until_stop(row, tokenizer.stop_ids)
        lengths.append(len(answer))
        rewards.append(float(grade(chosen[b // cfg.group_size], tokenizer.decode(answer, True))))
    check_rewards(rewards)
    adv = group_advantages(rewards, cfg.group_size, cfg.advantage_scale)
    keep = padded.attention_mask.bool()
    B, C = completion.shape
    if cfg.estimator in ("one_step", "block"):
        draws = [draw_one_step(keep, cfg.p_mask, generator) for _ in range(cfg.inner_updates)]
    elif replay:  # the same canvases for every inner update: nothing random to redraw
        draws = [draw_trajectory(reveal_step, cfg.trajectory_group)] * cfg.inner_updates
    else:
        draws = [
            draw_elbo(B, C, cfg.elbo_draws, generator, cfg.complementary)
            for _ in range(cfg.inner_updates)
        ]
    counted = torch.ones_like(completion, dtype=torch.bool)
    if not cfg.count_padding:  # the answer and its first stop id (which ends it); nothing after
        position = torch.arange(C, device=completion.device)
        counted = position[None, :] <= torch.tensor(lengths, device=completion.device)[:, None]
    r = Rollout(
        padded.input_ids, keep, completion, torch.tensor(rewards, dtype=torch.float64), adv.values,
        adv.zero_variance_groups, torch.tensor(lengths), counted, draws, [], [], chosen,
    )  # fmt: skip
    mask_id = tokenizer.mask_id
    # With one update per rollout the old policy is the current one (ratio 1, detached): d1's mu=1.
    needs_old = cfg.method == "grpo" and cfg.inner_updates > 1
    r.old = [_estimate(model, r, cfg, d, mask_id) if needs_old else None for d in draws]
    needs_ref = cfg.method == "grpo" and cfg.beta > 0
    if needs_ref and reference is None:
        raise ValueError("beta > 0 needs a reference policy (a frozen copy, or LoRA's base)")
    r.reference = [_estimate(reference, r, cfg, d, mask_id) if needs_ref else None for d in draws]
    model.train(was_training)
    return r


def _variable_length_rollout(model, tokenizer, rows, cfg: RLConfig, generator) -> torch.Tensor:
    """(B, C) answers of iLLaDA's variable-length sampler, all rows in one batch, at the fixed
    canvas's tokens per step. An answer stops after the block holding its first stop id; the
    positions after its last block are the pad id (after the stop: never counted, never scored
    by the block estimate)."""
    per_block = cfg.steps // (cfg.gen_length // cfg.block_length)
    results = var_generate_batch(
        model, rows, cfg.gen_length, cfg.block_length, per_block, tokenizer.mask_id,
        batch_size=len(rows), stop_ids=tokenizer.stop_ids, temperature=cfg.temperature,
        generator=generator,
    )  # fmt: skip
    completion = torch.full((len(rows), cfg.gen_length), tokenizer.pad_id, dtype=torch.long)
    for b, result in enumerate(results):
        generated = result.generated.cpu()
        completion[b, : len(generated)] = generated
    return completion.to(model_device(model))


def _as_tokens(estimate: torch.Tensor | None, C: int) -> torch.Tensor | None:
    """A sequence ELBO (B,) as a one-'token' row of its per-token average (B, 1): the clipped
    loss then applies ESPO's sequence-level ratio exp((B_theta - B_old) / C)."""
    if estimate is None or estimate.dim() == 2:
        return estimate
    return (estimate / C)[:, None]


def rl_step(
    tokenizer: LLaDATokenizer,
    prompts: Sequence[Sequence[int]],
    grade: Grade,
    cfg: RLConfig,
    reference: Callable | None = None,
    labels: Sequence[str] | None = None,
) -> Step:
    """The training loop's step for RL (see the module docstring). Per iteration it appends the
    rollout's mean reward, zero-variance groups, mean answer tokens and the loss's clip fraction
    and KL to ``state.history``; with ``labels`` (a task name per prompt) also
    ``reward_by_task``, {task: mean reward} over the rollout's prompts of each task."""
    cfg.check()
    if labels is not None and len(labels) != len(prompts):
        raise ValueError(f"labels: one per prompt, got {len(labels)} for {len(prompts)} prompts")
    current: dict = {}

    def step(model: torch.nn.Module, state: TrainState) -> float:
        index, inner = divmod(state.iter_num, cfg.inner_updates)
        if current.get("index") != index:
            g = step_generator(cfg.seed, index)
            current.update(index=index, rollout=make_rollout(
                model, tokenizer, prompts, grade, cfg, g, reference
            ))  # fmt: skip
        r: Rollout = current["rollout"]
        C = r.completion.shape[1]
        logp = _estimate(model, r, cfg, r.draws[inner], tokenizer.mask_id)
        per_token = logp.dim() == 2  # one-step: (B, C); ELBO: (B,) over the whole canvas
        if cfg.method == "wd1":
            sequence = (logp * r.completion_mask).sum(1) if per_token else logp
            loss = weighted_likelihood_loss(sequence, r.advantages, cfg.group_size)
            clip_fraction = kl = 0.0
        else:
            old = r.old[inner] if r.old[inner] is not None else logp.detach()
            loss, stats = clipped_policy_loss(
                _as_tokens(logp, C), _as_tokens(old, C), r.advantages,
                r.completion_mask if per_token else None, cfg.clip_eps,
                _as_tokens(r.reference[inner], C), cfg.beta,
            )  # fmt: skip
            clip_fraction, kl = stats.clip_fraction, stats.kl
        loss.backward()
        h = state.history
        for key, value in (
            ("reward", r.rewards.mean().item()),
            ("zero_variance_groups", r.zero_variance_groups / cfg.prompts_per_step),
            ("answer_tokens", r.answer_tokens.double().mean().item()),
            ("clip_fraction", clip_fraction),
            ("kl", kl),
        ):
            h.setdefault(key, []).append(value)
        if labels is not None:
            by_task: dict[str, list[float]] = {}
            for b, reward in enumerate(r.rewards.tolist()):
                by_task.setdefault(labels[r.chosen[b // cfg.group_size]], []).append(reward)
            h.setdefault("reward_by_task", []).append(
                {t: sum(v) / len(v) for t, v in sorted(by_task.items())}
            )
        return loss.item()

    return step


def train_rl(
    model: torch.nn.Module,
    tokenizer: LLaDATokenizer,
    prompts: Sequence[Sequence[int]],
    grade: Grade,
    cfg: RLConfig,
    state: TrainState | None = None,
    reference: Callable | None = None,
    stop_after: int | None = None,
    evaluate: Callable[[torch.nn.Module], float] | None = None,
    progress: bool = True,
    labels: Sequence[str] | None = None,
) -> TrainState:
    """``train_loop`` with ``rl_step``; pass the returned state back to resume (at a rollout
    boundary: ``stop_after`` a multiple of ``inner_updates``)."""
    cfg.check()
    prompt_room(prompts, cfg, model.config.context_length)
    if stop_after is not None and stop_after % cfg.inner_updates:
        raise ValueError(
            f"stop_after={stop_after} would stop inside a rollout of {cfg.inner_updates} updates, "
            "and a resumed run could not rebuild it; use a multiple of inner_updates"
        )
    step = rl_step(tokenizer, prompts, grade, cfg, reference, labels)
    return train_loop(model, step, cfg, state, evaluate, stop_after, progress)
