"""Corpora and reference files: download once from the canonical URL, verify the sha256, cache in
data/.

Lookup order for a data set:
1. ``$MINILLADA_DATA_DIR`` (a folder that already holds the file, e.g. on a machine
   with no network; several folders separated by ``os.pathsep``, ":" on Linux and macOS);
2. the cache in ``data/`` of this repository;
3. download from the canonical URL into the cache, then verify.
Every file found or fetched is checked against its sha256 (or, for a file known only by its git
blob id, against that), so a truncated or edited copy never trains or scores a model.
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
    sha256: str | None  # None when only the git blob id is known (see git_blob)
    num_bytes: int | None
    cache_path: str  # where the download is cached, relative to data/
    local_names: tuple[str, ...]  # file names accepted inside $MINILLADA_DATA_DIR
    license: str
    git_blob: str | None = None  # git's object id of the file: sha1 of b"blob <size>\0" + bytes


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
    # Lesson 7's multiple choice. No copy could be fetched when the project was written, so the file
    # is pinned by the git blob id it has in rowanz/hellaswag, which any clone shows
    # (`git ls-tree HEAD data/`), instead of by a sha256 nobody here could compute.
    "hellaswag_val": DatasetFile(
        name="hellaswag_val",
        url="https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl",
        sha256=None,
        num_bytes=None,
        cache_path="hellaswag/hellaswag_val.jsonl",
        local_names=("hellaswag_val.jsonl", "hellaswag/hellaswag_val.jsonl"),
        license="MIT (rowanz/hellaswag)",
        git_blob="0f5ee25d72216f12317d5d8a7b92deafa423d81e",
    ),
}


# The small metadata files of the released LLaDA-8B (no weights): lesson 5 reads them, the tests
# compare the library against them. Base and Instruct ship the same config.json and index.
LLADA_REFERENCE_URL = "https://huggingface.co/GSAI-ML/LLaDA-8B-Instruct/resolve/main/"
LLADA_REFERENCE_FILES: dict[str, tuple[str, int]] = {  # file -> (sha256, bytes)
    "config.json": ("5f99fefe855fdb5100bb6cadb57bdb09fae723ad54811f95c00ecacf29d58a6a", 1_385),
    "generation_config.json": (
        "00b3d1ffda2ca0a45633deb52ca4413dda046e7c94e9b05b73ed4a565b0677b3",
        128,
    ),
    "model.safetensors.index.json": (
        "28b4ec27206e42e7ade630450e6ce618bd197acf34d35120e8e86d2bb910a408",
        24_941,
    ),
    "special_tokens_map.json": (
        "e9f1f0f6fa133da3169ae69b1969c51cced047a900050893d7a0711c6bd063aa",
        747,
    ),
    "tokenizer_config.json": (
        "b9a6102c39a4f42f47f0d63fc6cee58a2381199d90f2a4f39b3f6871f32b4119",
        51_692,
    ),
}
for _file, (_sha, _bytes) in LLADA_REFERENCE_FILES.items():
    DATASETS["llada_8b/" + _file] = DatasetFile(
        name="llada_8b/" + _file,
        url=LLADA_REFERENCE_URL + _file,
        sha256=_sha,
        num_bytes=_bytes,
        cache_path="llada-8b/" + _file,
        local_names=("llada-8b/" + _file,),
        license="MIT (the GSAI-ML/LLaDA-8B-Instruct model card)",
    )


class DatasetError(RuntimeError):
    """A corpus could not be found, fetched or verified."""


def _digest(path: Path, digest):
    """Feed the file to ``digest`` in 1 MiB chunks; return its hex digest."""
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    return _digest(path, hashlib.sha256())


def git_blob_of(path: Path) -> str:
    """The id git gives the file's contents: sha1 of b"blob <size>\0" followed by the bytes."""
    return _digest(path, hashlib.sha1(f"blob {path.stat().st_size}\0".encode()))


def verify(path: Path, spec: DatasetFile) -> Path:
    """Raise DatasetError unless ``path`` holds exactly the expected bytes (by sha256, or by the
    git blob id for a file pinned only by that)."""
    if spec.sha256 is None:
        kind, expected, found, size = "git blob id", spec.git_blob, git_blob_of(path), ""
    else:
        kind, expected, found = "sha256", spec.sha256, sha256_of(path)
        size = f" ({spec.num_bytes:,} bytes)"
    if found != expected:
        raise DatasetError(
            f"{path} does not match the expected {spec.name} file.\n"
            f"  expected {kind} {expected}{size}\n"
            f"  found    {kind} {found} ({path.stat().st_size:,} bytes)\n"
            f"Delete it and let minillada download it again from {spec.url}, "
            f"or put the original file there."
        )
    return path


def cache_dir() -> Path:
    return repo_path("data")


def _download(url: str, target: Path, timeout: float) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Download to a temporary file first, so an interrupted download leaves no partial cache entry.
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
    for folder in (env_dir or "").split(os.pathsep):
        for local_name in spec.local_names:
            candidate = Path(folder) / local_name
            if folder and candidate.is_file():
                return verify(candidate, spec)

    cached = cache_dir() / spec.cache_path
    if cached.is_file():
        return verify(cached, spec)

    where = (
        f"${DATA_DIR_ENV}={env_dir} (looked for {', '.join(spec.local_names)})"
        if env_dir
        else (f"${DATA_DIR_ENV} is not set")
    )
    if env_dir and not all(Path(f).is_absolute() for f in env_dir.split(os.pathsep)):
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
            f"Fix: download the file on a machine with network access and either "
            f"put it at {cached} "
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


def llada_reference(download: bool = True) -> Path:
    """The folder holding the released LLaDA-8B metadata files (config.json, the index, the
    tokenizer config, ...), each verified by its sha256: from $MINILLADA_DATA_DIR/llada-8b/, the
    cache data/llada-8b/, or downloaded there from the Hugging Face Hub. Files found in different
    places are gathered in the cache, so that the folder reads like a snapshot."""
    paths = [dataset_path("llada_8b/" + f, download=download) for f in LLADA_REFERENCE_FILES]
    folders = {p.parent for p in paths}
    if len(folders) == 1:
        return folders.pop()
    target = cache_dir() / "llada-8b"
    target.mkdir(parents=True, exist_ok=True)
    for p in paths:
        if p.parent != target:
            shutil.copyfile(p, target / p.name)
    return target
