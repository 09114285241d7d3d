"""Policy log-probabilities for RL: d1's one-step estimate, the sequence ELBO, shared draws, and the
replay of a rollout's own trajectory, and the block-by-block estimate of the variable-length
sampler."""

import math

import pytest
import torch

from minillada.diffusion.likelihood import estimate_conditional_nll
from minillada.diffusion.policy import (
    block_logprobs,
    draw_elbo,
    draw_one_step,
    draw_trajectory,
    one_step_logprobs,
    sequence_elbo,
    trajectory_logprobs,
)
from minillada.models.llada import LLaDAModel, preset
from minillada.sampling.generate import generate
from minillada.sampling.variable_length import var_generate_batch

MASK = 5


@pytest.fixture(scope="module")
def model():
    cfg = preset("tiny", n_kv_heads=2, weight_tying=True, mask_token_id=MASK)
    m = LLaDAModel(cfg, dtype=torch.float64, generator=torch.Generator().manual_seed(4)).eval()
    return m


def nudged(model):
    """The same model one small step away, as pi_theta is from pi_old."""
    other = LLaDAModel(model.config, dtype=torch.float64).eval()
    other.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 1e-3)
    return other


def batch(B=4, P=6, C=8, seed=0, vocab=64):
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(6, vocab, (B, P), generator=g)
    completion = torch.randint(6, vocab, (B, C), generator=g)
    return prompt, completion


def test_the_one_step_estimate_is_deterministic_at_p_mask_0_and_reads_a_fully_masked_completion(
    model,
):
    prompt, completion = batch()
    keep = torch.ones_like(prompt, dtype=torch.bool)
    draw = draw_one_step(keep, 0.0, torch.Generator().manual_seed(0))
    assert not draw.prompt_masked.any()
    a = one_step_logprobs(model, prompt, completion, MASK, draw)
    b = one_step_logprobs(model, prompt, completion, MASK, draw_one_step(keep, 0.0))
    assert torch.equal(a, b) and a.shape == completion.shape and (a < 0).all()
    with torch.no_grad():
        canvas = torch.cat([prompt, torch.full_like(completion, MASK)], 1)
        direct = model(canvas)[:, prompt.shape[1] :].log_softmax(-1)
    assert torch.allclose(a, direct.gather(-1, completion[..., None])[..., 0], atol=1e-12)


@pytest.mark.parametrize("p_mask", [-0.1, 1.0, 1.5])
def test_p_mask_outside_0_1_is_an_error(p_mask):
    with pytest.raises(ValueError, match=r"must be in \[0, 1\)"):
        draw_one_step(torch.ones(2, 3, dtype=torch.bool), p_mask)


def test_shared_draws_make_a_models_log_ratio_with_itself_exactly_zero(model):
    prompt, completion = batch()
    keep = torch.ones_like(prompt, dtype=torch.bool)
    g = torch.Generator().manual_seed(1)
    draw = draw_one_step(keep, 0.15, g)
    assert draw.prompt_masked.any()
    once = one_step_logprobs(model, prompt, completion, MASK, draw)
    again = one_step_logprobs(model, prompt, completion, MASK, draw)
    assert torch.equal(once - again, torch.zeros_like(once))
    draws = draw_elbo(len(prompt), completion.shape[1], 3, g, complementary=True)
    assert torch.equal(
        sequence_elbo(model, prompt, completion, MASK, draws),
        sequence_elbo(model, prompt, completion, MASK, draws),
    )


def test_shared_draws_shrink_the_spread_of_the_log_ratio_to_a_nearby_policy(model):
    prompt, completion = batch(B=2)
    other = nudged(model)
    g = torch.Generator().manual_seed(2)
    shared, independent = [], []
    with torch.no_grad():
        for _ in range(24):
            d = draw_elbo(len(prompt), completion.shape[1], 1, g)
            e = draw_elbo(len(prompt), completion.shape[1], 1, g)
            new = sequence_elbo(other, prompt, completion, MASK, d)
            shared.append(new - sequence_elbo(model, prompt, completion, MASK, d))
            independent.append(new - sequence_elbo(model, prompt, completion, MASK, e))
    sd_shared = torch.stack(shared).std(0)
    sd_independent = torch.stack(independent).std(0)
    assert (sd_shared * 10 < sd_independent).all(), (sd_shared, sd_independent)


def test_the_elbo_agrees_with_lesson_3s_estimator_within_its_standard_error(model):
    prompt, completion = batch(B=1, P=5, C=6, seed=3)
    rows = 96  # the same item on every row: 96 independent estimates of 2 draws each
    draws = draw_elbo(rows, 6, 2, torch.Generator().manual_seed(5))
    with torch.no_grad():
        per_row = sequence_elbo(
            model, prompt.expand(rows, -1), completion.expand(rows, -1), MASK, draws
        )
    ours, ours_se = per_row.mean().item(), per_row.std().item() / math.sqrt(rows)
    ref = estimate_conditional_nll(model, prompt[0], completion[0], MASK, mc_num=192, seed=1)
    assert ref.stderr > 0 and ours_se > 0
    gap = abs(ours - ref.log_likelihood)
    assert gap < 4 * math.hypot(ours_se, ref.stderr), (ours, ref)


