"""Lesson 3: LLaDA's conditional l-estimator against the t-estimator and exact answers."""

import math

import pytest
import torch

from minillada.checkpoints.shipped import load_char_shakespeare
from minillada.data.char import eval_windows
from minillada.diffusion.guidance import guided_logits
from minillada.diffusion.likelihood import (
    conditional_nelbo_samples,
    estimate_conditional_nll,
    l_estimator_terms,
    mask_exactly,
    nelbo_per_sequence,
    spread_mask_counts,
    stratified_mask_counts,
)


def test_spread_mask_counts_is_llada_formula():
    assert spread_mask_counts(5, 4, 3).tolist() == [3, 4, 1, 2]  # 5.5 -> 6 (half to even) -> 1
    assert spread_mask_counts(8, 8, 1).tolist() == list(range(1, 9))
    assert spread_mask_counts(1, 3, 1).tolist() == [1, 1, 1]
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        c = stratified_mask_counts(7, 16, g)
        assert c.min() >= 1 and c.max() <= 7


def test_mask_exactly_masks_exactly_l_uniformly():
    g = torch.Generator().manual_seed(0)
    counts = torch.tensor([0, 1, 3, 6] * 2000)
    m = mask_exactly(counts, 6, g)
    assert m.sum(dim=1).tolist() == counts.tolist()
    freq = m[counts == 3].float().mean(dim=0)  # every position equally likely: 3/6
    assert torch.allclose(freq, torch.full((6,), 0.5), atol=0.05)


