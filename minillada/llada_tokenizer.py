"""LLaDA's tokenizer: a snapshot's tokenizer files loaded with `tokenizers`, and the chat template.

A folder is a Hugging Face snapshot (GSAI-ML/LLaDA-8B-Instruct) or one written by
``minillada.bpe.save_tokenizer``; both load the same way:

- ``tokenizer.json``: BPE model, pre-tokenizer, decoder, added tokens (to encode and decode);
- ``tokenizer_config.json``: ``added_tokens_decoder`` (id -> special token), the bos/eos/pad
  names, the chat template (required: the special ids are read from here);
- ``special_tokens_map.json``, ``generation_config.json``: optional, cross-checked if present.

Special ids are never hard-coded: only the token *names* are LLaDA's (``<|mdm_mask|>``, ...);
their ids come from the files (for the released model: 126080 BOS, 126081 EOS = pad, 126336
mask, 126346/126347 header start/end, 126348 end of turn). The Instruct chat template is
rendered in plain Python (``render_chat``), with no Jinja at runtime.

Shapes: B = batch size, L = length of the longest sequence in the batch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from tokenizers import Tokenizer

from minillada.bpe import (
    BOS_TOKEN,
    END_HEADER_TOKEN,
    EOS_TOKEN,
    EOT_TOKEN,
    MASK_TOKEN,
    START_HEADER_TOKEN,
)

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_MAP_FILE = "special_tokens_map.json"
GENERATION_CONFIG_FILE = "generation_config.json"
HOW_TO_GET = (
    "Point at a snapshot of GSAI-ML/LLaDA-8B-Instruct (`huggingface-cli download "
    "GSAI-ML/LLaDA-8B-Instruct --local-dir <folder>`) or at a folder written by "
    "minillada.bpe.save_tokenizer."
)


class TokenizerFilesError(ValueError):
    """A tokenizer folder is missing a file or a special token, or its files disagree."""


@dataclass(frozen=True)
class SpecialTokenIds:
    """The ids of LLaDA's special tokens, as read from a tokenizer folder."""

    bos: int  # <|startoftext|>: starts every chat prompt
    eos: int  # <|endoftext|>: end of text; the Instruct model pads its answers with it
    pad: int  # the padding id of batches (LLaDA: = eos; never the mask id)
    mask: int  # <|mdm_mask|>: the diffusion mask
    start_header: (
        int | None
    )  # <|start_header_id|> (None where the files lack it, e.g. a Base tokenizer)
    end_header: int | None  # <|end_header_id|>
    eot: int | None  # <|eot_id|>: end of a chat turn


class EncodedBatch(NamedTuple):
    """A left-padded batch: real tokens at the right end of each row."""

    input_ids: torch.Tensor  # (B, L) long; padding positions hold the pad id
    attention_mask: torch.Tensor  # (B, L) long; 1 on real tokens, 0 on padding


def _read_json(path: Path, required: bool) -> dict | None:
    """A JSON file of the folder, or None when an optional one is absent."""
    if not path.is_file():
        if required:
            raise TokenizerFilesError(
                f"Expected {path.name} in {path.parent}, found no such file. {HOW_TO_GET}"
            )
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise TokenizerFilesError(
            f"{path} is not valid JSON ({err}); download it again or re-save the tokenizer."
        ) from err


def _token_name(value: str | Mapping | None) -> str | None:
    """A special token as written in the configs: a plain string or {"content": ...}."""
    if isinstance(value, Mapping):
        return value.get("content")
    return value


