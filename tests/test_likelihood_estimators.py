"""Lesson 3: the conditional l-estimator, the AR twin's exact NLL, multiple choice."""

import itertools
import math

import pytest
import torch

from minillada.autoregressive import (
    exact_nll,
    generate_ar,
    generative_perplexity,
    next_token_loss,
    shift_right,
    token_log_probs,
    unigram_entropy,
)
from minillada.char_data import CharTokenizer
from minillada.exercises import ExerciseFailed, lesson3
from minillada.guidance import guided_logits
from minillada.likelihood import (
    conditional_nelbo_samples,
    estimate_conditional_nll,
    l_estimator_terms,
    mask_exactly,
    nelbo_per_sequence,
    spread_mask_counts,
    stratified_mask_counts,
)
from minillada.multiple_choice import ar_scorer, choose, choose_text, encode_choices, mdm_scorer
from minillada.tiny_transformer import TinyTransformer, TinyTransformerConfig


def tiny(causal=False, V=9, T=16, seed=0, scale=1.0):
    torch.manual_seed(seed)
    cfg = TinyTransformerConfig(
        vocab_size=V, block_size=T, n_layer=2, n_head=2, n_embd=16, causal=causal
    )
    model = TinyTransformer(cfg)
    for p in model.parameters():
        p.data.mul_(scale)
    return model.eval()


class Fixed(torch.nn.Module):
    """Ignores its input: every position predicts the same distribution ``probs`` (V,)."""

    def __init__(self, probs):
        super().__init__()
        self.logp = torch.nn.Parameter(torch.log(torch.as_tensor(probs, dtype=torch.float)))
        self.config = TinyTransformerConfig(
            vocab_size=len(probs), block_size=64, n_layer=1, n_head=2, n_embd=4
        )

    def forward(self, idx):
        return self.logp.expand(*idx.shape, -1)


def test_spread_mask_counts_is_llada_formula():
    assert spread_mask_counts(5, 4, 3).tolist() == [3, 4, 1, 2]  # 5.5 -> 6 (half to even) -> 1
    assert spread_mask_counts(8, 8, 1).tolist() == list(range(1, 9))
    assert spread_mask_counts(1, 3, 1).tolist() == [1, 1, 1]
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        c = stratified_mask_counts(7, 16, g)
        assert c.min() >= 1 and c.max() <= 7


def test_mask_exactly_masks_exactly_l_uniformly():
    g = torch.Generator().manual_seed(0)
    counts = torch.tensor([0, 1, 3, 6] * 2000)
    m = mask_exactly(counts, 6, g)
    assert m.sum(dim=1).tolist() == counts.tolist()
    freq = m[counts == 3].float().mean(dim=0)  # every position equally likely: 3/6
    assert torch.allclose(freq, torch.full((6,), 0.5), atol=0.05)


