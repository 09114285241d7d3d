"""Lesson 0: device choice, seeding, quick mode, paths, progress bars, and the model interface.

The model interface every sampler, estimator and trainer of minillada relies on is small: a model
is a callable ``model(ids, attention_mask=None) -> logits`` (ids (B, L) long, attention_mask (B, L)
with 1 = token, 0 = padding, logits (B, L, V)), with a ``config.context_length`` (the longest
sequence it accepts). ``model_device`` and ``context_length`` below read the two things the
library needs to know about a model; both of minillada's models (``TinyTransformer``,
``LLaDAModel``) satisfy it.
"""

from __future__ import annotations

import os
import platform
import random
import sys
from pathlib import Path
from typing import Any, TypeVar

import matplotlib
import numpy as np
import safetensors
import tokenizers
import torch
import tqdm
import tqdm.std

T = TypeVar("T")

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
QUICK_ENV = "MINILLADA_QUICK"


def repo_path(*parts: str) -> Path:
    """A path inside the repository, independent of the notebook kernel's working directory."""
    return REPO_ROOT.joinpath(*parts)


def relative_to_repo(path: str | os.PathLike) -> str:
    """How to print a path in a notebook: relative to the repo when inside it (portable outputs)."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(REPO_ROOT))
    except ValueError:
        return p.name


def portable_paths(text: str) -> str:
    """``text`` (an error message, a report) with the repository's absolute path removed and
    $MINILLADA_DATA_DIR's folders written as the variable, so that notebook outputs are the same
    on every machine."""
    raw = os.environ.get("MINILLADA_DATA_DIR", "")
    folders = [f for f in raw.split(os.pathsep) if f]
    if folders:  # "NAME=value" would become "NAME=NAME" below: say how many folders it names
        named = f"MINILLADA_DATA_DIR=<{len(folders)} folder(s)>"
        text = text.replace(f"MINILLADA_DATA_DIR={raw}", named)
    for folder in folders:
        text = text.replace(str(Path(folder).resolve()), "$MINILLADA_DATA_DIR").replace(
            folder, "$MINILLADA_DATA_DIR"
        )
    return text.replace(str(REPO_ROOT) + os.sep, "").replace(str(REPO_ROOT), ".")


def is_quick() -> bool:
    """True when MINILLADA_QUICK=1: lessons shrink their runs so the test suite stays fast."""
    return os.environ.get(QUICK_ENV, "0").strip().lower() in {"1", "true", "yes", "on"}


def pick(full: T, quick: T) -> T:
    """The full-mode value, or the quick-mode one under MINILLADA_QUICK=1."""
    return quick if is_quick() else full


def processor_name() -> str:
    """The CPU model, e.g. 'AMD EPYC 9454' (from /proc/cpuinfo on Linux), for benchmark records."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def get_device(prefer: str | None = None, verbose: bool = True) -> torch.device:
    """CUDA when present, else CPU; MPS only when asked for with prefer="mps"."""
    if prefer is not None:
        device = torch.device(prefer)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                "prefer='cuda' but torch.cuda.is_available() is False; use prefer=None."
            )
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise RuntimeError("prefer='mps' but this torch build has no working MPS backend.")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        device = torch.device("cpu")
    if verbose:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else processor_name()
        print(f"Using device: {device.type} ({name})")
    return device


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU torch.Generator to pass through the library."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def environment_report() -> dict[str, str]:
    """Versions and hardware a bug report (or a benchmark record) should carry."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": processor_name(),
        "cpu_count": str(os.cpu_count()),
        "torch": torch.__version__,
        "torch_threads": str(torch.get_num_threads()),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available",
        "numpy": np.__version__,
        "matplotlib": matplotlib.__version__,
        "safetensors": safetensors.__version__,
        "tokenizers": tokenizers.__version__,
        "tqdm": tqdm.__version__,
        "quick_mode": str(is_quick()),
    }


def progress_disabled() -> bool:
    """True when TQDM_DISABLE=1 (set by the tests): every progress bar stays off,
    even where one is requested."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() in {"1", "true", "yes"}


def progress_bar(iterable: Any = None, **kwargs: Any) -> tqdm.std.tqdm:
    """A text progress bar (``tqdm.std``), in a terminal and in Jupyter alike, off under
    TQDM_DISABLE=1. Not the widget bar of tqdm's auto module: a notebook saved with widget bars
    shows "Error displaying widget: model not found" when it is reopened (JupyterLab does not save
    their state by default); a text bar is saved as the text it printed last."""
    disable = kwargs.pop("disable", False) or progress_disabled()
    kwargs.setdefault("file", sys.stdout)  # stderr would print in red in a notebook
    kwargs.setdefault("ncols", 100)
    return tqdm.std.tqdm(iterable, disable=disable, **kwargs)


def upcast(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 at least: bf16/fp16 logits are upcast before a softmax or a cross-entropy
    (as LLaDA does), while a float64 model stays float64 end to end."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def model_device(model: Any) -> torch.device:
    """Where a model's parameters live (the CPU for a plain function or a model without any)."""
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


def context_length(model: Any, max_length: int | None = None) -> int | None:
    """The longest sequence ``model`` accepts: ``max_length`` if given, else
    ``model.config.context_length`` (minillada's models), else ``max_position_embeddings`` (a
    Hugging Face config), else None (unknown: nothing is checked)."""
    if max_length is not None:
        return int(max_length)
    config = getattr(model, "config", None)
    for name in ("context_length", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def mask_id_of(model: Any, mask_id: int | None = None) -> int:
    """The mask id to sample or score ``model`` with: ``mask_id`` if given, else the model config's
    ``mask_token_id`` (set from the snapshot's files when loaded); when both are known they must
    agree, since another id would be silently wrong (LLaDA's 126336 is a word in iLLaDA)."""
    own = getattr(getattr(model, "config", None), "mask_token_id", None)
    if mask_id is None:
        if own is None:
            raise ValueError(
                "No mask id: this model's config has no mask_token_id, so pass mask_id= (the "
                "tokenizer's mask_id)."
            )
        return int(own)
    if own is not None and int(mask_id) != int(own):
        raise ValueError(
            f"mask_id={mask_id} is not this model's mask token: its config (read from the "
            f"snapshot's files) says {own}. Pass mask_id={own}, or leave it out."
        )
    return int(mask_id)
