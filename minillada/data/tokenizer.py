"""The tokenizers of LLaDA and iLLaDA: a snapshot's tokenizer files loaded with `tokenizers`, its
special ids, its stop rules and its own chat template.

A folder is a Hugging Face snapshot (GSAI-ML/LLaDA-8B-Instruct, GSAI-ML/iLLaDA-8B-Instruct, the Base
models) or one written by ``minillada.data.bpe.save_tokenizer``; all load the same way:

- ``tokenizer.json``: BPE model, pre-tokenizer, decoder, added tokens (to encode and decode);
- ``tokenizer_config.json``: ``added_tokens_decoder`` (id -> special token), the bos/eos/pad
  names, and for an Instruct model the Jinja ``chat_template``;
- ``special_tokens_map.json``, ``generation_config.json``, ``config.json``: optional, read and
  cross-checked if present (a tokenizer-only folder has none of the last two).

Special ids are never hard-coded. BOS, EOS and PAD are the tokens the config files name. The
diffusion mask is found by its string: LLaDA's ``<|mdm_mask|>`` (126336 in the released files) or
iLLaDA's ``<[MASK]>``, which must have the id the iLLaDA paper publishes, 5, or is given by the
caller (``mask_id=`` / ``mask_token=``), and then must agree with the files. LLaDA's 126336 is an
ordinary token of iLLaDA's vocabulary, so a wrong mask id is refused, never used.

Stop rules, each read from the files (``LLaDATokenizer``):

- ``eos_ids``: the EOS tokenizer_config.json names, then every ``eos_token_id`` of config.json and
  of generation_config.json (an id or a list of ids), without repeats;
- ``end_of_turn``: the special token the snapshot's chat template writes right after an assistant
  message (LLaDA's ``<|eot_id|>``, ChatML's ``<|im_end|>``, or EOS), found by rendering a finished
  conversation; None without a template or when it writes none (``end_of_turn_reason`` says why);
- ``stop_ids``: ``eos_ids``, LLaDA's ``<|eot_id|>`` when the files register it, and the end of turn;
- ``think_end_ids`` / ``thinks``: ``</think>``, one token or, for a model whose files mention
  ``<think>``, the ids its text encodes to.

Before anything heavy is read the files are checked against each other: config.json's BOS and EOS
and generation_config.json's against the tokenizer's, and generation_config.json's EOS ids must
hold config.json's; files that disagree come from different snapshots and are refused.

Shapes: B = batch size, L = length of the longest sequence in the batch.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from tokenizers import Tokenizer

from minillada.data.chat import (
    END_HEADER_TOKEN,
    EOT_TOKEN,
    MASK_TOKEN,
    START_HEADER_TOKEN,
    THINK_END,
    THINK_START,
    ChatTemplateError,
    merge_system_into_user,
    render_jinja_chat,
)

# The diffusion mask of each released family, by string -> the id its paper publishes (None: the
# files decide). Neither family declares its mask as Hugging Face's `mask_token`.
ILLADA_MASK_TOKEN = "<[MASK]>"
MASK_TOKENS: dict[str, int | None] = {MASK_TOKEN: None, ILLADA_MASK_TOKEN: 5}

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_MAP_FILE = "special_tokens_map.json"
GENERATION_CONFIG_FILE = "generation_config.json"
MODEL_CONFIG_FILE = "config.json"  # the model's config: its eos_token_id / bos_token_id, if any
# The special tokens transformers passes a chat template by name (its SPECIAL_TOKENS_ATTRIBUTES);
# which of them a tokenizer has, and their strings, come from its files.
SPECIAL_TOKEN_KEYS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
    "additional_special_tokens",
)
# The assistant's text in the conversation rendered to find the end of turn: plain ASCII without
# spaces, so that templates that trim or escape the content leave it as it is.
END_OF_TURN_PROBE = "MINILLADA-END-OF-TURN-PROBE"
HOW_TO_GET = (
    "Point at a snapshot of GSAI-ML/iLLaDA-8B-Instruct or GSAI-ML/LLaDA-8B-Instruct "
    "(`huggingface-cli download GSAI-ML/iLLaDA-8B-Instruct --local-dir <folder>`) "
    "or at a folder written by minillada.data.bpe.save_tokenizer."
)


class TokenizerFilesError(ValueError):
    """A tokenizer folder is missing a file or a special token, or its files disagree."""


@dataclass(frozen=True)
class SpecialTokenIds:
    """The ids of the special tokens, as read from a tokenizer folder."""

    bos: int | None  # LLaDA's <|startoftext|>: starts every chat prompt (None: the files name none)
    eos: int  # end of text; LLaDA's Instruct model pads its answers with it
    pad: int  # the padding id of batches (LLaDA: = eos; never the mask id)
    mask: int  # the diffusion mask (<|mdm_mask|> for LLaDA, <[MASK]> = 5 for iLLaDA)
    # <|start_header_id|> (None where the files lack it, e.g. a Base tokenizer)
    start_header: int | None
    end_header: int | None  # <|end_header_id|>
    eot: int | None  # <|eot_id|>: end of a chat turn
    mask_token: str = MASK_TOKEN  # the mask's string, as found in the files


class EndOfTurn(NamedTuple):
    """The token a chat template writes after an assistant message."""

    token: str  # e.g. LLaDA's "<|eot_id|>"
    id: int  # its id in tokenizer.json


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


def _token_ids(folder: Path, config: dict) -> dict[str, int]:
    """Every special or added token the files know, string -> id: tokenizer_config.json's
    added_tokens_decoder, completed by tokenizer.json's added tokens and vocabulary when the
    decoder holds no known mask token."""
    decoder = config.get("added_tokens_decoder")
    if not decoder:
        raise TokenizerFilesError(
            f"{folder / CONFIG_FILE} has no 'added_tokens_decoder' (the table id -> special "
            f"token); found keys {sorted(config)}. Re-save the tokenizer with a recent "
            "`transformers` or with minillada.data.bpe.save_tokenizer."
        )
    id_of = {entry["content"]: int(i) for i, entry in decoder.items()}
    if any(name in id_of for name in MASK_TOKENS):
        return id_of  # the usual case: no need to parse the (6 MB) tokenizer.json as well
    tokenizer_json = _read_json(folder / TOKENIZER_FILE, required=False) or {}
    for entry in tokenizer_json.get("added_tokens", []):
        id_of.setdefault(entry["content"], int(entry["id"]))
    vocab = (tokenizer_json.get("model") or {}).get("vocab") or {}
    for name in MASK_TOKENS:  # a mask may also be an ordinary entry of the learned vocabulary
        if isinstance(vocab, dict) and name in vocab:
            id_of.setdefault(name, int(vocab[name]))
    return id_of


def _find_mask(
    folder: Path, id_of: dict[str, int], mask_token: str | None, mask_id: int | None
) -> tuple[str, int]:
    """The diffusion mask (string, id): found by its string, checked against the id its paper
    publishes and against the id the caller passed."""
    names = [mask_token] if mask_token is not None else [m for m in MASK_TOKENS if m in id_of]
    found = [(name, id_of[name]) for name in names if name in id_of]
    if not found:
        if mask_token is not None:
            raise TokenizerFilesError(
                f"The tokenizer files in {folder} have no token {mask_token!r}; pass the mask "
                "token as it is spelled in tokenizer.json, or mask_id=."
            )
        if mask_id is None:
            raise TokenizerFilesError(
                f"No diffusion mask token in {folder}: expected one of {list(MASK_TOKENS)} (LLaDA, "
                "iLLaDA) in the added tokens. Pass mask_id= (or mask_token=) if this model uses "
                "another one."
            )
        return f"<id {mask_id}>", mask_id
    name, found_id = found[0]
    published = MASK_TOKENS.get(name)
    if published is not None and found_id != published:
        raise TokenizerFilesError(
            f"{folder}: {name!r} has the id {found_id}, but iLLaDA's paper and README give the "
            f"mask id {published}. These files do not belong to the released model; pass "
            "mask_id= explicitly if you know better."
        )
    if mask_id is not None and mask_id != found_id:
        raise TokenizerFilesError(
            f"You passed mask_id={mask_id}, but the tokenizer files in {folder} give the mask "
            f"token {name!r} the id {found_id}. Sampling with another id would be silently wrong "
            f"(LLaDA's 126336 is an ordinary word for iLLaDA); use mask_id={found_id}."
        )
    return name, found_id


def read_special_token_ids(
    folder: str | Path, mask_token: str | None = None, mask_id: int | None = None
) -> SpecialTokenIds:
    """Special ids from the tokenizer files of ``folder`` (tokenizer.json only completes them).

    BOS, EOS and PAD are the tokens the config files name (PAD defaults to EOS, as LLaDA pads);
    the mask is found by its string (``MASK_TOKENS``, or ``mask_token``) and checked; LLaDA's chat
    tokens are looked up when present.
    """
    folder = Path(folder)
    config = _read_json(folder / CONFIG_FILE, required=True)
    special_map = _read_json(folder / SPECIAL_MAP_FILE, required=False) or {}
    id_of = _token_ids(folder, config)

    def lookup(token: str | None, what: str, required: bool = True) -> int | None:
        if token in id_of:
            return id_of[token]
        if not required or token is None:
            return None
        raise TokenizerFilesError(
            f"{folder / CONFIG_FILE}: expected the {what} token {token!r} in "
            f"added_tokens_decoder, found {len(id_of)} added tokens ({sorted(id_of)[:8]}...). "
            "Use the snapshot's own files, or train your tokenizer with it in special_tokens "
            "(minillada.data.chat.LLADA_SPECIAL_TOKENS)."
        )

    def name(key: str, default: str | None) -> str | None:
        return _token_name(config.get(key)) or _token_name(special_map.get(key)) or default

    bos_name, eos_name = name("bos_token", None), name("eos_token", None)
    if eos_name is None:
        raise TokenizerFilesError(
            f"Neither {CONFIG_FILE} nor {SPECIAL_MAP_FILE} in {folder} names an 'eos_token' "
            "(LLaDA's is '<|endoftext|>'); add the key or re-save the tokenizer."
        )
    mask_name, mask = _find_mask(folder, id_of, mask_token, mask_id)
    ids = SpecialTokenIds(
        bos=lookup(bos_name, "bos"),
        eos=lookup(eos_name, "eos"),
        pad=lookup(name("pad_token", eos_name), "pad"),  # LLaDA pads with EOS
        mask=mask,
        start_header=lookup(START_HEADER_TOKEN, "start-header", required=False),
        end_header=lookup(END_HEADER_TOKEN, "end-header", required=False),
        eot=lookup(EOT_TOKEN, "end-of-turn", required=False),
        mask_token=mask_name,
    )
    if ids.pad == ids.mask:
        raise TokenizerFilesError(
            f"{folder / CONFIG_FILE}: the pad token is the mask token (id {ids.mask}); padding "
            "would be read as positions to denoise. "
            f"Set pad_token to the EOS token {eos_name!r}, as LLaDA does."
        )
    roles = [
        ("bos", bos_name, ids.bos),
        ("eos", eos_name, ids.eos),
        ("start-header", START_HEADER_TOKEN, ids.start_header),
        ("end-header", END_HEADER_TOKEN, ids.end_header),
        ("end-of-turn", EOT_TOKEN, ids.eot),
    ]
    for what, token, found in roles:
        if found == ids.mask:  # only possible for a mask given by id: the files' ids are distinct
            raise TokenizerFilesError(
                f"The mask id {ids.mask} is also the id of the {what} token {token!r} in "
                f"{folder / CONFIG_FILE}; a model cannot read one id as both. Pass the mask's own "
                "id (mask_id=) or its string as tokenizer.json spells it (mask_token=)."
            )
    model_path, gen_path = folder / MODEL_CONFIG_FILE, folder / GENERATION_CONFIG_FILE
    model_config = _read_json(model_path, required=False)
    _check_model_config(model_path, folder, ids, model_config)
    _check_generation_config(gen_path, ids, _read_json(gen_path, required=False), model_config)
    return ids


def _eos_ids_in(data: Mapping | None, path: Path) -> list[int]:
    """The ``eos_token_id`` of a config file (an id or a list of ids), as a list; [] when the file
    or the key is absent, or null."""
    value = None if data is None else data.get("eos_token_id")
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise TokenizerFilesError(
            f"{path}: expected eos_token_id to be an id or a list of ids, found {value!r}. "
            "Download the file again, or fix the value by hand."
        )
    return values


def _check_model_config(path: Path, folder: Path, ids: SpecialTokenIds, hf: Mapping | None) -> None:
    """config.json (``hf``, read from ``path``), when present, must name the tokenizer's BOS (if it
    names one) and hold its EOS among its eos ids (if it names any)."""
    if hf is None:
        return
    problems = []
    if hf.get("bos_token_id") is not None and hf["bos_token_id"] != ids.bos:
        problems.append(f"bos_token_id {hf['bos_token_id']} (tokenizer: {ids.bos})")
    eos = _eos_ids_in(hf, path)
    if eos and ids.eos not in eos:
        problems.append(f"eos_token_id {hf['eos_token_id']} (tokenizer: {ids.eos})")
    if problems:
        raise TokenizerFilesError(
            f"{path} disagrees with {folder / CONFIG_FILE}: {'; '.join(problems)}. The model and "
            "the tokenizer come from different snapshots; use one snapshot's files together."
        )


def _check_generation_config(
    path: Path, ids: SpecialTokenIds, gen: Mapping | None, model_config: Mapping | None
) -> None:
    """generation_config.json (``gen``, read from ``path``), when present, must name the same BOS
    and EOS ids as the tokenizer, and every eos id of config.json (``model_config``)."""
    if gen is None:
        return
    eos = gen.get("eos_token_id")
    eos_ids = _eos_ids_in(gen, path)
    problems = []
    if gen.get("bos_token_id") not in (None, ids.bos):
        problems.append(f"bos_token_id {gen['bos_token_id']} (tokenizer: {ids.bos})")
    if eos is not None and ids.eos not in eos_ids:
        problems.append(f"eos_token_id {eos} (tokenizer: {ids.eos})")
    if problems:
        raise TokenizerFilesError(
            f"{path} disagrees with {CONFIG_FILE}: "
            f"{'; '.join(problems)}. The two files come from different models; "
            f"use one snapshot's files together."
        )
    model_path = path.with_name(MODEL_CONFIG_FILE)
    model_eos = _eos_ids_in(model_config, model_path)
    missing = [i for i in model_eos if i not in eos_ids]
    if eos is not None and missing:
        raise TokenizerFilesError(
            f"{path} gives eos_token_id {eos}, but {model_path} gives {model_eos}: the "
            f"generation config lacks {missing}, so the two files disagree on where an answer "
            "ends. They come from different snapshots; use one snapshot's files together."
        )


def read_eos_ids(folder: str | Path, eos: int) -> list[int]:
    """``eos`` (the tokenizer's EOS) and then every ``eos_token_id`` of the folder's config.json
    and generation_config.json (when present), without repeats."""
    folder = Path(folder)
    found = [eos]
    for name in (MODEL_CONFIG_FILE, GENERATION_CONFIG_FILE):
        found += _eos_ids_in(_read_json(folder / name, required=False), folder / name)
    return list(dict.fromkeys(found))


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
    """A `tokenizers.Tokenizer` with LLaDA's special ids, stop rules, chat template and
    left-padded batches.

    ``special_map`` is special_tokens_map.json's content ({} without one); ``eos_ids`` the ids that
    end a text (``read_eos_ids``; default: the tokenizer's EOS alone).
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        special: SpecialTokenIds,
        config: dict,
        special_map: Mapping[str, Any] | None = None,
        eos_ids: Sequence[int] | None = None,
    ) -> None:
        if special.pad == special.mask:
            raise TokenizerFilesError(
                f"pad id {special.pad} equals the mask id; pad with EOS instead."
            )
        self.tokenizer = tokenizer
        self.special = special
        self.config = config
        self.special_map = dict(special_map or {})
        self._eos_ids = list(dict.fromkeys([special.eos, *(eos_ids or [])]))

    @classmethod
    def from_folder(
        cls, folder: str | Path, mask_token: str | None = None, mask_id: int | None = None
    ) -> LLaDATokenizer:
        """Load tokenizer.json + tokenizer_config.json (+ optional files) from a snapshot folder;
        ``mask_token`` / ``mask_id`` name the diffusion mask when the files alone cannot (they are
        checked against the files either way)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise TokenizerFilesError(
                f"Expected a tokenizer folder, {folder} is not one. {HOW_TO_GET}"
            )
        special = read_special_token_ids(folder, mask_token=mask_token, mask_id=mask_id)
        path = folder / TOKENIZER_FILE
        if not path.is_file():
            raise TokenizerFilesError(
                f"Expected {TOKENIZER_FILE} in {folder} (the BPE model itself), "
                f"found no such file; {CONFIG_FILE} alone gives the special ids "
                f"(read_special_token_ids) but cannot encode. {HOW_TO_GET}"
            )
        tokenizer = Tokenizer.from_file(str(path))
        config = _read_json(folder / CONFIG_FILE, required=True)
        special_map = _read_json(folder / SPECIAL_MAP_FILE, required=False) or {}
        for field_name, token in [
            ("bos", _token_name(config.get("bos_token"))),
            ("eos", _token_name(config.get("eos_token"))),
            ("mask", special.mask_token),
            ("start_header", START_HEADER_TOKEN),
            ("end_header", END_HEADER_TOKEN),
            ("eot", EOT_TOKEN),
        ]:
            expected = getattr(special, field_name)
            if token is None or expected is None or token.startswith("<id "):
                continue
            if tokenizer.token_to_id(token) != expected:
                raise TokenizerFilesError(
                    f"{path} gives {token!r} the id {tokenizer.token_to_id(token)}, but "
                    f"{folder / CONFIG_FILE} says {expected}: the files come from different "
                    f"tokenizers. Use one snapshot's files together."
                )
        return cls(tokenizer, special, config, special_map, read_eos_ids(folder, special.eos))

    @property
    def vocab_size(self) -> int:
        """Learned vocabulary plus added tokens (LLaDA's model has more embedding rows: 126464)."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def bos_id(self) -> int:
        """Id of the BOS token the files name (LLaDA: <|startoftext|>)."""
        if self.special.bos is None:
            raise TokenizerFilesError(f"{CONFIG_FILE} names no bos_token for this tokenizer.")
        return self.special.bos

    @property
    def eos_id(self) -> int:
        """Id of the EOS token the files name (LLaDA: <|endoftext|>)."""
        return self.special.eos

    @property
    def pad_id(self) -> int:
        """Id used to pad batches (EOS)."""
        return self.special.pad

    @property
    def mask_id(self) -> int:
        """Id of the diffusion mask (LLaDA's <|mdm_mask|>, iLLaDA's <[MASK]>)."""
        return self.special.mask

    @property
    def eos_ids(self) -> list[int]:
        """Ids that end a text: the tokenizer's EOS first, then the eos_token_id of config.json
        and of generation_config.json when the folder has them (``read_eos_ids``)."""
        return list(self._eos_ids)

    @property
    def end_of_turn(self) -> EndOfTurn | None:
        """(token, id) the snapshot's chat template writes right after an assistant message
        (LLaDA's <|eot_id|>, ChatML's <|im_end|>, or EOS), or None: no template, or it writes no
        special token there, or it cannot render an assistant turn; ``end_of_turn_reason`` says
        which."""
        return self._end_of_turn[0]

    @property
    def end_of_turn_reason(self) -> str | None:
        """Why ``end_of_turn`` is None (None when it was found): no chat template, what the
        template writes after an assistant message instead, or the error it raised."""
        return self._end_of_turn[1]

    @functools.cached_property
    def _end_of_turn(self) -> tuple[EndOfTurn | None, str | None]:
        """Render [user, assistant: END_OF_TURN_PROBE] without a generation prompt and read the
        first special or added token after the probe (whitespace before it is allowed); only the
        first, since some templates (LLaDA's) append the assistant header whatever they are told."""
        template = self.chat_template
        if template is None:
            return None, f"{CONFIG_FILE} has no chat_template (a Base model's tokenizer)"
        probe = [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": END_OF_TURN_PROBE},
        ]
        try:
            text = self._render(template, probe, add_generation_prompt=False)
        except Exception as err:  # a foreign template may fail in any way: "unknown", not a crash
            return None, (
                "the chat template cannot render a finished conversation (user, assistant): "
                f"{type(err).__name__}: {err}"
            )
        at = text.rfind(END_OF_TURN_PROBE)
        if at < 0:
            return None, "the chat template does not write the assistant's content"
        tail = text[at + len(END_OF_TURN_PROBE) :]
        added = {t.content: i for i, t in self.tokenizer.get_added_tokens_decoder().items()}
        starts = [token for token in added if token and tail.lstrip().startswith(token)]
        if not starts:
            return None, (
                f"the chat template writes {tail[:40]!r} after an assistant message, which does "
                "not start with a special or added token"
            )
        token = max(starts, key=len)  # as the tokenizer matches added tokens: the longest wins
        return EndOfTurn(token, added[token]), None

    @property
    def stop_ids(self) -> list[int]:
        """Ids that end an answer: ``eos_ids``, LLaDA's <|eot_id|> where the files register it,
        and the ``end_of_turn`` the chat template writes; without repeats, in that order."""
        eot = self.end_of_turn
        found = [*self.eos_ids, self.special.eot, None if eot is None else eot.id]
        return list(dict.fromkeys(i for i in found if i is not None))

    @functools.cached_property
    def _think_end(self) -> tuple[list[int] | None, str]:
        """The ids of ``</think>``, or None and why not (see ``think_end_ids``); worked out once."""
        one = self.tokenizer.token_to_id(THINK_END)
        if one is not None:
            return [one], ""
        ids = self.encode(THINK_END)
        if self.decode(ids) != THINK_END:
            return None, f", and its encoding {ids} does not decode back to {THINK_END!r}"
        template = self.chat_template or ""
        if (
            THINK_START in template
            or THINK_END in template
            or self.tokenizer.token_to_id(THINK_START) is not None
        ):
            return ids, ""
        return None, (
            f", and neither its chat template nor its tokens mention {THINK_START!r} or "
            f"{THINK_END!r}"
        )

    @property
    def thinks(self) -> bool:
        """Whether this tokenizer's model closes a reasoning section with ``</think>``: the files
        have it as one token, or its text round-trips and the chat template mentions <think> or
        </think> or the files register <think> (the rule of ``think_end_ids``)."""
        return self._think_end[0] is not None

    @property
    def think_end_ids(self) -> list[int]:
        """The ids of ``</think>``, with which iLLaDA-8B-Instruct closes its reasoning (what the
        end-of-thinking boost pushes; answers are cut on the text): its id when it is one token,
        else the ids its text encodes to when the files say the model thinks (``thinks``); an
        error for a model that does not think."""
        ids, why = self._think_end
        if ids is None:
            raise TokenizerFilesError(
                f"This tokenizer has no {THINK_END!r} token{why}: only a model that reasons "
                "before it answers (iLLaDA-8B-Instruct) closes that with it. Turn the "
                "end-of-thinking boost off (think_end_boost=0) for this model, or load "
                "iLLaDA-8B-Instruct's tokenizer files."
            )
        return list(ids)  # a copy: the cached list stays as the files say

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

    def strip_special(self, text: str) -> str:
        """``text`` (decoded with special tokens kept) without them, stripped: what
        ``decode(ids, skip_special_tokens=True)`` would have given, for text already cut or split
        (e.g. after the last ``</think>``)."""
        for token in self.tokenizer.get_added_tokens_decoder().values():
            if token.special:
                text = text.replace(token.content, "")
        return text.strip()

    def batch_encode(self, texts: Sequence[str], add_bos: bool = False) -> EncodedBatch:
        """Encode several texts into one left-padded (B, L) batch with its attention mask."""
        if isinstance(texts, str):
            raise TypeError("batch_encode takes a list of strings; for one text use encode(text).")
        return self.pad_left([self.encode(t, add_bos=add_bos) for t in texts])

    def pad_left(self, sequences: Sequence[Sequence[int]]) -> EncodedBatch:
        """Left-pad token lists with this tokenizer's pad id (EOS)."""
        return pad_left(sequences, self.pad_id)

    @property
    def special_tokens_map(self) -> dict[str, str | list[str]]:
        """The special tokens the files name, as transformers passes them to a chat template:
        ``SPECIAL_TOKEN_KEYS`` -> string (additional_special_tokens: a list), from
        tokenizer_config.json, else special_tokens_map.json; a key neither names is left out."""
        found: dict[str, str | list[str]] = {}
        for key in SPECIAL_TOKEN_KEYS:
            value = self.config.get(key) or self.special_map.get(key)
            if key == "additional_special_tokens":
                names = [_token_name(v) for v in value or []]
                value = [n for n in names if n]
            else:
                value = _token_name(value)
            if value:
                found[key] = value
        return found

    def _render(
        self,
        template: str,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool,
        **template_kwargs: Any,
    ) -> str:
        """``template`` rendered as transformers would for this tokenizer (its special tokens)."""
        return render_jinja_chat(
            template,
            messages,
            add_generation_prompt=add_generation_prompt,
            special_tokens=self.special_tokens_map,
            **template_kwargs,
        )

    @property
    def chat_template(self) -> str | None:
        """The snapshot's Jinja chat template (an Instruct model's), or None (a Base model's)."""
        template = self.config.get("chat_template")
        if isinstance(template, list):  # several named templates: the default one
            named = {t.get("name"): t.get("template") for t in template}
            template = named.get("default")
        return template

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, str]],
        tokenize: bool = False,
        add_generation_prompt: bool = True,
        **template_kwargs: Any,
    ) -> str | list[int]:
        """The Instruct prompt for ``messages`` rendered with the snapshot's own Jinja template: a
        string, or its ids with ``tokenize=True``. ``template_kwargs`` reach the template as
        variables, as with transformers (e.g. enable_thinking=False, tools=[...]).

        A template that rejects a "system" turn gets it merged into the first user turn instead
        (the iLLaDA authors' fallback). A Base tokenizer has no template: that is an error, not a
        silent guess, since a Base model continues plain text and was never trained on chats.
        """
        template = self.chat_template
        if template is None:
            raise TokenizerFilesError(
                f"This tokenizer's {CONFIG_FILE} has no chat_template: it is a Base model's. A "
                "Base model continues text; give it plain text (e.g. 'Question: ...\nAnswer:'), "
                "or load the Instruct snapshot for chat."
            )
        for k, message in enumerate(messages):
            if not isinstance(message, Mapping) or not {"role", "content"} <= set(message):
                raise ValueError(
                    f"messages[{k}] should be a dict with 'role' and 'content', found "
                    f"{message!r}; e.g. {{'role': 'user', 'content': 'Hello'}}."
                )
        if not messages:
            raise ValueError("An empty conversation: pass at least one user message.")
        if add_generation_prompt and messages[-1]["role"] != "user":
            raise ValueError(
                f"The conversation ends with a {messages[-1]['role']!r} turn, but a generation "
                "prompt asks the model to answer the last user turn: append a user message, or "
                "pass add_generation_prompt=False to render a finished conversation."
            )
        try:
            text = self._render(template, messages, add_generation_prompt, **template_kwargs)
        except ChatTemplateError:
            merged = merge_system_into_user(messages)
            if merged == [dict(m) for m in messages]:
                raise
            text = self._render(template, merged, add_generation_prompt, **template_kwargs)
        return self.encode(text) if tokenize else text
