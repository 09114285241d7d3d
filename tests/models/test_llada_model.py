"""LLaDAModel: released names and shapes, counts, config round trip, and numerics exact to the
released modeling_llada.py of GSAI-ML/LLaDA-8B-Base."""

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from minillada.models.attention import attention_bias
from minillada.models.llada import LLaDAConfig, LLaDAModel, RMSNorm, RotaryEmbedding, preset
from minillada.models.rope import rope_tables
from minillada.models.sizing import activation_memory, count_parameters, weight_memory


def tiny(**kw) -> LLaDAConfig:
    return preset("tiny", vocab_size=97, embedding_size=97, max_sequence_length=64, **kw)


def build(cfg: LLaDAConfig, seed: int = 0, dtype: torch.dtype | None = None) -> LLaDAModel:
    return LLaDAModel(cfg, dtype=dtype, generator=torch.Generator().manual_seed(seed)).eval()


def randomise_norms(model: LLaDAModel, seed: int = 1) -> None:
    """Norm weights start at 1; make them random so a wrong multiply order would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln_f" in name:
                p.copy_(1 + 0.5 * torch.randn(p.shape, generator=g))


# ---------------------------------------------------------------------------------------------
# The released forward pass restated as plain tensor code, from the state dict alone
# ---------------------------------------------------------------------------------------------


def released_forward(sd: dict, hf: dict, ids: torch.Tensor) -> torch.Tensor:
    D, H, n_layers = hf["d_model"], hf["n_heads"], hf["n_layers"]
    Dh, eps, theta = D // H, hf["rms_norm_eps"], hf["rope_theta"]
    B, L = ids.shape

    def rms(x, w):  # upcast, normalise, cast back, then weight * x
        xf = x.to(torch.float32)
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        return w * xf.to(x.dtype)

    # RoPE table: fp32, on the CPU, for max_sequence_length positions, then sliced
    inv_freq = 1.0 / (theta ** (torch.arange(0, Dh, 2, dtype=torch.float32) / Dh))
    pos = torch.arange(hf["max_sequence_length"], dtype=torch.float32)
    ang = torch.cat([torch.einsum("i,j->ij", pos, inv_freq)] * 2, dim=-1)
    sin, cos = ang.sin()[None, None, :L], ang.cos()[None, None, :L]

    def rope(t):  # rotate-half, in fp32, cast back
        tf = t.to(torch.float32)
        rot = torch.cat([-tf[..., Dh // 2 :], tf[..., : Dh // 2]], dim=-1)
        return (tf * cos + rot * sin).to(t.dtype)

    x = sd["model.transformer.wte.weight"][ids]
    for n in range(n_layers):
        w = {k.split(f"blocks.{n}.")[1]: v for k, v in sd.items() if f".blocks.{n}." in k}
        h = rms(x, w["attn_norm.weight"])
        q, k, v = (
            F.linear(h, w[f"{p}_proj.weight"]).view(B, L, H, Dh).transpose(1, 2) for p in "qkv"
        )
        att = F.scaled_dot_product_attention(rope(q), rope(k), v, dropout_p=0.0, is_causal=False)
        x = x + F.linear(att.transpose(1, 2).reshape(B, L, D), w["attn_out.weight"])
        h = rms(x, w["ff_norm.weight"])
        gated = F.silu(F.linear(h, w["ff_proj.weight"])) * F.linear(h, w["up_proj.weight"])
        x = x + F.linear(gated, w["ff_out.weight"])
    x = rms(x, sd["model.transformer.ln_f.weight"])
    return F.linear(x, sd["model.transformer.ff_out.weight"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_logits_equal_the_released_forward_pass(dtype):
    model = build(tiny(rope_theta=500_000.0))
    randomise_norms(model)
    model = model.to(dtype)
    ids = torch.randint(0, 97, (2, 23), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = model(ids)
        want = released_forward(model.state_dict(), model.config.to_hf_config(), ids)
    assert got.dtype == dtype and got.shape == (2, 23, 97)
    # Both sides run the same operations on the same shapes in the same order, so they agree bit
    # for bit on any CPU, in fp32 and in bf16; bf16 also pins the RMSNorm cast-then-weight order
    # (weight * x before the cast changes bf16 logits by ~4e-3 here).
    assert torch.equal(got, want), f"{dtype} logits must match the released forward bit for bit"


def test_fast_and_readable_attention_agree():
    for cfg in (tiny(), tiny(n_kv_heads=2)):
        fast = build(cfg)
        slow = LLaDAModel(replace(cfg, fast_attention=False), device="meta")
        slow.load_state_dict(fast.state_dict(), assign=True)
        ids = torch.randint(0, 97, (3, 17), generator=torch.Generator().manual_seed(0))
        mask = torch.ones(3, 17, dtype=torch.long)
        mask[1, :5] = 0
        with torch.no_grad():
            torch.testing.assert_close(fast(ids), slow(ids), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(fast(ids, mask), slow(ids, mask), atol=1e-5, rtol=1e-5)


def test_grouped_query_attention_equals_repeated_heads():
    gqa = build(tiny(n_kv_heads=2))  # 4 query heads share 2 key/value heads
    mha = LLaDAModel(tiny(n_kv_heads=4), device="meta")
    sd, Dh = dict(gqa.state_dict()), gqa.config.head_dim
    for k in [k for k in sd if k.endswith(("k_proj.weight", "v_proj.weight"))]:
        sd[k] = sd[k].view(2, Dh, -1).repeat_interleave(2, dim=0).reshape(4 * Dh, -1)
    mha.load_state_dict(sd, assign=True)
    ids = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(gqa(ids), mha(ids), atol=1e-6, rtol=1e-6)


def test_left_padding_with_mask_matches_unpadded():
    model = build(tiny())
    g = torch.Generator().manual_seed(5)
    a, b = torch.randint(0, 96, (1, 10), generator=g), torch.randint(0, 96, (1, 6), generator=g)
    pad = 96
    batch = torch.cat([a, torch.cat([torch.full((1, 4), pad), b], dim=1)])  # (2, 10), b left-padded
    mask = (batch != pad).long()
    with torch.no_grad():
        out = model(batch, attention_mask=mask)
        torch.testing.assert_close(out[0:1], model(a), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out[1:, 4:], model(b), atol=1e-4, rtol=1e-4)
        unmasked = model(batch)  # the Feb-2025 behaviour: padding is attended
        assert (unmasked[1:, 4:] - model(b)).abs().max() > 1e-2
        # a mask of all ones is exactly the mask-free computation
        assert torch.equal(model(batch, torch.ones_like(batch)), unmasked)


def test_attention_bias_values():
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    bias = attention_bias(mask, torch.bfloat16)
    assert bias.shape == (2, 1, 1, 3) and bias.dtype == torch.bfloat16
    assert bias[0, 0, 0, 0] == torch.finfo(torch.bfloat16).min  # finite, never -inf
    assert (bias[0, ..., 1:] == 0).all() and (bias[1] == 0).all()
    assert attention_bias(torch.ones(2, 3), torch.float32) is None
    with pytest.raises(ValueError, match="attention_mask has shape"):
        build(tiny())(torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 4))


def test_bidirectional_every_position_sees_every_other():
    model = build(tiny())
    x = torch.randint(0, 97, (1, 16), generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[0, -1] = (x[0, -1] + 1) % 97
    with torch.no_grad():
        assert not torch.allclose(model(x)[0, 0], model(y)[0, 0])


def test_rmsnorm_normalises_in_fp32_then_weights_in_input_dtype():
    norm = RMSNorm(8, eps=1e-5).to(torch.bfloat16)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2, 8))
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16) * 30
    xf = x.float()
    want = norm.weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).bfloat16()
    got = norm(x)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)


def test_rotary_tables_fp32_cpu_sliced_from_the_full_table():
    rot = RotaryEmbedding(head_dim=16, theta=500_000.0, max_sequence_length=64)
    cos, sin = rot.tables(10, torch.device("cpu"))
    full_cos, full_sin = rope_tables(64, 16, 500_000.0)
    assert cos.dtype == torch.float32 and torch.equal(cos, full_cos[:10])
    assert torch.equal(sin, full_sin[:10])
    assert rot.tables(100, torch.device("cpu"))[0].shape == (100, 16)  # longer: own table
    q = torch.randn(1, 2, 10, 16).bfloat16()
    q2, k2 = rot(q, q, cos, sin)
    assert q2.dtype == torch.bfloat16 and torch.equal(q2, k2)


def test_block_size_and_longer_inputs():
    model = build(tiny())
    assert model.config.context_length == 64
    with torch.no_grad():
        assert model(torch.zeros(1, 80, dtype=torch.long)).shape == (1, 80, 97)


def test_config_validation_messages():
    with pytest.raises(ValueError, match="divisible by n_heads"):
        preset("tiny", d_model=66)
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        preset("tiny", n_kv_heads=3)
    with pytest.raises(KeyError, match="Unknown LLaDA preset"):
        preset("huge")


# ---------------------------------------------------------------------------------------------
# The released 8B: names, shapes, counts, config.json
# ---------------------------------------------------------------------------------------------


def test_meta_8b_matches_the_released_index_exactly(llada_reference):
    index = json.loads((llada_reference / "model.safetensors.index.json").read_text())
    hf = json.loads((llada_reference / "config.json").read_text())
    model = LLaDAModel(LLaDAConfig.from_hf_config(hf), device="meta")
    sd = model.state_dict()
    assert all(t.is_meta for t in sd.values())
    assert len(index["weight_map"]) == 291 and set(sd) == set(index["weight_map"])
    D, F_, V = hf["d_model"], hf["mlp_hidden_size"], hf["embedding_size"]
    shape = {  # the released index, [out, in] as in nn.Linear
        "wte": (V, D), "attn_norm": (D,), "q_proj": (D, D), "k_proj": (D, D), "v_proj": (D, D),
        "attn_out": (D, D), "ff_norm": (D,), "ff_proj": (F_, D), "up_proj": (F_, D),
        "ff_out": (D, F_), "ln_f": (D,),
    }  # fmt: skip
    for key, t in sd.items():
        part = key.split(".")[-2]
        want = (V, D) if key == "model.transformer.ff_out.weight" else shape[part]
        assert tuple(t.shape) == want, key
    assert 2 * sum(t.numel() for t in sd.values()) == index["metadata"]["total_size"]  # bf16


def test_released_config_round_trips_without_loss(llada_reference):
    text = (llada_reference / "config.json").read_text()
    hf = json.loads(text)
    cfg = LLaDAConfig.from_hf_config(hf)
    assert cfg == preset("llada_8b")
    assert cfg.to_hf_config() == hf
    assert preset("llada_8b").to_hf_config() == hf  # the preset writes the released file...
    assert json.dumps(preset("llada_8b").to_hf_config(), indent=2) == text  # ...byte for byte
    extra = {**hf, "train_max_sequence_length": 8192}  # unknown fields survive
    assert LLaDAConfig.from_hf_config(extra).to_hf_config() == dict(sorted(extra.items()))
    with pytest.raises(ValueError, match="block_type='sequential'"):
        LLaDAConfig.from_hf_config({**hf, "block_type": "sequential"})
    with pytest.raises(ValueError, match="not a LLaDA config"):
        LLaDAConfig.from_hf_config({"format": "minillada-checkpoint"})


def test_parameter_count_8b_exact_with_breakdown():
    count = count_parameters(preset("llada_8b"))
    assert count.total == 8_015_581_184
    assert count.wte == count.ff_out == 126464 * 4096 == 517_996_544
    assert sum(count.per_block.values()) == 218_112_000 and count.blocks == 6_979_584_000
    assert count.ln_f == 4096
    assert "8,015,581,184" in count.table()
    assert LLaDAModel(preset("llada_8b"), device="meta").num_parameters() == count.total


@pytest.mark.parametrize("name", ["tiny", "small", "medium", "llada_1b"])
def test_parameter_count_matches_the_model(name):
    for cfg in (preset(name), preset(name, n_kv_heads=preset(name).n_heads // 2)):
        assert LLaDAModel(cfg, device="meta").num_parameters() == count_parameters(cfg).total


def test_memory_estimates():
    cfg = preset("llada_8b")
    mem = weight_memory(cfg)
    assert mem == {"fp32": 4 * 8_015_581_184, "bf16": 16_031_162_368, "int8": 8_015_581_184}
    act = activation_memory(cfg, batch_size=1, seq_len=4096)
    assert act["logits"] == 4096 * 126464 * 2  # the head dominates at LLaDA's vocabulary
    assert act["peak"] >= act["logits"] and act["attention_scores (readable path)"] == 0
    readable = activation_memory(cfg, 1, 4096, fast_attention=False)
    assert readable["attention_scores (readable path)"] == 2 * 32 * 4096**2 * 2
    assert activation_memory(cfg, 2, 4096)["peak"] == 2 * act["peak"]


def test_init_uses_the_generator_not_the_global_rng():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b = build(tiny(), seed=7), build(tiny(), seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(build(tiny(), seed=8).transformer.wte.weight, a.transformer.wte.weight)
