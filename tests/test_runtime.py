"""minillada.runtime: quick mode, paths, the model interface (device, context length, mask id)."""

from pathlib import Path

import pytest
import torch

from minillada.models.llada import LLaDAModel, preset
from minillada.models.tiny_transformer import TinyTransformer, TinyTransformerConfig
from minillada.runtime import (
    context_length,
    is_quick,
    mask_id_of,
    model_device,
    pick,
    portable_paths,
    progress_disabled,
    relative_to_repo,
    repo_path,
    upcast,
)


def test_quick_mode_and_pick(monkeypatch):
    monkeypatch.setenv("MINILLADA_QUICK", "1")
    assert is_quick() and pick(full=10, quick=1) == 1
    monkeypatch.setenv("MINILLADA_QUICK", "0")
    assert not is_quick() and pick(full=10, quick=1) == 10
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert progress_disabled()


def test_paths_print_relative_to_the_repository():
    assert relative_to_repo(repo_path("data", "README.md")) == "data/README.md"
    assert relative_to_repo("/somewhere/else/file.txt") == "file.txt"


def test_messages_lose_machine_paths(monkeypatch, tmp_path):
    monkeypatch.setenv("MINILLADA_DATA_DIR", str(tmp_path))
    text = f"no {tmp_path}/x.jsonl; cache {repo_path('data', 'x.jsonl')} in {repo_path()}"
    assert portable_paths(text) == "no $MINILLADA_DATA_DIR/x.jsonl; cache data/x.jsonl in ."


def test_the_model_interface_of_both_models():
    tiny = TinyTransformer(TinyTransformerConfig(vocab_size=9, block_size=12, n_layer=1, n_embd=16))
    llada = LLaDAModel(preset("tiny", max_sequence_length=40))
    assert context_length(tiny) == 12 and context_length(llada) == 40
    assert context_length(tiny, max_length=99) == 99
    assert context_length(lambda ids: ids) is None  # a plain function: unknown, nothing checked
    assert model_device(tiny) == torch.device("cpu") and model_device(lambda x: x).type == "cpu"
    for model in (tiny, llada):  # both take (ids, attention_mask=None) -> logits
        ids = torch.zeros(2, 5, dtype=torch.long)
        with torch.no_grad():
            assert torch.equal(model(ids), model(ids, attention_mask=torch.ones(2, 5)))


def test_the_mask_id_is_the_model_s_own():
    model = LLaDAModel(preset("tiny", mask_token_id=7), device="meta")
    assert mask_id_of(model) == 7 and mask_id_of(model, 7) == 7
    with pytest.raises(ValueError, match="mask_id=126336 is not this model's mask token.*says 7"):
        mask_id_of(model, 126336)
    anonymous = LLaDAModel(preset("tiny"), device="meta")  # its config knows no mask id
    assert mask_id_of(anonymous, 3) == 3
    with pytest.raises(ValueError, match="pass mask_id="):
        mask_id_of(anonymous)


def test_upcast_keeps_float64_and_lifts_half_precision():
    assert upcast(torch.zeros(1, dtype=torch.bfloat16)).dtype == torch.float32
    assert upcast(torch.zeros(1, dtype=torch.float32)).dtype == torch.float32
    assert upcast(torch.zeros(1, dtype=torch.float64)).dtype == torch.float64


def test_progress_bars_are_text_even_in_a_notebook(monkeypatch):
    """A widget bar saved in a notebook reopens as "Error displaying widget: model not found";
    the library's bars are text, which a saved notebook keeps as printed."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.delenv("TQDM_DISABLE", raising=False)  # a learner's kernel: bars on
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from minillada.runtime import progress_bar\n"
            "from minillada.evaluation.parallel import evaluate_sharded\n"
            "for _ in progress_bar(range(3), desc='lesson'):\n    pass\n"
            "evaluate_sharded(lambda x: x, [1, 2, 3], progress=True)"
        )
    ]
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    outputs = nb.cells[0].outputs
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    text = "".join(o.get("text", "") for o in outputs)
    assert "lesson: 100%" in text and "3/3" in text


def test_the_library_never_imports_tqdm_auto():
    root = Path(__file__).resolve().parents[1] / "minillada"
    offenders = [p.name for p in root.rglob("*.py") if "tqdm.auto" in p.read_text()]
    assert not offenders, f"use minillada.runtime.progress_bar (text bars): {offenders}"


def test_portable_paths_names_the_data_dir_variable_once(monkeypatch, tmp_path):
    folders = f"{tmp_path / 'a'}:{tmp_path / 'b'}"
    monkeypatch.setenv("MINILLADA_DATA_DIR", folders)
    text = f"No local copy either: $MINILLADA_DATA_DIR={folders} (looked for x); {tmp_path / 'a'}/x"
    out = portable_paths(text)
    assert "$MINILLADA_DATA_DIR=<2 folder(s)> (looked for x)" in out
    assert "$MINILLADA_DATA_DIR/x" in out and "$MINILLADA_DATA_DIR=$MINILLADA_DATA_DIR" not in out
