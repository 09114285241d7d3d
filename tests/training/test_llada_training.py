"""Lesson 4's training machinery: WSD schedule, random-length crop, gradient accumulation, exact
resume, and two CPU processes under torchrun giving the same model as one process."""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minillada.checkpoints.hf import load_hf_checkpoint
from minillada.checkpoints.train_state import load_training_checkpoint, save_training_checkpoint
from minillada.data.subword import bits_per_char, split_text, train_shakespeare_tokenizer
from minillada.models.llada import LLaDAModel, preset
from minillada.training.llada import (
    LLaDATrainConfig,
    crop_length,
    draw_rows,
    new_llada_state,
    random_length_crop,
    train_llada,
)
from minillada.training.schedules import wsd_lr

ROOT = Path(__file__).resolve().parents[2]  # the repository
VOCAB, MASK = 64, 63


def tiny_model(seed: int = 0) -> LLaDAModel:
    cfg = preset(
        "tiny",
        d_model=32,
        n_heads=2,
        n_kv_heads=2,
        mlp_hidden_size=64,
        vocab_size=VOCAB,
        embedding_size=VOCAB,
        max_sequence_length=16,
    )
    return LLaDAModel(cfg, generator=torch.Generator().manual_seed(seed))


def tiny_cfg(**kw) -> LLaDATrainConfig:
    base = dict(
        max_iters=6,
        batch_size=8,
        block_size=16,
        lr=3e-3,
        min_lr=3e-4,
        warmup_iters=2,
        decay_iters=2,
        crop_prob=0.5,
        eval_interval=0,
    )
    return LLaDATrainConfig(**{**base, **kw})


DATA = torch.randint(0, MASK, (2000,), generator=torch.Generator().manual_seed(1))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is fastest, and two oversubscribe a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def params(model):
    return [p.detach().clone() for p in model.parameters()]


def test_wsd_schedule_values():
    lrs = [wsd_lr(i, 100, 1.0, 0.1, 10, 20) for i in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)  # linear warmup
    assert all(v == 1.0 for v in lrs[10:80])  # stable
    assert lrs[80] == pytest.approx(1.0 - 0.9 / 20)  # decay starts right after the plateau
    assert lrs[99] == pytest.approx(0.1)  # and ends at min_lr on the last iteration
    assert all(a > b for a, b in zip(lrs[80:], lrs[81:], strict=False))
    assert wsd_lr(500, 100, 1.0, 0.1, 10, 20) == 0.1  # past the end: the floor
    assert wsd_lr(50, 100, 1.0, 0.1, 10, 0) == 1.0  # no decay phase: constant after warmup


def test_crop_frequency_and_lengths():
    g = torch.Generator().manual_seed(0)
    lengths = [crop_length(64, g, 0.01) for _ in range(20_000)]
    cropped = [n for n in lengths if n != 64]
    assert 0.008 < len(cropped) / len(lengths) < 0.0125  # ~1% (binomial sd 0.07%)
    assert all(1 <= n <= 64 for n in cropped)
    g = torch.Generator().manual_seed(0)
    assert {crop_length(64, g, 0.0) for _ in range(200)} == {64}
    lengths = [crop_length(8, g, 1.0) for _ in range(2000)]
    assert set(lengths) == set(range(1, 9))  # U{1..L}, every length reachable
    x = torch.arange(24).view(3, 8)
    g = torch.Generator().manual_seed(0)
    crops = [random_length_crop(x, g, 1.0) for _ in range(200)]
    assert {c.shape[1] for c in crops} == set(range(1, 9))  # the sequence dimension is cut...
    assert all(torch.equal(c, x[:, : c.shape[1]]) for c in crops)  # ...keeping a prefix of rows
    assert random_length_crop(x, g, 0.0).shape == (3, 8)  # never cropped


def test_rows_do_not_depend_on_the_split():
    whole = draw_rows(DATA, range(0, 8), 8, 16, seed=5, step=3)
    parts = [draw_rows(DATA, range(a, a + 2), 8, 16, seed=5, step=3) for a in range(0, 8, 2)]
    for i in range(3):
        assert torch.equal(whole[i], torch.cat([p[i] for p in parts]))


def test_grad_accumulation_equals_one_big_batch():
    # In float64: the two runs sum the same per-row gradients in another order, so they differ by
    # float rounding only. In float32 that rounding (~1e-7 relative) can flip the sign of a
    # near-zero gradient, and AdamW's first steps move every weight by about lr whatever the
    # gradient's size, so no tolerance below ~lr holds on every CPU. In float64 the rounding is
    # ~1e-16 relative and the weights agree to ~1e-12 after three steps; 1e-9 holds anywhere.
    a, b = tiny_model().double(), tiny_model().double()
    sa = train_llada(a, DATA, MASK, tiny_cfg(max_iters=3, grad_accum=1), progress=False)
    sb = train_llada(b, DATA, MASK, tiny_cfg(max_iters=3, grad_accum=4), progress=False)
    for p, q in zip(params(a), params(b), strict=True):
        assert p.dtype == torch.float64
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-9)
    assert len(sb.history["loss"]) == 3
    assert sa.history["loss"] == pytest.approx(sb.history["loss"], rel=1e-12)


