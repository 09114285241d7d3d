"""Lesson 3's checkers: the solutions pass, stubs are 'not attempted', common mistakes fail."""

import math

import pytest
import torch
import torch.nn.functional as F
from checker_cases import assert_fails, ids, solution_and_stub_tests

from minillada.data.reversal import make_reversal_task
from minillada.diffusion.likelihood import (
    conditional_nelbo_samples,
    estimate_conditional_nll,
    mask_exactly,
    stratified_mask_counts,
)
from minillada.evaluation.reversal import twin_config
from minillada.exercises import ExerciseFailed, lesson3
from minillada.models.tiny_transformer import TinyTransformer, TinyTransformerConfig

# --- the solutions, as in notebooks/solutions/03_likelihood_and_autoregression.ipynb ------------


def pattern_weight(L, ell, method):
    if method == "l":
        # P(ell is drawn) x P(this set | ell drawn uniformly) x the weight L / ell
        return (1 / L) * (1 / math.comb(L, ell)) * (L / ell)
    t = torch.linspace(0, 1, 200_001, dtype=torch.float64)
    # P(exactly these ell positions masked | t) = t^ell (1 - t)^(L - ell); the weight 1 / t
    # cancels one t
    integrand = t ** (ell - 1) * (1 - t) ** (L - ell)
    return torch.trapezoid(integrand, t).item()


@torch.no_grad()
def l_estimator_samples(model, prompt, answer, mask_id, mc_num, generator):
    P, L = len(prompt), len(answer)
    counts = stratified_mask_counts(L, mc_num, generator)  # (b,) l of each row
    masked = mask_exactly(counts, L, generator)  # (b, L): exactly l_j answer positions
    x = torch.cat([prompt, answer]).expand(mc_num, -1).clone()  # (b, P + L)
    x[:, P:][masked] = mask_id
    logits = model(x.to(next(model.parameters()).device))[:, P:].cpu()  # (b, L, V)
    ce = F.cross_entropy(logits.transpose(1, 2), answer.expand(mc_num, L), reduction="none")
    return (ce.double() * masked).sum(dim=1) * L / counts.double()


def spread_of(model, windows, mask_id, repeats, method, seed_of=lambda r: r, std=torch.std,
              mc_num=8, batch_size=8, per_token=True, average="rms"):  # fmt: skip
    """Exercise 3.3's measurement for one method, with knobs for the mistakes below."""
    empty = torch.empty(0, dtype=torch.long)
    est = torch.tensor(
        [
            [
                conditional_nelbo_samples(
                    model, empty, w, mask_id, mc_num=mc_num, batch_size=batch_size,
                    method=method, generator=torch.Generator().manual_seed(seed_of(r)),
                ).mean().item() / (len(w) if per_token else 1)
                for r in range(repeats)
            ]
            for w in windows
        ]
    )  # (windows, repeats), float32 as a learner may well build it  # fmt: skip
    sd = std(est, dim=1)
    return (sd.pow(2).mean().sqrt() if average == "rms" else sd.mean()).item()


def choose_by_likelihood(model, mask_id, context, options, mc_num, seed):
    loglik = []
    for option in options:  # the same seed for every option: common random numbers
        est_option = estimate_conditional_nll(
            model, context, option, mask_id, mc_num=mc_num, batch_size=mc_num, seed=seed
        )
        loglik.append(est_option.log_likelihood)
    per_token = [score / len(option) for score, option in zip(loglik, options, strict=True)]
    raw_choice = max(range(len(options)), key=lambda i: loglik[i])
    normalised_choice = max(range(len(options)), key=lambda i: per_token[i])
    return loglik, raw_choice, normalised_choice


def sequence_log_prob(model, x, bos_id):
    inp = torch.cat([torch.full_like(x[:, :1], bos_id), x[:, :-1]], dim=1)  # (N, L)
    logp = model(inp).double().log_softmax(dim=-1)  # (N, L, V)
    return logp.gather(-1, x[..., None]).squeeze(-1).sum(dim=1)


