"""Lesson 2: recording what a sampler did, step by step, and plotting it.

``generate(..., trace=True)`` fills a ``Trace``: the canvas before the first step and after
every step, which positions were revealed at each step, and the confidence score of every
candidate at that step. The plots show the text as it denoises, a position x step heatmap, and
the order tokens appeared in.

Shapes: B = batch, L = sequence (prompt + generation), K = steps taken.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import torch

Decode = Callable[[list[int]], str]  # token ids -> text, e.g. CharTokenizer.decode


@dataclass
class Trace:
    prompt_length: int  # P: positions [0, P) are the prompt (left padding included)
    mask_id: int
    # K + 1 of (B, L): start, after each step
    canvases: list[torch.Tensor] = field(default_factory=list)
    # K of (B, L) bool: committed at this step
    revealed: list[torch.Tensor] = field(default_factory=list)
    # K of (B, L) float64, -inf = no candidate
    confidence: list[torch.Tensor] = field(default_factory=list)
    blocks: list[int] = field(default_factory=list)  # K: the block each step worked on

    @property
    def num_steps(self) -> int:
        return len(self.revealed)

    @property
    def tokens(self) -> torch.Tensor:
        """The final canvas (B, L)."""
        return self.canvases[-1]

    def reveal_step(self) -> torch.Tensor:
        """(B, L) long: the step (1..K) at which each position was revealed; 0 = given from the
        start (prompt), -1 = still masked at the end."""
        start = self.canvases[0]
        steps = torch.where(start == self.mask_id, -1, 0)
        for k, rev in enumerate(self.revealed):
            steps = torch.where(rev, k + 1, steps)
        return steps

    def reveal_confidence(self) -> torch.Tensor:
        """(B, L) float64: the score each position had when revealed (NaN where not revealed)."""
        out = torch.full(self.canvases[0].shape, float("nan"), dtype=torch.float64)
        for rev, conf in zip(self.revealed, self.confidence, strict=True):
            out = torch.where(rev, conf, out)
        return out

    def reveals_per_step(self) -> torch.Tensor:
        """(B, K) long: how many tokens each step committed."""
        return torch.stack([r.sum(dim=1) for r in self.revealed], dim=1)


def canvas_text(trace: Trace, decode: Decode, step: int, row: int = 0, prompt: bool = False) -> str:
    """The canvas of ``row`` after ``step`` steps as text (masks print as the mask char)."""
    ids = trace.canvases[step][row]
    if not prompt:
        ids = ids[trace.prompt_length :]
    return decode(ids.tolist())


def denoising_text(
    trace: Trace, decode: Decode, row: int = 0, steps: Sequence[int] | None = None, width: int = 64
) -> str:
    """A printable picture of the denoising: the generated part at a few steps,
    ``width`` chars a line."""
    if steps is None:
        K = trace.num_steps
        steps = sorted({0, K // 8, K // 4, K // 2, 3 * K // 4, K})
    lines = []
    for s in steps:
        text = canvas_text(trace, decode, s, row).replace("\n", "⏎")
        chunks = [text[i : i + width] for i in range(0, len(text), width)] or [""]
        lines.append(f"step {s:>4}: {chunks[0]}")
        lines.extend(" " * 11 + c for c in chunks[1:])
    return "\n".join(lines)


def plot_reveal_heatmap(
    trace: Trace, row: int = 0, ax: plt.Axes | None = None, title: str = ""
) -> plt.Axes:
    """Position x step heatmap of the confidence of every candidate; white dots = revealed there."""
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 4))
    P = trace.prompt_length
    conf = torch.stack([c[row, P:] for c in trace.confidence]).numpy()  # (K, G)
    conf = np.where(np.isfinite(conf), conf, np.nan)
    im = ax.imshow(conf, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest")
    rev = torch.stack([r[row, P:] for r in trace.revealed]).numpy()
    ks, pos = np.nonzero(rev)
    ax.scatter(pos, ks, s=6, c="white", marker="o", linewidths=0)
    ax.set_xlabel("generated position")
    ax.set_ylabel("step")
    ax.set_title(title or "confidence of each masked position (dots: revealed at that step)")
    plt.colorbar(im, ax=ax, fraction=0.03, pad=0.01)
    return ax


def plot_reveal_order(
    trace: Trace,
    decode: Decode,
    row: int = 0,
    width: int = 32,
    ax: plt.Axes | None = None,
    title: str = "",
) -> plt.Axes:
    """The generated text laid out in a grid, each character coloured by the step it appeared at."""
    P = trace.prompt_length
    steps = trace.reveal_step()[row, P:].numpy().astype(float)
    ids = trace.tokens[row, P:].tolist()
    G = len(ids)
    rows = (G + width - 1) // width
    grid = np.full((rows, width), np.nan)
    grid.flat[:G] = np.where(steps > 0, steps, np.nan)
    if ax is None:
        _, ax = plt.subplots(figsize=(width * 0.26, rows * 0.3 + 0.7))
    ax.imshow(grid, cmap="plasma", aspect="auto", vmin=1, vmax=max(trace.num_steps, 1))
    for i, tok in enumerate(ids):
        ch = decode([tok])
        ch = {"\n": "⏎", " ": "·"}.get(ch, ch)
        ax.text(
            i % width,
            i // width,
            ch,
            ha="center",
            va="center",
            fontsize=9,
            family="monospace",
            color="white" if steps[i] < 0.6 * trace.num_steps else "black",
        )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or "order of appearance (dark = early, bright = late)")
    return ax


def plot_strategy_comparison(
    traces: dict[str, Trace], row: int = 0, fig_width: float = 10
) -> plt.Figure:
    """One strip per strategy: when each generated position was revealed, as a fraction of that
    run's steps (dark = early, bright = late), so runs with different step counts compare."""
    names = list(traces)
    P = traces[names[0]].prompt_length
    strips = np.stack(
        [tr.reveal_step()[row, P:].numpy() / max(tr.num_steps, 1) for tr in traces.values()]
    )  # (strategies, G)
    fig, ax = plt.subplots(figsize=(fig_width, 0.45 * len(names) + 1.0))
    im = ax.imshow(strips, aspect="auto", cmap="plasma", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks(range(len(names)), [f"{n} ({traces[n].num_steps} steps)" for n in names])
    ax.set_xlabel("generated position")
    plt.colorbar(im, ax=ax, fraction=0.03, pad=0.01, label="revealed at (fraction of the steps)")
    return fig
