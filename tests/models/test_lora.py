"""LoRA from scratch: a fresh adapter is the base model exactly, merged = unmerged, the adapter off
is the base (the RL reference), only adapter weights train, a target the model lacks is an error."""

import pytest
import torch

from minillada.models.llada import LLaDAModel, preset
from minillada.models.lora import (
    LLADA_PROJECTIONS,
    adapters,
    adapters_disabled,
    add_lora,
    lora_parameters,
    merge_lora,
    remove_lora,
    unmerge_lora,
)


def small_model(tied: bool) -> LLaDAModel:
    # float64 so "merged equals unmerged" is a statement about the algebra, not about rounding
    cfg = preset("tiny", n_kv_heads=2, weight_tying=tied, mask_token_id=5)
    return LLaDAModel(cfg, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def ids(model: LLaDAModel) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    return torch.randint(0, model.config.vocab_size, (2, 12), generator=g)


def randomise_adapters(model: LLaDAModel) -> None:
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for a in adapters(model):
            a.B.copy_(torch.randn(a.B.shape, generator=g, dtype=a.B.dtype) * 0.05)


@pytest.mark.parametrize("tied", [False, True], ids=["llada_head", "tied_head"])
def test_a_fresh_adapter_is_the_base_model_exactly(tied):
    model = small_model(tied)
    x = ids(model)
    base = model(x)
    names = add_lora(model, rank=4, alpha=8)
    assert len(names) == model.config.n_layers * len(LLADA_PROJECTIONS)
    assert all(".blocks." in f".{n}" for n in names)  # the untied head (also ff_out) is not adapted
    assert torch.equal(model(x), base)


def test_merged_unmerged_and_disabled():
    model = small_model(tied=True)
    x = ids(model)
    base = model(x)
    add_lora(model, rank=4, alpha=8)
    randomise_adapters(model)
    adapted = model(x)
    assert (adapted - base).abs().max() > 1e-3  # the adapter changes the output
    merge_lora(model)
    assert torch.allclose(model(x), adapted, atol=1e-12, rtol=0)
    with adapters_disabled(model):  # the reference policy: the base, even while merged
        assert torch.allclose(model(x), base, atol=1e-12, rtol=0)
    assert torch.allclose(model(x), adapted, atol=1e-12, rtol=0)  # merged again after the block
    unmerge_lora(model)
    assert torch.allclose(model(x), adapted, atol=1e-12, rtol=0)
    remove_lora(model)
    assert torch.allclose(model(x), base, atol=1e-12, rtol=0)
    assert all(p.requires_grad for p in model.parameters())
    assert not any(".lora." in k for k in model.state_dict())


def test_remove_with_merge_keeps_the_adapted_model():
    model = small_model(tied=False)
    x = ids(model)
    add_lora(model, targets=("q_proj", "v_proj"), rank=2, alpha=2)
    randomise_adapters(model)
    adapted = model(x)
    remove_lora(model, merge=True)
    assert torch.allclose(model(x), adapted, atol=1e-12, rtol=0)


def test_only_adapters_train_and_their_size_is_r_times_in_plus_out():
    model = small_model(tied=False)
    keys_before = set(model.state_dict())
    add_lora(model, rank=4, alpha=8)
    c = model.config
    D, Dkv, F_ = c.d_model, c.kv_heads * c.head_dim, c.hidden_size
    per_layer = 4 * ((D + D) + 2 * (D + Dkv) + (D + D) + 2 * (D + F_) + (F_ + D))
    assert sum(p.numel() for p in lora_parameters(model)) == c.n_layers * per_layer
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n in dict(model.named_parameters()) if ".lora." in n
    }
    assert keys_before <= set(model.state_dict())  # the released names are untouched
    randomise_adapters(model)
    model(ids(model)).logsumexp(-1).sum().backward()
    assert all(p.grad is not None for p in lora_parameters(model))
    assert all(p.grad is None for n, p in model.named_parameters() if ".lora." not in n)


def test_a_target_the_model_lacks_is_an_error_before_anything_changes():
    model = small_model(tied=False)
    with pytest.raises(ValueError, match=r"\['o_proj'\] match no linear layer.*attn_out"):
        add_lora(model, targets=("q_proj", "o_proj"))
    assert not list(adapters(model)) and all(p.requires_grad for p in model.parameters())
    add_lora(model, targets=("q_proj",))
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        add_lora(model, targets=("q_proj",))
    fresh = small_model(tied=False)
    with pytest.raises(ValueError, match="rank must be at least 1"):
        add_lora(fresh, rank=0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        add_lora(fresh, dropout=1.0)
    assert all(p.requires_grad for p in fresh.parameters())


def test_adapters_off_is_the_base_model_as_a_model_of_its_own():
    from minillada.models.lora import AdaptersOff

    model = small_model(tied=True)
    x = ids(model)
    base = model(x)
    add_lora(model, rank=2, alpha=4)
    randomise_adapters(model)
    reference = AdaptersOff(model)
    assert torch.equal(reference(x), base) and reference.supports_positions
    assert not torch.allclose(model(x), base)  # the adapters are on again outside the call


def test_detached_adapters_leave_a_plain_model_and_come_back_with_their_weights():
    from minillada.models.lora import adapters_detached, lora_state_dict

    model = small_model(tied=False)
    x = ids(model)
    base = model(x)
    add_lora(model, rank=2, alpha=4)
    randomise_adapters(model)
    adapted, saved = model(x), lora_state_dict(model)
    assert saved and all(".lora." in k for k in saved)
    with adapters_detached(model) as taken:
        assert len(taken) == model.config.n_layers * len(LLADA_PROJECTIONS)
        assert not any(".lora." in k for k in model.state_dict())
        assert torch.equal(model(x), base)
    assert torch.equal(model(x), adapted)
    assert all(torch.equal(v, lora_state_dict(model)[k]) for k, v in saved.items())


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    model = small_model(tied=True)
    add_lora(model, rank=2, alpha=4)
    randomise_adapters(model)
    x = ids(model)
    grads = []
    for recompute in (False, True):
        model.gradient_checkpointing = recompute
        model.zero_grad(set_to_none=True)
        loss = model(x).logsumexp(-1).mean()
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in lora_parameters(model)]))
    (l0, g0), (l1, g1) = grads
    assert torch.equal(l0, l1)
    assert all(torch.allclose(a, b, atol=1e-12, rtol=0) for a, b in zip(g0, g1, strict=True))


def test_float32_adapters_beside_bf16_weights():
    cfg = preset("tiny", n_kv_heads=2, mask_token_id=5)
    model = LLaDAModel(cfg, dtype=torch.bfloat16)
    x = ids(model)
    base = model(x)
    add_lora(model, rank=2, alpha=4)
    for a in lora_parameters(model):
        a.data = a.data.float()
    assert torch.equal(model(x), base)  # B = 0: still exactly the base, in bf16
    randomise_adapters(model)
    out = model(x)
    assert out.dtype == torch.bfloat16 and not torch.equal(out, base)
    out.float().logsumexp(-1).sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in lora_parameters(model))
