"""iLLaDA-8B in the one model class: its exact size, its tied head, and its forward pass against a
plain restatement of the Llama-style bidirectional block (grouped-query attention, tied head)."""

import pytest
import torch
import torch.nn.functional as F

from minillada.checkpoints.dialects import DIALECTS
from minillada.models.llada import LLaDAModel, preset
from minillada.models.sizing import count_parameters, kv_bytes_per_token


def test_illada_8b_exact_size_on_the_meta_device():
    cfg = preset("illada_8b")
    model = LLaDAModel(cfg, device="meta")
    count = count_parameters(cfg)
    assert model.num_parameters() == count.total == 7_615_025_152  # the card: 7.62B
    assert count.wte == 155_136 * 4096 == 635_437_056 and count.ff_out == 0  # tied head
    assert count.non_embedding == 6_979_588_096  # the card: 6.98B non-embedding
    llada = count_parameters(preset("llada_8b"))
    assert llada.total == 8_015_581_184
    # GQA saves exactly what the wider MLP adds: the same parameters per layer
    assert count.per_layer == llada.per_layer == 218_112_000
    assert llada.total - count.total == llada.ff_out - (count.wte - llada.wte)
    assert "model.transformer.ff_out.weight" not in model.state_dict()
    assert len(model.state_dict()) == 1 + 9 * 32 + 1  # embedding, 32 blocks, final norm


def test_keys_and_values_per_token():
    assert kv_bytes_per_token(preset("illada_8b")) == 128 * 1024  # 2 x 32 x 8 x 128 x 2 bytes
    assert kv_bytes_per_token(preset("llada_8b")) == 512 * 1024


def test_unpublished_values_are_refused_not_guessed():
    cfg = preset("illada_8b")
    assert cfg.rope_theta is None and cfg.rms_norm_eps is None and cfg.mask_token_id is None
    small = preset("illada_8b", n_layers=1, d_model=64, n_heads=4, n_kv_heads=1,
                   mlp_hidden_size=96, vocab_size=50, embedding_size=50)  # fmt: skip
    model = LLaDAModel(small)
    with pytest.raises(ValueError, match=r"\['rope_theta', 'rms_norm_eps'\] unset"):
        model(torch.zeros(1, 3, dtype=torch.long))


def tiny_illada(**kw):
    cfg = preset(
        "illada_1b",
        d_model=64,
        n_layers=2,
        n_heads=8,
        n_kv_heads=2,
        mlp_hidden_size=160,
        vocab_size=97,
        embedding_size=97,
        max_sequence_length=64,
        rope_theta=50_000.0,
        **kw,
    )
    model = LLaDAModel(cfg, generator=torch.Generator().manual_seed(0)).eval()
    with torch.no_grad():  # random norm weights, so a wrong multiply order would show
        g = torch.Generator().manual_seed(1)
        for name, p in model.named_parameters():
            if "norm" in name or "ln_f" in name:
                p.copy_(1 + 0.5 * torch.randn(p.shape, generator=g))
    return model


def test_the_head_is_one_tensor_through_to_and_the_optimizer():
    model = tiny_illada()
    assert model.head_weight is model.transformer.wte.weight
    double = model.to(torch.float64)
    assert double.head_weight is double.transformer.wte.weight
    opt = torch.optim.AdamW(model.parameters())
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n == model.num_parameters() == count_parameters(model.config).total


def llama_style_forward(sd: dict, hf: dict, ids: torch.Tensor) -> torch.Tensor:
    """iLLaDA's forward written out from its Llama-style state dict and config.json: pre-norm
    blocks, RoPE rotate-half in float32, grouped-query attention with every query head of a group
    reading its key/value head, no causal mask, SwiGLU, and the embedding as the head."""
    D, H, Hkv = hf["hidden_size"], hf["num_attention_heads"], hf["num_key_value_heads"]
    Dh, eps, theta = D // H, hf["rms_norm_eps"], hf["rope_theta"]
    B, L = ids.shape

    def rms(x, w):
        xf = x.to(torch.float32)
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        return w * xf.to(x.dtype)

    inv_freq = 1.0 / (theta ** (torch.arange(0, Dh, 2, dtype=torch.float32) / Dh))
    pos = torch.arange(hf["max_position_embeddings"], dtype=torch.float32)
    ang = torch.cat([torch.outer(pos, inv_freq)] * 2, dim=-1)[:L]
    cos, sin = ang.cos(), ang.sin()

    def rope(t):
        tf = t.to(torch.float32)
        rot = torch.cat([-tf[..., Dh // 2 :], tf[..., : Dh // 2]], dim=-1)
        return (tf * cos + rot * sin).to(t.dtype)

    embed = sd["model.embed_tokens.weight"]
    x = embed[ids]
    for n in range(hf["num_hidden_layers"]):
        w = {k.split(f"layers.{n}.")[1]: v for k, v in sd.items() if f".layers.{n}." in k}
        h = rms(x, w["input_layernorm.weight"])
        q = F.linear(h, w["self_attn.q_proj.weight"]).view(B, L, H, Dh).transpose(1, 2)
        k = F.linear(h, w["self_attn.k_proj.weight"]).view(B, L, Hkv, Dh).transpose(1, 2)
        v = F.linear(h, w["self_attn.v_proj.weight"]).view(B, L, Hkv, Dh).transpose(1, 2)
        q, k = rope(q), rope(k)
        group = H // Hkv  # query head j reads key/value head j // group
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=False)
        x = x + F.linear(att.transpose(1, 2).reshape(B, L, D), w["self_attn.o_proj.weight"])
        h = rms(x, w["post_attention_layernorm.weight"])
        gate = F.silu(F.linear(h, w["mlp.gate_proj.weight"]))
        x = x + F.linear(gate * F.linear(h, w["mlp.up_proj.weight"]), w["mlp.down_proj.weight"])
    x = rms(x, sd["model.norm.weight"])
    return F.linear(x, embed)  # the tied head


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_logits_equal_the_written_out_llama_style_forward(dtype):
    model = tiny_illada().to(dtype)
    names = DIALECTS["illada"]
    sd = {names.to_released_key(k): v for k, v in model.state_dict().items()}
    hf = names.write_config(model.config)
    ids = torch.randint(0, 97, (2, 19), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got, want = model(ids), llama_style_forward(sd, hf, ids)
    # The same operations on the same shapes in the same order: equal bit for bit in fp32 and in
    # bf16, on any CPU (repeat_interleave of k and v equals Llama's expand-and-reshape).
    assert got.dtype == dtype and torch.equal(got, want)
