"""iLLaDA's confidence score: the authors' loop restated, a hand-computed score, and bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

from minillada.diffusion.confidence import confidence_score
from minillada.models.llada import LLaDAModel, preset

MASK, EOS = 511, 510


def authors_loop(model, prefix, target, mask_id, padd_eos_id=None):
    """eval_illada.py's get_loglikelihood_confidence (with get_logits' padd_eos), restated."""
    clean_seq = torch.cat([prefix, target])[None]
    noisy_seq = torch.cat([prefix, torch.full_like(target, mask_id)])[None]
    losses = []
    for _ in range(len(target)):
        mask_indices = noisy_seq == mask_id
        inp = noisy_seq
        if padd_eos_id is not None:
            inp = torch.cat([noisy_seq, torch.full((1, 1), padd_eos_id)], dim=-1)
        logits = model(inp)[:, : noisy_seq.shape[1]]
        loss = F.cross_entropy(logits[mask_indices], clean_seq[mask_indices], reduction="none")
        min_loss, min_index = torch.min(loss, dim=-1)
        losses.append(min_loss.item())
        transfer = torch.full_like(clean_seq[mask_indices], mask_id)
        transfer[min_index] = clean_seq[mask_indices][min_index]
        noisy_seq[mask_indices] = transfer
    return -sum(losses)


@pytest.fixture(scope="module")
def tiny():
    cfg = preset("tiny", mask_token_id=MASK, eos_token_id=EOS, pad_token_id=EOS)
    return LLaDAModel(cfg, generator=torch.Generator().manual_seed(0)).double().eval()


@pytest.mark.parametrize("padd_eos", [False, True])
def test_equals_the_authors_loop(tiny, padd_eos):
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        prefix, target = (
            torch.randint(0, 500, (7,), generator=g),
            torch.randint(0, 500, (5,), generator=g),
        )
        ours = confidence_score(tiny, prefix, target, MASK, eos_id=EOS if padd_eos else None)
        with torch.no_grad():
            theirs = authors_loop(tiny, prefix, target, MASK, EOS if padd_eos else None)
        assert ours.score == pytest.approx(theirs, rel=1e-12, abs=1e-12)
        assert sorted(ours.order) == list(range(5)) and ours.forward_passes == 5
    with torch.no_grad():
        assert (
            confidence_score(tiny, prefix, target, MASK).score
            != confidence_score(tiny, prefix, target, MASK, eos_id=EOS).score
        )  # the appended EOS changes what the model sees


class PositionModel(torch.nn.Module):
    """Logits that depend on the position only: at position i the true token gets logit w[i],
    every other of the V tokens 0."""

    def __init__(self, true_ids, weights, V=6):
        super().__init__()
        self.true_ids, self.weights, self.V = true_ids, weights, V
        self.config = None

    def forward(self, x):
        logits = torch.zeros(x.shape[0], x.shape[1], self.V, dtype=torch.float64)
        for i, (t, w) in enumerate(zip(self.true_ids, self.weights, strict=True)):
            logits[:, i, t] = w
        return logits


def test_by_hand_in_the_order_of_the_true_tokens_confidence():
    context, answer = [1, 2], [3, 4, 0]
    weights = [0.0, 0.0, 1.0, 3.0, 2.0]  # answer positions: logits 1, 3, 2 for the true token
    model = PositionModel(context + answer, weights)
    result = confidence_score(model, torch.tensor(context), torch.tensor(answer), mask_id=5)
    # CE of the true token with logit w among 6 tokens: log(5 + e^w) - w; smallest first
    ce = [math.log(5 + math.exp(w)) - w for w in (1.0, 3.0, 2.0)]
    assert result.order == [1, 2, 0]
    assert result.losses == pytest.approx([ce[1], ce[2], ce[0]], rel=1e-12)
    assert result.score == pytest.approx(-sum(ce), rel=1e-12)


def test_bad_input(tiny):
    with pytest.raises(ValueError, match="empty answer"):
        confidence_score(tiny, torch.tensor([1, 2]), torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="contains the mask id"):
        confidence_score(tiny, torch.tensor([1, MASK]), torch.tensor([3]))
    with pytest.raises(ValueError, match="mask"):
        confidence_score(tiny, torch.tensor([1, 2]), torch.tensor([3]), mask_id=7)


@pytest.fixture(scope="module")
def gqa():
    cfg = preset(
        "illada_1b", d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, mlp_hidden_size=96,
        vocab_size=512, embedding_size=512, rope_theta=1e4, rms_norm_eps=1e-5,
        mask_token_id=MASK, eos_token_id=EOS, pad_token_id=EOS,
    )  # fmt: skip
    return LLaDAModel(cfg, generator=torch.Generator().manual_seed(2)).double().eval()


@pytest.mark.parametrize("which", ["tiny", "gqa", "shipped"])
@pytest.mark.parametrize("padd_eos", [False, True])
def test_batched_answers_score_as_each_alone(which, padd_eos, tiny, gqa):
    """HellaSwag's endings in one batch (different lengths, left-padded, finished rows leaving):
    every score, order and loss equals scoring that ending alone, in float64."""
    from minillada.checkpoints.hf import load_hf_checkpoint
    from minillada.checkpoints.shipped import INSTRUCT_SHAKESPEARE, shipped_checkpoint
    from minillada.diffusion.confidence import confidence_scores

    if which == "shipped":  # lesson 6's trained model, whose choices are not near-ties
        model = load_hf_checkpoint(shipped_checkpoint(INSTRUCT_SHAKESPEARE), dtype=torch.float64)
        mask, eos, vocab = model.config.mask_token_id, model.config.eos_token_id, 1000
    else:
        model, mask, eos, vocab = (tiny if which == "tiny" else gqa), MASK, EOS, 500
    g = torch.Generator().manual_seed(3)
    context = torch.randint(0, vocab, (9,), generator=g)
    answers = [torch.randint(0, vocab, (n,), generator=g) for n in (4, 1, 7, 3)]
    eos_id = eos if padd_eos else None
    # Every row keeps the positions it has alone (row_positions), so only the rounding of longer
    # sums over padded keys (each weighted exactly 0) may differ: float64 carries 1e-16 of a sum.
    # Numbering positions from the padded canvas instead moved lesson 6's scores by 1.5e-7
    # relative: RoPE's float32 tables round each angle to 6e-8.
    tol = 1e-9
    batched = confidence_scores(model, context, answers, mask, eos_id)
    for answer, got in zip(answers, batched, strict=True):
        alone = confidence_score(model, context, answer, mask, eos_id)
        assert got.order == alone.order
        assert got.losses == pytest.approx(alone.losses, rel=tol, abs=tol)
        assert got.score == pytest.approx(alone.score, rel=tol, abs=tol)


def test_batched_scores_refuse_bad_input(tiny):
    from minillada.diffusion.confidence import confidence_scores

    context = torch.tensor([1, 2, 3])
    with pytest.raises(ValueError, match="No answers"):
        confidence_scores(tiny, context, [], MASK)
    with pytest.raises(ValueError, match="Answer 1 is empty"):
        empty = torch.tensor([], dtype=torch.long)
        confidence_scores(tiny, context, [torch.tensor([4]), empty], MASK)
    with pytest.raises(ValueError, match="Answer 0 contains the mask id"):
        confidence_scores(tiny, context, [torch.tensor([MASK])], MASK)
    with pytest.raises(ValueError, match="The context contains the mask id"):
        confidence_scores(tiny, torch.tensor([MASK]), [torch.tensor([4])], MASK)