def test_conditional_estimator_is_exact_for_one_token_answers(tiny_transformer):
    # float64: the estimator runs batches of other sizes than the exact pass, and fp32 matmuls of
    # other shapes round differently by CPU; in float64 they agree to ~1e-14
    model = tiny_transformer(scale=5.0).double()
    prompt, mask_id = torch.tensor([1, 4, 2, 7, 3]), 8
    for a in range(8):
        est = estimate_conditional_nll(model, prompt, torch.tensor([a]), mask_id)
        x = torch.cat([prompt, torch.tensor([mask_id])])[None]
        exact = -model(x)[0, -1].double().log_softmax(-1)[a].item()
        assert est.nats == pytest.approx(exact, abs=1e-10)
        assert est.stderr == 0.0 and est.n == 1
    # the sampling path gives the same number on every sample: l = 1 always, weight 1
    s = conditional_nelbo_samples(
        model,
        prompt,
        torch.tensor([3]),
        mask_id,
        mc_num=8,
        batch_size=4,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.allclose(s, s[0].expand(8)) and s[0].item() == pytest.approx(
        estimate_conditional_nll(model, prompt, torch.tensor([3]), mask_id).nats, abs=1e-10
    )


def test_cfg_matches_llada_formula_and_is_exact_for_one_token(tiny_transformer):
    model = tiny_transformer(scale=5.0).double()  # float64, as above
    prompt, mask_id, a, w = torch.tensor([1, 4, 2]), 8, 5, 0.5
    x = torch.tensor([[1, 4, 2, mask_id]])
    un = torch.full_like(x, mask_id)
    cond, unc = model(x)[0, -1], model(un)[0, -1]
    guided = unc + (w + 1) * (cond - unc)
    est = estimate_conditional_nll(model, prompt, torch.tensor([a]), mask_id, cfg_scale=w)
    assert est.nats == pytest.approx(-guided.double().log_softmax(-1)[a].item(), abs=1e-10)
    is_prompt = torch.arange(4) < 3
    assert torch.allclose(guided_logits(model, x, is_prompt, mask_id, w)[0, -1], guided, atol=1e-5)


def test_l_estimator_of_a_fixed_distribution_is_exact_on_every_sample(fixed_model):
    probs = torch.tensor([0.5, 0.2, 0.2, 0.1])
    answer = torch.tensor([0, 1, 0, 3, 2, 0])
    exact = -torch.log(probs[answer]).sum().item()
    s = conditional_nelbo_samples(
        fixed_model(probs),
        torch.tensor([1, 2]),
        answer,
        mask_id=3,
        mc_num=32,
        generator=torch.Generator().manual_seed(0),
    )
    # (L / l) * sum over l random positions is not constant here, but its mean is exact
    assert s.mean().item() == pytest.approx(exact, abs=4 * s.std().item() / math.sqrt(32))
    same = torch.zeros(6, dtype=torch.long)  # every token identical: each sample is exact
    s = conditional_nelbo_samples(
        fixed_model(probs),
        torch.tensor([1]),
        same,
        3,
        mc_num=16,
        generator=torch.Generator().manual_seed(1),
    )
    assert torch.allclose(s, torch.full((16,), -6 * math.log(0.5), dtype=torch.float64))


def test_l_estimator_terms_by_hand():
    logits = torch.log(torch.tensor([[[0.5, 0.5], [0.25, 0.75], [0.9, 0.1]]]))  # (1, 3, 2)
    answer = torch.tensor([0, 1, 0])
    masked = torch.tensor([[True, False, True]])
    expected = 3 / 2 * (-math.log(0.5) - math.log(0.9))
    assert l_estimator_terms(logits, answer, masked).item() == pytest.approx(expected, abs=1e-6)


def test_t_and_l_estimators_agree_within_standard_errors(tiny_transformer):
    """Same bound, two estimators: on a fixed random network they agree within their errors,
    and the l-estimator's samples vary less."""
    model = tiny_transformer(scale=3.0, T=24)
    g = torch.Generator().manual_seed(0)
    windows = torch.randint(0, 8, (24, 24), generator=g)
    t_per_seq = nelbo_per_sequence(model, windows, 8, samples=32, generator=g) * 24  # nats/window
    l_samples = torch.stack(
        [
            conditional_nelbo_samples(
                model, torch.empty(0, dtype=torch.long), w, 8, mc_num=32, batch_size=32, generator=g
            )
            for w in windows
        ]
    )  # (24, 32)
    t_samples = torch.stack(
        [
            conditional_nelbo_samples(
                model,
                torch.empty(0, dtype=torch.long),
                w,
                8,
                mc_num=32,
                batch_size=32,
                method="t",
                generator=g,
            )
            for w in windows
        ]
    )
    l_mean, t_mean, t2_mean = l_samples.mean(1), t_per_seq, t_samples.mean(1)
    diff = l_mean - t_mean  # paired by window: the spread between windows cancels
    assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(24)
    diff2 = l_mean - t2_mean
    assert abs(diff2.mean()) < 4 * diff2.std() / math.sqrt(24)
    assert l_samples.std(dim=1).mean() < t_samples.std(dim=1).mean()


def test_estimators_agree_on_the_shipped_lesson1_checkpoint(tinyshakespeare):
    from minillada.cli.train_char import load_char_corpus

    model, tok = load_char_shakespeare()
    _, _, val_ids = load_char_corpus()
    windows = eval_windows(val_ids, 128, 12)
    g = torch.Generator().manual_seed(0)
    t_per = nelbo_per_sequence(model, windows, tok.mask_id, samples=4, generator=g)
    empty = torch.empty(0, dtype=torch.long)
    l_per = (
        torch.stack(
            [
                conditional_nelbo_samples(
                    model, empty, w, tok.mask_id, mc_num=8, batch_size=8, generator=g
                ).mean()
                for w in windows
            ]
        )
        / 128
    )
    diff = t_per - l_per
    assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(len(diff))


@pytest.mark.parametrize("method", ["l", "t"])
def test_monte_carlo_samples_in_batches_equal_one_at_a_time(method):
    """The Monte Carlo likelihood's samples computed 16 rows per forward pass equal the same
    samples computed one row per pass (same masks, drawn the same way), to 1e-9 in float64, on
    lesson 6's model."""
    from minillada.checkpoints.hf import load_hf_checkpoint
    from minillada.checkpoints.shipped import INSTRUCT_SHAKESPEARE, shipped_checkpoint
    from minillada.diffusion.likelihood import conditional_nelbo_samples

    model = load_hf_checkpoint(shipped_checkpoint(INSTRUCT_SHAKESPEARE), dtype=torch.float64)
    mask = model.config.mask_token_id

    def one_row_at_a_time(ids):
        return torch.cat([model(row[None]) for row in ids])

    g = torch.Generator().manual_seed(4)
    prompt, answer = (
        torch.randint(0, 1000, (12,), generator=g),
        torch.randint(0, 1000, (9,), generator=g),
    )
    kw = dict(mc_num=32, batch_size=16, method=method)
    batched = conditional_nelbo_samples(
        model, prompt, answer, mask, generator=torch.Generator().manual_seed(1), **kw
    )
    alone = conditional_nelbo_samples(
        one_row_at_a_time, prompt, answer, mask, generator=torch.Generator().manual_seed(1), **kw
    )
    assert batched.shape == (32,)
    assert torch.allclose(batched, alone, rtol=1e-9, atol=0)