def reversal_questions(task, people, template):
    N, M = task.num_people, task.mask_id
    if template == "forward":
        return [[i, task.forward_id, M] for i in people], 2, [N + i for i in people]
    if template == "infill":
        return [[M, task.forward_id, N + i] for i in people], 0, list(people)
    return [[N + i, task.backward_id, M] for i in people], 2, list(people)


@torch.no_grad()
def answer_questions(model, task, people, template, ban_mask=True, questions=reversal_questions):
    q, pos, right = questions(task, people, template)
    logits = model(torch.tensor(q))[:, pos]  # (n, V)
    if ban_mask:
        logits[:, task.mask_id] = float("-inf")
    answers = logits.argmax(dim=-1)
    return answers, int((answers == torch.tensor(right)).sum())


# --- the stubs, as in notebooks/03_likelihood_and_autoregression.ipynb ---------------------------


def pattern_weight_stub(L, ell, method):
    raise NotImplementedError(
        "Exercise 3.1: the total weight one set of l masked positions gets from each estimator"
    )


def l_estimator_samples_stub(model, prompt, answer, mask_id, mc_num, generator):
    raise NotImplementedError("Exercise 3.2: draw mc_num l-estimator samples in one mini-batch")


def measure_spread_stub(methods):
    raise NotImplementedError("Exercise 3.3: measure both estimators' spread at 8 samples")


def choose_by_likelihood_stub(model, mask_id, context, options, mc_num, seed):
    raise NotImplementedError("Exercise 3.4: score every option and pick the best")


def sequence_log_prob_stub(model, x, bos_id):
    raise NotImplementedError("Exercise 3.5: compute each sequence's exact log-likelihood")


def answer_questions_stub(model, task, people, template):
    raise NotImplementedError("Exercise 3.6: ask the diffusion model and count its right answers")


EXERCISES = [
    ("3.1", lesson3.check_pattern_weight, pattern_weight, pattern_weight_stub),
    ("3.2", lesson3.check_l_estimator_samples, l_estimator_samples, l_estimator_samples_stub),
    ("3.4", lesson3.check_choose_by_likelihood, choose_by_likelihood, choose_by_likelihood_stub),
    ("3.5", lesson3.check_sequence_log_prob, sequence_log_prob, sequence_log_prob_stub),
    ("3.6", lesson3.check_answer_questions, answer_questions, answer_questions_stub),
]
test_solution_passes, test_stub_is_not_attempted = solution_and_stub_tests(EXERCISES)


# --- Exercise 3.1: the weight of one mask pattern -----------------------------------------------


def t_without_the_weight(L, ell, method):  # integrates P(pattern | t), forgetting the 1/t weight
    if method == "l":
        return pattern_weight(L, ell, method)
    t = torch.linspace(0, 1, 200_001, dtype=torch.float64)
    return torch.trapezoid(t**ell * (1 - t) ** (L - ell), t).item()


def l_without_the_draw_of_l(L, ell, method):  # forgets P(ell) = 1/L
    if method == "t":
        return pattern_weight(L, ell, method)
    return (1 / math.comb(L, ell)) * (L / ell)


def l_every_pattern_of_size_l(L, ell, method):  # the weight of all C(L, ell) patterns, not one
    if method == "t":
        return pattern_weight(L, ell, method)
    return (1 / L) * (L / ell)


def l_inverted_weight(L, ell, method):  # ell / L instead of L / ell
    if method == "t":
        return pattern_weight(L, ell, method)
    return (1 / L) * (1 / math.comb(L, ell)) * (ell / L)


def t_coarse_grid(L, ell, method):  # 11 points: not an integral to 1e-6
    if method == "l":
        return pattern_weight(L, ell, method)
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    return torch.trapezoid(t ** (ell - 1) * (1 - t) ** (L - ell), t).item()


