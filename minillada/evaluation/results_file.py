"""A run's results on disk, one JSON line per finished item, so that a run that dies keeps its work.

An evaluation of a released model runs for hours (GSM8K at the papers' settings: 5-13 hours on one
H100). Written at the end, its results would be lost with the process; written here, each item
costs one line, flushed and ``fsync``-ed as soon as it is done, and a restart skips what is in the
file. The format (JSON lines, UTF-8)::

    {"fingerprint": {"model": {...}, "settings": {...}, "task": {...}, "data": {...}}}
    {"index": 0, "result": {"text": "...", "forward_passes": 512, ...}}
    {"index": 1, "result": {...}}

The first line, the header, says what produced the results: the model (its name, dtype and
digests of the snapshot, ``snapshot_fingerprint``), every sampler setting, the task, and a digest
of the items. A file is only ever continued by a run with the same fingerprint: a restart with
another threshold, another model or other items would mix two experiments in one accuracy, so
``ResultsFile.open`` refuses it and names the keys that differ. Then one line per finished item,
in the order they finished: its index in the item list and its result (a dict, e.g.
``dataclasses.asdict`` of the result type).

A process killed while writing leaves at most one torn last line (JSON without its end, or
without its newline): readers ignore it, and the next ``ResultsFile.open`` cuts it off before
appending, so the file is clean again. A broken line anywhere else is not a kill's doing and is an
error.

Everything reported is computed from the file's lines (``read_results``), never from what the
process happened to keep in memory, so a resumed run and an uninterrupted one give the same
summary.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# a snapshot's weight files are read only at both ends (see snapshot_fingerprint)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
EDGE_BYTES = 64 * 1024
# the files besides the weights that change what a model answers
TOKENIZER_PREFIXES = ("tokenizer", "special_tokens_map", "chat_template", "generation_config")


def digest(value: Any) -> str:
    """A short SHA-256 of ``value``'s canonical JSON (sorted keys): equal values, equal digests."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _file_digest(path: Path) -> str:
    """The SHA-256 of a whole (small) file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _weights_digest(path: Path, hasher: Any) -> None:
    """Feed ``hasher`` a weight file's size, its safetensors header (names, dtypes, shapes,
    offsets) and its first and last 64 KiB: enough to tell two releases apart without reading the
    15 GB of an 8B model (a full read takes minutes on a network disk)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = EDGE_BYTES
        if path.suffix == ".safetensors" and size >= 8:
            head += 8 + int.from_bytes(f.read(8), "little")  # the header's length, then the header
            f.seek(0)
        hasher.update(f"{path.name}:{size}:".encode())
        hasher.update(f.read(min(head, size)))
        f.seek(max(0, size - EDGE_BYTES))
        hasher.update(f.read())


def snapshot_fingerprint(folder: str | Path) -> dict[str, str]:
    """What identifies a model snapshot cheaply: digests of its ``config.json``, its weights (the
    index and each weight file's header and ends) and its tokenizer files. The folder's path is
    left out, so the same snapshot in another place (a copy, a rewritten stand-in) matches."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Expected a snapshot folder, found nothing at {folder}; pass the folder the model was "
            "loaded from."
        )
    files = sorted(p for p in folder.iterdir() if p.is_file())
    weights, tokenizer = hashlib.sha256(), hashlib.sha256()
    config = "none"
    for path in files:
        if path.name == "config.json":
            config = _file_digest(path)
        elif path.suffix in WEIGHT_SUFFIXES:
            _weights_digest(path, weights)
        elif path.name.endswith(".index.json"):
            weights.update(f"{path.name}:{_file_digest(path)}".encode())
        elif path.name.startswith(TOKENIZER_PREFIXES):
            tokenizer.update(f"{path.name}:{_file_digest(path)}".encode())
    return {
        "config": config,
        "weights": weights.hexdigest()[:16],
        "tokenizer": tokenizer.hexdigest()[:16],
    }


class ResultsFileError(ValueError):
    """A results file that this run must not continue: another run's, or not a results file."""