def test_conditional_estimator_is_exact_for_one_token_answers():
    model = tiny(scale=5.0)
    prompt, mask_id = torch.tensor([1, 4, 2, 7, 3]), 8
    for a in range(8):
        est = estimate_conditional_nll(model, prompt, torch.tensor([a]), mask_id)
        x = torch.cat([prompt, torch.tensor([mask_id])])[None]
        exact = -model(x)[0, -1].double().log_softmax(-1)[a].item()
        assert est.nll == pytest.approx(exact, abs=1e-5)
        assert est.stderr == 0.0 and est.samples == 1
    # the sampling path gives the same number on every sample: l = 1 always, weight 1
    s = conditional_nelbo_samples(
        model,
        prompt,
        torch.tensor([3]),
        mask_id,
        mc_num=8,
        batch_size=4,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.allclose(s, s[0].expand(8)) and s[0].item() == pytest.approx(
        estimate_conditional_nll(model, prompt, torch.tensor([3]), mask_id).nll, abs=1e-5
    )


def test_cfg_matches_llada_formula_and_is_exact_for_one_token():
    model = tiny(scale=5.0)
    prompt, mask_id, a, w = torch.tensor([1, 4, 2]), 8, 5, 0.5
    x = torch.tensor([[1, 4, 2, mask_id]])
    un = torch.full_like(x, mask_id)
    cond, unc = model(x)[0, -1], model(un)[0, -1]
    guided = unc + (w + 1) * (cond - unc)
    est = estimate_conditional_nll(model, prompt, torch.tensor([a]), mask_id, cfg_scale=w)
    assert est.nll == pytest.approx(-guided.double().log_softmax(-1)[a].item(), abs=1e-5)
    is_prompt = torch.arange(4) < 3
    assert torch.allclose(guided_logits(model, x, is_prompt, mask_id, w)[0, -1], guided, atol=1e-5)


def test_l_estimator_of_a_fixed_distribution_is_exact_on_every_sample():
    probs = torch.tensor([0.5, 0.2, 0.2, 0.1])
    answer = torch.tensor([0, 1, 0, 3, 2, 0])
    exact = -torch.log(probs[answer]).sum().item()
    s = conditional_nelbo_samples(
        Fixed(probs),
        torch.tensor([1, 2]),
        answer,
        mask_id=3,
        mc_num=32,
        generator=torch.Generator().manual_seed(0),
    )
    # (L / l) * sum over l random positions is not constant here, but its mean is exact
    assert s.mean().item() == pytest.approx(exact, abs=4 * s.std().item() / math.sqrt(32))
    same = torch.zeros(6, dtype=torch.long)  # every token identical: each sample is exact
    s = conditional_nelbo_samples(
        Fixed(probs),
        torch.tensor([1]),
        same,
        3,
        mc_num=16,
        generator=torch.Generator().manual_seed(1),
    )
    assert torch.allclose(s, torch.full((16,), -6 * math.log(0.5), dtype=torch.float64))


def test_l_estimator_terms_by_hand():
    logits = torch.log(torch.tensor([[[0.5, 0.5], [0.25, 0.75], [0.9, 0.1]]]))  # (1, 3, 2)
    answer = torch.tensor([0, 1, 0])
    masked = torch.tensor([[True, False, True]])
    expected = 3 / 2 * (-math.log(0.5) - math.log(0.9))
    assert l_estimator_terms(logits, answer, masked).item() == pytest.approx(expected, abs=1e-6)


def test_t_and_l_estimators_agree_within_standard_errors():
    """Same bound, two estimators: on a fixed random network they agree within their errors,
    and the l-estimator's samples vary less."""
    model = tiny(scale=3.0, T=24)
    g = torch.Generator().manual_seed(0)
    windows = torch.randint(0, 8, (24, 24), generator=g)
    t_per_seq = nelbo_per_sequence(model, windows, 8, samples=32, generator=g) * 24  # nats/window
    l_samples = torch.stack(
        [
            conditional_nelbo_samples(
                model, torch.empty(0, dtype=torch.long), w, 8, mc_num=32, batch_size=32, generator=g
            )
            for w in windows
        ]
    )  # (24, 32)
    t_samples = torch.stack(
        [
            conditional_nelbo_samples(
                model,
                torch.empty(0, dtype=torch.long),
                w,
                8,
                mc_num=32,
                batch_size=32,
                method="t",
                generator=g,
            )
            for w in windows
        ]
    )
    l_mean, t_mean, t2_mean = l_samples.mean(1), t_per_seq, t_samples.mean(1)
    diff = l_mean - t_mean  # paired by window: the spread between windows cancels
    assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(24)
    diff2 = l_mean - t2_mean
    assert abs(diff2.mean()) < 4 * diff2.std() / math.sqrt(24)
    assert l_samples.std(dim=1).mean() < t_samples.std(dim=1).mean()


def test_ar_token_log_probs_match_brute_force_and_normalise():
    V, L, bos = 4, 3, 3
    model = tiny(causal=True, V=V, T=L, scale=8.0)
    seqs = torch.tensor(list(itertools.product(range(V), repeat=L)))  # all V^L sequences
    logp = token_log_probs(model, seqs, bos)  # teacher forcing, one pass
    for i, x in enumerate(seqs[:20]):  # one forward per prefix, reading only the last position
        brute = 0.0
        for j in range(L):
            inp = torch.cat([torch.tensor([bos]), x[:j]])[None]
            brute += model(inp)[0, -1].double().log_softmax(-1)[x[j]].item()
        assert logp[i].sum().item() == pytest.approx(brute, abs=1e-4)
    assert logp.sum(dim=1).exp().sum().item() == pytest.approx(1.0, abs=1e-6)
    nll = exact_nll(model, seqs[:10], bos)
    assert nll.nats == pytest.approx(-logp[:10].mean().item(), abs=1e-9)
    assert next_token_loss(model, seqs[:10], bos).item() == pytest.approx(nll.nats, abs=1e-5)
    assert shift_right(torch.tensor([[5, 6, 7]]), 9).tolist() == [[9, 5, 6]]


def test_generative_perplexity_of_uniform_judge_is_v():
    V = 6
    judge = Fixed(torch.full((V,), 1 / V))
    samples = torch.tensor([[0, 1, 2, 3], [1, 1, 1, 1]])
    gp = generative_perplexity(judge, samples, bos_id=5)
    assert gp.ppl == pytest.approx(V) and gp.num_samples == 2
    assert unigram_entropy(samples, V).tolist() == pytest.approx([2.0, 0.0])


def test_generate_ar_keeps_prompt_and_bans_bos():
    model = tiny(causal=True, V=9, T=16, scale=3.0)
    out = generate_ar(
        model,
        torch.tensor([[1, 2, 3]]),
        5,
        bos_id=8,
        temperature=1.0,
        banned=[8],
        generator=torch.Generator().manual_seed(0),
    )
    assert out.shape == (1, 8) and out[0, :3].tolist() == [1, 2, 3] and (out != 8).all()
    greedy = generate_ar(model, torch.tensor([[1, 2, 3]]), 5, bos_id=8, temperature=0.0)
    assert torch.equal(greedy, generate_ar(model, torch.tensor([[1, 2, 3]]), 5, 8, 0.0))


def test_multiple_choice_raw_and_normalised_on_a_constructed_case():
    probs = torch.tensor([0.1, 0.6, 0.3, 1e-6])  # id 3 is the mask
    for scorer in (mdm_scorer(Fixed(probs), mask_id=3, mc_num=16), ar_scorer(Fixed(probs), 3)):
        res = choose(scorer, [0, 2], [[2], [1, 1, 1], [0]])
        assert res.loglik == pytest.approx(
            [math.log(0.3), 3 * math.log(0.6), math.log(0.1)], abs=1e-4
        )
        assert res.raw_choice == 0  # the short option wins on the raw sum
        assert res.normalised_choice == 1  # per token, the likelier token wins


def test_multiple_choice_on_a_trained_lookup():
    """A tiny MDM that has memorised 'aa' -> 'c', 'bb' -> 'd' picks the right option, exactly."""
    torch.manual_seed(0)
    model = TinyTransformer(
        TinyTransformerConfig(vocab_size=5, block_size=3, n_layer=1, n_head=2, n_embd=16)
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    x = torch.tensor([[0, 0, 2], [1, 1, 3]])
    for _ in range(40):  # learn the answer at position 2 given the first two
        inp = x.clone()
        inp[:, 2] = 4
        loss = torch.nn.functional.cross_entropy(model(inp)[:, 2], x[:, 2])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    res = choose(mdm_scorer(model, 4), [0, 0], [[3], [2], [0]])
    assert res.raw_choice == 1 and res.stderr == [0.0, 0.0, 0.0]
    assert choose(mdm_scorer(model, 4), [1, 1], [[3], [2], [0]]).raw_choice == 0


def test_encode_choices_moves_trailing_spaces_like_lm_eval():
    tok = CharTokenizer.from_text("ab c")
    ctx, opts = encode_choices(tok.encode, "ab ", ["c", "a"])
    assert tok.decode(ctx) == "ab" and [tok.decode(o) for o in opts] == [" c", " a"]
    res = choose_text(ar_scorer(Fixed(torch.full((5,), 0.2)), 4), tok.encode, "ab ", ["c", "cc"])
    assert res.lengths == [2, 3]


def test_lesson3_checkers_pass_the_reference_and_catch_mistakes(capsys):
    assert lesson3.check_spread_mask_counts(spread_mask_counts)
    assert lesson3.check_sequence_log_prob(lambda m, x, b: token_log_probs(m, x, b).sum(1))
    assert lesson3.check_l_estimator_terms(l_estimator_terms)

    def not_yet(*args):
        raise NotImplementedError("Exercise 3.1: ...")

    assert not lesson3.check_spread_mask_counts(not_yet)
    assert "not attempted yet" in capsys.readouterr().out

    def no_wrap(L, b, k):  # forgets to wrap the counts back into 1..L
        return torch.linspace(float(k), k + (b - 1) * L / b, b).round().long()

    with pytest.raises(ExerciseFailed, match="Exercise 3.1"):
        lesson3.check_spread_mask_counts(no_wrap)

    def no_bos(m, x, b):  # scores x_2.. given x_1 and drops the first token
        return token_log_probs(m, x, b)[:, 1:].sum(1)

    with pytest.raises(ExerciseFailed, match="Exercise 3.2"):
        lesson3.check_sequence_log_prob(no_bos)

    def mean_not_weighted(logits, answer, masked):  # the mean over masked tokens, no L / l
        ce = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), answer.expand(masked.shape), reduction="none"
        )
        return (ce * masked).sum(1) / masked.sum(1)

    with pytest.raises(ExerciseFailed, match="Exercise 3.3"):
        lesson3.check_l_estimator_terms(mean_not_weighted)