def t_monte_carlo(L, ell, method):  # sampled, not computed: noise far above 1e-6
    if method == "l":
        return pattern_weight(L, ell, method)
    t = torch.rand(100_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return (t ** (ell - 1) * (1 - t) ** (L - ell)).mean().item()


PATTERN_MISTAKES = [
    (t_without_the_weight, r"case 2/10 \(t-estimator, L = 4, one masked position.*\).*\n"
     r".*expected 0\.25, got 0\.0499"),
    (l_without_the_draw_of_l, r"case 1/10 \(l-estimator, L = 4, one masked position\).*\n"
     r".*expected 0\.25, got 1\.0"),
    (l_every_pattern_of_size_l, r"case 1/10 \(l-estimator, L = 4, one masked position\).*\n"
     r".*expected 0\.25, got 1\.0"),
    (l_inverted_weight, r"case 1/10 \(l-estimator, L = 4, one masked position\)"),
    (t_coarse_grid, r"case 2/10 \(t-estimator, L = 4.*\n.*expected 0\.25, got 0\.2525"),
    (t_monte_carlo, r"case 2/10 \(t-estimator"),
]  # fmt: skip


@pytest.mark.parametrize("mistake, match", PATTERN_MISTAKES, ids=ids(PATTERN_MISTAKES))
def test_pattern_weight_mistake_fails(mistake, match):
    assert_fails(lesson3.check_pattern_weight, mistake, "3.1", match)


def test_a_closed_form_for_both_passes(capsys):
    # the Beta integral worked out by hand is reasoning too, and exact
    assert lesson3.check_pattern_weight(lambda L, ell, method: 1 / (ell * math.comb(L, ell)))
    assert "Exercise 3.1 passed: 10 cases" in capsys.readouterr().out


def test_the_stub_message_does_not_give_the_answer_away(capsys):
    lesson3.check_pattern_weight(pattern_weight_stub)
    out = capsys.readouterr().out
    assert "comb" not in out and "C(L" not in out and "1 /" not in out


# --- Exercise 3.2: the l-estimator's samples ------------------------------------------------------


def an_estimator(*, weight="L/l", draws="library", positions="answer", logits_at="answer",
                 reduce="sum"):  # fmt: skip
    """The solution with one thing changed, to build the mistakes below."""

    @torch.no_grad()
    def estimator(model, prompt, answer, mask_id, mc_num, generator):
        P, L = len(prompt), len(answer)
        if draws == "library":
            counts = stratified_mask_counts(L, mc_num, generator)
            masked = mask_exactly(counts, L, generator)
        elif draws == "independent":  # l drawn per row, not stratified over the mini-batch
            counts = torch.randint(1, L + 1, (mc_num,), generator=generator)
            masked = mask_exactly(counts, L, generator)
        x = torch.cat([prompt, answer]).expand(mc_num, -1).clone()
        if positions == "answer":
            x[:, P:][masked] = mask_id
        else:  # the masks counted from the start of the sequence: prompt positions masked
            x[:, :L][masked] = mask_id
        logits = model(x)
        logits = logits[:, P:] if logits_at == "answer" else logits[:, :L]
        ce = F.cross_entropy(logits.transpose(1, 2), answer.expand(mc_num, L), reduction="none")
        if reduce == "all":  # the cross-entropy of the visible positions too
            total = ce.double().sum(dim=1)
        else:
            total = (ce.double() * masked).sum(dim=1)
        w = {"L/l": L / counts.double(), "1/l": 1 / counts.double(), "l/L": counts.double() / L,
             "none": torch.ones(mc_num, dtype=torch.float64)}[weight]  # fmt: skip
        out = total * w
        return out.mean() if reduce == "mean" else out

    return estimator


SAMPLE_MISTAKES = [
    (an_estimator(weight="1/l"), "mean_over_masked", r"case 1/4 \(a 5-token prompt.*\).*\n"
     r".*values differ"),
    (an_estimator(weight="l/L"), "inverted_weight", r"case 1/4 .*\n.*values differ"),
    (an_estimator(weight="none"), "forgets_the_weight", r"case 1/4 .*\n.*values differ"),
    (an_estimator(draws="independent"), "l_not_stratified", r"case 1/4 .*\n.*values differ"),
    (an_estimator(positions="canvas"), "masks_the_prompt", r"case 1/4 .*\n.*values differ"),
    (an_estimator(logits_at="canvas"), "logits_of_the_prompt", r"case 1/4 .*\n.*values differ"),
    (an_estimator(reduce="all"), "every_position", r"case 1/4 .*\n.*values differ"),
    (an_estimator(reduce="mean"), "averages_the_rows", r"case 1/4 .*\n.*expected shape \(8,\)"),
]  # fmt: skip


@pytest.mark.parametrize("mistake, name, match", SAMPLE_MISTAKES,
                         ids=[name for _, name, _ in SAMPLE_MISTAKES])  # fmt: skip
def test_l_estimator_samples_mistake_fails(mistake, name, match):
    assert_fails(lesson3.check_l_estimator_samples, mistake, "3.2", match)


def test_masks_before_counts_fails():
    @torch.no_grad()
    def masks_first(model, prompt, answer, mask_id, mc_num, generator):  # draws in another order
        P, L = len(prompt), len(answer)
        noise = torch.rand(mc_num, L, generator=generator)
        counts = stratified_mask_counts(L, mc_num, generator)
        masked = noise.argsort(dim=1).argsort(dim=1) < counts[:, None]
        x = torch.cat([prompt, answer]).expand(mc_num, -1).clone()
        x[:, P:][masked] = mask_id
        ce = F.cross_entropy(model(x)[:, P:].transpose(1, 2), answer.expand(mc_num, L),
                             reduction="none")  # fmt: skip
        return (ce.double() * masked).sum(dim=1) * L / counts.double()

    assert_fails(lesson3.check_l_estimator_samples, masks_first, "3.2", r"case \d/4 .*\n.*differ")


def test_the_lesson_model_is_a_fifth_case(capsys):
    model = lesson3._tiny_bidirectional(7)
    prompt, answer = torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6, 7, 0])
    assert lesson3.check_l_estimator_samples(l_estimator_samples, model, prompt, answer, 8)
    assert "Exercise 3.2 passed: 5 cases agree" in capsys.readouterr().out


