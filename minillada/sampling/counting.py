"""The work a sampler does, measured without timing noise: forward passes (``CountedModel``) and
the positions they run over (``counting_positions``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def counting_positions(model) -> Iterator[list[int]]:
    """Inside the ``with`` block, the number of positions (batch x length) each forward pass of
    ``model`` runs over is appended to the list it yields: the work of a sampler, measured without
    timing noise. The model's embedding sees exactly the ids of every pass; a model without a
    ``transformer.wte`` embedding yields an empty list."""
    seen: list[int] = []
    embedding = getattr(getattr(model, "transformer", None), "wte", None)
    hook = None
    if embedding is not None:
        hook = embedding.register_forward_hook(
            lambda module, inputs, out: seen.append(out.shape[0] * out.shape[1])
        )
    try:
        yield seen
    finally:
        if hook is not None:
            hook.remove()


class CountedModel:
    """``model`` with a count of its calls (forward passes); every attribute is the model's."""

    def __init__(self, model: Callable):
        self.model, self.calls = model, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.model(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.model, name)
