"""Test-wide settings, applied before nbval starts any notebook kernel (kernels inherit
os.environ)."""

import os
from pathlib import Path

os.environ["MINILLADA_QUICK"] = "1"  # lessons shrink their runs
os.environ["TQDM_DISABLE"] = "1"  # no progress bars in test output
os.environ.setdefault("MPLBACKEND", "Agg")
# CI has no network: use the shared copies of the corpora when they sit next to the checkout.
_shared = Path(__file__).resolve().parent.parent / "shared" / "data"
if "MINILLADA_DATA_DIR" not in os.environ and _shared.is_dir():
    os.environ["MINILLADA_DATA_DIR"] = str(_shared)
