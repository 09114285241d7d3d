"""Lesson 8's fast samplers: a cache off is today's sampler, a cache refreshed every step is no
cache, threshold decoding reveals at least one token per step, and bad combinations are refused."""

import pytest
import torch

from minillada.models.llada import LLaDAModel, preset
from minillada.models.tiny_transformer import TinyTransformer, TinyTransformerConfig
from minillada.sampling.counting import CountedModel, counting_positions
from minillada.sampling.denoise import SamplerConfig
from minillada.sampling.generate import generate
from minillada.sampling.variable_length import var_generate

MASK, EOS = 511, 510


def model(seed=0, n_kv_heads=None) -> LLaDAModel:
    cfg = preset(
        "tiny", n_kv_heads=n_kv_heads, max_sequence_length=128, mask_token_id=MASK,
        eos_token_id=EOS, pad_token_id=EOS,
    )  # fmt: skip
    m = LLaDAModel(cfg, generator=torch.Generator().manual_seed(seed)).double().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(3.0)  # sharper predictions: confidences spread out, thresholds matter
    return m


PROMPT = torch.randint(0, 500, (1, 12), generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("n_kv_heads", [None, 2])
def test_a_cache_refreshed_at_every_step_is_no_cache(cache, n_kv_heads):
    m = model(n_kv_heads=n_kv_heads)
    exact = generate(m, PROMPT, 32, 8, 32)
    assert torch.equal(generate(m, PROMPT, 32, 8, 32, cache=cache, cache_refresh=1), exact)
    v_exact = var_generate(m, PROMPT, 32, 8, 8, stop_ids=[EOS])
    v = var_generate(m, PROMPT, 32, 8, 8, stop_ids=[EOS], cache=cache, cache_refresh=1)
    assert torch.equal(v.tokens, v_exact.tokens) and v.forward_passes == v_exact.forward_passes


def test_the_cached_samplers_fill_every_mask_with_the_same_number_of_passes():
    m = model()
    for cache in ["prefix", "dual"]:
        counted = CountedModel(m)
        out = generate(counted, PROMPT, 32, 8, 32, cache=cache)
        assert not (out == MASK).any() and counted.calls == 32
        assert torch.equal(out[:, :12], PROMPT)


def positions_per_pass(m, cache) -> list[int]:
    """How many positions each forward pass of a cached generation runs over (the embedding
    sees exactly the ids of each pass)."""
    lengths = []
    hook = m.transformer.wte.register_forward_hook(
        lambda mod, inp, out: lengths.append(out.shape[1])
    )
    try:
        generate(m, PROMPT, 32, 8, 32, cache=cache)
    finally:
        hook.remove()
    return lengths


def test_the_dual_cache_recomputes_fewer_positions_than_the_prefix_cache():
    m = model()
    # per block: one full forward of all 44 positions, then 7 windows
    assert positions_per_pass(m, "dual") == [44, *[8] * 7] * 4
    assert positions_per_pass(m, "prefix") == [
        44, *[32] * 7, 44, *[24] * 7, 44, *[16] * 7, 44, *[8] * 7
    ]  # fmt: skip


@pytest.mark.parametrize("threshold", [0.05, 0.5, 0.99])
def test_threshold_decoding_reveals_at_least_one_token_per_step(threshold):
    m = model()
    counted = CountedModel(m)
    out = generate(counted, PROMPT, 32, 8, None, threshold=threshold)
    assert not (out == MASK).any() and counted.calls <= 32
    v = var_generate(m, PROMPT, 32, 8, None, stop_ids=[EOS], threshold=threshold)
    assert v.forward_passes <= v.blocks * 8 and not (v.tokens == MASK).any()


def test_a_lower_threshold_never_needs_more_passes():
    m = model()
    passes = []
    for threshold in [0.99, 0.9, 0.5, 0.1]:
        counted = CountedModel(m)
        generate(counted, PROMPT, 32, 8, None, threshold=threshold)
        passes.append(counted.calls)
    assert passes == sorted(passes, reverse=True) and passes[-1] < passes[0]


def test_bad_combinations_are_refused_with_the_reason():
    m = model()
    with pytest.raises(ValueError, match="classifier-free guidance"):
        generate(m, PROMPT, 32, 8, 32, cfg_scale=1.0, cache="dual")
    with pytest.raises(ValueError, match="is not one of"):
        generate(m, PROMPT, 32, 8, 32, cache="kv")
    with pytest.raises(ValueError, match="needs a cache"):
        SamplerConfig(steps=4, cache_refresh=2)
    with pytest.raises(ValueError, match=r"0 < threshold <= 1"):
        generate(m, PROMPT, 32, 8, None, threshold=1.5)
    with pytest.raises(ValueError, match=r"0 < threshold <= 1"):
        var_generate(m, PROMPT, 32, 8, None, stop_ids=[EOS], threshold=0.0)
    tiny = TinyTransformer(
        TinyTransformerConfig(vocab_size=512, block_size=64, n_layer=1, n_head=2, n_embd=16)
    )
    with pytest.raises(ValueError, match="needs a minillada LLaDAModel"):
        generate(tiny, PROMPT, 16, 8, 16, mask_id=MASK, cache="prefix")


def test_counting_positions_sees_every_pass_and_what_the_caches_save():
    m = model()
    with counting_positions(m) as exact:
        generate(m, PROMPT, 32, 8, 32)
    assert exact == [44] * 32  # every pass over the prompt and the whole canvas
    with counting_positions(m) as dual:
        generate(m, PROMPT, 32, 8, 32, cache="dual")
    assert sum(dual) == 4 * (44 + 7 * 8) < sum(exact)
    with counting_positions(m) as outside:
        pass
    assert outside == [] and not m.transformer.wte._forward_hooks  # the hook is gone
