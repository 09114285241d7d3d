"""The released models: where their snapshots are, whether a folder holds one, whether the GPU can
take it, and loading it in bf16 straight from its shards (lesson 7).

Four snapshots are published on the Hugging Face hub: ``GSAI-ML/iLLaDA-8B-Instruct`` and
``-Base`` (Llama-style layout, 7.6B parameters) and ``GSAI-ML/LLaDA-8B-Instruct`` and ``-Base``
(OLMo-style layout, 8.0B). Getting one is one command (``python -m minillada.cli.download_weights
iLLaDA-8B-Instruct``, which needs the optional ``huggingface_hub`` extra); it lands in
``$MINILLADA_WEIGHTS_DIR/<name>`` (default ``data/weights/<name>``), where ``released_folder``
finds it.

``released_folder`` also finds a snapshot where ``hf download GSAI-ML/<name>`` (without
``--local-dir``) puts it: the hub cache, ``models--GSAI-ML--<name>/snapshots/<commit>/`` under
``$MINILLADA_WEIGHTS_DIR``, ``$HF_HUB_CACHE``, ``$HF_HOME/hub`` or ``~/.cache/huggingface/hub``.

``inspect_snapshot`` checks a folder before anything heavy happens: the files, their sizes
against the index, the config (its dialect, and its numbers against the published architecture),
the tokenizer (the mask id, ``</think>`` for an Instruct model, the chat template, the ids that end
an answer), and whether it is one of the project's stand-ins (``minillada.checkpoints.standins``).
``check_device`` (``minillada.checkpoints.devices``) says whether the weights and a forward pass
fit the GPU, and ``load_released`` loads and reports the time and the peak memory it took.
``open_released`` is lesson 7's way in: the real model when it can run, else a stand-in, saying
why and what would work. ``MINILLADA_REHEARSAL=1`` (``minillada.checkpoints.rehearsal``) lets the
real branch run on the CPU and on a snapshot whose architecture is not the published one, which is
how CI runs that branch on the project's rehearsal snapshots.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from minillada.checkpoints.devices import (  # noqa: F401  (lesson 7 imports them from here)
    DeviceError,
    DeviceReport,
    check_device,
    device_advice,
    memory_needed,
)
from minillada.checkpoints.dialects import DIALECTS
from minillada.checkpoints.hf import (
    CONFIG_NAME,
    INDEX_NAME,
    SINGLE_NAME,
    HFCheckpointError,
    load_hf_checkpoint,
    read_hf_config,
)
from minillada.checkpoints.rehearsal import REHEARSAL_ENV, rehearsal_allowed
from minillada.checkpoints.standins import STAND_IN_FIELD, VARIANT_FIELD, write_standin
from minillada.data.chat import THINK_END, ChatTemplateError
from minillada.data.tokenizer import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    LLaDATokenizer,
    TokenizerFilesError,
)
from minillada.models.llada import LLaDAConfig, LLaDAModel, preset
from minillada.models.sizing import count_parameters
from minillada.runtime import portable_paths, repo_path

WEIGHTS_ENV = "MINILLADA_WEIGHTS_DIR"


@dataclass(frozen=True)
class ReleasedModel:
    name: str  # the snapshot's name on the hub, e.g. "iLLaDA-8B-Instruct"
    repo_id: str  # "GSAI-ML/iLLaDA-8B-Instruct"
    dialect: str  # snapshot layout: "illada" (Llama-style) or "llada" (OLMo-style)
    instruct: bool  # chat-tuned (has a chat template; iLLaDA's thinks before answering)
    preset: str  # the minillada preset with its published architecture

    @property
    def family(self) -> str:
        return "iLLaDA" if self.dialect == "illada" else "LLaDA"

    @property
    def download_command(self) -> str:
        return f"python -m minillada.cli.download_weights {self.name}"


RELEASED: dict[str, ReleasedModel] = {
    f"{family}-8B-{variant}": ReleasedModel(
        f"{family}-8B-{variant}",
        f"GSAI-ML/{family}-8B-{variant}",
        family.lower(),
        variant == "Instruct",
        f"{family.lower()}_8b",
    )
    for family in ("iLLaDA", "LLaDA")
    for variant in ("Instruct", "Base")
}


def released(name: str) -> ReleasedModel:
    if name not in RELEASED:
        raise KeyError(f"Unknown released model {name!r}; choose one of {sorted(RELEASED)}.")
    return RELEASED[name]


def weights_dir() -> Path:
    """Where downloaded snapshots live: $MINILLADA_WEIGHTS_DIR, else data/weights/."""
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env).expanduser() if env else repo_path("data", "weights")


def hub_caches() -> list[Path]:
    """Where ``hf download`` without ``--local-dir`` puts snapshots, as huggingface_hub decides:
    $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return [Path(os.environ["HF_HUB_CACHE"]).expanduser()]
    home = os.environ.get("HF_HOME")
    base = Path(home).expanduser() if home else Path("~/.cache/huggingface").expanduser()
    return [base / "hub"]


