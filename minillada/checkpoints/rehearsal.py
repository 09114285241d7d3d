"""Rehearsal snapshots: random weights at a small size, laid out exactly as a hub download lies on
disk, so that the branch of lesson 7 a learner with the real weights takes runs in CI.

A stand-in (``minillada.checkpoints.standins``) says what it is in its config.json, and lesson 7
takes its stand-in branch for it. A rehearsal snapshot does not: it is written file for file as
``hf download GSAI-ML/iLLaDA-8B-Instruct`` leaves one, so every check, loader and sampler treats it
as the real thing, and only its size (and its random weights) differ:

* config.json with the whole field set a transformers 4.57 save writes (``architectures``,
  ``auto_map``, ``torch_dtype`` or the newer ``dtype``, ``transformers_version``,
  ``initializer_range``, ``layer_norm_eps: null``, ``rope_scaling: null``, ...);
* at least three shards of unequal sizes and ``model.safetensors.index.json``, named as the hub
  names them;
* ``generation_config.json`` (``eos_token_id`` a list in variant 1), ``tokenizer.json``,
  ``tokenizer_config.json`` with ``added_tokens_decoder`` and, for an Instruct model, a chat
  template that calls ``raise_exception`` and uses the loop controls and ``{% generation %}`` tag
  that transformers gives templates, and ``special_tokens_map.json``.

Two folder layouts (``layout=``): ``"local"`` is ``hf download --local-dir <dir>``'s (the files in
one folder); ``"hub-cache"`` is where ``hf download`` puts files without ``--local-dir``:
``models--GSAI-ML--<name>/snapshots/<commit>/`` whose files are symbolic links into ``blobs/``,
with ``refs/main`` naming the commit.

The weights are random, except that the output row of the token that ends an answer (the end of
turn of an Instruct model, EOS of a Base model) is scaled up, so that answers end after a few
dozen tokens as a trained model's do, instead of every answer running to the budget.

Two variants (``variant=``) vary what the real files may do and the course must read rather than
assume: in variant 0, ``</think>`` is one token, EOS an int, the tied head not stored; in variant
1, ``</think>`` is several tokens, ``eos_token_id`` a list that includes the end of turn, the tied
head stored as a tensor of its own, ``dtype`` instead of ``torch_dtype``. The iLLaDA rehearsals end
an assistant turn with ``<|im_end|>``, which is not EOS: the stop rule must come from the
template.

Running the real branch on a CPU, and on a snapshot whose architecture is not the published one,
needs an explicit opt-in: ``MINILLADA_REHEARSAL=1`` (``rehearsal_allowed``). Without it a CPU
takes the stand-in branch and a wrong architecture is refused, so nobody gets either by accident;
with it every report says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from minillada.checkpoints.dialects import ILLADA_INFO
from minillada.checkpoints.hf import save_hf_checkpoint
from minillada.checkpoints.standins import TOKENIZER_TEXT
from minillada.data import bpe
from minillada.data.chat import LLADA_CHAT_TEMPLATE, LLADA_SPECIAL_TOKENS
from minillada.models.llada import LLaDAModel, preset

REHEARSAL_ENV = "MINILLADA_REHEARSAL"
HUB_ORG = "GSAI-ML"
REHEARSAL_NAMES = ("iLLaDA-8B-Instruct", "iLLaDA-8B-Base", "LLaDA-8B-Instruct", "LLaDA-8B-Base")
LAYOUTS = ("local", "hub-cache")
TRANSFORMERS_VERSION = "4.57.1"


def rehearsal_allowed() -> bool:
    """True when MINILLADA_REHEARSAL=1: lesson 7's real branch may run on the CPU and on a snapshot
    whose architecture differs from the published one (reported, not refused)."""
    return os.environ.get(REHEARSAL_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


# iLLaDA-like special tokens: the mask at id 5, as the paper publishes; the end of a chat turn is
# <|im_end|>, not EOS, so that nothing can stop answers by assuming EOS or LLaDA's <|eot_id|>.
_ILLADA_SPECIALS = (
    "<|begin_of_text|>",
    "<|endoftext|>",
    "<|pad|>",
    "<|im_start|>",
    "<|im_end|>",
    "<[MASK]>",
    "<think>",
)
_THINK_END = "</think>"
ILLADA_REHEARSAL_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('Conversation roles must be system, user or assistant, not ' + "
    "message['role']) }}"
    "{% endif %}"
    "{% if message['content'] is none %}{% continue %}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n<think>\n' }}{% endif %}"
)


def _illada_files(folder: Path, instruct: bool, variant: int, seed: int) -> None:
    specials = _ILLADA_SPECIALS + ((_THINK_END,) if variant == 0 else ())
    tokenizer = bpe.train_bpe_fast(TOKENIZER_TEXT, 512, specials, True)
    eos, end_of_turn = tokenizer.token_to_id("<|endoftext|>"), tokenizer.token_to_id("<|im_end|>")
    bos, pad = tokenizer.token_to_id("<|begin_of_text|>"), tokenizer.token_to_id("<|pad|>")
    assert tokenizer.token_to_id("<[MASK]>") == 5
    config = preset(
        "illada_1b",
        d_model=64,
        n_layers=4,
        n_heads=4,
        n_kv_heads=2,
        mlp_hidden_size=176,
        vocab_size=512,
        embedding_size=512,
        max_sequence_length=8192,
        rope_theta=500_000.0,  # the rehearsal's own; every value is read back from its files
        rms_norm_eps=1e-5,
        eos_token_id=eos,
        pad_token_id=pad,
        mask_token_id=None,  # like the real config.json (we expect), which names no mask
    )
    dtype_key = "torch_dtype" if variant == 0 else "dtype"
    info = {k: v for k, v in ILLADA_INFO.items() if k != "torch_dtype"}
    config.hf_extra = {
        **info,
        dtype_key: "bfloat16",
        "bos_token_id": bos,
        "head_dim": 16,
        "initializer_range": 0.02,
        "layer_norm_eps": None,
        "pretraining_tp": 1,
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": False,
    }
    model = LLaDAModel(config, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():  # the mask is never an answer (a trained model learns that)
        model.transformer.wte.weight[5] = 0.0
    tilt_towards(model, end_of_turn if instruct else eos)
    save_hf_checkpoint(
        model, folder, num_shards=3, dtype=torch.bfloat16, store_tied_head=variant == 1
    )
    if variant == 1:  # config.json: EOS as a list that includes the end of turn
        path = folder / "config.json"
        raw = json.loads(path.read_text())
        raw["eos_token_id"] = [eos, end_of_turn]
        path.write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
    bpe.save_tokenizer(
        tokenizer,
        folder,
        bos_token="<|begin_of_text|>",
        eos_token="<|endoftext|>",
        chat_template=ILLADA_REHEARSAL_TEMPLATE if instruct else None,
    )
    _set_pad(folder, "<|pad|>")
    _write_generation_config(
        folder,
        TRANSFORMERS_VERSION,
        bos_token_id=bos,
        eos_token_id=[eos, end_of_turn] if variant == 1 else eos,
        pad_token_id=pad,
    )


# how much longer the end token's output row is than a random row: long enough that the token wins
# at some positions, so that answers end after 0 to about 100 tokens as a trained model's do (a
# random network otherwise never stops, and every answer would cost the whole budget); measured
# on the iLLaDA rehearsal: scale 2 rarely stops, 6 stops almost at once
END_TILT = 4.0


def tilt_towards(model: LLaDAModel, token: int) -> None:
    """Scale the output-head row of ``token`` (the end of an answer) by ``END_TILT``."""
    with torch.no_grad():
        model.head_weight[token] *= END_TILT


def _write_generation_config(folder: Path, version: str, **ids) -> None:
    """generation_config.json as transformers writes it from a model's config."""
    config = {"_from_model_config": True, **ids, "transformers_version": version}
    (folder / "generation_config.json").write_text(json.dumps(config, indent=2) + "\n")


