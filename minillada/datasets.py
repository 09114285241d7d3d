"""Corpora: download once from the canonical URL, verify the sha256, cache in data/.

Lookup order for a data set:
1. ``$MINILLADA_DATA_DIR`` (a folder that already holds the file, e.g. on a machine with no
network);
2. the cache in ``data/`` of this repository;
3. download from the canonical URL into the cache, then verify.
Every file found or fetched is checked against its sha256, so a truncated or edited copy never
trains a model.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from minillada.runtime import repo_path

DATA_DIR_ENV = "MINILLADA_DATA_DIR"


@dataclass(frozen=True)
class DatasetFile:
    name: str  # short name used by the library, e.g. "tinyshakespeare"
    url: str  # canonical source
    sha256: str
    num_bytes: int
    cache_path: str  # where the download is cached, relative to data/
    local_names: tuple[str, ...]  # file names accepted inside $MINILLADA_DATA_DIR
    license: str


DATASETS: dict[str, DatasetFile] = {
    "tinyshakespeare": DatasetFile(
        name="tinyshakespeare",
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        num_bytes=1_115_394,
        cache_path="tinyshakespeare/input.txt",
        local_names=("tinyshakespeare.txt", "tinyshakespeare/input.txt", "input.txt"),
        license="public domain text (Shakespeare), collected by karpathy/char-rnn (MIT)",
    ),
    "gsm8k_test": DatasetFile(
        name="gsm8k_test",
        url="https://raw.githubusercontent.com/openai/grade-school-math/master/"
        "grade_school_math/data/test.jsonl",
        sha256="3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14",
        num_bytes=749_738,
        cache_path="gsm8k/test.jsonl",
        local_names=("gsm8k_test.jsonl", "gsm8k/test.jsonl", "test.jsonl"),
        license="MIT (openai/grade-school-math)",
    ),
}


class DatasetError(RuntimeError):
    """A corpus could not be found, fetched or verified."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, spec: DatasetFile) -> Path:
    """Raise DatasetError unless ``path`` holds exactly the expected bytes."""
    found = sha256_of(path)
    if found != spec.sha256:
        raise DatasetError(
            f"{path} does not match the expected {spec.name} file.\n"
            f"  expected sha256 {spec.sha256} ({spec.num_bytes:,} bytes)\n"
            f"  found    sha256 {found} ({path.stat().st_size:,} bytes)\n"
            f"Delete it and let minillada download it again from {spec.url}, "
            f"or put the original file there."
        )
    return path


def cache_dir() -> Path:
    return repo_path("data")


def _download(url: str, target: Path, timeout: float) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temporary file first, so an interrupted download never leaves a partial cache
    # entry.
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
        tmp_path = Path(tmp.name)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                shutil.copyfileobj(response, tmp)
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise
    tmp_path.replace(target)


def dataset_path(name: str, download: bool = True, timeout: float = 30.0) -> Path:
    """The verified local path of data set ``name``, downloading it into data/ if needed."""
    if name not in DATASETS:
        raise KeyError(f"Unknown data set {name!r}; known: {sorted(DATASETS)}")
    spec = DATASETS[name]

    env_dir = os.environ.get(DATA_DIR_ENV)
    if env_dir:
        for local_name in spec.local_names:
            candidate = Path(env_dir) / local_name
            if candidate.is_file():
                return verify(candidate, spec)

    cached = cache_dir() / spec.cache_path
    if cached.is_file():
        return verify(cached, spec)

    where = (
        f"${DATA_DIR_ENV}={env_dir} (looked for {', '.join(spec.local_names)})"
        if env_dir
        else (f"${DATA_DIR_ENV} is not set")
    )
    if env_dir and not Path(env_dir).is_absolute():
        # a notebook kernel runs in notebooks/, not where the variable was set
        where += f", a relative path read from {Path.cwd()}: prefer an absolute one"
    if not download:
        raise DatasetError(
            f"{spec.name} is not cached at {cached} and downloading is off; {where}."
        )
    try:
        _download(spec.url, cached, timeout)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise DatasetError(
            f"Could not download {spec.name} from {spec.url} ({err}).\n"
            f"No local copy either: {where}; cache {cached} is empty.\n"
            f"Fix: download the file on a machine with network access and either put it at "
            f"{cached} "
            f"or set {DATA_DIR_ENV} to the folder that holds it as '{spec.local_names[0]}'."
        ) from err
    try:
        return verify(cached, spec)
    except DatasetError:
        cached.unlink(missing_ok=True)  # never keep a bad download in the cache
        raise


def load_text(name: str = "tinyshakespeare") -> str:
    """The verified corpus as a string."""
    return dataset_path(name).read_text(encoding="utf-8")