def test_complementary_draws_cover_each_token_once_per_pair_and_keep_counts_uniform():
    C, n = 5, 5
    draws = draw_elbo(3, C, n, torch.Generator().manual_seed(6), complementary=True)
    assert draws.masked.shape == (2 * n, 3, C) and len(draws) == 2 * n
    first, second = draws.masked[:n], draws.masked[n:]
    full = first.sum(-1) == C
    assert torch.equal(second[full], torch.ones_like(second[full]))
    assert torch.equal((first ^ second)[~full], torch.ones_like(second[~full]))
    for half in (first, second):  # n = C: each row's counts are exactly 1..C
        counts = half.sum(-1).sort(dim=0).values  # (n, 3)
        assert torch.equal(counts, torch.arange(1, C + 1)[:, None].expand(n, 3))
    assert torch.allclose(draws.weights, C / draws.masked.sum(-1).double())


def test_a_left_padded_row_scores_as_it_would_alone(model):
    prompt, completion = batch(B=2, P=6)
    short = prompt[1, 2:]  # row 1 has a 4-token prompt, left-padded to 6
    padded = prompt.clone()
    padded[1, :2] = 0
    keep = torch.ones_like(prompt, dtype=torch.bool)
    keep[1, :2] = False
    draw = draw_one_step(keep, 0.0)
    with torch.no_grad():
        together = one_step_logprobs(model, padded, completion, MASK, draw, keep)
        alone = one_step_logprobs(
            model, short[None], completion[1:], MASK, draw_one_step(keep[1:, 2:], 0.0)
        )
        draws = draw_elbo(2, completion.shape[1], 2, torch.Generator().manual_seed(7))
        elbo_together = sequence_elbo(model, padded, completion, MASK, draws, keep)
        one_row = type(draws)(draws.masked[:, 1:], draws.weights[:, 1:])
        elbo_alone = sequence_elbo(model, short[None], completion[1:], MASK, one_row)
    assert torch.allclose(together[1:], alone, atol=1e-10)
    assert torch.allclose(elbo_together[1:], elbo_alone, atol=1e-10)


def test_estimates_carry_the_graph_and_mismatched_draws_are_errors(model):
    prompt, completion = batch()
    keep = torch.ones_like(prompt, dtype=torch.bool)
    draw = draw_one_step(keep, 0.1, torch.Generator().manual_seed(8))
    one_step_logprobs(model, prompt, completion, MASK, draw).sum().backward()
    assert model.transformer.wte.weight.grad is not None
    model.zero_grad(set_to_none=True)
    with pytest.raises(ValueError, match="draw once per batch"):
        one_step_logprobs(model, prompt[:2], completion[:2], MASK, draw)
    draws = draw_elbo(4, 8, 1)
    with pytest.raises(ValueError, match="draw once per batch"):
        sequence_elbo(model, prompt, completion[:, :7], MASK, draws)


def greedy_rollout(model, P=6, C=8, block=4, steps=8, temperature=0.0):
    prompt, _ = batch(B=3, P=P, C=C, seed=3)
    g = torch.Generator().manual_seed(1)
    canvas, trace = generate(model, prompt, C, block, steps, MASK, temperature=temperature,
                             logits_mask_inf=True, generator=g, trace=True)  # fmt: skip
    return prompt, canvas[:, P:], trace.reveal_step()[:, P:], trace


def test_replaying_a_greedy_rollout_step_by_step_scores_every_token_as_its_passs_argmax(model):
    """group=1 rebuilds the canvas the sampler saw before each step, so each greedy token is the
    most likely token of the pass that scores it, with the log-probability the sampler saw."""
    prompt, completion, reveal, trace = greedy_rollout(model)
    draw = draw_trajectory(reveal, group=1)
    assert draw.passes == trace.num_steps == 8
    with torch.no_grad():
        logp = trajectory_logprobs(model, prompt, completion, MASK, draw)
        P = prompt.shape[1]
        for k in range(trace.num_steps):  # step k + 1 saw canvases[k]
            seen = model(trace.canvases[k])[:, P:].log_softmax(-1)  # (B, C, V)
            best = seen.clone()
            best[..., MASK] = -math.inf  # the rollout never proposes the mask (logits_mask_inf)
            now = reveal == k + 1
            assert torch.allclose(logp[now], best.max(-1).values[now], atol=1e-12)
            assert torch.equal(completion[now], best.argmax(-1)[now])


