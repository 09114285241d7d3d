"""Lesson 2's sampler: exactness against a plain re-statement of the official algorithm, a worked
example to follow by hand, the strategies, traces, infilling, and the errors for bad input."""

from __future__ import annotations

import math

import pytest
import torch

from minillada.models.tiny_transformer import TinyTransformer, TinyTransformerConfig
from minillada.sampling.denoise import SamplerConfig
from minillada.sampling.generate import generate, infill
from minillada.sampling.primitives import (
    gumbel_argmax,
    gumbel_argmax_with_noise,
    positions_to_reveal,
)
from minillada.sampling.remasking import confidence_scores

V, MASK = 12, 11  # a toy vocabulary: ids 0..10 are "words", 11 is the mask token
EOS, EOT = 9, 10


def tiny_model(block_size: int = 48, seed: int = 0) -> ToyLM:
    return ToyLM(block_size, seed)


class ToyLM(torch.nn.Module):
    """A small random "language model" whose proposals vary with position and content: a random
    TinyTransformer plus random tables scoring each token given its left and right neighbours and
    its position. Like a trained model it never proposes the mask token."""

    def __init__(self, block_size: int = 48, seed: int = 0):
        super().__init__()
        cfg = TinyTransformerConfig(
            vocab_size=V, block_size=block_size, n_layer=2, n_head=2, n_embd=32
        )
        self.inner = TinyTransformer(cfg, generator=torch.Generator().manual_seed(seed)).eval()
        self.config = cfg
        g = torch.Generator().manual_seed(seed + 100)
        self.left = torch.randn(V, V, generator=g) * 2  # score of token v given its left neighbour
        self.right = torch.randn(V, V, generator=g) * 2
        self.pos = torch.randn(block_size, V, generator=g)

    def scores(self, ids: torch.Tensor, h: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        L = ids.shape[1]
        out = 20 * h + self.pos[:L]  # (B, L, V)
        out[:, 1:] += self.left[ids[:, :-1]] * keep[:, :-1, None]
        out[:, :-1] += self.right[ids[:, 1:]] * keep[:, 1:, None]
        out[..., MASK] = -1e4
        return out

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.scores(ids, self.inner(ids), torch.ones(ids.shape))


class MaskAwareModel(ToyLM):
    """The same toy model, also accepting attention_mask: padded positions are zeroed in the
    transformer's input and ignored as neighbours."""

    def __init__(self, block_size: int = 48, seed: int = 0):
        super().__init__(block_size, seed)
        self.calls_with_mask = 0

    def forward(self, ids, attention_mask=None):
        if attention_mask is None:
            return super().forward(ids)
        self.calls_with_mask += 1
        keep = attention_mask.float()
        m = self.inner
        x = m.tok_emb(ids) * keep[:, :, None]
        T = ids.shape[1]
        for block in m.blocks:
            x = block(x, m.rope_cos[:T], m.rope_sin[:T])
        return self.scores(ids, m.head(m.final_norm(x)), keep)


# --------------------------------------------------------------------------------------------------
# The official algorithm (ML-GSAI/LLaDA generate.py), re-stated step by step, at temperature 0.
# Deliberately plain: whole-sequence tensors, a Python loop per row, no shared code with generate().
# --------------------------------------------------------------------------------------------------
def official_reference(
    model,
    prompt,
    steps,
    gen_length,
    block_length,
    mask_id,
    cfg_scale=0.0,
    attention_mask=None,
    eos_id=None,
    eot_id=None,
    logits_eos_inf=False,
    confidence_eos_eot_inf=False,
):
    B, P = prompt.shape
    x = torch.full((B, P + gen_length), mask_id, dtype=torch.long)
    x[:, :P] = prompt
    if attention_mask is not None:
        attention_mask = torch.cat(
            [attention_mask, torch.ones(B, gen_length, dtype=torch.long)], dim=1
        )
    prompt_index = x != mask_id
    assert gen_length % block_length == 0
    num_blocks = gen_length // block_length
    assert steps % num_blocks == 0
    steps_per_block = steps // num_blocks

    def call(ids, am):
        return model(ids) if am is None else model(ids, attention_mask=am)

    for nb in range(num_blocks):
        block_start = P + nb * block_length
        block_end = block_start + block_length
        # how many tokens each step of this block reveals, per row
        n = (x[:, block_start:block_end] == mask_id).sum(dim=1).tolist()
        plan = [
            [
                n_row // steps_per_block + (1 if i < n_row % steps_per_block else 0)
                for i in range(steps_per_block)
            ]
            for n_row in n
        ]
        for i in range(steps_per_block):
            mask_index = x == mask_id
            if cfg_scale > 0:
                un_x = x.clone()
                un_x[prompt_index] = mask_id
                am = None if attention_mask is None else torch.cat([attention_mask, attention_mask])
                both = call(torch.cat([x, un_x]), am)
                cond, un = both[:B], both[B:]
                logits = un + (cfg_scale + 1) * (cond - un)
            else:
                logits = call(x, attention_mask).clone()
            if logits_eos_inf:
                logits[:, :, eos_id] = float("-inf")
            x0 = logits.argmax(dim=-1)  # temperature 0
            if confidence_eos_eot_inf:  # what the flag is meant to do (and does, at temperature 0)
                logits[:, :, eos_id] = float("-inf")
                logits[:, :, eot_id] = float("-inf")
            p = torch.softmax(logits.double(), dim=-1)
            x0_p = torch.gather(p, -1, x0[:, :, None])[:, :, 0]
            x0_p[:, block_end:] = float("-inf")
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(
                mask_index, x0_p, torch.tensor(float("-inf"), dtype=torch.float64)
            )
            for j in range(B):
                chosen = torch.topk(confidence[j], k=plan[j][i]).indices
                x[j, chosen] = x0[j, chosen]
    return x


def _prompts(B: int, P: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 9, (B, P), generator=g)


@pytest.mark.parametrize(
    "gen_length,block_length,steps", [(16, 16, 16), (16, 16, 5), (16, 4, 8), (24, 8, 12)]
)
@pytest.mark.parametrize("cfg_scale", [0.0, 1.5])
def test_matches_official_algorithm(gen_length, block_length, steps, cfg_scale):
    model = tiny_model()
    prompt = _prompts(3, 6)
    ours = generate(model, prompt, gen_length, block_length, steps, MASK, cfg_scale=cfg_scale)
    ref = official_reference(
        model, prompt, steps, gen_length, block_length, MASK, cfg_scale=cfg_scale
    )
    assert torch.equal(ours, ref)
    assert not (ours == MASK).any()
    assert torch.equal(ours[:, :6], prompt)
    assert len(ours[:, 6:].unique()) >= 3  # a varied output, so a wrong order would show


@pytest.mark.parametrize("cfg_scale", [0.0, 0.7])
def test_matches_official_with_left_padding_and_attention_mask(cfg_scale):
    model = MaskAwareModel()
    PAD = 0
    prompt = _prompts(3, 7, seed=3)
    am = torch.ones(3, 7, dtype=torch.long)
    prompt[1, :3], am[1, :3] = PAD, 0  # row 1: 4-token prompt, 3 pads on the left
    prompt[2, :5], am[2, :5] = PAD, 0  # row 2: 2-token prompt
    ours = generate(
        model, prompt, 16, 8, 8, MASK, cfg_scale=cfg_scale, attention_mask=am, pad_id=PAD
    )
    ref = official_reference(model, prompt, 8, 16, 8, MASK, cfg_scale=cfg_scale, attention_mask=am)
    assert model.calls_with_mask > 0
    assert torch.equal(ours, ref)
    # the mask matters to this model: padded rows get other logits without it
    assert not torch.equal(model(prompt), model(prompt, attention_mask=am))


def test_matches_official_with_eos_flags():
    model = tiny_model(seed=2)
    prompt = _prompts(2, 4, seed=5)
    kw = dict(eos_id=EOS, eot_id=EOT, logits_eos_inf=True, confidence_eos_eot_inf=True)
    ours = generate(model, prompt, 16, 8, 8, MASK, **kw)
    ref = official_reference(model, prompt, 8, 16, 8, MASK, **kw)
    assert torch.equal(ours, ref)
    assert not (ours[:, 4:] == EOS).any()  # logits_eos_inf: EOS is never proposed


def test_batch_rows_are_independent_without_padding():
    model = tiny_model()
    prompt = _prompts(3, 5)
    batched = generate(model, prompt, 12, 4, 6, MASK)
    for b in range(3):
        assert torch.equal(generate(model, prompt[b], 12, 4, 6, MASK)[0], batched[b])


# --------------------------------------------------------------------------------------------------
# A worked example to follow by hand.
# --------------------------------------------------------------------------------------------------
class FixedLogits:
    """A fake "model": whatever the input, position i predicts token TOKENS[i] with probability
    PROBS[i] (the rest of the mass spread evenly over the other 3 tokens of a 4-token vocabulary
    a=0, b=1, c=2, mask=3)."""

    TOKENS = [0, 1, 2, 0, 1, 2]
    PROBS = [0.90, 0.50, 0.80, 0.60, 0.95, 0.40]

    def __call__(self, ids):
        B, L = ids.shape
        logits = torch.full((B, L, 4), -30.0)
        P = L - len(self.TOKENS)
        for i, (tok, p) in enumerate(zip(self.TOKENS, self.PROBS, strict=True)):
            row = torch.full((3,), math.log((1 - p) / 2))
            row[tok] = math.log(p)
            logits[:, P + i, :3] = row
        return logits


def test_worked_example_pure_diffusion():
    # 6 masks, 3 steps -> 2 tokens per step.
    # The confidences are the PROBS of positions 0..5: 0.90 0.50 0.80 0.60 0.95 0.40.
    # step 1: the two most confident masked positions are 4 (0.95) and 0 (0.90)
    # step 2: of the rest (1, 2, 3, 5) the best two are 2 (0.80) and 3 (0.60)
    # step 3: what remains: 1 (0.50) and 5 (0.40)
    out, tr = generate(FixedLogits(), torch.empty(1, 0, dtype=torch.long), 6, 6, 3, 3, trace=True)
    revealed = [r[0].nonzero().flatten().tolist() for r in tr.revealed]
    assert revealed == [[0, 4], [2, 3], [1, 5]]
    assert out[0].tolist() == [0, 1, 2, 0, 1, 2]
    assert tr.reveal_step()[0].tolist() == [1, 3, 2, 2, 1, 3]
    # the recorded confidences are the probabilities of the revealed tokens
    assert torch.allclose(
        tr.reveal_confidence()[0], torch.tensor(FixedLogits.PROBS, dtype=torch.float64)
    )
    canvases = ["".join("abc_"[i] for i in c[0].tolist()) for c in tr.canvases]
    assert canvases == ["______", "a___b_", "a_cab_", "abcabc"]


def test_worked_example_two_blocks():
    # Same logits, block_length 3, steps 4 -> 2 blocks of 2 steps; 3 masks over 2 steps -> [2, 1].
    # block 1 (positions 0-2): step 1 reveals 0 (0.90) and 2 (0.80) -- NOT 4 (0.95): it is right of
    #                          the block; step 2 reveals 1.
    # block 2 (positions 3-5): step 3 reveals 4 (0.95) and 3 (0.60); step 4 reveals 5.
    _, tr = generate(FixedLogits(), torch.empty(1, 0, dtype=torch.long), 6, 3, 4, 3, trace=True)
    assert [r[0].nonzero().flatten().tolist() for r in tr.revealed] == [[0, 2], [1], [3, 4], [5]]
    assert tr.blocks == [0, 0, 1, 1]


def test_worked_example_threshold():
    # threshold 0.7 in one block: step 1 reveals every candidate >= 0.7: 0, 2, 4.
    # Step 2: none of the rest (0.50, 0.60, 0.40) passes, so only the best one, 3 (0.60);
    # then 1, then 5.
    _, tr = generate(
        FixedLogits(), torch.empty(1, 0, dtype=torch.long), 6, 6, None, 3, threshold=0.7, trace=True
    )
    assert [r[0].nonzero().flatten().tolist() for r in tr.revealed] == [[0, 2, 4], [3], [1], [5]]


# --------------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------------
def test_gumbel_with_noise_matches_sampling_gumbel_argmax():
    logits = torch.randn(4, 7, 30, generator=torch.Generator().manual_seed(0))
    for T in (0.5, 1.0, 2.0):
        a = gumbel_argmax(logits, T, torch.Generator().manual_seed(3))
        u = torch.rand(
            logits.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64
        )
        assert torch.equal(a, gumbel_argmax_with_noise(logits, T, u))
    assert torch.equal(
        gumbel_argmax_with_noise(logits, 0, torch.rand(logits.shape)), logits.argmax(-1)
    )


def test_gumbel_float64_keeps_uniforms_near_one_apart():
    # u = 1 - 2e-10 and 1 - 1e-10 both round to 1.0 in float32 (noise +inf for both, the first
    # wins); float64 keeps them apart, and the larger u (id 2) has the larger Gumbel noise.
    logits = torch.zeros(1, 3)
    u = torch.tensor([[0.5, 1 - 2e-10, 1 - 1e-10]], dtype=torch.float64)
    assert gumbel_argmax_with_noise(logits, 1.0, u).item() == 2
    in_float32 = (logits - torch.log(-torch.log(u.float()))).argmax(-1)
    assert in_float32.item() == 1


def test_confidence_scores():
    logits = torch.log(torch.tensor([[[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]]]))
    x0 = torch.tensor([[0, 2]])
    assert torch.allclose(
        confidence_scores(logits, x0, "low_confidence"), torch.tensor([[0.7, 0.25]]).double()
    )
    assert torch.allclose(
        confidence_scores(logits, x0, "margin"), torch.tensor([[0.5, 0.05]]).double()
    )
    p = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]]).double()
    assert torch.allclose(confidence_scores(logits, x0, "entropy"), (p * p.log()).sum(-1)[None])
    with pytest.raises(ValueError, match="Unknown remasking"):
        confidence_scores(logits, x0, "best")