# --- Exercise 3.3: the estimators' spread at 8 samples (an experiment) ---------------------------

MASK = 8
REPEATS = 4


@pytest.fixture(scope="module")
def spread_setup():
    cfg = TinyTransformerConfig(vocab_size=9, block_size=16, n_layer=1, n_head=2, n_embd=16)
    model = TinyTransformer(cfg, generator=torch.Generator().manual_seed(0)).eval()
    windows = torch.randint(0, 8, (3, 12), generator=torch.Generator().manual_seed(1))
    return model, windows


def measurement(setup, **mistake):
    model, windows = setup
    return lambda methods: {
        m: spread_of(model, windows, MASK, REPEATS, mistake.get(m, m), **mistake.get("knobs", {}))
        for m in methods
    }


def test_the_experiment_passes_and_reports_the_measurement_only(capsys, spread_setup):
    model, windows = spread_setup
    assert lesson3.check_estimator_spread(measurement(spread_setup), model, windows, MASK, REPEATS)
    out = capsys.readouterr().out
    assert out.startswith("Exercise 3.3 passed: your spreads agree with the library's (3 windows")
    sd_t, sd_l = (lesson3.estimator_spread(model, windows, MASK, m, REPEATS) for m in "tl")
    assert f"t-estimator {sd_t:.3f}, l-estimator {sd_l:.3f} nats/token" in out
    for verdict in ("lower variance", "noise", "fewer samples", "better"):
        assert verdict not in out  # the conclusion is the lesson's discussion, not the checker's


def test_the_estimates_are_kept_for_the_discussion(spread_setup):
    model, windows = spread_setup
    first = lesson3.spread_estimates(model, windows, MASK, "l", REPEATS)
    assert first.shape == (3, REPEATS) and first.dtype == torch.float64
    first[0, 0] = 123.0  # a copy: changing it does not change what the checker uses
    again = lesson3.spread_estimates(model, windows, MASK, "l", REPEATS)
    assert again[0, 0] != 123.0
    sd = again.std(dim=1).pow(2).mean().sqrt().item()
    assert sd == lesson3.estimator_spread(model, windows, MASK, "l", REPEATS)


def test_the_experiment_stub_is_not_attempted(capsys, spread_setup):
    model, windows = spread_setup
    assert not lesson3.check_estimator_spread(measure_spread_stub, model, windows, MASK, REPEATS)
    out = capsys.readouterr().out
    assert "Exercise 3.3 not attempted yet" in out and "passed" not in out