def hub_cache_snapshot(repo_folder: Path) -> Path | None:
    """The snapshot a hub-cache repository folder (``models--ORG--NAME``) points at: the commit
    in refs/main, else the only snapshot there; None when it holds none."""
    ref = repo_folder / "refs" / "main"
    if ref.is_file():
        snapshot = repo_folder / "snapshots" / ref.read_text().strip()
        if snapshot.is_dir():
            return snapshot
    snapshots = sorted((repo_folder / "snapshots").glob("*"))
    return snapshots[0] if len(snapshots) == 1 else None


def released_folder(name: str, folder: str | Path | None = None) -> Path:
    """The snapshot folder of the released model ``name``: ``folder`` when given (a hub-cache
    repository folder is followed to its snapshot), else the first that exists of
    ``weights_dir() / name`` (``hf download --local-dir``'s layout) and ``models--GSAI-ML--<name>``
    in ``weights_dir()`` or a hub cache (``hub_caches``), else ``weights_dir() / name``.
    (Whether it holds the weights is ``inspect_snapshot``'s question.)"""
    model = released(name)
    if folder is not None:
        folder = Path(folder).expanduser()
        if folder.name.startswith("models--") and (folder / "snapshots").is_dir():
            return hub_cache_snapshot(folder) or folder
        return folder
    local = weights_dir() / name
    if local.is_dir():
        return local
    repo = "models--" + model.repo_id.replace("/", "--")
    for cache in [weights_dir(), *hub_caches()]:
        if (cache / repo).is_dir():
            snapshot = hub_cache_snapshot(cache / repo)
            if snapshot is not None:
                return snapshot
    return local


class SnapshotError(RuntimeError):
    """A snapshot folder that cannot be used as the model it is said to be."""