def test_positions_to_reveal_threshold_keeps_at_least_one():
    conf = torch.tensor([[0.2, 0.3, float("-inf")], [0.95, 0.91, 0.1]], dtype=torch.float64)
    out = positions_to_reveal(conf, threshold=0.9)
    assert out.tolist() == [[False, True, False], [True, True, False]]


def test_sampler_config_checks_its_options():
    with pytest.raises(ValueError, match="steps must be a positive int"):
        SamplerConfig()
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        SamplerConfig(steps=4, temperature=-1)
    with pytest.raises(ValueError, match="expected 0 < threshold <= 1"):
        SamplerConfig(threshold=1.5)
    assert SamplerConfig(threshold=0.9).steps is None


@pytest.mark.parametrize("strategy", ["low_confidence", "top_prob", "margin", "entropy", "random"])
def test_every_strategy_fills_the_canvas(strategy):
    model = tiny_model()
    out, tr = generate(
        model,
        _prompts(2, 4),
        16,
        8,
        8,
        MASK,
        remasking=strategy,
        temperature=1.0,
        generator=torch.Generator().manual_seed(0),
        trace=True,
        logits_mask_inf=True,
    )
    assert not (out == MASK).any()  # a random model may propose the mask id itself: forbidden here
    assert tr.reveals_per_step().tolist() == [[2] * 8, [2] * 8]
    # right of the current block nothing is ever revealed: block 0 (positions 4-11) in steps 1-4
    steps = tr.reveal_step()
    assert (steps[:, 4:12] <= 4).all() and (steps[:, 12:] > 4).all()


