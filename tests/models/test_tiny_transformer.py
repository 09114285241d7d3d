import pytest
import torch

from minillada.models.rope import apply_rope, apply_rope_interleaved, interleaved_order, rope_tables
from minillada.models.tiny_transformer import TinyTransformer, TinyTransformerConfig


def small(**kw):
    cfg = TinyTransformerConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=32, **kw)
    return TinyTransformer(cfg, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("causal", [False, True])
def test_fast_and_readable_attention_agree(causal):
    fast = small(causal=causal)
    slow = small(causal=causal, fast_attention=False)
    slow.load_state_dict(fast.state_dict())
    x = torch.randint(0, 11, (3, 16), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(fast(x), slow(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_fast_and_readable_rope_agree_in_outputs_and_gradients(causal):
    fast = small(causal=causal)
    slow = small(causal=causal, fast_rope=False)
    slow.load_state_dict(fast.state_dict())  # same weights, same layout on disk
    x = torch.randint(0, 11, (3, 16), generator=torch.Generator().manual_seed(2))
    y_fast, y_slow = fast(x), slow(x)
    torch.testing.assert_close(y_fast, y_slow, atol=1e-5, rtol=1e-5)
    y_fast.square().sum().backward()
    y_slow.square().sum().backward()
    for (name, p_fast), p_slow in zip(fast.named_parameters(), slow.parameters(), strict=True):
        torch.testing.assert_close(p_fast.grad, p_slow.grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_interleaved_rope_is_rotate_half_rope_on_reordered_features(dtype):
    cos, sin = rope_tables(12, 8)
    x = torch.randn(2, 3, 12, 8, generator=torch.Generator().manual_seed(4)).to(dtype)
    order = interleaved_order(8)
    assert order.tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    expected = apply_rope(x, cos, sin)[..., order]
    got = apply_rope_interleaved(x[..., order], cos, sin)
    assert got.dtype == dtype
    torch.testing.assert_close(got, expected)
    # a view at an odd offset cannot be read as complex pairs in place: it is copied, not misread
    view = torch.randn(1 + 2 * 3 * 12 * 8, generator=torch.Generator().manual_seed(5))[1:].view(
        2, 3, 12, 8
    )
    rotate_half_layout = view[..., torch.argsort(order)]
    torch.testing.assert_close(
        apply_rope_interleaved(view, cos, sin), apply_rope(rotate_half_layout, cos, sin)[..., order]
    )


def test_bidirectional_sees_the_future_and_causal_does_not():
    x = torch.randint(0, 10, (1, 16))
    y = x.clone()
    y[0, -1] = (x[0, -1] + 1) % 10  # change only the last token
    bidir, causal = small(), small(causal=True)
    assert not torch.allclose(bidir(x)[0, 0], bidir(y)[0, 0])  # position 0 sees position 15
    torch.testing.assert_close(causal(x)[0, :-1], causal(y)[0, :-1])


def test_context_length_is_enforced():
    with pytest.raises(ValueError, match="longer than the model's context"):
        small()(torch.zeros(1, 17, dtype=torch.long))


def test_rope_rotation_is_relative():
    # <R_m q, R_n k> depends only on n - m.
    cos, sin = rope_tables(32, 8)
    g = torch.Generator().manual_seed(9)
    q, k = torch.randn(8, generator=g), torch.randn(8, generator=g)
    qs = apply_rope(q.expand(32, 8), cos, sin)
    ks = apply_rope(k.expand(32, 8), cos, sin)
    torch.testing.assert_close(qs[3] @ ks[7], qs[10] @ ks[14], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(qs[0], q)  # position 0 is not rotated


def test_parameter_count_of_lesson_model():
    model = TinyTransformer(TinyTransformerConfig())
    # embedding + head: 2*66*128; 4 blocks of 4*128^2 attention + 8*128^2 MLP + 2*128 norms;
    # final norm: 128
    assert model.num_parameters() == 2 * 66 * 128 + 4 * (12 * 128 * 128 + 256) + 128 == 804_480


def test_learned_positions_variant_is_position_aware_and_round_trips(tmp_path):
    from minillada.checkpoints.folder import load_checkpoint, save_checkpoint
    from minillada.data.char import CharTokenizer

    model = small(positions="learned")
    assert model.pos_emb.weight.shape == (16, 32)
    # without RoPE or a causal mask, only pos_emb tells positions apart: a sequence of one
    # repeated token must still get different outputs at different positions
    logits = model(torch.full((1, 16), 3))
    assert not torch.allclose(logits[0, 0], logits[0, 5])
    save_checkpoint(tmp_path, model, CharTokenizer.from_text("abcdefghij"))
    loaded, _, config = load_checkpoint(tmp_path)
    assert config["model"]["positions"] == "learned"
    x = torch.randint(0, 11, (2, 16), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(loaded(x), model(x))
    with pytest.raises(ValueError, match="positions must be 'rope' or 'learned'"):
        small(positions="alibi")


def test_init_uses_the_generator_not_the_global_rng():
    cfg = TinyTransformerConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=32)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = TinyTransformer(cfg, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG was not touched
    b = TinyTransformer(cfg, generator=torch.Generator().manual_seed(5))
    c = TinyTransformer(cfg, generator=torch.Generator().manual_seed(6))
    for (name, pa), pb, pc in zip(
        a.named_parameters(), b.parameters(), c.parameters(), strict=True
    ):
        assert torch.equal(pa, pb), name
        if "norm" not in name:
            assert not torch.equal(pa, pc), name
    # GPT-2 init: std 0.02, residual projections shrunk by 1/sqrt(2 n_layer)
    assert abs(a.tok_emb.weight.std().item() - 0.02) < 0.002
    assert abs(a.blocks[0].attn.proj.weight.std().item() - 0.01) < 0.001


@pytest.mark.parametrize("fast", [True, False])
def test_left_padding_with_attention_mask_matches_unpadded(fast):
    model = small(fast_attention=fast).eval()
    ids = torch.randint(0, 11, (1, 10), generator=torch.Generator().manual_seed(1))
    padded = torch.cat([torch.zeros(1, 6, dtype=torch.long), ids], dim=1)  # (1, 16)
    keep = torch.cat([torch.zeros(1, 6), torch.ones(1, 10)], dim=1).long()
    with torch.no_grad():
        want = model(ids)
        got = model(padded, attention_mask=keep)[:, 6:]
        assert torch.equal(model(ids, attention_mask=torch.ones(1, 10)), want)  # no padding
    # RoPE scores depend on relative offsets only, and padded keys get weight exp(-3.4e38) = 0,
    # so the two compute the same function; they differ by float rounding of softmax sums over 10
    # vs 16 keys and of rotation angles at other absolute positions (fp32: ~1e-6 relative).
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model(ids, attention_mask=torch.ones(1, 9))


def test_config_reports_its_context_length():
    assert TinyTransformerConfig(block_size=40).context_length == 40