SPREAD_MISTAKES = {
    "population_std": {"knobs": {"std": lambda e, dim: e.std(dim=dim, correction=0)}},
    "one_seed_for_every_repeat": {"knobs": {"seed_of": lambda r: 0}},
    "seeds_from_one": {"knobs": {"seed_of": lambda r: r + 1}},
    "per_sequence_not_per_token": {"knobs": {"per_token": False}},
    "mean_of_the_stds": {"knobs": {"average": "mean"}},
    "two_mini_batches_of_four": {"knobs": {"batch_size": 4}},
    "sixteen_samples": {"knobs": {"mc_num": 16, "batch_size": 16}},
    "methods_swapped": {"t": "l", "l": "t"},
}


@pytest.mark.parametrize("name", list(SPREAD_MISTAKES))
def test_a_wrong_measurement_fails(spread_setup, name):
    model, windows = spread_setup
    message = assert_fails(
        lambda fn: lesson3.check_estimator_spread(fn, model, windows, MASK, REPEATS),
        measurement(spread_setup, **SPREAD_MISTAKES[name]),
        "3.3",
        r"the t-estimator's spread: expected 0\.\d+ nats/token \(3 windows x 4 repeats\), got",
    )
    assert "conditional_nelbo_samples" in message


def test_a_dict_with_other_keys_fails(spread_setup):
    model, windows = spread_setup
    with pytest.raises(ExerciseFailed, match=r"^Exercise 3.3: expected a dict with the keys"):
        lesson3.check_estimator_spread(lambda ms: {"l": 0.1}, model, windows, MASK, REPEATS)


# --- Exercise 3.4: multiple choice by likelihood -------------------------------------------------


def seed_per_option(model, mask_id, context, options, mc_num, seed):  # no common random numbers
    loglik = [
        estimate_conditional_nll(
            model, context, o, mask_id, mc_num=mc_num, batch_size=mc_num, seed=seed + i
        ).log_likelihood
        for i, o in enumerate(options)
    ]
    norm = [s / len(o) for s, o in zip(loglik, options, strict=True)]
    return loglik, loglik.index(max(loglik)), norm.index(max(norm))


def one_generator_for_all(model, mask_id, context, options, mc_num, seed):  # the same: no CRN
    g = torch.Generator().manual_seed(seed)
    loglik = [
        -conditional_nelbo_samples(model, context, o, mask_id, mc_num, mc_num, generator=g)
        .mean().item()
        for o in options
    ]  # fmt: skip
    norm = [s / len(o) for s, o in zip(loglik, options, strict=True)]
    return loglik, loglik.index(max(loglik)), norm.index(max(norm))


def small_mini_batches(model, mask_id, context, options, mc_num, seed):  # stratified over 4 rows
    loglik = [
        estimate_conditional_nll(
            model, context, o, mask_id, mc_num=mc_num, batch_size=4, seed=seed
        ).log_likelihood
        for o in options
    ]
    norm = [s / len(o) for s, o in zip(loglik, options, strict=True)]
    return loglik, loglik.index(max(loglik)), norm.index(max(norm))


def returns_the_bounds(model, mask_id, context, options, mc_num, seed):  # -log p, then argmin
    loglik, _, _ = choose_by_likelihood(model, mask_id, context, options, mc_num, seed)
    nll = [-s for s in loglik]
    norm = [s / len(o) for s, o in zip(nll, options, strict=True)]
    return nll, nll.index(min(nll)), norm.index(min(norm))


def lowest_raw_score(model, mask_id, context, options, mc_num, seed):  # argmin of log p
    loglik, _, norm = choose_by_likelihood(model, mask_id, context, options, mc_num, seed)
    return loglik, loglik.index(min(loglik)), norm


def raw_for_both(model, mask_id, context, options, mc_num, seed):  # acc_norm never normalised
    loglik, raw, _ = choose_by_likelihood(model, mask_id, context, options, mc_num, seed)
    return loglik, raw, raw


def normalised_by_context_and_option(model, mask_id, context, options, mc_num, seed):
    loglik, raw, _ = choose_by_likelihood(model, mask_id, context, options, mc_num, seed)
    norm = [s / (len(context) + len(o)) for s, o in zip(loglik, options, strict=True)]
    return loglik, raw, norm.index(max(norm))