def test_temperature_sampling_is_seeded_and_random():
    model = tiny_model()

    def draw(seed):
        g = torch.Generator().manual_seed(seed)
        return generate(model, _prompts(2, 4), 16, 16, 8, MASK, temperature=1.0, generator=g)

    assert torch.equal(draw(1), draw(1))  # the generator is the only source of randomness
    assert not torch.equal(draw(1), draw(2))  # and temperature 1 does sample
    greedy = generate(model, _prompts(2, 4), 16, 16, 8, MASK)
    assert not torch.equal(draw(1), greedy)


def test_confidence_eos_eot_suppressed_at_any_temperature():
    # A model that loves EOS and EoT at every position: with the flag, positions proposing them are
    # revealed last, so the first step reveals a position that proposes something else.
    class Lover:
        def __call__(self, ids):
            logits = torch.zeros(*ids.shape, V)
            logits[..., EOS] = 5.0
            logits[..., EOT] = 5.0
            logits[:, -1, 3] = 20.0  # only the last position prefers an ordinary token
            return logits

    for T in (0.0, 1.0):
        _, tr = generate(
            Lover(),
            torch.zeros(1, 2, dtype=torch.long),
            6,
            6,
            6,
            MASK,
            temperature=T,
            eos_id=EOS,
            eot_id=EOT,
            confidence_eos_eot_inf=True,
            generator=torch.Generator().manual_seed(0),
            trace=True,
        )
        assert tr.revealed[0][0].nonzero().flatten().tolist() == [7]


