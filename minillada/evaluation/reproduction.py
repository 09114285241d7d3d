"""Reproduction checks: the top-k logits of a fixed input, recorded once and compared ever after.

Loading 8B parameters touches a hundred thousand lines of code and eight billion numbers; a wrong
RoPE theta, a transposed projection or a head that should be tied can still produce fluent-looking
text. A cheap guard is a *fingerprint*: for one fixed prompt with a few masked positions, the ids
and logits of the k most likely tokens at those positions. The first run on the real weights
writes it to a small committed file (``data/reproduction/<model>.json``); every later run, on any
machine, compares against it, so a change that moves the model's predictions is caught at once.

The comparison allows what the arithmetic allows: bf16 weights and activations round at about
three significant digits, and different GPUs (or CPU kernels) sum in different orders, so two
correct runs differ by up to a few hundredths of a logit. ``tolerance`` is therefore relative to
the logit's size (default 5% of max(1, |logit|) for bf16, 1e-3 for float32), and two tokens whose
logits are that close may swap places in the top k.

Shapes: L = length of the probe, V = vocabulary.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from minillada.diffusion.guidance import model_logits
from minillada.runtime import model_device, repo_path

REPRODUCTION_DIR = ("data", "reproduction")
PROBE_TEXT = "The capital of France is Paris. The capital of Italy is"
PROBE_MASKS = 4  # masked positions after the text, whose predictions are recorded


@dataclass
class TopK:
    """The k most likely tokens at a few positions of one input."""

    model: str
    dtype: str
    device: str
    input_ids: list[int]
    positions: list[int]
    ids: list[list[int]]  # (positions, k)
    logits: list[list[float]]  # (positions, k), float32 values of the model's logits

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    @classmethod
    def from_file(cls, path: str | Path) -> TopK:
        return cls(**json.loads(Path(path).read_text()))


def probe(
    tokenizer, masks: int = PROBE_MASKS, text: str = PROBE_TEXT
) -> tuple[list[int], list[int]]:
    """The fixed input (BOS when the tokenizer has one, the text, then ``masks`` mask ids) and the
    positions recorded: the masks, and the last token of the text."""
    bos = [tokenizer.special.bos] if tokenizer.special.bos is not None else []
    ids = [*bos, *tokenizer.encode(text), *[tokenizer.mask_id] * masks]
    return ids, list(range(len(ids) - masks - 1, len(ids)))


@torch.no_grad()
def record_top_k(model, name: str, input_ids: list[int], positions: list[int], k: int = 5) -> TopK:
    """One forward pass on ``input_ids``; the top ``k`` ids and logits at ``positions``."""
    device = model_device(model)
    x = torch.tensor([input_ids], device=device)
    logits = model_logits(model, x)[0, positions].float()  # (len(positions), V)
    values, ids = logits.topk(k, dim=-1)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return TopK(
        name, dtype, str(device), list(input_ids), list(positions), ids.tolist(), values.tolist()
    )


def default_tolerance(dtype: str) -> float:
    return 5e-2 if dtype in ("bfloat16", "float16") else 1e-3


def compare_top_k(run: TopK, reference: TopK, tolerance: float | None = None) -> list[str]:
    """The differences between two records that the arithmetic does not explain (empty: they
    agree). ``tolerance``: relative, of max(1, |logit|); default from the coarser dtype."""
    if run.input_ids != reference.input_ids or run.positions != reference.positions:
        return ["the probe differs (another tokenizer?): the records cannot be compared"]
    if tolerance is None:
        tolerance = max(default_tolerance(run.dtype), default_tolerance(reference.dtype))
    problems = []
    for p, (ids, logits, ref_ids, ref_logits) in enumerate(
        zip(run.ids, run.logits, reference.ids, reference.logits, strict=True)
    ):
        ref = dict(zip(ref_ids, ref_logits, strict=True))
        ours = dict(zip(ids, logits, strict=True))
        floor = min(ref_logits)  # a token may leave the top k only if it was near its bottom
        for token, value in ref.items():
            allowed = tolerance * max(1.0, abs(value))
            if token in ours:
                if abs(ours[token] - value) > allowed:
                    problems.append(
                        f"position {run.positions[p]}: token {token} has logit {ours[token]:.4f}, "
                        f"recorded {value:.4f} (allowed ±{allowed:.4f})"
                    )
            elif value - floor > allowed and value - min(logits) > allowed:
                problems.append(
                    f"position {run.positions[p]}: token {token} (recorded logit {value:.4f}) "
                    f"left the top {len(ids)}"
                )
    return problems


def reproduction_file(name: str) -> Path:
    return repo_path(*REPRODUCTION_DIR, f"{name}.json")


def check_reproduction(record: TopK, path: str | Path, write: bool = True) -> str:
    """Compare ``record`` with the one at ``path``; when there is none, write it (``write``) and
    say so. Raises AssertionError listing the differences when they disagree."""
    path = Path(path)
    if not path.is_file():
        if not write:
            return f"no reference at {path} yet"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(record.to_json())
        return f"recorded the reference {path}: later runs compare against it"
    reference = TopK.from_file(path)
    problems = compare_top_k(record, reference)
    if problems:
        raise AssertionError(
            f"{record.model} does not reproduce {path} (recorded on {reference.device} in "
            f"{reference.dtype}):\n- " + "\n- ".join(problems)
        )
    n = len(record.positions) * len(record.ids[0])
    return f"reproduces {path}: {n} top-k logits agree (recorded on {reference.device})"
