import os
from pathlib import Path

import pytest


@pytest.fixture
def shared_tinyshakespeare() -> Path:
    data_dir = os.environ.get("MINILLADA_DATA_DIR")
    path = Path(data_dir).resolve() / "tinyshakespeare.txt" if data_dir else None
    if path is None or not path.is_file():
        pytest.skip("needs MINILLADA_DATA_DIR with tinyshakespeare.txt")
    return path
