"""Group policy-gradient RL through the one training loop, on lesson 6's shipped model: a run
records its curves, resumes exactly at a rollout boundary, trains only LoRA adapters when asked,
and refuses bad settings before the first rollout."""

import copy

import pytest
import torch

from minillada.checkpoints.shipped import load_instruct_shakespeare
from minillada.checkpoints.train_state import load_train_state, save_train_state
from minillada.data.instructions import Example, encode_example
from minillada.evaluation.rewards import partial_credit
from minillada.models.lora import AdaptersOff, add_lora, lora_parameters
from minillada.training.llada import step_generator
from minillada.training.loop import new_train_state
from minillada.training.rl import RLConfig, make_rollout, train_rl

EXAMPLES = [  # in lesson 6's task formats
    Example("reverse", "Say these words backwards: my gracious lord", "lord gracious my"),
    Example("count", "How many words? the king is dead", "four"),
]


@pytest.fixture(scope="module")
def shipped():
    model, tok, _ = load_instruct_shakespeare()
    return model, tok


def setup(shipped):
    model, tok = shipped
    prompts = [encode_example(tok, e)[0] for e in EXAMPLES]

    def grade(index: int, text: str) -> float:
        return partial_credit(text, EXAMPLES[index].answer)

    return copy.deepcopy(model), tok, prompts, grade


def small(**overrides) -> RLConfig:
    settings = dict(
        max_iters=4, prompts_per_step=2, group_size=4, inner_updates=2, gen_length=8,
        block_length=8, steps=8, lr=1e-3, min_lr=1e-3, seed=3,
    )  # fmt: skip
    settings.update(overrides)
    return RLConfig(**settings)


def test_a_short_run_records_its_curves_and_moves_the_weights(shipped):
    model, tok, prompts, grade = setup(shipped)
    before = [p.detach().clone() for p in model.parameters()]
    state = train_rl(model, tok, prompts, grade, small(beta=0.04), reference=shipped[0],
                     progress=False, labels=[e.task for e in EXAMPLES])  # fmt: skip
    h = state.history
    assert len(h["reward_by_task"]) == 4
    for rewards, by_task in zip(h["reward"], h["reward_by_task"], strict=True):
        assert set(by_task) <= {"reverse", "count"} and by_task  # the rollout's prompts' tasks
        assert min(by_task.values()) <= rewards <= max(by_task.values())  # the mean is between
    for key in ("loss", "reward", "zero_variance_groups", "answer_tokens", "clip_fraction", "kl"):
        assert len(h[key]) == 4, key
    assert all(0 <= r <= 1 for r in h["reward"]) and h["kl"][0] == 0  # the first step is the ref
    assert h["reward"][0] == h["reward"][1]  # two updates share one rollout
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


VARIABLE = dict(sampler="variable", estimator="block", gen_length=16, steps=16)


