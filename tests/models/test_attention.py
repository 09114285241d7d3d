"""The one attention of both models: readable and fused paths, causal mask, padding bias."""

import pytest
import torch

from minillada.models.attention import attention, attention_bias, attention_readable, causal_bias


def qkv(B=2, H=3, L=7, Dh=8, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, L, Dh, generator=g, dtype=dtype) for _ in range(3)]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_fused_and_readable_agree(causal, padded):
    q, k, v = qkv()  # float64
    keep = torch.ones(2, 7, dtype=torch.long)
    if padded:
        keep[1, :3] = 0
    assert (attention_bias(keep, torch.float64) is None) == (not padded)
    exact = attention_readable(q, k, v, attention_bias(keep, torch.float64), causal=causal)
    for fast in (True, False):
        got = attention(
            q.float(), k.float(), v.float(), attention_bias(keep, torch.float32), causal, fast
        )
        # Against a float64 reference: the fused CPU kernel's vectorised exp is not correctly
        # rounded (4.7e-6 relative seen even on float64 inputs), fp32 rounding adds ~1e-7; outputs
        # are averages of |v| < 5, so 1e-4 bounds both with room, on any CPU.
        torch.testing.assert_close(got.double(), exact, atol=1e-4, rtol=1e-4)


def test_readable_attention_by_hand():
    q, k, v = qkv(B=1, H=1, L=4, Dh=2)
    scores = (q @ k.transpose(-2, -1)) / 2**0.5
    weights = scores.softmax(-1)
    torch.testing.assert_close(attention_readable(q, k, v), weights @ v)
    causal = attention_readable(q, k, v, causal=True)
    torch.testing.assert_close(causal[..., 0, :], v[..., 0, :])  # the first sees only itself
    assert causal_bias(3, torch.float32, "cpu").tolist() == [
        [0.0, float("-inf"), float("-inf")],
        [0.0, 0.0, float("-inf")],
        [0.0, 0.0, 0.0],
    ]


def test_padded_keys_get_no_weight():
    q, k, v = qkv(B=1, H=1, L=5, Dh=4)
    keep = torch.tensor([[0, 0, 1, 1, 1]])
    out = attention_readable(q, k, v, attention_bias(keep, torch.float64))
    want = attention_readable(q, k[..., 2:, :], v[..., 2:, :])
    torch.testing.assert_close(out, want, atol=1e-12, rtol=1e-12)