def _as_json(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists): what comparisons must use."""
    return json.loads(json.dumps(value))


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys ("settings.threshold"), for a message that names the key."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out |= _flat(inner, f"{prefix}{key}.")
        return out
    return {prefix.rstrip("."): value}


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fingerprint_differences(expected: dict, found: dict) -> list[str]:
    """The dotted keys where two fingerprints differ, each with both values."""
    want, got = _flat(_as_json(expected)), _flat(_as_json(found))

    def shown(values: dict[str, Any], key: str) -> str:
        return _short(values[key]) if key in values else "absent"

    return [
        f"{key} (file: {shown(got, key)}, this run: {shown(want, key)})"
        for key in sorted(want.keys() | got.keys())
        if key not in want or key not in got or want[key] != got[key]
    ]


def check_fingerprint(path: str | Path, expected: dict, found: dict) -> None:
    """Raise ResultsFileError, naming the keys that differ, when the file at ``path`` was written
    by a run with another fingerprint."""
    differences = fingerprint_differences(expected, found)
    if differences:
        raise ResultsFileError(
            f"{path} holds the results of another run; it differs from this one in "
            + "; ".join(differences)
            + ". Continuing it would mix two experiments in one score: write this run to "
            "another file (cli.evaluate: another --out), or delete the file to start over."
        )


@dataclass
class _Parsed:
    fingerprint: dict | None  # None: no complete header yet
    pairs: list[tuple[int, dict]]
    clean_bytes: int  # where the last good line ends (a torn line after it is cut here)


def _parse(path: Path) -> _Parsed:
    """The header and item lines of a results file; a torn last line is left out."""
    # a line is finished when its newline is written: what follows the last newline is empty in
    # a complete file and a torn line otherwise (never read; the next writer cuts it off)
    lines = path.read_bytes().split(b"\n")[:-1]
    # a finished last line that does not parse counts as torn too (a crash can leave zeros where
    # the data did not reach the disk)
    fingerprint, pairs, clean = None, [], 0
    for number, raw in enumerate(lines, start=1):
        try:
            record = json.loads(raw)
        except ValueError:
            if number == len(lines):
                break
            record = None
        if number == 1:
            ok = isinstance(record, dict) and isinstance(record.get("fingerprint"), dict)
            fingerprint = record["fingerprint"] if ok else None
        else:
            ok = (
                isinstance(record, dict)
                and type(record.get("index")) is int
                and isinstance(record.get("result"), dict)
            )
            if ok:
                pairs.append((record["index"], record["result"]))
        if not ok:
            what = (
                'a header {"fingerprint": {...}}'
                if number == 1
                else 'an item line {"index": i, "result": {...}}'
            )
            raise ResultsFileError(
                f"{path}, line {number}: expected {what}, found "
                f"{_short(raw.decode(errors='replace'))}. This is not a results file written by "
                "minillada.evaluation.results_file, or it was edited: move it away, or write the "
                "run to another file."
            )
        clean += len(raw) + 1
    return _Parsed(fingerprint, pairs, clean)


def read_results(path: str | Path) -> tuple[dict | None, list[tuple[int, dict]]]:
    """(fingerprint, [(index, result), ...]) of the file at ``path``, in the order written; a torn
    last line is ignored (the file is not changed). (None, []) when there is no file, or not yet a
    complete header."""
    path = Path(path)
    if not path.is_file():
        return None, []
    parsed = _parse(path)
    return parsed.fingerprint, parsed.pairs


def _line(record: dict) -> bytes:
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def _sync_folder(folder: Path) -> None:
    """fsync a folder, so that a file just created in it survives a crash (POSIX only)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open a folder; its metadata is synced with the file
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class ResultsFile:
    """A results file open for appending; ``done`` maps the indices already in it to their
    results. Open it with ``ResultsFile.open``; use it as a context manager or ``close`` it."""

    path: Path
    fingerprint: dict
    done: dict[int, dict] = field(default_factory=dict)
    _file: Any = field(default=None, repr=False)

    @classmethod
    def open(cls, path: str | Path, fingerprint: dict) -> ResultsFile:
        """Continue the file at ``path`` (refused when its fingerprint differs; a torn last line is
        cut off), or start it with the header ``{"fingerprint": ...}``."""
        path = Path(path)
        fingerprint = _as_json(fingerprint)
        path.parent.mkdir(parents=True, exist_ok=True)
        parsed = _parse(path) if path.is_file() else _Parsed(None, [], 0)
        if parsed.fingerprint is not None:
            check_fingerprint(path, fingerprint, parsed.fingerprint)
        done: dict[int, dict] = {}
        for index, result in parsed.pairs:
            if index in done:
                raise ResultsFileError(
                    f"{path} holds index {index} twice: a run never writes an item twice, so the "
                    "file was edited or two runs wrote to it at once. Move it away and rerun."
                )
            done[index] = result
        created = not path.is_file()
        handle = open(path, "r+b" if not created else "w+b", buffering=0)  # noqa: SIM115
        handle.truncate(parsed.clean_bytes)  # drops a torn last line (or a torn header)
        handle.seek(parsed.clean_bytes)
        opened = cls(path, fingerprint, done, handle)
        if parsed.fingerprint is None:
            opened._write({"fingerprint": fingerprint})
        if created:
            _sync_folder(path.parent)
        return opened

    def _write(self, record: dict) -> None:
        data = memoryview(_line(record))
        while data:  # an unbuffered write may take fewer bytes than asked
            data = data[self._file.write(data) :]
        os.fsync(self._file.fileno())  # on the disk before the next item starts

    def append(self, index: int, result: dict) -> None:
        """Write one finished item, durably (flushed and fsync-ed)."""
        if index in self.done:
            raise ValueError(f"index {index} is already in {self.path}; skip the items in done.")
        result = _as_json(result)
        self._write({"index": index, "result": result})
        self.done[index] = result

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_results(path: str | Path, fingerprint: dict, pairs: Iterable[tuple[int, dict]]) -> Path:
    """Write a complete results file at once (a merge's output), atomically: a temporary file
    beside it, fsync-ed, then renamed over ``path``, so a kill leaves the old file or the new one.
    Refused when ``path`` already holds another run's results."""
    path = Path(path)
    old, _ = read_results(path)
    if old is not None:
        check_fingerprint(path, fingerprint, old)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as f:
        f.write(_line({"fingerprint": _as_json(fingerprint)}))
        for index, result in pairs:
            f.write(_line({"index": index, "result": result}))
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    _sync_folder(path.parent)
    return path


def rank_path(path: str | Path, rank: int, world: int) -> Path:
    """Where rank ``rank`` of ``world`` keeps its own results: ``<stem>.rank<r>-of-<w>.jsonl``
    beside ``path``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.rank{rank}-of-{world}.jsonl")