@pytest.mark.parametrize("overrides", [{}, VARIABLE], ids=["fixed", "variable"])
def test_a_run_resumed_at_a_rollout_boundary_ends_where_an_unbroken_run_ends(
    shipped, tmp_path, overrides
):
    cfg = small(**overrides)
    model, tok, prompts, grade = setup(shipped)
    whole = train_rl(model, tok, prompts, grade, cfg, progress=False)
    first, _, _, _ = setup(shipped)
    half = train_rl(first, tok, prompts, grade, cfg, stop_after=2, progress=False)
    save_train_state(tmp_path, half)
    weights = copy.deepcopy(first.state_dict())
    resumed, _, _, _ = setup(shipped)
    resumed.load_state_dict(weights)
    state = load_train_state(tmp_path, new_train_state(resumed, cfg))
    state = train_rl(resumed, tok, prompts, grade, cfg, state=state, progress=False)
    assert state.history["loss"] == whole.history["loss"]
    for p, q in zip(resumed.parameters(), model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_lora_trains_only_the_adapters_against_the_base_as_reference(shipped):
    model, tok, prompts, grade = setup(shipped)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    add_lora(model, rank=2, alpha=4)
    state = train_rl(model, tok, prompts, grade, small(beta=0.04), reference=AdaptersOff(model),
                     progress=False)  # fmt: skip
    for k, v in model.state_dict().items():
        if ".lora." not in k:
            assert torch.equal(v, base[k]), k
    assert any(p.abs().sum() > 0 for p in lora_parameters(model) if p.shape[0] != 2)  # B moved
    assert state.history["kl"][-1] > 0


@pytest.mark.parametrize(
    "overrides",
    [
        dict(method="wd1"),
        dict(estimator="elbo", complementary=True),
        dict(inner_updates=1),
        dict(estimator="trajectory", trajectory_group=4),
        VARIABLE,
    ],
)
def test_the_other_estimators_and_methods_run(shipped, overrides):
    model, tok, prompts, grade = setup(shipped)
    cfg = small(max_iters=2, **overrides)
    state = train_rl(model, tok, prompts, grade, cfg, progress=False)
    assert len(state.history["loss"]) == 2
    assert all(torch.isfinite(torch.tensor(state.history["loss"])))
    if cfg.inner_updates == 1:  # the old policy is the current one: ratio 1, never clipped
        assert state.history["clip_fraction"] == [0.0] * 2


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(group_size=1), "group_size must be at least 2"),
        (dict(p_mask=1.0), r"must be in \[0, 1\)"),
        (dict(temperature=0.0), "need temperature > 0"),
        (dict(method="ppo"), "method must be"),
        (dict(gen_length=200, block_length=8, steps=200), "the model's context is 128"),
        (dict(gen_length=12, block_length=8, steps=12), "must be whole blocks"),
        (dict(sampler="variable", estimator="trajectory"), "records none"),
    ],
)
def test_bad_settings_are_refused_before_the_first_rollout(shipped, overrides, match):
    model, tok, prompts, grade = setup(shipped)
    with pytest.raises(ValueError, match=match):
        train_rl(model, tok, prompts, grade, small(**overrides), progress=False)


@pytest.mark.parametrize("count_padding", [False, True])
def test_the_loss_counts_the_answer_and_its_stop_unless_told_to_count_padding(
    shipped, count_padding
):
    model, tok, prompts, grade = setup(shipped)
    cfg = small(gen_length=16, block_length=8, steps=16, count_padding=count_padding)
    r = make_rollout(model, tok, prompts, grade, cfg, step_generator(0, 0))
    stops = torch.isin(r.completion, torch.tensor(tok.stop_ids))
    assert stops.any(dim=1).all()  # lesson 6's model ends every answer inside 16 tokens
    if count_padding:
        assert r.completion_mask.all()
    else:  # the answer's tokens, then its first stop id; nothing after it
        assert torch.equal(r.completion_mask.sum(1), r.answer_tokens + 1)
        first = stops.float().argmax(dim=1)
        assert all(r.completion_mask[b, : first[b] + 1].all() for b in range(len(first)))


def test_labels_must_name_every_prompt(shipped):
    model, tok, prompts, grade = setup(shipped)
    with pytest.raises(ValueError, match="one per prompt"):
        train_rl(model, tok, prompts, grade, small(), progress=False, labels=["reverse"])


def test_stopping_inside_a_rollout_and_a_kl_without_reference_are_errors(shipped):
    model, tok, prompts, grade = setup(shipped)
    with pytest.raises(ValueError, match="multiple of inner_updates"):
        train_rl(model, tok, prompts, grade, small(), stop_after=1, progress=False)
    with pytest.raises(ValueError, match="needs a reference policy"):
        train_rl(model, tok, prompts, grade, small(beta=0.1), progress=False)


def test_a_variable_length_rollout_stops_each_answer_after_the_block_holding_its_stop(shipped):
    model, tok, prompts, grade = setup(shipped)
    cfg = small(sampler="variable", estimator="block", gen_length=24, steps=24, block_length=8)
    r = make_rollout(model, tok, prompts, grade, cfg, step_generator(0, 0))
    stops = torch.isin(r.completion, torch.tensor(tok.stop_ids))
    first = torch.where(stops.any(1), stops.float().argmax(1), 24)  # (B,)
    for b in range(len(first)):
        after = (int(first[b]) // 8 + 1) * 8  # the end of the block that holds the stop
        assert (r.completion[b, after:] == tok.pad_id).all()  # no block generated after it
    assert torch.equal(r.completion_mask.sum(1), r.answer_tokens + 1)
    assert (r.answer_tokens > 0).all()
