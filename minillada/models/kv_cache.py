"""Keys and values kept from one forward pass for the next ones: the approximate cache of lesson 8.

A left-to-right model caches keys and values exactly: a token's key never changes once written,
since it attends only to the past. A masked diffusion model attends in both directions, so when a
step reveals a token, the keys and values of *every* position change in every layer after the
first. Fast-dLLM (arXiv 2505.22618) caches them anyway and measures that they change little
within a block: at the first step of a block a full forward records them (``KVCache.record()``);
at the following steps only a *window* of positions is recomputed, attending to its own fresh keys
and values and to the recorded ones of every other position:

* a **prefix cache** recomputes the block and everything after it (the masked suffix), and reuses
  the prompt and the finished blocks;
* a **dual cache** recomputes the block alone, and reuses the suffix too.

Keys are stored after RoPE and before the grouped-query repeat, so a cached token costs
2 x n_layers x Hkv x Dh values: iLLaDA's 8 key/value heads make it 4x smaller than LLaDA's 32.

Shapes: B = batch, Hkv = key/value heads, N = positions recorded, W = window, Dh = head dim.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LayerCache:
    """One layer's access to the cache: record its keys and values, or splice a window in."""

    cache: KVCache
    layer: int
    start: int | None  # None while recording; else the window's first position

    def splice(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v (B, Hkv, W, Dh) of this layer's window -> keys and values (B, Hkv, N, Dh) of all
        positions: the window's fresh ones in place, the recorded ones elsewhere."""
        if self.start is None:  # a full forward: W = N, remember them
            self.cache.keys[self.layer], self.cache.values[self.layer] = k, v
            return k, v
        s, W = self.start, k.shape[2]
        K, V = self.cache.keys[self.layer], self.cache.values[self.layer]
        return (
            torch.cat([K[:, :, :s], k, K[:, :, s + W :]], dim=2),
            torch.cat([V[:, :, :s], v, V[:, :, s + W :]], dim=2),
        )


@dataclass
class KVCache:
    """Every layer's keys and values (B, Hkv, N, Dh) from the last recorded full forward."""

    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)
    length: int = 0  # N, the positions recorded
    recording: bool = False
    refreshes: int = 0  # how many full forwards recorded it

    def record(self) -> KVCache:
        """Make the next forward pass that gets this cache a full one that records it."""
        self.recording = True
        return self

    def start_recording(self, n_layers: int, length: int) -> list[LayerCache]:
        self.keys, self.values = [None] * n_layers, [None] * n_layers  # type: ignore[list-item]
        self.length = length
        return [LayerCache(self, n, None) for n in range(n_layers)]

    def stop_recording(self) -> None:
        self.recording = False
        self.refreshes += 1

    def require_filled(self) -> None:
        if self.recording or not self.keys:
            raise RuntimeError(
                "The cache holds nothing yet: run a full forward with cache=cache.record() first."
            )

    def select(self, rows: torch.Tensor) -> None:
        """Keep only the batch rows ``rows`` (b,) of every layer: rows that finished leave."""
        self.require_filled()
        self.keys = [k[rows] for k in self.keys]
        self.values = [v[rows] for v in self.values]

    def layer(self, n: int, start: int) -> LayerCache:
        self.require_filled()
        return LayerCache(self, n, start)

    @property
    def nbytes(self) -> int:
        """Bytes held: keys and values of every layer."""
        return sum(t.numel() * t.element_size() for t in [*self.keys, *self.values])
