"""Lesson 3's 'where diffusion wins' experiment: a masked diffusion model and its autoregressive
twin, the same network and budget, trained on the same facts (``minillada.data.reversal`` describes
the task) and asked them backwards. The MDM answers by infilling ``_ > 482``; the AR twin, which
reads left to right, has never been trained to produce a name after ``482 <`` for the held-out
people (LLaDA paper, Table 4, in miniature).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from minillada.data.reversal import ReversalTask, expected_answers, questions
from minillada.diffusion.objectives import diffusion_loss
from minillada.evaluation.autoregressive import ar_loss_fn, generate_ar, token_log_probs
from minillada.models.tiny_transformer import TinyTransformer, TinyTransformerConfig
from minillada.training.loop import TrainConfig, TrainState, train


def twin_config(
    task: ReversalTask, causal: bool, n_layer: int = 2, n_embd: int = 128
) -> TinyTransformerConfig:
    """The same small network for both models; only ``causal`` differs."""
    return TinyTransformerConfig(
        vocab_size=task.vocab_size,
        block_size=3,
        n_layer=n_layer,
        n_head=4,
        n_embd=n_embd,
        causal=causal,
    )


def _random_rows(data: torch.Tensor, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    return data[torch.randint(len(data), (batch_size,), generator=generator)]


def _mdm_loss(model, batch, generator, mask_id):
    return diffusion_loss(model, batch, mask_id, stratified=True, generator=generator)


def train_twin(
    task: ReversalTask,
    causal: bool,
    cfg: TrainConfig,
    n_layer: int = 2,
    n_embd: int = 128,
    progress: bool = True,
) -> tuple[TinyTransformer, TrainState]:
    """Train the MDM (causal=False, diffusion loss) or its AR twin (causal=True, next-token loss)
    on the task's training text: same initial weights, batches, optimizer and schedule."""
    init = torch.Generator().manual_seed(cfg.seed)  # the same initial weights for both twins
    model = TinyTransformer(twin_config(task, causal, n_layer, n_embd), generator=init)
    data = task.training_ids()
    if causal:
        loss_fn = partial(ar_loss_fn, bos_id=task.mask_id)
    else:
        loss_fn = partial(_mdm_loss, mask_id=task.mask_id)
    batches = partial(_random_rows, data, cfg.batch_size)
    state = train(model, batches, loss_fn, cfg, progress=progress)
    return model, state


@dataclass
class TaskResult:
    """Exact-match accuracy on one kind of question."""

    name: str
    correct: int
    total: int
    failures: list[tuple[str, str, str]]  # (question, expected, got), the first few

    @property
    def accuracy(self) -> float:
        return self.correct / self.total

    @property
    def stderr(self) -> float:
        p = self.accuracy
        return (p * (1 - p) / self.total) ** 0.5

    def __str__(self) -> str:
        return (
            f"{self.name:24s} {self.accuracy:6.1%} ± {self.stderr:4.1%} "
            f"({self.correct}/{self.total} items)"
        )


def _result(name, task, asked, expected, got, keep=4) -> TaskResult:
    ok = (expected == got).tolist()
    failures = [
        (task.decode(q), task.decode([e]), task.decode([g]))
        for q, e, g, k in zip(asked, expected, got, ok, strict=True)
        if not k
    ]
    return TaskResult(name, sum(ok), len(ok), failures[:keep])


@torch.no_grad()
def ask_mdm(model, task: ReversalTask, people: list[int], template: str) -> TaskResult:
    """The MDM's answer: argmax at the one masked position (one forward pass, exact)."""
    q, pos = questions(task, people, template)
    logits = model(q)[:, pos]  # (n, V)
    logits[:, task.mask_id] = float("-inf")
    got = logits.argmax(dim=-1)
    return _result(f"MDM {template}", task, q, expected_answers(task, people, template), got)


@torch.no_grad()
def ask_ar(model, task: ReversalTask, people: list[int], template: str) -> TaskResult:
    """The AR twin's answer: the greedy next token after the first two (left to right)."""
    if template == "infill":
        raise ValueError("An AR model cannot see the right of a gap: ask 'forward' or 'backward'.")
    q, _ = questions(task, people, template)
    out = generate_ar(model, q[:, :2], 1, task.mask_id, temperature=0.0, banned=[task.mask_id])
    return _result(f"AR  {template}", task, q, expected_answers(task, people, template), out[:, 2])


@torch.no_grad()
def ask_ar_by_enumeration(model, task: ReversalTask, people: list[int]) -> TaskResult:
    """The AR model's way round the curse when every answer can be listed: score all N names n by
    log p(n > 482) (Bayes' rule) and pick the best: N sequences per question instead of one."""
    N = task.num_people
    got = []
    for i in people:
        seqs = torch.tensor([[n, task.forward_id, N + i] for n in range(N)])  # (N, 3)
        got.append(int(token_log_probs(model, seqs, task.mask_id).sum(dim=1).argmax()))
    q, _ = questions(task, people, "infill")
    expected = expected_answers(task, people, "infill")
    return _result("AR  enumerate all names", task, q, expected, torch.tensor(got))