def test_train_ar_cli_trains_resumes_and_ships(tmp_path, shared_tinyshakespeare):
    import json

    from minillada.checkpoint import load_checkpoint
    from minillada.train_ar import main

    out, ship = tmp_path / "run", tmp_path / "ship"
    small = ["--block-size", "16", "--n-layer", "1", "--n-head", "2", "--n-embd", "16"]
    common = ["--out", str(out), "--eval-interval", "1", "--eval-windows", "4", *small]
    main([*common, "--iters", "2", "--save-every", "1", "--threads", "1"])
    main([*common, "--iters", "3", "--resume", "--ship", str(ship)])
    model, tok, config = load_checkpoint(ship)
    assert model.config.causal and config["iter_num"] == 3 and config["bos_id"] == tok.mask_id
    curves = json.loads((ship / "curves.json").read_text())
    assert curves["ar"]["val_iter"] == [1, 2, 3] and "mdm" not in curves
    assert not (ship / "optimizer.safetensors").exists()


def test_estimators_agree_on_the_shipped_lesson1_checkpoint(shared_tinyshakespeare):
    from minillada.char_data import eval_windows
    from minillada.pretrained import load_char_shakespeare
    from minillada.train_char import load_char_corpus

    model, tok = load_char_shakespeare()
    _, _, val_ids = load_char_corpus()
    windows = eval_windows(val_ids, 128, 12)
    g = torch.Generator().manual_seed(0)
    t_per = nelbo_per_sequence(model, windows, tok.mask_id, samples=4, generator=g)
    empty = torch.empty(0, dtype=torch.long)
    l_per = (
        torch.stack(
            [
                conditional_nelbo_samples(
                    model, empty, w, tok.mask_id, mc_num=8, batch_size=8, generator=g
                ).mean()
                for w in windows
            ]
        )
        / 128
    )
    diff = t_per - l_per
    assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(len(diff))