def test_threshold_mode_refuses_to_loop_forever_on_mask_proposals():
    def loves_mask(ids):
        logits = torch.zeros(*ids.shape, V)
        logits[..., MASK] = 10.0
        return logits

    with pytest.raises(RuntimeError, match="logits_mask_inf=True"):
        generate(loves_mask, _prompts(1, 2), 4, 4, None, MASK, threshold=0.9)
    out = generate(
        loves_mask, _prompts(1, 2), 4, 4, None, MASK, threshold=0.9, logits_mask_inf=True
    )
    assert not (out == MASK).any()


def test_infill_fills_only_masks():
    model = tiny_model()
    ids = _prompts(2, 20)
    ids[:, 6:14] = MASK
    out, tr = infill(model, ids, 4, MASK, trace=True)
    assert not (out == MASK).any()
    keep = ids != MASK
    assert torch.equal(out[keep], ids[keep])
    assert tr.reveals_per_step().tolist() == [[2, 2, 2, 2]] * 2


def test_object_with_logits_attribute_is_accepted():
    model = tiny_model()

    class Wrapped:
        config = model.config

        def __call__(self, ids):
            return type("Out", (), {"logits": model(ids)})()

    p = _prompts(1, 4)
    assert torch.equal(generate(Wrapped(), p, 8, 8, 4, MASK), generate(model, p, 8, 8, 4, MASK))


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(gen_length=10, block_length=4, steps=5), "not divisible by block_length"),
        (dict(gen_length=16, block_length=4, steps=6), "not divisible by the number of blocks"),
        (dict(gen_length=16, block_length=4, steps=20), "more than the 4 masked tokens"),
        (dict(gen_length=48, block_length=48, steps=48), "context is 48"),
        (dict(gen_length=8, block_length=8, steps=8, pad_id=MASK), "pad_id == mask_id"),
        (dict(gen_length=8, block_length=8, steps=8, remasking="best"), "not one of"),
        (dict(gen_length=8, block_length=8, steps=8, logits_eos_inf=True), "needs eos_id"),
        (
            dict(
                gen_length=8,
                block_length=8,
                steps=8,
                attention_mask=torch.ones(1, 4, dtype=torch.long),
            ),
            "does not take an attention_mask",
        ),
    ],
)
def test_bad_input_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(tiny_model(), _prompts(1, 4), mask_id=MASK, **kwargs)


def test_bad_input_errors_more():
    model = tiny_model()
    with pytest.raises(ValueError, match="max_length"):
        generate(model, _prompts(1, 4), 8, 8, 8, MASK, max_length=10)
    with pytest.raises(ValueError, match="use minillada.sampling.generate.infill"):
        generate(model, torch.tensor([[1, MASK, 2]]), 8, 8, 8, MASK)
    with pytest.raises(ValueError, match="LEFT"):
        generate(
            MaskAwareModel(),
            _prompts(1, 4),
            8,
            8,
            8,
            MASK,
            attention_mask=torch.tensor([[1, 1, 0, 0]]),
        )
    with pytest.raises(ValueError, match="exceeds the number of masks"):
        infill(model, torch.tensor([[1, MASK, 2]]), 2, MASK)
