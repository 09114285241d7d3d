"""Stand-in checkpoints: tiny snapshots in the released layouts, for a machine without the weights.

Lesson 7 drives the released iLLaDA-8B and LLaDA-8B. Without them (no download, no GPU, or CI),
the same notebook and the same library calls run on stand-ins that this module writes with the
project's own saver, file for file in the released layouts:

* ``iLLaDA-8B-Instruct`` / ``iLLaDA-8B-Base`` stand-ins: a randomly initialised 2-layer model with
  iLLaDA's architecture in miniature (grouped-query attention, 2 query heads per key/value head,
  a tied head), Llama-style tensor names in two shards and an index, and a byte-level BPE
  tokenizer laid out like iLLaDA's (special tokens first, ``<[MASK]>`` at id 5, ``</think>``;
  the Instruct one with a chat template that rejects a system turn). Its outputs are noise.
* ``LLaDA-8B-Instruct`` stand-in: lesson 6's shipped instruct model (really trained, on Tiny
  Shakespeare; 128-token context) re-written in LLaDA's OLMo-style layout in two shards, with its
  tokenizer and chat template, so a chat on the CPU shows real answers.

Every stand-in's config.json carries ``minillada_stand_in`` (what it really is), which
``minillada.checkpoints.released.inspect_snapshot`` reports and every output of lesson 7 prints,
so that no number from a stand-in can pass for the real model's. The RoPE theta and norm epsilon
of the iLLaDA stand-ins are the stand-ins' own (iLLaDA's are not published; the real values are
always read from the real config.json).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from minillada.checkpoints.dialects import ILLADA_INFO
from minillada.checkpoints.hf import CONFIG_NAME, load_hf_checkpoint, save_hf_checkpoint
from minillada.checkpoints.shipped import INSTRUCT_SHAKESPEARE, shipped_checkpoint
from minillada.data import bpe
from minillada.models.llada import LLaDAModel, preset

STAND_IN_FIELD = "minillada_stand_in"  # config.json: what a stand-in really is
VARIANT_FIELD = "minillada_variant"  # config.json of a stand-in: "base" or "instruct"

# iLLaDA's tokenizer puts its special tokens first; the mask is id 5 (the paper and README)
ILLADA_STANDIN_SPECIALS = (
    "<s>",
    "</s>",
    "<pad>",
    "<unk>",
    "<think>",
    "<[MASK]>",
    "</think>",
    "<|user|>",
    "<|assistant|>",
)
# The stand-in's own chat template (the real one is read from the real tokenizer_config.json).
# Like the template the authors' evaluation expects, it refuses a system turn.
ILLADA_STANDIN_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{{ '<|' + m['role'] + '|>\n' + m['content'] + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n<think>\n' }}{% endif %}"
)
# what the stand-in tokenizer learns its merges from: any text is encodable (byte-level BPE)
TOKENIZER_TEXT = (
    "Q: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in May. How many clips did Natalia sell altogether in April and May?\n\nA: Solve the problem "
    "step by step. At the end, write the final answer on a separate line in this exact format:\n"
    "#### 72\nQuestion: A man is sitting on a roof. He starts pulling up roofing on the roof. "
    "Answer: The answer is 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 10.\n"
) * 8

STANDIN_NAMES = ("iLLaDA-8B-Instruct", "iLLaDA-8B-Base", "LLaDA-8B-Instruct")


def _illada_standin(folder: Path, instruct: bool, seed: int) -> Path:
    tokenizer = bpe.train_bpe_fast(TOKENIZER_TEXT, 512, ILLADA_STANDIN_SPECIALS, True)
    config = preset(
        "illada_1b",
        d_model=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        mlp_hidden_size=176,
        vocab_size=512,
        embedding_size=512,
        max_sequence_length=8192,  # iLLaDA's context: the papers' prompts fit as they would
        rope_theta=10_000.0,  # the stand-in's own; iLLaDA's are read from its config.json
        rms_norm_eps=1e-5,
        eos_token_id=tokenizer.token_to_id("</s>"),
        pad_token_id=tokenizer.token_to_id("</s>"),
        mask_token_id=tokenizer.token_to_id("<[MASK]>"),
    )
    variant = "instruct" if instruct else "base"
    config.hf_extra = {
        **ILLADA_INFO,  # the non-numeric fields of iLLaDA's config.json
        STAND_IN_FIELD: f"a random 2-layer model in iLLaDA-8B-{variant.capitalize()}'s layout, "
        "written by minillada.checkpoints.standins; its outputs are noise",
        VARIANT_FIELD: variant,
    }
    model = LLaDAModel(config, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():  # a zero mask row: through the tied head the mask's logit is always 0,
        # below the largest of 511 random ones, so the noise is made of words (a trained model
        # learns never to predict the mask; a random one would fill answers with it)
        model.transformer.wte.weight[config.mask_token_id] = 0.0
    save_hf_checkpoint(model, folder, num_shards=2, dtype=torch.bfloat16)
    bpe.save_tokenizer(
        tokenizer,
        folder,
        bos_token="<s>",
        eos_token="</s>",
        chat_template=ILLADA_STANDIN_TEMPLATE if instruct else None,
    )
    return folder


def _llada_standin(folder: Path) -> Path:
    source = shipped_checkpoint(INSTRUCT_SHAKESPEARE)
    model = load_hf_checkpoint(source, dtype=torch.bfloat16)
    model.config.hf_extra = {
        **model.config.hf_extra,
        STAND_IN_FIELD: "lesson 6's small instruct model (trained on Tiny Shakespeare, 128-token "
        "context) in LLaDA-8B-Instruct's layout, written by minillada.checkpoints.standins",
        VARIANT_FIELD: "instruct",
    }
    save_hf_checkpoint(model, folder, num_shards=2)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(source / name, folder / name)
    return folder


def write_standin(name: str, folder: str | Path, seed: int = 0) -> Path:
    """Write the stand-in for the released model ``name`` (one of ``STANDIN_NAMES``) into
    ``folder`` (replaced if it exists) and return it. Deterministic for a given seed."""
    if name not in STANDIN_NAMES:
        raise ValueError(f"No stand-in for {name!r}; there are stand-ins for {STANDIN_NAMES}.")
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if name.startswith("iLLaDA"):
        return _illada_standin(folder, instruct=name.endswith("Instruct"), seed=seed)
    return _llada_standin(folder)


def stand_in_description(folder: str | Path) -> str | None:
    """What the snapshot in ``folder`` really is when it is a stand-in; None for real weights."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get(STAND_IN_FIELD)