def read_special_token_ids(folder: str | Path) -> SpecialTokenIds:
    """Special ids from tokenizer_config.json's added_tokens_decoder (no tokenizer.json needed)."""
    folder = Path(folder)
    config = _read_json(folder / CONFIG_FILE, required=True)
    special_map = _read_json(folder / SPECIAL_MAP_FILE, required=False) or {}
    decoder = config.get("added_tokens_decoder")
    if not decoder:
        raise TokenizerFilesError(
            f"{folder / CONFIG_FILE} has no 'added_tokens_decoder' (the table id -> special "
            f"token); found keys {sorted(config)}. Re-save the tokenizer with a recent "
            f"`transformers` or with minillada.bpe.save_tokenizer."
        )
    id_of = {entry["content"]: int(i) for i, entry in decoder.items()}

    def lookup(token: str | None, what: str, required: bool = True) -> int | None:
        if token in id_of:
            return id_of[token]
        if not required:
            return None
        raise TokenizerFilesError(
            f"{folder / CONFIG_FILE}: expected the {what} token {token!r} in "
            f"added_tokens_decoder, found {len(id_of)} added tokens ({sorted(id_of)[:8]}...). "
            f"LLaDA's tokenizer registers it; train your own with it in special_tokens "
            f"(minillada.bpe.LLADA_SPECIAL_TOKENS)."
        )

    def name(key: str, default: str | None) -> str | None:
        return _token_name(config.get(key)) or _token_name(special_map.get(key)) or default

    bos_name, eos_name = name("bos_token", None), name("eos_token", None)
    for key, found in (("bos_token", bos_name), ("eos_token", eos_name)):
        if found is None:
            raise TokenizerFilesError(
                f"Neither {CONFIG_FILE} nor {SPECIAL_MAP_FILE} in {folder} names a {key!r}; "
                f"LLaDA's name them {BOS_TOKEN!r} and {EOS_TOKEN!r}. Add the key or re-save "
                f"the tokenizer."
            )
    ids = SpecialTokenIds(
        bos=lookup(bos_name, "bos"),
        eos=lookup(eos_name, "eos"),
        pad=lookup(name("pad_token", eos_name), "pad"),  # LLaDA pads with EOS
        mask=lookup(MASK_TOKEN, "mask"),
        start_header=lookup(START_HEADER_TOKEN, "start-header", required=False),
        end_header=lookup(END_HEADER_TOKEN, "end-header", required=False),
        eot=lookup(EOT_TOKEN, "end-of-turn", required=False),
    )
    if ids.pad == ids.mask:
        raise TokenizerFilesError(
            f"{folder / CONFIG_FILE}: the pad token is the mask token (id {ids.mask}); padding "
            f"would be read as positions to denoise. Set pad_token to the EOS token "
            f"{eos_name!r}, as LLaDA does."
        )
    _check_generation_config(folder, ids)
    return ids


def _check_generation_config(folder: Path, ids: SpecialTokenIds) -> None:
    """generation_config.json, when present, must name the same BOS and EOS ids."""
    gen = _read_json(folder / GENERATION_CONFIG_FILE, required=False)
    if gen is None:
        return
    eos = gen.get("eos_token_id")
    eos_ids = eos if isinstance(eos, list) else [eos]
    problems = []
    if gen.get("bos_token_id") not in (None, ids.bos):
        problems.append(f"bos_token_id {gen['bos_token_id']} (tokenizer: {ids.bos})")
    if eos is not None and ids.eos not in eos_ids:
        problems.append(f"eos_token_id {eos} (tokenizer: {ids.eos})")
    if problems:
        raise TokenizerFilesError(
            f"{folder / GENERATION_CONFIG_FILE} disagrees with {CONFIG_FILE}: "
            f"{'; '.join(problems)}. The two files come from different models; use one "
            f"snapshot's files together."
        )


def render_chat(messages: Sequence[Mapping[str, str]], bos_token: str = BOS_TOKEN) -> str:
    """LLaDA-8B-Instruct's chat template: BOS, header+content+EOT per turn, assistant header."""
    parts = []
    for k, message in enumerate(messages):
        if not isinstance(message, Mapping) or not {"role", "content"} <= set(message):
            raise ValueError(
                f"messages[{k}] should be a dict with 'role' and 'content', found "
                f"{message!r}; e.g. {{'role': 'user', 'content': 'Hello'}}."
            )
        if k == 0:
            parts.append(bos_token)  # only before the first message
        content = message["content"].strip()  # the template trims the content only, not the role
        parts.append(
            f"{START_HEADER_TOKEN}{message['role']}{END_HEADER_TOKEN}\n\n{content}{EOT_TOKEN}"
        )
    # Appended whatever the caller asks: the released template ignores add_generation_prompt.
    parts.append(f"{START_HEADER_TOKEN}assistant{END_HEADER_TOKEN}\n\n")
    return "".join(parts)


def pad_left(sequences: Sequence[Sequence[int]], pad_id: int) -> EncodedBatch:
    """Right-align token lists in one (B, L) tensor, padded on the left as LLaDA's sampler wants."""
    if len(sequences) == 0:
        raise ValueError("pad_left needs at least one sequence, got an empty batch.")
    longest = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)  # (B, L)
    attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)  # (B, L)
    for row, seq in enumerate(sequences):
        if len(seq):
            input_ids[row, longest - len(seq) :] = torch.as_tensor(list(seq), dtype=torch.long)
            attention_mask[row, longest - len(seq) :] = 1
    return EncodedBatch(input_ids, attention_mask)


