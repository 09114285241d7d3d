"""The data of lesson 3's 'where diffusion wins' task: facts to reverse (the reversal curse, in
miniature). The models are trained and asked in ``minillada.evaluation.reversal``.

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

import torch

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
