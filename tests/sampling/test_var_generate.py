"""iLLaDA's variable-length generation: the authors' algorithm restated and matched at temperature
0, a worked example, the budget, the end-of-thinking boost, and the errors for bad input."""

import pytest
import torch

from minillada.models.tiny_transformer import TinyTransformer, TinyTransformerConfig
from minillada.sampling.variable_length import end_think_boost, var_generate

V, MASK, EOS = 12, 11, 10


class ToyLM(torch.nn.Module):
    """A random TinyTransformer with its logits scaled, never proposing the mask."""

    def __init__(self, context=48, seed=0):
        super().__init__()
        cfg = TinyTransformerConfig(
            vocab_size=V, block_size=context, n_layer=2, n_head=2, n_embd=32
        )
        self.inner = TinyTransformer(cfg, generator=torch.Generator().manual_seed(seed)).eval()
        self.config = cfg

    def forward(self, ids, attention_mask=None):
        logits = 6 * self.inner(ids)
        logits[..., MASK] = -1e4
        return logits


@torch.no_grad()
def authors_var_generate(model, prompt, steps, gen_length, block_length, stop_ids):
    """The authors' var_generate at temperature 0, restated: append one block of masks; inside it
    run LLaDA's low-confidence rule for `steps` steps (per-step counts even, remainder first; the
    most probable argmax proposals among the block's masks revealed); stop after the block whose
    generated text holds a stop token."""
    x = prompt.clone()
    P = prompt.shape[1]
    for _ in range(gen_length // block_length):
        start = x.shape[1]
        x = torch.cat([x, torch.full((1, block_length), MASK)], dim=1)
        counts = [
            block_length // steps + (1 if i < block_length % steps else 0) for i in range(steps)
        ]
        for k in counts:
            logits = model(x)
            x0 = logits.argmax(-1)
            p = logits.double().softmax(-1).gather(-1, x0[..., None])[..., 0]
            p = torch.where(x == MASK, p, torch.tensor(float("-inf"), dtype=torch.float64))
            p[:, :start] = float("-inf")
            top = p[0].topk(k).indices
            x[0, top] = x0[0, top]
        if any(t in stop_ids for t in x[0, P:].tolist()):
            break
    return x


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("block_length,steps", [(4, 4), (8, 3)])
def test_matches_the_authors_algorithm_at_temperature_0(seed, block_length, steps):
    model = ToyLM(seed=seed)
    prompt = torch.randint(0, 10, (1, 5), generator=torch.Generator().manual_seed(seed))
    out = var_generate(model, prompt, 32, block_length, steps, MASK, stop_ids=[EOS])
    want = authors_var_generate(model, prompt, steps, 32, block_length, [EOS])
    assert torch.equal(out.tokens, want)
    assert out.forward_passes == out.blocks * steps
    assert out.stopped == (EOS in out.generated.tolist())


class StopsAt(torch.nn.Module):
    """Proposes token 3 everywhere, and EOS (more confidently) at position `where`."""

    def __init__(self, where):
        super().__init__()
        self.where = where
        self.config = TinyTransformerConfig(vocab_size=V, block_size=64, n_layer=1, n_embd=8)
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, ids, attention_mask=None):
        logits = torch.zeros(*ids.shape, V) + self.dummy
        logits[..., 3] = 5.0
        if ids.shape[1] > self.where:
            logits[:, self.where, EOS] = 9.0
        return logits


def test_worked_example_stops_after_the_block_with_eos():
    # prompt of 2, blocks of 4: EOS is proposed at position 7, inside the second block (6..9)
    out = var_generate(StopsAt(where=7), torch.tensor([1, 2]), 32, 4, 2, MASK, stop_ids=[EOS])
    assert out.blocks == 2 and out.stopped and out.forward_passes == 4
    assert out.generated.tolist() == [3, 3, 3, 3, 3, EOS, 3, 3]
    assert out.answer([EOS]).tolist() == [3, 3, 3, 3, 3]
    never = var_generate(StopsAt(where=99), torch.tensor([1, 2]), 12, 4, 4, MASK, stop_ids=[EOS])
    assert never.blocks == 3 and not never.stopped  # the budget ran out: 12 tokens, 3 blocks


def test_stop_strings_and_the_budget_clipped_to_the_context():
    decode = lambda ids: "".join("x" if i == 3 else "!" for i in ids)  # noqa: E731
    out = var_generate(StopsAt(where=7), torch.tensor([1, 2]), 32, 4, 2, MASK,
                       stop_strings=["x!"], decode=decode)  # fmt: skip
    assert out.stopped and out.blocks == 2
    model = ToyLM(context=16)
    out = var_generate(model, torch.arange(5), 64, 4, 4, MASK, stop_ids=[99])
    assert out.blocks == 2 and out.tokens.shape[1] == 5 + 8  # (16 - 5) // 4 blocks of 4 fit


def test_end_think_boost_by_hand():
    x = torch.tensor([[1, 2, 7, MASK, MASK]])  # context starts at 2; 7 is the first think-end id
    candidates = x == MASK
    logits = torch.zeros(1, 5, V)
    out = end_think_boost(logits, x, candidates, 2, 4, [7, 8], boost=10.0, power=1.0)
    # first candidate: position 3, which continues the partial match [7] with 8;
    # progress = (3 - 2 + 1) / 4 = 0.5
    assert out[0, 3, 8].item() == pytest.approx(5.0) and out.abs().sum().item() == pytest.approx(
        5.0
    )
    done = torch.tensor([[1, 2, 7, 8, MASK]])  # the sequence is already there: no boost
    assert torch.equal(end_think_boost(logits, done, done == MASK, 2, 4, [7, 8], 10.0), logits)


def test_bad_input_errors():
    model = ToyLM(context=16)
    with pytest.raises(ValueError, match="one unpadded prompt"):
        var_generate(model, torch.zeros(2, 3, dtype=torch.long), 8, 4, 4, MASK)
    with pytest.raises(ValueError, match="not a multiple of block_length"):
        var_generate(model, torch.arange(3), 10, 4, 4, MASK, stop_ids=[EOS])
    with pytest.raises(ValueError, match="leaves no room for one block"):
        var_generate(model, torch.zeros(14, dtype=torch.long), 8, 4, 4, MASK, stop_ids=[EOS])
    with pytest.raises(ValueError, match="empty stop string"):
        var_generate(model, torch.arange(3), 8, 4, 4, MASK, stop_strings=[""], decode=str)
    with pytest.raises(ValueError, match="need decode="):
        var_generate(model, torch.arange(3), 8, 4, 4, MASK, stop_strings=["x"])
    with pytest.raises(ValueError, match="No stop rule"):
        var_generate(model, torch.arange(3), 8, 4, 4, MASK)
    with pytest.raises(ValueError, match="steps=5 per block is more than the 4"):
        var_generate(model, torch.arange(3), 8, 4, 5, MASK, stop_ids=[EOS])
