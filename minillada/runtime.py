"""Lesson 0: device choice, seeding, quick mode and the paths every lesson uses."""

from __future__ import annotations

import os
import platform
import random
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
QUICK_ENV = "MINILLADA_QUICK"


def repo_path(*parts: str) -> Path:
    """A path inside the repository, independent of the notebook kernel's working directory."""
    return REPO_ROOT.joinpath(*parts)


def relative_to_repo(path: str | os.PathLike) -> str:
    """How to print a path in a notebook: relative to the repo when inside it, so outputs stay
    portable."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(REPO_ROOT))
    except ValueError:
        return p.name


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
    """Seed Python, NumPy and torch, and return a CPU torch.Generator to pass through the
    library."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def environment_report() -> dict[str, str]:
    """Versions and hardware a bug report (or a benchmark record) should carry."""
    import matplotlib
    import safetensors
    import tokenizers
    import tqdm

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