@dataclass
class SnapshotReport:
    """What ``inspect_snapshot`` found in a folder; ``problems`` empty means it can be loaded."""

    folder: Path
    expected: ReleasedModel | None
    files: dict[str, int] = field(default_factory=dict)  # name -> bytes
    problems: list[str] = field(default_factory=list)  # each says what is wrong and what to do
    notes: list[str] = field(default_factory=list)  # what the rehearsal opt-in let through
    dialect: str | None = None
    config: LLaDAConfig | None = None
    stand_in: str | None = None  # what a stand-in really is; None for real weights
    instruct: bool | None = None
    mask_id: int | None = None
    think_end_ids: list[int] | None = None  # </think>: one id or several; None: does not think
    stop_ids: list[int] = field(default_factory=list)  # EOS ids and the end of turn
    end_of_turn: str | None = None  # what the chat template writes after an answer
    has_chat_template: bool = False
    weight_bytes: int = 0  # the shards on disk
    tokenizer: LLaDATokenizer | None = field(default=None, repr=False)  # read once, when checked

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def name(self) -> str:
        """How every output names the model: the real name, or a stand-in labelled as one."""
        base = self.expected.name if self.expected else self.folder.name
        return f"stand-in for {base}" if self.stand_in else base

    def lines(self) -> list[str]:
        out = [f"snapshot     {self.folder}"]
        if self.stand_in:
            out.append(f"STAND-IN     {self.stand_in}")
        if self.config is not None:
            n = count_parameters(self.config).total
            out.append(
                f"config       {self.dialect} layout, {self.config.n_layers} layers, width "
                f"{self.config.d_model}, {self.config.n_heads} query / {self.config.kv_heads} "
                f"key-value heads, vocab {self.config.vocab_size:,}, context "
                f"{self.config.max_sequence_length:,}, tied head {self.config.weight_tying}, "
                f"{n:,} parameters"
            )
        shards = [f for f in self.files if f.endswith(".safetensors")]
        out.append(f"weights      {len(shards)} file(s), {self.weight_bytes / 1e9:.3f} GB on disk")
        if self.mask_id is not None:
            think = "" if self.think_end_ids is None else f", {THINK_END} ids {self.think_end_ids}"
            chat = "a chat template" if self.has_chat_template else "no chat template"
            out.append(f"tokenizer    mask id {self.mask_id}{think}, {chat}")
            turn = f", end of turn {self.end_of_turn!r}" if self.end_of_turn else ""
            out.append(f"stops        at ids {self.stop_ids}{turn}")
        out += [f"NOTE         {n}" for n in self.notes]
        out += [f"PROBLEM      {p}" for p in self.problems]
        out.append("ready        yes" if self.ok else "ready        no")
        return out

    def __str__(self) -> str:
        return portable_paths("\n".join(self.lines()))

    def raise_for_problems(self) -> None:
        if self.problems:
            raise SnapshotError(
                f"The snapshot {self.folder} cannot be used:\n- " + "\n- ".join(self.problems)
            )


def _listed_shards(folder: Path) -> tuple[list[str], int | None]:
    if (folder / INDEX_NAME).is_file():
        index = json.loads((folder / INDEX_NAME).read_text())
        total = index.get("metadata", {}).get("total_size")
        return sorted(set(index["weight_map"].values())), total
    return [SINGLE_NAME], None


def inspect_snapshot(
    folder: str | Path,
    expected: str | ReleasedModel | None = None,
    *,
    mask_id: int | None = None,
    mask_token: str | None = None,
    rehearsal: bool | None = None,
) -> SnapshotReport:
    """Check a snapshot folder from its small files and file sizes alone (nothing is loaded).

    ``expected``: the released model the folder should hold; its dialect and (for real weights)
    its published architecture are checked. ``mask_id`` / ``mask_token``: the diffusion mask,
    when the files alone do not say it; checked against the tokenizer either way.
    ``rehearsal`` (default: ``rehearsal_allowed()``): an architecture that differs from the
    published one is a note, not a problem. Every problem found is listed with what to do; the
    loader checks every tensor's name, shape and dtype again from the shard headers."""
    folder = Path(folder)
    if isinstance(expected, str):
        expected = released(expected)
    report = SnapshotReport(folder, expected)
    rehearsal = rehearsal_allowed() if rehearsal is None else rehearsal
    get = f"download it with `{expected.download_command}`" if expected else "download it again"
    if not folder.is_dir():
        report.problems.append(
            f"{folder} does not exist: {get}, or point ${WEIGHTS_ENV} (or the folder argument) "
            "at the folder that holds it."
        )
        return report
    report.files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
    missing = [f for f in (CONFIG_NAME, TOKENIZER_FILE, CONFIG_FILE) if f not in report.files]
    if INDEX_NAME not in report.files and SINGLE_NAME not in report.files:
        missing.append(f"{INDEX_NAME} (or {SINGLE_NAME})")
    if missing:
        report.problems.append(f"missing {', '.join(missing)} in {folder}: {get}.")
    if CONFIG_NAME in report.files:
        _inspect_config(folder, report, rehearsal)
    if INDEX_NAME in report.files or SINGLE_NAME in report.files:
        _inspect_shards(folder, report, get)
    if TOKENIZER_FILE in report.files and CONFIG_FILE in report.files:
        _inspect_tokenizer(folder, report, mask_id, mask_token)
    return report