CHOICE_MISTAKES = [
    (seed_per_option, r"case 1/3 \(4 options.*\):\nlog-likelihoods: .*common random numbers"),
    (one_generator_for_all, r"case 1/3 \(4 options.*\):\nlog-likelihoods: .*common random"),
    (small_mini_batches, r"case 1/3 \(4 options.*\):\nlog-likelihoods: .*one mini-batch"),
    (returns_the_bounds, r"case 1/3 \(4 options.*\):\nlog-likelihoods: .*their negatives"),
    (lowest_raw_score, r"case 1/3 \(4 options.*\):\nraw choice: expected option 2"),
    (raw_for_both, r"case 2/3 \(options of 2, 7.*\):\nnormalised choice: expected option 2"),
    (normalised_by_context_and_option, r"case 2/3 \(.*\):\nnormalised choice: .*own length"),
]


@pytest.mark.parametrize("mistake, match", CHOICE_MISTAKES, ids=ids(CHOICE_MISTAKES))
def test_choose_by_likelihood_mistake_fails(mistake, match):
    assert_fails(lesson3.check_choose_by_likelihood, mistake, "3.4", match)


def test_a_hand_built_estimator_with_float32_cross_entropy_passes(capsys):
    # the lesson's l_samples_by_hand: the same draws, its own (float32) cross-entropy
    @torch.no_grad()
    def by_hand(model, mask_id, context, options, mc_num, seed):
        loglik = []
        for o in options:
            g = torch.Generator().manual_seed(seed)
            counts = stratified_mask_counts(len(o), mc_num, g)
            masked = mask_exactly(counts, len(o), g)
            x = torch.cat([context, o]).expand(mc_num, -1).clone()
            x[:, len(context) :][masked] = mask_id
            logits = model(x)[:, len(context) :]
            ce = F.cross_entropy(logits.transpose(1, 2), o.expand(mc_num, -1), reduction="none")
            terms = (ce * masked).sum(dim=1) * len(o) / counts
            loglik.append(-terms.mean().item())
        norm = [s / len(o) for s, o in zip(loglik, options, strict=True)]
        return loglik, loglik.index(max(loglik)), norm.index(max(norm))

    assert lesson3.check_choose_by_likelihood(by_hand)
    assert "Exercise 3.4 passed: 3 cases agree" in capsys.readouterr().out


def test_the_lesson_items_are_extra_cases(capsys):
    model = TinyTransformer(
        TinyTransformerConfig(vocab_size=9, block_size=24, n_layer=1, n_head=2, n_embd=16),
        generator=torch.Generator().manual_seed(4),
    ).eval()
    g = torch.Generator().manual_seed(0)
    items = [(torch.randint(0, 8, (6,), generator=g), [torch.randint(0, 8, (5,), generator=g)
              for _ in range(4)]) for _ in range(2)]  # fmt: skip
    assert lesson3.check_choose_by_likelihood(choose_by_likelihood, model, MASK, items)
    assert "Exercise 3.4 passed: 5 cases agree" in capsys.readouterr().out


# --- Exercise 3.5: sequence_log_prob -------------------------------------------------------------


def with_bos(x, bos_id):
    return torch.cat([torch.full_like(x[:, :1], bos_id), x[:, :-1]], dim=1)


def score(logits, x):
    return logits.double().log_softmax(dim=-1).gather(-1, x[..., None]).squeeze(-1).sum(dim=1)


def no_shift(model, x, bos_id):  # feeds x itself: position i scores x_i after seeing... x_i
    return score(model(x), x)


def skips_the_first_token(model, x, bos_id):  # no BOS: log p(x_1 | BOS) is missing
    return score(model(x[:, :-1]), x[:, 1:])


def bos_at_the_end(model, x, bos_id):  # shifts the wrong way
    return score(model(torch.cat([x[:, 1:], torch.full_like(x[:, :1], bos_id)], dim=1)), x)


def sums_raw_logits(model, x, bos_id):  # forgets log_softmax
    return model(with_bos(x, bos_id)).double().gather(-1, x[..., None]).squeeze(-1).sum(dim=1)


