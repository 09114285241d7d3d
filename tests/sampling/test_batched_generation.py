"""Many prompts per forward pass: every row of a batch gets the tokens of its batch-1 run, for both
samplers and every lesson-8 switch, in float64 on lesson 6's model and on a random GQA model; the
rows have prompts of different lengths and stop at different blocks; bad input is refused."""

import pytest
import torch

from minillada.checkpoints.hf import load_hf_checkpoint
from minillada.checkpoints.shipped import INSTRUCT_SHAKESPEARE, shipped_checkpoint
from minillada.data.tokenizer import LLaDATokenizer
from minillada.models.attention import row_positions
from minillada.models.kv_cache import KVCache
from minillada.models.llada import LLaDAModel, preset
from minillada.sampling.generate import generate
from minillada.sampling.variable_length import var_generate, var_generate_batch

GQA_MASK, GQA_EOS = 127, 126


@pytest.fixture(scope="module")
def lesson6():
    """Lesson 6's instruct model in float64, and prompts in its chat template of 6 lengths."""
    folder = shipped_checkpoint(INSTRUCT_SHAKESPEARE)
    model = load_hf_checkpoint(folder, dtype=torch.float64).eval()
    tok = LLaDATokenizer.from_folder(folder)
    questions = [
        "Who is Romeo?",
        "Write a line about the sea.",
        "What does the king say to his daughters when they answer him?",
        "Name a queen.",
        "Continue: To be, or not to be,",
        "Give me one word for sorrow and one for joy, and say which is older.",
    ]
    chats = [[{"role": "user", "content": q}] for q in questions]
    prompts = [tok.apply_chat_template(c, tokenize=True) for c in chats]
    return model, tok, [torch.tensor(p) for p in prompts]


@pytest.fixture(scope="module")
def gqa():
    """A random grouped-query model (4 query heads, 2 key/value heads) in float64, with sharp
    logits so that answers reach EOS at different blocks."""
    cfg = preset(
        "illada_1b", d_model=48, n_layers=2, n_heads=4, n_kv_heads=2, mlp_hidden_size=64,
        vocab_size=128, embedding_size=128, rope_theta=1e4, rms_norm_eps=1e-5,
        max_sequence_length=256, mask_token_id=GQA_MASK, eos_token_id=GQA_EOS,
        pad_token_id=GQA_EOS,
    )  # fmt: skip
    model = LLaDAModel(cfg, generator=torch.Generator().manual_seed(5)).double().eval()
    g = torch.Generator().manual_seed(6)
    prompts = [torch.randint(0, 120, (n,), generator=g) for n in (3, 11, 6, 1, 17, 8)]
    return model, prompts


def _case(which, lesson6, gqa):
    if which == "lesson6":
        model, tok, prompts = lesson6
        return model, prompts, tok.mask_id, tok.stop_ids
    model, prompts = gqa
    return model, prompts, GQA_MASK, [GQA_EOS, 125, 11, 10]  # ids it repeats: stops at blocks 1-4


SWITCHES = {
    "exact": {},
    "threshold": {"threshold": 0.6, "steps": None},
    "dual cache": {"cache": "dual"},
    "prefix cache, refresh 2": {"cache": "prefix", "cache_refresh": 2},
    "threshold + dual cache": {"threshold": 0.6, "steps": None, "cache": "dual"},
    "boost": {"think_end_boost": 40.0, "think_end_power": 3.0},
    "guidance": {"cfg_scale": 1.0},
}


@pytest.mark.parametrize("switch", list(SWITCHES))
@pytest.mark.parametrize("which", ["lesson6", "gqa"])
def test_variable_length_batch_equals_each_row_alone(which, switch, lesson6, gqa):
    """Six prompts of different lengths, 3 rows at a time (finished rows leave, waiting prompts
    take their place): every row's tokens, blocks, passes and stop equal its batch-1 run."""
    model, prompts, mask, stops = _case(which, lesson6, gqa)
    # never proposing the mask: a random model proposes little else, and threshold decoding stalls
    options = {"steps": 2, "stop_ids": stops, "logits_mask_inf": True, **SWITCHES[switch]}
    if switch == "boost":
        options["think_end_ids"] = [stops[-1], 5] if which == "gqa" else [100, 200]
    batch = var_generate_batch(model, prompts, 48, 4, mask_id=mask, batch_size=3, **options)
    blocks = set()
    for prompt, got in zip(prompts, batch, strict=True):
        alone = var_generate(model, prompt, 48, 4, mask_id=mask, **options)
        assert torch.equal(got.tokens, alone.tokens)
        assert (got.blocks, got.forward_passes, got.stopped) == (
            alone.blocks, alone.forward_passes, alone.stopped,
        )  # fmt: skip
        blocks.add(got.blocks)
    assert len(blocks) >= 2, "the rows should stop at different blocks"


