"""Lesson 3's reversal task: reproducible data, the question templates, and the scoring."""

import pytest
import torch

from minillada.data.reversal import make_reversal_task, questions
from minillada.evaluation.reversal import ask_ar, ask_mdm


class Oracle(torch.nn.Module):
    """Knows every fact: puts all its mass on the right answer at the masked position."""

    def __init__(self, task, wrong=False):
        super().__init__()
        self.task, self.wrong = task, wrong
        self.p = torch.nn.Parameter(torch.zeros(()))

    def forward(self, idx):
        t, N = self.task, self.task.num_people
        logits = torch.zeros(*idx.shape, t.vocab_size) + self.p
        for b, (a, rel, c) in enumerate(idx.tolist()):
            if c == t.mask_id:  # KQZ > _  or  482 < _
                ans = a + N if rel == t.forward_id else a - N
                logits[b, 2, (ans + 1) % N if self.wrong else ans] = 10.0
            if a == t.mask_id:  # _ > 482
                logits[b, 0, c - N] = 10.0
        return logits


def test_reversal_task_is_reproducible_and_well_formed():
    a, b = make_reversal_task(40, seed=3), make_reversal_task(40, seed=3)
    assert a.names == b.names and a.numbers == b.numbers and a.held_out == b.held_out
    assert len(set(a.names)) == 40 and len(set(a.numbers)) == 40
    assert set(a.held_out).isdisjoint(a.seen_backwards) and len(a.held_out) == 20
    data = a.training_ids()
    assert data.shape == (60, 3) and data.max() < a.mask_id
    i = a.held_out[0]
    assert a.decode(a.forward_fact(i)) == f"{a.names[i]} > {a.numbers[i]}"
    assert a.forward_fact(i) in data.tolist() and a.backward_fact(i) not in data.tolist()
    assert a.backward_fact(a.seen_backwards[0]) in data.tolist()
    q, pos = questions(a, [i], "infill")
    assert a.decode(q[0]) == f"_ > {a.numbers[i]}" and pos == 0


def test_ask_mdm_scores_an_oracle_and_reports_failures():
    task = make_reversal_task(30, seed=0)
    for template in ("forward", "backward", "infill"):
        r = ask_mdm(Oracle(task), task, task.held_out, template)
        assert r.correct == r.total == 15 and r.accuracy == 1.0 and r.stderr == 0.0
    r = ask_mdm(Oracle(task, wrong=True), task, task.held_out, "forward")
    assert r.correct == 0 and len(r.failures) == 4
    q, expected, got = r.failures[0]
    assert q.endswith("_") and expected != got


def test_ar_cannot_be_asked_to_infill():
    task = make_reversal_task(10, seed=0)
    with pytest.raises(ValueError, match="cannot see the right of a gap"):
        ask_ar(None, task, task.held_out, "infill")