class LLaDATokenizer:
    """A `tokenizers.Tokenizer` with LLaDA's special ids, chat template and left-padded batches."""

    def __init__(self, tokenizer: Tokenizer, special: SpecialTokenIds, config: dict) -> None:
        if special.pad == special.mask:
            raise TokenizerFilesError(
                f"pad id {special.pad} equals the mask id; pad with EOS instead."
            )
        self.tokenizer = tokenizer
        self.special = special
        self.config = config

    @classmethod
    def from_folder(cls, folder: str | Path) -> LLaDATokenizer:
        """Load tokenizer.json + tokenizer_config.json (+ optional files) from a snapshot folder."""
        folder = Path(folder)
        if not folder.is_dir():
            raise TokenizerFilesError(
                f"Expected a tokenizer folder, {folder} is not one. {HOW_TO_GET}"
            )
        special = read_special_token_ids(folder)
        path = folder / TOKENIZER_FILE
        if not path.is_file():
            raise TokenizerFilesError(
                f"Expected {TOKENIZER_FILE} in {folder} (the BPE model itself), found no such "
                f"file; {CONFIG_FILE} alone gives the special ids (read_special_token_ids) but "
                f"cannot encode. {HOW_TO_GET}"
            )
        tokenizer = Tokenizer.from_file(str(path))
        config = _read_json(folder / CONFIG_FILE, required=True)
        for field_name, token in [
            ("bos", _token_name(config.get("bos_token")) or BOS_TOKEN),
            ("eos", _token_name(config.get("eos_token")) or EOS_TOKEN),
            ("mask", MASK_TOKEN),
            ("start_header", START_HEADER_TOKEN),
            ("end_header", END_HEADER_TOKEN),
            ("eot", EOT_TOKEN),
        ]:
            expected = getattr(special, field_name)
            if expected is not None and tokenizer.token_to_id(token) != expected:
                raise TokenizerFilesError(
                    f"{path} gives {token!r} the id {tokenizer.token_to_id(token)}, but "
                    f"{folder / CONFIG_FILE} says {expected}: the files come from different "
                    f"tokenizers. Use one snapshot's files together."
                )
        return cls(tokenizer, special, config)

    @property
    def vocab_size(self) -> int:
        """Learned vocabulary plus added tokens (LLaDA's model has more embedding rows: 126464)."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def bos_id(self) -> int:
        """Id of <|startoftext|>."""
        return self.special.bos

    @property
    def eos_id(self) -> int:
        """Id of <|endoftext|>."""
        return self.special.eos

    @property
    def pad_id(self) -> int:
        """Id used to pad batches (EOS)."""
        return self.special.pad

    @property
    def mask_id(self) -> int:
        """Id of <|mdm_mask|>, the diffusion mask."""
        return self.special.mask

    @property
    def eot_id(self) -> int:
        """Id of <|eot_id|>, the end of a chat turn."""
        return self._chat_id("eot", EOT_TOKEN)

    def _chat_id(self, field_name: str, token: str) -> int:
        """A chat token's id, or an error saying the files do not register it."""
        value = getattr(self.special, field_name)
        if value is None:
            raise TokenizerFilesError(
                f"{CONFIG_FILE} registers no {token!r} (no chat tokens: a Base tokenizer?). "
                f"Use the Instruct snapshot's tokenizer files for chat."
            )
        return value

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        """Text -> ids; special tokens written in the text become their ids; no BOS unless asked."""
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        return [self.bos_id, *ids] if add_bos else ids

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = False) -> str:
        """Ids -> text; skip_special_tokens drops BOS/EOS/mask/header/EOT, as LLaDA's chat does."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def batch_encode(self, texts: Sequence[str], add_bos: bool = False) -> EncodedBatch:
        """Encode several texts into one left-padded (B, L) batch with its attention mask."""
        if isinstance(texts, str):
            raise TypeError("batch_encode takes a list of strings; for one text use encode(text).")
        return self.pad_left([self.encode(t, add_bos=add_bos) for t in texts])

    def pad_left(self, sequences: Sequence[Sequence[int]]) -> EncodedBatch:
        """Left-pad token lists with this tokenizer's pad id (EOS)."""
        return pad_left(sequences, self.pad_id)

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, str]],
        tokenize: bool = False,
        add_generation_prompt: bool = True,
    ) -> str | list[int]:
        """The Instruct prompt for ``messages``: a string, or its ids with ``tokenize=True``.

        ``add_generation_prompt`` is accepted for compatibility and ignored, as LLaDA's own
        template ignores it: the assistant header is always appended.
        """
        for field_name, token in [
            ("start_header", START_HEADER_TOKEN),
            ("end_header", END_HEADER_TOKEN),
            ("eot", EOT_TOKEN),
        ]:
            self._chat_id(field_name, token)
        bos_token = _token_name(self.config.get("bos_token")) or BOS_TOKEN
        text = render_chat(messages, bos_token=bos_token)
        return self.encode(text) if tokenize else text
