"""Lesson 3's 'where diffusion wins' task: reversing facts (the reversal curse, in miniature).

Each of N people has a name and a number, each one token (like a word a real tokenizer keeps
whole). The training text states every fact forwards, ``KQZ > 482`` ("KQZ's number is 482"), and,
for half of the people only, also backwards, ``482 < KQZ``. The test asks the other half backwards.
An autoregressive model reads left to right: it has seen ``482 <`` followed by a name only for the
first half, so for the held-out half it has never been trained to produce the name from the number.
A masked diffusion model trained on exactly the same text also had to predict ``KQZ`` from
``_ > 482`` whenever the name was masked, so it can answer by infilling ``_ > 482``. This is the
mechanism behind LLaDA's reversal-poem result (LLaDA paper, Table 4) and SMDM's reversal
experiment, small enough to train in a minute or two on a CPU.

Shapes: N = number of items, L = sequence length (3), V = vocabulary (2 x people + 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from minillada.autoregressive import ar_loss_fn, generate_ar, token_log_probs
from minillada.objectives import diffusion_loss
from minillada.tiny_transformer import TinyTransformer, TinyTransformerConfig
from minillada.training import TrainConfig, TrainState, train

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass
class ReversalTask:
    """N people; person i is token i (name ``names[i]``), their number is token N + i.

    Token 2N is '>' ("has number"), 2N + 1 is '<' ("is the number of"), 2N + 2 the mask.
    """

    names: list[str]
    numbers: list[str]
    seen_backwards: list[int]  # people whose fact also appears backwards in the training text
    held_out: list[int]  # people asked backwards at test time (their fact is only seen forwards)

    @property
    def num_people(self) -> int:
        return len(self.names)

    @property
    def forward_id(self) -> int:
        return 2 * self.num_people

    @property
    def backward_id(self) -> int:
        return 2 * self.num_people + 1

    @property
    def mask_id(self) -> int:
        return 2 * self.num_people + 2

    @property
    def vocab_size(self) -> int:
        return 2 * self.num_people + 3

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """Token ids -> 'KQZ > 482' ('_' for a mask)."""
        words = self.names + self.numbers + [">", "<", "_"]
        return " ".join(words[i] for i in torch.as_tensor(ids).tolist())

    def forward_fact(self, i: int) -> list[int]:
        return [i, self.forward_id, self.num_people + i]

    def backward_fact(self, i: int) -> list[int]:
        return [self.num_people + i, self.backward_id, i]

    def training_ids(self) -> torch.Tensor:
        """Every fact forwards, plus the seen_backwards half backwards: (N + N/2, 3)."""
        rows = [self.forward_fact(i) for i in range(self.num_people)]
        rows += [self.backward_fact(i) for i in self.seen_backwards]
        return torch.tensor(rows)


def make_reversal_task(num_people: int = 200, seed: int = 0) -> ReversalTask:
    """Distinct random 3-letter names and 3-digit numbers for ``num_people``; half held out."""
    if num_people > 1000:
        raise ValueError(f"At most 1000 distinct 3-digit numbers; got num_people={num_people}.")
    g = torch.Generator().manual_seed(seed)

    def distinct(alphabet: str, n: int) -> list[str]:
        seen: dict[str, None] = {}
        while len(seen) < n:
            idx = torch.randint(len(alphabet), (3,), generator=g).tolist()
            seen.setdefault("".join(alphabet[j] for j in idx))
        return list(seen)

    names, numbers = distinct(LETTERS, num_people), distinct("0123456789", num_people)
    order = torch.randperm(num_people, generator=g).tolist()
    half = num_people // 2
    return ReversalTask(names, numbers, sorted(order[:half]), sorted(order[half:]))


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
    torch.manual_seed(cfg.seed)
    model = TinyTransformer(twin_config(task, causal, n_layer, n_embd))
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


def _result(name, task, questions, expected, got, keep=4) -> TaskResult:
    ok = (expected == got).tolist()
    failures = [
        (task.decode(q), task.decode([e]), task.decode([g]))
        for q, e, g, k in zip(questions, expected, got, ok, strict=True)
        if not k
    ]
    return TaskResult(name, sum(ok), len(ok), failures[:keep])


def questions(task: ReversalTask, people: list[int], template: str) -> tuple[torch.Tensor, int]:
    """(question ids (n, 3) with the answer masked, answer position) for one template:
    'forward' KQZ > _, 'backward' 482 < _, 'infill' _ > 482."""
    N, M = task.num_people, task.mask_id
    if template == "forward":
        return torch.tensor([[i, task.forward_id, M] for i in people]), 2
    if template == "backward":
        return torch.tensor([[N + i, task.backward_id, M] for i in people]), 2
    if template == "infill":
        return torch.tensor([[M, task.forward_id, N + i] for i in people]), 0
    raise ValueError(f"template must be 'forward', 'backward' or 'infill', got {template!r}.")


def expected_answers(task: ReversalTask, people: list[int], template: str) -> torch.Tensor:
    N = task.num_people
    return torch.tensor([N + i if template == "forward" else i for i in people])


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
