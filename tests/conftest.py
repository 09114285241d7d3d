"""What the tests share: toy models (as fixtures), the skip policy for missing data, and the
``slow`` marker.

Skip policy: a test that needs a corpus asks for the ``tinyshakespeare`` or ``gsm8k_test``
fixture. The fixture finds the file as the library does ($MINILLADA_DATA_DIR, then the cache in
data/) without downloading, and skips the test with the reason when it is absent; no test reaches
for the network. (The notebooks, run by nbval, download on first use like a learner's.)

``@pytest.mark.slow`` (declared in pyproject.toml) marks the tests that train or run a CLI;
``pytest -m "not slow"`` is the quick unit loop.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch

from minillada.data import bpe
from minillada.data.char import CharTokenizer, get_batch
from minillada.data.downloads import DatasetError, dataset_path
from minillada.data.downloads import llada_reference as llada_reference_folder
from minillada.diffusion.objectives import diffusion_loss
from minillada.models.llada import LLaDAModel, preset
from minillada.models.tiny_transformer import TinyTransformer, TinyTransformerConfig
from minillada.training.loop import TrainConfig


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: trains a model or runs a CLI (deselect: -m 'not slow')"
    )


def _local_dataset(name: str) -> Path:
    try:
        return dataset_path(name, download=False).resolve()
    except DatasetError as err:
        pytest.skip(f"needs the {name} data set offline (set MINILLADA_DATA_DIR): {err}")


@pytest.fixture(scope="session")
def tinyshakespeare() -> Path:
    """The verified Tiny Shakespeare file, or a skip."""
    return _local_dataset("tinyshakespeare")


@pytest.fixture(scope="session")
def llada_reference() -> Path:
    """The folder of the released LLaDA-8B metadata files (config.json, index, tokenizer config),
    verified, or a skip."""
    try:
        return llada_reference_folder(download=False).resolve()
    except DatasetError as err:
        pytest.skip(f"needs the released LLaDA-8B metadata offline (MINILLADA_DATA_DIR): {err}")


@pytest.fixture(scope="session")
def gsm8k_test() -> Path:
    """The verified GSM8K test split, or a skip."""
    return _local_dataset("gsm8k_test")


def make_tiny_transformer(
    causal: bool = False, V: int = 9, T: int = 16, seed: int = 0, scale: float = 1.0
) -> TinyTransformer:
    """A 2-layer TinyTransformer (vocabulary V, context T) in eval mode; ``scale`` multiplies every
    weight, so the predictions are far from uniform."""
    cfg = TinyTransformerConfig(
        vocab_size=V, block_size=T, n_layer=2, n_head=2, n_embd=16, causal=causal
    )
    model = TinyTransformer(cfg, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model.eval()


def make_tiny_llada(seed: int = 0, **overrides) -> LLaDAModel:
    """LLaDAModel of the "tiny" preset (2 layers, width 64, vocabulary 512), seeded."""
    return LLaDAModel(preset("tiny", **overrides), generator=torch.Generator().manual_seed(seed))


class FixedModel(torch.nn.Module):
    """Ignores its input: every position predicts the same distribution ``probs`` (V,)."""

    def __init__(self, probs, context: int = 64):
        super().__init__()
        self.logp = torch.nn.Parameter(torch.log(torch.as_tensor(probs, dtype=torch.float)))
        self.config = TinyTransformerConfig(
            vocab_size=len(probs), block_size=context, n_layer=1, n_head=2, n_embd=4
        )

    def forward(self, ids, attention_mask=None):
        return self.logp.expand(*ids.shape, -1)


@pytest.fixture
def tiny_transformer():
    """Factory: ``tiny_transformer(causal=False, V=9, T=16, seed=0, scale=1.0)``."""
    return make_tiny_transformer


@pytest.fixture
def tiny_llada():
    """Factory: ``tiny_llada(seed=0, **preset_overrides)``."""
    return make_tiny_llada


@pytest.fixture
def fixed_model():
    """The class ``FixedModel(probs)``: a model whose prediction ignores its input."""
    return FixedModel


def make_illada_like_tokenizer(folder: Path, mask_at: int = 5, vocab_size: int = 300) -> Path:
    """A stand-in tokenizer laid out like iLLaDA's: special tokens first (ids 0..5), the mask at
    ``mask_at``, and a chat template that rejects a system turn."""
    specials = ["<pad>", "<s>", "</s>", "<unk>", "</think>"]
    specials.insert(mask_at, "<[MASK]>")
    text = "the quick brown fox jumps over the lazy dog " * 20
    tok = bpe.train_bpe_fast(text, vocab_size, specials, specials_first=True)
    template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "{{ '<|' + m['role'] + '|>' + m['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
    )
    return bpe.save_tokenizer(
        tok, folder, bos_token="<s>", eos_token="</s>", chat_template=template
    )


@pytest.fixture
def illada_tokenizer():
    """Factory: ``illada_tokenizer(folder, mask_at=5, vocab_size=300)`` writes a stand-in tokenizer
    laid out like iLLaDA's into ``folder`` and returns it."""
    return make_illada_like_tokenizer


SHORT_TEXT = (
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 20
)


def _char_loss(model, batch, generator, mask_id):
    return diffusion_loss(model, batch, mask_id, generator=generator)


def make_char_run(seed: int = 0):
    """Lesson 1's training set-up on a short text, small enough for seconds of training:
    (tokenizer, model, TrainConfig, get_batch(generator), loss_fn(model, batch, generator))."""
    tok = CharTokenizer.from_text(SHORT_TEXT)
    data = tok.encode(SHORT_TEXT)
    cfg = TinyTransformerConfig(
        vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32
    )
    model = TinyTransformer(cfg, generator=torch.Generator().manual_seed(seed))
    tcfg = TrainConfig(
        max_iters=40, batch_size=8, lr=3e-3, warmup_iters=5, eval_interval=0, seed=seed
    )
    batches = partial(get_batch, data, 8, 32)
    return tok, model, tcfg, batches, partial(_char_loss, mask_id=tok.mask_id)


@pytest.fixture
def char_run():
    """Factory: ``char_run(seed=0)`` -> (tok, model, train config, batches, loss_fn)."""
    return make_char_run