def test_one_group_of_every_step_is_the_one_step_estimate_and_replays_are_deterministic(model):
    prompt, completion, reveal, _ = greedy_rollout(model, temperature=1.0)
    keep = torch.ones_like(prompt, dtype=torch.bool)
    with torch.no_grad():
        whole = trajectory_logprobs(model, prompt, completion, MASK, draw_trajectory(reveal, 8))
        one_step = one_step_logprobs(model, prompt, completion, MASK, draw_one_step(keep, 0.0))
        blocks = draw_trajectory(reveal, group=2)  # 2 steps per block of 4: one pass per block
        a = trajectory_logprobs(model, prompt, completion, MASK, blocks)
        b = trajectory_logprobs(model, prompt, completion, MASK, blocks)
        other = trajectory_logprobs(nudged(model), prompt, completion, MASK, blocks)
    assert torch.allclose(whole, one_step, atol=1e-12)
    assert blocks.passes == 4 and torch.equal(a, b)
    assert 0 < (other - a).abs().max() < 0.1  # a nearby policy: a small, noise-free log-ratio
    # a later block is scored with the earlier blocks in place, so it differs from one-step
    assert not torch.allclose(a[:, 4:], one_step[:, 4:], atol=1e-6)


def test_a_trajectory_refuses_prompt_positions_and_scores_a_never_revealed_one_last(model):
    prompt, completion, reveal, _ = greedy_rollout(model)
    with pytest.raises(ValueError, match="got a prompt position"):
        draw_trajectory(torch.cat([torch.zeros_like(reveal[:, :1]), reveal], 1))
    unrevealed = reveal.clone()
    unrevealed[0, 0] = -1  # the sampler left it masked (the model proposed the mask id there)
    assert draw_trajectory(unrevealed, 1).chunk[0, 0] == reveal.max() - 1
    with pytest.raises(ValueError, match="must be >= 1"):
        draw_trajectory(reveal, group=0)
    with pytest.raises(ValueError, match="completion has shape"):
        trajectory_logprobs(model, prompt, completion[:, :7], MASK, draw_trajectory(reveal))


def test_one_block_of_the_whole_completion_is_the_one_step_estimate(model):
    prompt, completion = batch()
    keep = torch.ones_like(prompt, dtype=torch.bool)
    draw = draw_one_step(keep, 0.3, torch.Generator().manual_seed(2))  # prompt masking is shared
    with torch.no_grad():
        one_step = one_step_logprobs(model, prompt, completion, MASK, draw)
        one_block = block_logprobs(model, prompt, completion, MASK, 8, draw)
    assert torch.equal(one_block, one_step)


def test_a_greedy_variable_length_answer_is_the_argmax_of_each_blocks_pass(model):
    """With one step per block the sampler reveals a whole block from one pass over the prompt,
    the blocks before it and the block's masks, nothing after it: the block estimate's pass. So
    each greedy token is that pass's most likely token, and its score is the pass's maximum."""
    prompt, _ = batch(B=3, P=6, seed=3)
    results = var_generate_batch(model, list(prompt), 12, 4, 1, MASK, batch_size=3,
                                 stop_ids=[63], logits_mask_inf=True)  # fmt: skip
    keep = torch.ones_like(prompt, dtype=torch.bool)
    for row, result in zip(prompt, results, strict=True):
        answer = result.generated[None]  # (1, blocks * 4)
        with torch.no_grad():
            logp = block_logprobs(model, row[None], answer, MASK, 4, draw_one_step(keep[:1], 0.0))
            for start in range(0, answer.shape[1], 4):
                canvas = torch.cat([row[None], answer[:, :start], torch.full((1, 4), MASK)], 1)
                seen = model(canvas)[:, -4:].log_softmax(-1)  # (1, 4, V)
                seen[..., MASK] = -math.inf
                block = slice(start, start + 4)
                assert torch.equal(answer[:, block], seen.argmax(-1))
                assert torch.allclose(logp[:, block], seen.max(-1).values, atol=1e-12)
    assert {r.blocks for r in results} != {1}  # a later block, with earlier ones in place, is read


def test_blocks_no_row_needs_are_skipped_and_bad_blocks_are_errors(model):
    prompt, completion = batch()
    keep = torch.ones_like(prompt, dtype=torch.bool)
    draw = draw_one_step(keep, 0.0)
    needed = torch.zeros_like(completion, dtype=torch.bool)
    needed[0, :3] = True  # only row 0's first block is counted
    with torch.no_grad():
        full = block_logprobs(model, prompt, completion, MASK, 4, draw)
        skipped = block_logprobs(model, prompt, completion, MASK, 4, draw, needed=needed)
    assert torch.equal(skipped[:, :4], full[:, :4]) and not skipped[:, 4:].any()
    with pytest.raises(ValueError, match="not whole blocks of 3"):
        block_logprobs(model, prompt, completion, MASK, 3, draw)
    with pytest.raises(ValueError, match="draw once per batch"):
        block_logprobs(model, prompt[:2], completion[:2], MASK, 4, draw)