def test_interrupted_and_resumed_run_is_exact(tmp_path):
    torch.use_deterministic_algorithms(True)
    try:
        cfg = tiny_cfg()
        full = tiny_model()
        s_full = train_llada(full, DATA, MASK, cfg, progress=False)

        first = tiny_model()
        s1 = train_llada(first, DATA, MASK, cfg, stop_after=3, progress=False)
        save_training_checkpoint(tmp_path / "ckpt", first, s1, cfg)
        del first, s1
        resumed = tiny_model(seed=123)  # a different init: everything must come from the files
        state = load_training_checkpoint(tmp_path / "ckpt", resumed, new_llada_state(resumed, cfg))
        assert state.iter_num == 3
        s2 = train_llada(resumed, DATA, MASK, cfg, state, progress=False)
    finally:
        torch.use_deterministic_algorithms(False)
    for p, q in zip(params(full), params(resumed), strict=True):
        assert torch.equal(p, q)
    assert s2.history["loss"] == s_full.history["loss"]
    assert s2.history["lr"] == s_full.history["lr"]


def test_bf16_flag_is_ignored_on_cpu():
    a, b = tiny_model(), tiny_model()
    train_llada(a, DATA, MASK, tiny_cfg(max_iters=2), progress=False)
    train_llada(b, DATA, MASK, tiny_cfg(max_iters=2, bf16=True), progress=False)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert all(p.dtype == torch.float32 for p in b.parameters())


def test_batch_size_must_split_into_chunks():
    with pytest.raises(ValueError, match="multiple of 3"):
        train_llada(tiny_model(), DATA, MASK, tiny_cfg(grad_accum=3), progress=False)


def test_bits_per_char_conversion():
    assert bits_per_char(math.log(2), 10, 10) == pytest.approx(1.0)
    assert bits_per_char(2.0, 100, 250) == pytest.approx(2.0 * 100 / 250 / math.log(2))
    assert split_text("abcdefghij") == ("abcdefghi", "j")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_processes_equal_one(tmp_path, tinyshakespeare):
    tok = tmp_path / "tok"
    train_shakespeare_tokenizer(tok, vocab_size=320)
    common = [
        "--tokenizer",
        str(tok),
        "--d-model",
        "32",
        "--n-layers",
        "1",
        "--n-heads",
        "2",
        "--mlp-hidden",
        "64",
        "--block-size",
        "32",
        "--batch-size",
        "8",
        "--iters",
        "3",
        "--warmup",
        "1",
        "--decay",
        "1",
        "--crop-prob",
        "0.5",
        "--eval-interval",
        "0",
        "--final-samples",
        "0",
        "--save-every",
        "100",
        "--threads",
        "1",
        "--dtype",
        "float64",  # exact up to summation order: see test_grad_accumulation_equals_one_big_batch
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    if sys.platform.startswith("linux"):  # gloo on the loopback interface (macOS calls it lo0)
        env["GLOO_SOCKET_IFNAME"] = "lo"
    env.pop("WORLD_SIZE", None)
    single = subprocess.run(
        [
            sys.executable,
            "-m",
            "minillada.cli.train_llada",
            "--out",
            str(tmp_path / "one"),
            *common,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    # resuming with another setting would go on silently as another run: refused before any work
    from minillada.cli.train_llada import main as train_llada_main

    with pytest.raises(SystemExit, match="--lr: the run has [0-9.e-]+, this command 0.002"):
        train_llada_main(["--out", str(tmp_path / "one"), *common, "--lr", "2e-3", "--resume"])
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
    ]
    multi = subprocess.run(
        [*torchrun, "-m", "minillada.cli.train_llada", "--out", str(tmp_path / "two"), *common],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert multi.returncode == 0, multi.stderr[-3000:]
    assert "2 process(es) x 1 chunk(s) of 4" in multi.stdout
    one = load_hf_checkpoint(tmp_path / "one")
    two = load_hf_checkpoint(tmp_path / "two")
    for (name, p), q in zip(one.named_parameters(), two.parameters(), strict=True):
        assert p.dtype == torch.float64, name
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-9, msg=name)
    h1 = json.loads((tmp_path / "one" / "trainer_state.json").read_text())["history"]
    h2 = json.loads((tmp_path / "two" / "trainer_state.json").read_text())["history"]
    assert h1["loss"] == pytest.approx(h2["loss"], rel=1e-12)
    assert h2["iter"] == [0, 1, 2]
    # the parameters actually moved (the comparison is not between two untouched inits)
    init = LLaDAModel(one.config, generator=torch.Generator().manual_seed(1337)).double()
    assert not torch.allclose(init.transformer.wte.weight, one.transformer.wte.weight)
