"""Test-wide settings, applied before nbval starts any notebook kernel (kernels inherit
os.environ)."""

import os
from pathlib import Path

import pytest

os.environ["MINILLADA_QUICK"] = "1"  # lessons shrink their runs
os.environ["TQDM_DISABLE"] = "1"  # no progress bars in test output
os.environ.setdefault("MPLBACKEND", "Agg")
# CI has no network: use the shared copies of the corpora and of the released LLaDA-8B metadata
# when they sit next to the checkout.
_shared = Path(__file__).resolve().parent.parent / "shared"
if "MINILLADA_DATA_DIR" not in os.environ and (_shared / "data").is_dir():
    os.environ["MINILLADA_DATA_DIR"] = os.pathsep.join(
        str(_shared / name) for name in ("data", "reference") if (_shared / name).is_dir()
    )


def pytest_collection_modifyitems(config, items):
    """Every notebook cell nbval runs counts as slow: ``pytest -m "not slow"`` is the library's
    quick unit loop, ``pytest`` runs everything."""
    for item in items:
        if item.nodeid.split("::")[0].endswith(".ipynb"):
            item.add_marker(pytest.mark.slow)