def _set_pad(folder: Path, pad: str) -> None:
    """The tokenizer files' pad token (minillada's saver pads with EOS, as LLaDA does)."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["pad_token"] = pad
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    path = folder / "special_tokens_map.json"
    special = json.loads(path.read_text())
    special["pad_token"] = {**special["eos_token"], "content": pad}
    path.write_text(json.dumps(special, indent=2, ensure_ascii=False) + "\n")


def _llada_files(folder: Path, instruct: bool, variant: int, seed: int) -> None:
    tokenizer = bpe.train_bpe_fast(TOKENIZER_TEXT, 512, LLADA_SPECIAL_TOKENS, True)
    eos = tokenizer.token_to_id("<|endoftext|>")
    config = preset(
        "llada_1b",
        d_model=64,
        n_layers=4,
        n_heads=4,
        n_kv_heads=4,
        mlp_hidden_size=176,
        vocab_size=512,
        embedding_size=512,
        max_sequence_length=4096,
        eos_token_id=eos,
        pad_token_id=eos,
        mask_token_id=tokenizer.token_to_id("<|mdm_mask|>"),
    )
    model = LLaDAModel(config, generator=torch.Generator().manual_seed(seed))
    tilt_towards(model, tokenizer.token_to_id("<|eot_id|>") if instruct else eos)
    save_hf_checkpoint(model, folder, num_shards=3, dtype=torch.bfloat16)
    path = folder / "config.json"  # the fields of LLaDA's released config.json it does not set
    raw = json.loads(path.read_text())
    raw.setdefault("transformers_version", "4.46.3")
    raw.setdefault("use_cache", False)
    path.write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
    bpe.save_tokenizer(
        tokenizer,
        folder,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        chat_template=LLADA_CHAT_TEMPLATE if instruct else None,
    )
    _write_generation_config(  # LLaDA's was written by transformers 4.38.2
        folder,
        "4.38.2",
        bos_token_id=tokenizer.token_to_id("<|startoftext|>"),
        eos_token_id=[eos] if variant == 1 else eos,
    )


def _to_hub_cache(files: Path, root: Path, name: str) -> Path:
    """Move the files of ``files`` into the hub cache layout under ``root``; the snapshot folder."""
    repo = root / f"models--{HUB_ORG}--{name}"
    if repo.exists():
        shutil.rmtree(repo)
    digest = hashlib.sha1()
    blobs = repo / "blobs"
    blobs.mkdir(parents=True)
    entries = []
    for path in sorted(files.iterdir()):
        data = path.read_bytes()
        # the hub names a large (LFS) file's blob by its sha256 and a small one by its git blob id
        if path.suffix == ".safetensors":
            blob = hashlib.sha256(data).hexdigest()
        else:
            blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        shutil.move(str(path), blobs / blob)
        entries.append((path.name, blob))
        digest.update(f"{path.name} {blob}\n".encode())
    commit = digest.hexdigest()  # a stable 40-hex commit id, as the hub's are
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for fname, blob in entries:
        (snapshot / fname).symlink_to(Path("..", "..", "blobs", blob))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def write_rehearsal(
    name: str, root: str | Path, layout: str = "local", variant: int = 0, seed: int = 0
) -> Path:
    """Write the rehearsal snapshot of the released model ``name`` under ``root`` in ``layout``
    ("local": ``root/<name>/``; "hub-cache": ``root/models--GSAI-ML--<name>/snapshots/<commit>/``)
    and return the snapshot folder. Replaces what was there; deterministic for a seed."""
    if name not in REHEARSAL_NAMES:
        raise ValueError(f"No rehearsal for {name!r}; there are rehearsals for {REHEARSAL_NAMES}.")
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}: choose one of {LAYOUTS}.")
    if variant not in (0, 1):
        raise ValueError(f"variant={variant!r}: choose 0 or 1.")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    write = _illada_files if name.startswith("iLLaDA") else _llada_files
    instruct = name.endswith("Instruct")
    if layout == "local":
        folder = root / name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
        write(folder, instruct, variant, seed)
        return folder
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        write(Path(tmp), instruct, variant, seed)
        return _to_hub_cache(Path(tmp), root, name)


def write_rehearsals(
    root: str | Path,
    layout: str = "local",
    variant: int = 0,
    names: tuple[str, ...] = REHEARSAL_NAMES,
) -> dict[str, Path]:
    """Every rehearsal of ``names`` under ``root`` (what to point $MINILLADA_WEIGHTS_DIR at)."""
    return {n: write_rehearsal(n, root, layout, variant, seed=k) for k, n in enumerate(names)}