def mean_not_sum(model, x, bos_id):  # the average per token, not log p(x)
    logp = model(with_bos(x, bos_id)).double().log_softmax(dim=-1)
    return logp.gather(-1, x[..., None]).squeeze(-1).mean(dim=1)


def negative_log_likelihood(model, x, bos_id):  # cross-entropy: the sign is flipped
    return F.cross_entropy(model(with_bos(x, bos_id)).transpose(1, 2), x, reduction="none").sum(1)


def log_softmax_over_positions(model, x, bos_id):  # log_softmax(dim=1): over L instead of V
    logp = model(with_bos(x, bos_id)).double().log_softmax(dim=1)
    return logp.gather(-1, x[..., None]).squeeze(-1).sum(dim=1)


LOG_PROB_MISTAKES = [
    no_shift,
    skips_the_first_token,
    bos_at_the_end,
    sums_raw_logits,
    mean_not_sum,
    negative_log_likelihood,
    log_softmax_over_positions,
]


@pytest.mark.parametrize("mistake", LOG_PROB_MISTAKES, ids=ids(LOG_PROB_MISTAKES))
def test_sequence_log_prob_mistake_fails(mistake):
    assert_fails(
        lesson3.check_sequence_log_prob,
        mistake,
        "3.5",
        r"case 1/3 \(3 sequences of 12 tokens\).*\n.*values differ",
    )


# --- Exercise 3.6: the reversal questions, asked by hand -----------------------------------------


def infill_on_the_right(task, people, template):  # '482 > _': the fact's order turned around
    q, pos, right = reversal_questions(task, people, template)
    if template == "infill":
        N, M = task.num_people, task.mask_id
        return [[N + i, task.forward_id, M] for i in people], 2, right
    return q, pos, right


def backward_with_the_forward_relation(task, people, template):  # '482 > _' for backward
    q, pos, right = reversal_questions(task, people, template)
    if template == "backward":
        q = [[a, task.forward_id, c] for a, _, c in q]
    return q, pos, right


def the_name_is_always_right(task, people, template):  # forward answers counted against names
    q, pos, _ = reversal_questions(task, people, template)
    return q, pos, list(people)


def reads_the_last_position(task, people, template):  # infill read at position 2, not 0
    q, _, right = reversal_questions(task, people, template)
    return q, 2, right


def can_answer_with_the_mask(model, task, people, template):  # no ban on the mask token
    return answer_questions(model, task, people, template, ban_mask=False)


def asks_with(questions):
    def ask(model, task, people, template):
        return answer_questions(model, task, people, template, questions=questions)

    ask.__name__ = questions.__name__
    return ask


REVERSAL_MISTAKES = [
    (can_answer_with_the_mask, r"case 1/3 \(an untrained model on 6 people, forward\):\n"
     r"answers: values differ(.*\n)+.*never answer with the mask token itself"),
    (asks_with(infill_on_the_right), r"case 2/3 \(.*infill\):\nanswers: values differ"),
    (asks_with(backward_with_the_forward_relation),
     r"case 3/3 \(.*backward\):\nanswers: values differ"),
    (asks_with(the_name_is_always_right),
     r"case 1/3 \(.*forward\):\nnumber correct: expected 0, got 1: the right answer is the number"),
    (asks_with(reads_the_last_position), r"case 2/3 \(.*infill\):\nanswers: values differ"),
]  # fmt: skip


@pytest.mark.parametrize("mistake, match", REVERSAL_MISTAKES, ids=ids(REVERSAL_MISTAKES))
def test_answer_questions_mistake_fails(mistake, match):
    assert_fails(lesson3.check_answer_questions, mistake, "3.6", match)


def test_the_lesson_twin_adds_three_cases(capsys):
    task = make_reversal_task(num_people=10, seed=0)
    init = torch.Generator().manual_seed(0)
    twin = TinyTransformer(twin_config(task, False, 1, 16), generator=init)
    assert lesson3.check_answer_questions(answer_questions, twin.eval(), task, task.held_out[:4])
    assert "Exercise 3.6 passed: 6 cases agree" in capsys.readouterr().out