# what the published architecture leaves to the snapshot's files (iLLaDA publishes none of them)
_FROM_FILES = ("rope_theta", "rms_norm_eps", "mask_token_id", "eos_token_id", "pad_token_id")


def _inspect_config(folder: Path, report: SnapshotReport, rehearsal: bool) -> None:
    raw = json.loads((folder / CONFIG_NAME).read_text())
    report.stand_in = raw.get(STAND_IN_FIELD)
    try:
        report.config = read_hf_config(folder)
    except (HFCheckpointError, ValueError) as err:
        report.problems.append(f"{folder / CONFIG_NAME}: {err}")
        return
    report.dialect = report.config.dialect
    expected = report.expected
    if raw.get(VARIANT_FIELD) is not None:
        report.instruct = raw[VARIANT_FIELD] == "instruct"
    elif expected is not None:
        report.instruct = expected.instruct
    if expected is None:
        return
    if report.instruct is not None and report.instruct != expected.instruct:
        variant = "an Instruct" if report.instruct else "a Base"
        report.problems.append(
            f"{folder / CONFIG_NAME} says the folder holds {variant} model, but {expected.name} is "
            "expected: use the folder of the other variant."
        )
    if report.dialect != expected.dialect:
        other = DIALECTS[report.dialect].name
        report.problems.append(
            f"{folder / CONFIG_NAME} is in the {other} layout, but {expected.name} is published "
            f"in the {expected.dialect} layout: the folder holds another model."
        )
    elif report.stand_in is None:
        published = preset(expected.preset)
        diff = [d for d in report.config.differences(published) if not d.startswith(_FROM_FILES)]
        if diff:
            found = (
                f"{folder / CONFIG_NAME} does not describe {expected.name}'s published "
                f"architecture: {'; '.join(diff)} (file vs published)"
            )
            if rehearsal:
                report.notes.append(f"{found}; going on, since {REHEARSAL_ENV}=1.")
            else:
                report.problems.append(
                    f"{found}. The folder holds another model; to run it anyway (a rehearsal "
                    f"snapshot), set {REHEARSAL_ENV}=1."
                )


def _inspect_shards(folder: Path, report: SnapshotReport, get: str) -> None:
    try:
        shards, total = _listed_shards(folder)
    except (json.JSONDecodeError, KeyError) as err:
        report.problems.append(f"{folder / INDEX_NAME} is not a readable index ({err}): {get}.")
        return
    absent = [s for s in shards if s not in report.files]
    if absent:
        report.problems.append(
            f"missing shard(s) {', '.join(absent)} (listed in {INDEX_NAME}): the download is "
            f"incomplete; {get} (it resumes)."
        )
    present = [s for s in shards if s in report.files]
    report.weight_bytes = sum(report.files[s] for s in present)
    if total is not None and not absent and report.weight_bytes < total:
        report.problems.append(
            f"the shards hold {report.weight_bytes:,} bytes but {INDEX_NAME} says the tensors "
            f"alone take {total:,}: a shard is truncated; {get}."
        )


