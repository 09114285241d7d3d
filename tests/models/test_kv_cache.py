"""The approximate key/value cache of lesson 8: recording changes nothing, a window computed
against a cache of the same canvas is the full forward's, and the cache's size is the arithmetic
of minillada.models.sizing (grouped-query attention shrinks it)."""

import pytest
import torch

from minillada.models.kv_cache import KVCache
from minillada.models.llada import LLaDAModel, preset
from minillada.models.sizing import kv_bytes_per_token


def model(n_kv_heads=None, seed=0) -> LLaDAModel:
    cfg = preset("tiny", n_kv_heads=n_kv_heads, max_sequence_length=64, mask_token_id=511)
    return LLaDAModel(cfg, generator=torch.Generator().manual_seed(seed)).double().eval()


@pytest.mark.parametrize("n_kv_heads", [None, 2])
def test_recording_a_cache_changes_no_logit(n_kv_heads):
    m = model(n_kv_heads)
    x = torch.randint(0, 500, (2, 30), generator=torch.Generator().manual_seed(1))
    cache = KVCache()
    assert torch.equal(m(x, cache=cache.record()), m(x))
    assert not cache.recording and cache.length == 30 and cache.refreshes == 1
    assert len(cache.keys) == m.config.n_layers
    assert cache.keys[0].shape == (2, m.config.kv_heads, 30, m.config.head_dim)


@pytest.mark.parametrize("n_kv_heads", [None, 2])
@pytest.mark.parametrize("start, stop", [(0, 30), (10, 18), (22, 30), (5, 30)])
def test_a_window_against_a_cache_of_the_same_canvas_is_the_full_forward(n_kv_heads, start, stop):
    m = model(n_kv_heads)
    x = torch.randint(0, 500, (2, 30), generator=torch.Generator().manual_seed(2))
    keep = torch.ones(2, 30, dtype=torch.long)
    keep[1, :4] = 0  # a left-padded row: the keep-mask covers the whole sequence
    full = m(x, keep)
    cache = KVCache()
    m(x, keep, cache=cache.record())
    window = m(x[:, start:stop], keep, cache=cache, start=start)
    # the same float64 operations on fewer rows: agreement to rounding
    torch.testing.assert_close(window, full[:, start:stop], rtol=0, atol=1e-10)


def test_a_stale_cache_is_an_approximation_and_a_fresh_one_is_exact():
    m = model()
    x = torch.randint(0, 500, (1, 30), generator=torch.Generator().manual_seed(3))
    cache = KVCache()
    m(x, cache=cache.record())
    x2 = x.clone()
    x2[0, 12] = 7  # a token inside the window changes: its own key is fresh, the others are not
    stale = m(x2[:, 10:20], cache=cache, start=10)
    exact = m(x2)[:, 10:20]
    assert (stale - exact).abs().max() > 1e-6  # the cached positions did not see the change
    m(x2, cache=cache.record())
    torch.testing.assert_close(m(x2[:, 10:20], cache=cache, start=10), exact, rtol=0, atol=1e-10)


def test_cache_size_is_keys_and_values_per_token_and_gqa_shrinks_it():
    x = torch.randint(0, 500, (1, 40))
    sizes = {}
    for kv in [None, 2]:
        m = model(kv).float()
        cache = KVCache()
        m(x, cache=cache.record())
        assert cache.nbytes == 40 * kv_bytes_per_token(m.config, bytes_per_value=4)
        sizes[m.config.kv_heads] = cache.nbytes
    heads = m.config.n_heads
    assert sizes[heads] == sizes[2] * heads // 2


def test_a_window_needs_a_recorded_cache_that_covers_it():
    m = model()
    x = torch.randint(0, 500, (1, 20))
    with pytest.raises(RuntimeError, match="holds nothing yet"):
        m(x[:, :5], cache=KVCache(), start=0)
    cache = KVCache()
    m(x, cache=cache.record())
    with pytest.raises(ValueError, match=r"window \[18, 23\) does not fit the 20 positions"):
        m(x[:, :5], cache=cache, start=18)
    with pytest.raises(ValueError, match="covers the whole sequence"):
        m(x[:, :5], torch.ones(1, 5), cache=cache, start=0)