def test_rows_leave_and_waiting_prompts_join(gqa):
    """With 6 prompts and 2 rows, no forward pass ever runs more than 2 rows; results come back in
    input order, and on_result sees every index once, in finishing order."""
    model, prompts = gqa
    widths, seen = [], []
    hook = model.transformer.wte.register_forward_hook(lambda m, i, o: widths.append(o.shape[0]))
    try:
        results = var_generate_batch(
            model, prompts, 48, 8, 4, GQA_MASK, batch_size=2,
            stop_ids=[GQA_EOS, 125, 11, 10], logits_mask_inf=True,
            on_result=lambda i, r: seen.append(i),
        )  # fmt: skip
    finally:
        hook.remove()
    assert max(widths) == 2 and min(widths) >= 1
    assert sorted(seen) == list(range(len(prompts)))
    assert [r.prompt_length for r in results] == [len(p) for p in prompts]


FIXED = {
    "exact": {"steps": 8},
    "threshold": {"threshold": 0.3, "steps": None},
    "dual cache": {"steps": 8, "cache": "dual"},
    "prefix cache, refresh 2": {"steps": 8, "cache": "prefix", "cache_refresh": 2},
    "threshold + dual cache": {"threshold": 0.3, "steps": None, "cache": "dual"},
    "guidance": {"steps": 8, "cfg_scale": 1.0},
}


@pytest.mark.parametrize("switch", list(FIXED))
@pytest.mark.parametrize("which", ["lesson6", "gqa"])
def test_fixed_canvas_batch_equals_each_row_alone(which, switch, lesson6, gqa):
    """``generate`` on left-padded prompts of different lengths: each row's canvas equals that
    prompt's batch-1 canvas."""
    model, prompts, mask, _ = _case(which, lesson6, gqa)
    P = max(len(p) for p in prompts)
    padded = torch.stack(
        [torch.cat([torch.zeros(P - len(p), dtype=torch.long), p]) for p in prompts]
    )
    keep = torch.stack([torch.cat([torch.zeros(P - len(p)), torch.ones(len(p))]) for p in prompts])
    options = {"logits_mask_inf": True, **FIXED[switch]}
    out = generate(model, padded, 16, 8, mask_id=mask, attention_mask=keep.long(), **options)
    for b, prompt in enumerate(prompts):
        alone = generate(model, prompt, 16, 8, mask_id=mask, **options)
        assert torch.equal(out[b, P:], alone[0, len(prompt) :])


def test_padded_rows_compute_what_they_compute_alone(gqa):
    """The model itself: left-padded rows with row positions give the logits of each row alone
    (to 1e-12 in float64), in a full pass and in a cached window."""
    model, prompts = gqa
    rows = prompts[:3]
    N = max(len(p) for p in rows)
    x = torch.stack([torch.cat([torch.full((N - len(p),), 9), p]) for p in rows])
    keep = (torch.arange(N)[None] >= torch.tensor([N - len(p) for p in rows])[:, None]).long()
    pos = row_positions(keep)
    cache = KVCache()
    full = model(x, keep, cache=cache.record(), positions=pos)
    window = model(x[:, -2:], keep, cache=cache, start=N - 2, positions=pos[:, -2:])
    for b, p in enumerate(rows):
        alone = model(p[None])
        assert torch.allclose(full[b, N - len(p) :], alone[0], rtol=0, atol=1e-12)
        assert torch.allclose(window[b], alone[0, -2:], rtol=0, atol=1e-12)
    shifted = model(x, keep)  # positions counted from the canvas start: only RoPE-rounding close
    assert torch.allclose(shifted[0, N - len(rows[0]) :], model(rows[0][None])[0], atol=1e-4)


def test_batched_generation_refuses_bad_input(gqa):
    model, prompts = gqa
    ok = dict(mask_id=GQA_MASK, stop_ids=[GQA_EOS])
    with pytest.raises(ValueError, match="Prompt 1 contains the mask id 127"):
        var_generate_batch(model, [prompts[0], torch.tensor([1, GQA_MASK])], 16, 8, 4, **ok)
    with pytest.raises(ValueError, match=r"Prompt 2 \(250 tokens\) leaves no room for one block"):
        long = torch.zeros(250, dtype=torch.long)
        var_generate_batch(model, [prompts[0], prompts[1], long], 16, 8, 4, **ok)
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="batch_size must be a positive int"):
            var_generate_batch(model, prompts, 16, 8, 4, batch_size=bad, **ok)
    with pytest.raises(ValueError, match="cannot be combined with classifier-free guidance"):
        var_generate_batch(model, prompts, 16, 8, 4, cache="dual", cfg_scale=1.0, **ok)
    with pytest.raises(ValueError, match="No prompts"):
        var_generate_batch(model, [], 16, 8, 4, **ok)
    with pytest.raises(ValueError, match="Prompt 0 has shape"):
        var_generate_batch(model, [torch.zeros(2, 3, dtype=torch.long)], 16, 8, 4, **ok)