def _inspect_tokenizer(
    folder: Path, report: SnapshotReport, mask_id: int | None, mask_token: str | None
) -> None:
    try:
        tokenizer = LLaDATokenizer.from_folder(folder, mask_token=mask_token, mask_id=mask_id)
    except (TokenizerFilesError, ChatTemplateError) as err:
        report.problems.append(f"tokenizer: {err}")
        return
    report.tokenizer = tokenizer
    report.mask_id = tokenizer.mask_id
    report.has_chat_template = tokenizer.chat_template is not None
    report.think_end_ids = tokenizer.think_end_ids if tokenizer.thinks else None
    report.stop_ids = tokenizer.stop_ids
    turn = tokenizer.end_of_turn
    report.end_of_turn = turn[0] if turn else None
    if report.config is not None:
        ours = report.config.mask_token_id
        if ours is not None and ours != tokenizer.mask_id:
            report.problems.append(
                f"config.json's mask id {ours} is not the tokenizer's {tokenizer.mask_id}."
            )
        if tokenizer.vocab_size > report.config.vocab_rows:
            report.problems.append(
                f"the tokenizer has {tokenizer.vocab_size:,} tokens but the model only "
                f"{report.config.vocab_rows:,} embedding rows: they come from different models."
            )
    if report.instruct and not report.has_chat_template:
        report.problems.append(
            f"an Instruct model's tokenizer needs a chat template, and {folder / CONFIG_FILE} "
            "has none: these are a Base model's tokenizer files."
        )
    if report.instruct and report.has_chat_template:
        try:  # a template that cannot render a plain question fails here, not after loading
            tokenizer.apply_chat_template([{"role": "user", "content": "1 + 1?"}])
        except (ChatTemplateError, ValueError) as err:
            report.problems.append(
                f"the chat template in {folder / CONFIG_FILE} cannot render one user question: "
                f"{err}. Use the tokenizer_config.json that came with the weights."
            )
    if report.instruct and report.dialect == "illada" and report.think_end_ids is None:
        report.problems.append(
            f"iLLaDA-8B-Instruct thinks before it answers and closes that with {THINK_END!r}, "
            f"but neither this tokenizer nor its chat template knows {THINK_END!r}: the "
            "end-of-thinking boost and the answer extraction need it. These are not "
            "iLLaDA-8B-Instruct's tokenizer files."
        )


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """A released model (or its stand-in) ready to sample and evaluate."""

    model: LLaDAModel
    tokenizer: LLaDATokenizer
    report: SnapshotReport
    seconds: float  # to read the shards onto the device
    peak_bytes: int  # GPU: peak allocated while loading; CPU: the process's peak resident memory

    @property
    def name(self) -> str:
        return self.report.name

    @property
    def instruct(self) -> bool:
        return bool(self.report.instruct)

    @property
    def think_end_ids(self) -> list[int]:
        """The ids of ``</think>`` (iLLaDA-8B-Instruct's end of reasoning); an error for a model
        that does not think."""
        return self.tokenizer.think_end_ids

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        """The ids of ``messages`` rendered with the snapshot's own chat template; refused for a
        Base model, which was never trained on chats."""
        if not self.instruct:
            raise SnapshotError(
                f"{self.name} is a Base model: it continues plain text and was never trained on "
                "the chat template (the paper evaluates it few-shot on plain text). Give it a "
                "text prompt, or load the Instruct snapshot to chat."
            )
        return self.tokenizer.apply_chat_template(messages, tokenize=True)

    def summary(self) -> str:
        mem = "peak GPU memory" if self.model_device.type == "cuda" else "process peak memory"
        return (
            f"loaded       {self.name} on {self.model_device} in {self.seconds:.2f} s "
            f"({next(self.model.parameters()).dtype}); {mem} {self.peak_bytes / 2**30:.2f} GiB"
        )

    @property
    def model_device(self) -> torch.device:
        return next(self.model.parameters()).device


def _host_peak_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def load_released(
    folder: str | Path,
    expected: str | ReleasedModel | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    *,
    mask_id: int | None = None,
    mask_token: str | None = None,
) -> LoadedModel:
    """Inspect, check the device, and load a snapshot folder (real or stand-in) in ``dtype``
    straight from its shards onto ``device``; every problem is raised before any weight is read.
    ``mask_id`` / ``mask_token``: the diffusion mask when the files alone do not name it."""
    report = inspect_snapshot(folder, expected, mask_id=mask_id, mask_token=mask_token)
    return _load(report, device, dtype)


