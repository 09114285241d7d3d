"""Test-wide settings, applied before nbval starts any notebook kernel (kernels inherit
os.environ)."""

import os
from pathlib import Path

import pytest

os.environ["MINILLADA_QUICK"] = "1"  # lessons shrink their runs
os.environ["TQDM_DISABLE"] = "1"  # no progress bars in test output
os.environ.setdefault("MPLBACKEND", "Agg")
# Under pytest-xdist (``-n``), each worker is one process on one core: one torch thread each, or
# two workers' OpenMP pools fight over the same cores. Set before torch is imported (nbval's
# kernels and the CLIs' subprocesses inherit it).
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ["OMP_NUM_THREADS"] = "1"
# CI has no network: use the shared copies of the corpora and of the released LLaDA-8B metadata
# when they sit next to the checkout.
_shared = Path(__file__).resolve().parent.parent / "shared"
if "MINILLADA_DATA_DIR" not in os.environ and (_shared / "data").is_dir():
    os.environ["MINILLADA_DATA_DIR"] = os.pathsep.join(
        str(_shared / name) for name in ("data", "reference") if (_shared / name).is_dir()
    )


# Tests that write into the checkout rather than tmp_path: a lesson and its solved copy write the
# same runs/ folders, and the real-weights tests run lessons 7 and 8 in place.
_RUNS_IN_PLACE = {"tests/test_real_branch.py": "lesson07"}


def _group(nodeid: str) -> str:
    """The unit of work one xdist worker runs whole and in order. A notebook's cells share one
    kernel, so a notebook is one unit, and a lesson's two copies are one (they write the same
    runs/ folders); a test module is one unit (its module fixtures are built once)."""
    path = nodeid.split("::")[0]
    if path.endswith(".ipynb"):
        return "lesson" + Path(path).name[:2]
    return _RUNS_IN_PLACE.get(path, path)


def pytest_collection_modifyitems(config, items):
    """Every notebook cell nbval runs counts as slow: ``pytest -m "not slow"`` is the library's
    quick unit loop, ``pytest`` runs everything."""
    for item in items:
        if item.nodeid.split("::")[0].endswith(".ipynb"):
            item.add_marker(pytest.mark.slow)


try:  # pytest-xdist (``-n auto`` in pyproject.toml) hands out whole units, largest first
    from xdist.scheduler import LoadScopeScheduling
except ImportError:  # pragma: no cover - without xdist, pytest runs everything in one process
    LoadScopeScheduling = None

if LoadScopeScheduling is not None:

    class _UnitScheduling(LoadScopeScheduling):
        # xdist's own ``--dist loadgroup`` tags node ids, which pytest 9 no longer lets it do
        def _split_scope(self, nodeid: str) -> str:
            return _group(nodeid)

    def pytest_xdist_make_scheduler(config, log):
        return _UnitScheduling(config, log)