def _load(report: SnapshotReport, device: torch.device | str, dtype: torch.dtype) -> LoadedModel:
    """``load_released`` for a folder already inspected."""
    report.raise_for_problems()
    device = torch.device(device)
    check_device(report.config, device, dtype)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    model = load_hf_checkpoint(report.folder, device=device, dtype=dtype, mask_id=report.mask_id)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _host_peak_bytes()
    return LoadedModel(model, report.tokenizer, report, seconds, peak)


def cpu_dtype(config: LLaDAConfig) -> torch.dtype:
    """The dtype a model runs in on the CPU: float32 below a billion parameters (float32 CPU
    kernels agree closely from CPU to CPU, bf16 ones do not, so outputs are the same on every
    laptop), bf16 above (an 8B model in float32 would need 30 GB of host memory)."""
    return torch.float32 if count_parameters(config).total < 1e9 else torch.bfloat16


def open_released(
    name: str,
    device: torch.device | str,
    standin_dir: str | Path,
    folder: str | Path | None = None,
    dtype: torch.dtype = torch.bfloat16,
    *,
    mask_id: int | None = None,
    mask_token: str | None = None,
) -> LoadedModel:
    """The released model ``name`` when its snapshot is ready and can run here, else its stand-in
    (written into ``standin_dir / name``), with printed lines saying which, why, and what would
    run the real one. Lesson 7 opens every model this way, so that the same cells run with and
    without weights.

    "Can run here": a GPU that holds it in ``dtype`` (``check_device``; a GPU too small or without
    bf16 falls back to the stand-in on the CPU, with ``device_advice``), or any device with
    ``MINILLADA_REHEARSAL=1``, which also lets an architecture other than the published one
    through (said in a NOTE line). ``mask_id`` / ``mask_token``: the diffusion mask when the files
    alone do not name it (checked against the tokenizer)."""
    device = torch.device(device)
    rehearsal = rehearsal_allowed()
    folder = released_folder(name, folder)
    report = inspect_snapshot(folder, name, mask_id=mask_id, mask_token=mask_token)
    standin_device, standin_dtype = device, dtype
    if not report.ok:
        why = report.problems[0].rstrip(".")
    elif report.stand_in is not None:
        why = f"{report.folder} holds a stand-in"
    elif device.type != "cuda" and not rehearsal:
        why = f"the weights are at {report.folder}, but there is no GPU.\n  " + device_advice(
            report.config, dtype
        )
    else:
        load_dtype = dtype if device.type == "cuda" else cpu_dtype(report.config)
        try:
            loaded = _load(report, device, load_dtype)
        except DeviceError as err:
            why = f"{err}\n  {device_advice(report.config, dtype)}"
            standin_device = torch.device("cpu")  # the GPU cannot take this dtype, or is full
        else:
            if rehearsal:
                print(
                    f"REHEARSAL    {name}: the real-weights branch runs on {device} because "
                    f"{REHEARSAL_ENV}=1 (the snapshot is read as the real one)"
                )
            for note in report.notes:
                print(portable_paths(f"NOTE         {note}"))
            print(portable_paths(loaded.summary()))
            return loaded
    standin = Path(standin_dir) / name
    write_standin(name, standin)
    if standin_device.type != "cuda":
        # on a CPU the stand-in computes in float32: bf16 kernels differ from CPU to CPU, float32's
        # agree closely, so the lesson's outputs are the same on every laptop
        standin_dtype = torch.float32
    loaded = load_released(standin, name, standin_device, standin_dtype)
    print(portable_paths(f"{name}: {why}.\n  -> using its STAND-IN ({loaded.report.stand_in})."))
    return loaded
