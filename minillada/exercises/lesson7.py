"""Checkers for lesson 7 (notebooks/07_released_weights.ipynb)."""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from minillada.diffusion.confidence import confidence_score
from minillada.estimate import paired_comparison
from minillada.evaluation.gsm8k import extract_answer
from minillada.evaluation.multiple_choice import choose, confidence_scorer, mdm_scorer
from minillada.evaluation.parallel import ResultsStore, evaluate_sharded, merge_result_files
from minillada.evaluation.results_file import ResultsFileError, rank_path, read_results
from minillada.exercises import (
    Case,
    CheckResult,
    ExerciseFailed,
    assert_same,
    check,
    run_experiment,
    short_repr,
)
from minillada.models.llada import LLaDAModel, preset

MASK, EOS = 511, 510  # the tiny model's special ids


def _answer_cases() -> list[Case]:
    texts = {
        "a plain solution": "She sold 48 + 24 = 72 clips.\n#### 72",
        "a number tried while thinking, then the answer": (
            "<think>Maybe #### 70? No: 48 + 24 = 72.</think>The total is 72.\n#### 72"
        ),
        "two '####' lines after the thinking: the last one counts": (
            "</think>#### 10\nWait, I forgot the tax.\n#### 12"
        ),
        "commas, a dollar sign and a final full stop": "</think>It costs\n#### $1,250.",
        "a negative answer": "</think>The change is\n#### -3",
        "a zero fraction": "</think>#### 18.00",
        "no '####' at all": "</think>The answer is 18.",
        "a '####' only inside the thinking": "<think>#### 5</think>I am not sure.",
        "several </think>: only the text after the last counts": (
            "</think>#### 4</think>#### 9 and more"
        ),
        "no </think>: the whole text counts": "Step 1: 3 * 4 = 12.\n#### 12",
        "'####' followed by no number": "</think>####\n",
        "'####' then a line break: spaces may follow it, a new line may not": "</think>####\n72",
    }
    return [Case(description, (text,)) for description, text in texts.items()]


def check_extract_answer(fn: Callable) -> CheckResult:
    """Exercise 7.1: fn(text) -> the graded GSM8K answer (normalised number string) or None."""
    return check(
        "Exercise 7.1",
        fn,
        extract_answer,
        _answer_cases(),
        "minillada.evaluation.gsm8k.extract_answer",
    )


def _tiny_model(seed: int) -> LLaDAModel:
    cfg = preset("tiny", mask_token_id=MASK, eos_token_id=EOS, pad_token_id=EOS)
    model = LLaDAModel(cfg, generator=torch.Generator().manual_seed(seed)).double().eval()
    with torch.no_grad():  # sharper predictions than the initial ones, so the order matters
        for p in model.parameters():
            p.mul_(4.0)
    return model


def _score_reference(model, context_ids, answer_ids, mask_id, eos_id):
    return confidence_score(model, context_ids, answer_ids, mask_id, eos_id).score


def _score_cases() -> list[Case]:
    g = torch.Generator().manual_seed(7)
    cases = []
    for description, seed, P, L, eos in [
        ("a 6-token context and a 4-token answer", 0, 6, 4, None),
        ("the same with padd_eos (one EOS appended to every forward pass)", 0, 6, 4, EOS),
        ("a one-token answer: one forward pass", 1, 9, 1, None),
        ("a long answer after a short context, with padd_eos", 2, 2, 9, EOS),
    ]:
        context = torch.randint(0, 500, (P,), generator=g)
        answer = torch.randint(0, 500, (L,), generator=g)
        cases.append(Case(description, (_tiny_model(seed), context, answer, MASK, eos)))
    return cases


def _compare_score(expected: float, got) -> None:
    """The lesson does not ask for float64, so a score computed in float32 is right too: each
    cross-entropy then carries about 1e-7 of its value (float32 keeps 24 bits), and the sum of at
    most 9 of them, each under 20 nats, about 2e-5 at worst. Every mistake the tests make (another
    order, no padd_eos, a wrong sum) moves the score by 0.1 nats or more."""
    if torch.is_tensor(got):
        if got.numel() != 1:
            raise ExerciseFailed(f"expected one number, got a tensor of shape {tuple(got.shape)}")
        got = float(got)
    assert_same(float(expected), got, atol=1e-4, rtol=1e-6)


def check_confidence_score(fn: Callable) -> CheckResult:
    """Exercise 7.2: fn(model, context_ids, answer_ids, mask_id, eos_id) -> iLLaDA's confidence
    score (a float: minus the sum of the chosen cross-entropies)."""
    return check(
        "Exercise 7.2",
        fn,
        _score_reference,
        _score_cases(),
        "minillada.diffusion.confidence.confidence_score",
        compare=_compare_score,
    )


# --- Exercise 7.3, an experiment: the confidence score against the Monte Carlo likelihood ---------

SCORERS = ("confidence", "monte carlo")
CONTEXT_TOKENS, ENDING_TOKENS = 24, 6


@dataclass(frozen=True)
class ChoiceItem:
    """A context and four endings of ENDING_TOKENS tokens; ``label`` is the true continuation."""

    context: torch.Tensor  # (24,) ids
    options: list[torch.Tensor]  # four (6,) ids
    label: int


def continuation_items(ids: torch.Tensor, n: int, seed: int = 0) -> list[ChoiceItem]:
    """``n`` multiple-choice items cut from the token ids ``ids`` (lesson 4's validation text): 24
    tokens of context, and as endings the 6 tokens that follow them and three 6-token spans from
    elsewhere, the true one at a random place."""
    g = torch.Generator().manual_seed(seed)
    span = CONTEXT_TOKENS + ENDING_TOKENS
    starts = torch.randperm(len(ids) - span, generator=g)[: 4 * n].tolist()
    items = []
    for i in range(n):
        s = starts[i]
        true = ids[s + CONTEXT_TOKENS : s + span]
        others = [ids[t + CONTEXT_TOKENS : t + span] for t in starts[n + 3 * i : n + 3 * i + 3]]
        label = int(torch.randint(4, (1,), generator=g))
        items.append(
            ChoiceItem(ids[s : s + CONTEXT_TOKENS], [*others[:label], true, *others[label:]], label)
        )
    return items


def scorer_for(name: str, model, mask_id: int):
    """The library's scorer ``name`` at 6 forward passes per ending: the confidence score (one
    pass per token of the ending) or the Monte Carlo likelihood with 6 samples (one pass each)."""
    if name == "confidence":
        return confidence_scorer(model, mask_id)
    return mdm_scorer(model, mask_id, mc_num=ENDING_TOKENS, batch_size=ENDING_TOKENS, seed=0)


def check_scorer_experiment(fn: Callable, model, mask_id: int, items: list) -> CheckResult:
    """Exercise 7.3: fn(scorers) -> {scorer: [the option it picks for each item]} for the two
    scorers at 6 forward passes per ending (``scorer_for``). The checker scores a seeded sample
    of the items again, then prints how often each picked the true ending and McNemar's exact
    test of the two on the same items; it draws no conclusion (that is the learner's)."""
    got = run_experiment("Exercise 7.3", fn, list(SCORERS))
    if got is None:
        return CheckResult(False)
    for name in SCORERS:
        picks = list(got[name])
        if len(picks) != len(items):
            raise ExerciseFailed(
                f"Exercise 7.3: {name}: expected one pick per item ({len(items)}), got {len(picks)}"
            )
    g = torch.Generator().manual_seed(73)
    sample = sorted(torch.randperm(len(items), generator=g)[: min(12, len(items))].tolist())
    for name in SCORERS:
        scorer = scorer_for(name, model, mask_id)
        for i in sample:
            expected = choose(scorer, items[i].context, items[i].options).raw_choice
            if got[name][i] != expected:
                raise ExerciseFailed(
                    f"Exercise 7.3: {name}, item {i}: expected option {expected}, got "
                    f"{got[name][i]!r}. Score the four endings with choose(scorer_for({name!r}, "
                    "model, mask_id), item.context, item.options) and take its raw_choice."
                )
    right = {n: [p == item.label for p, item in zip(got[n], items, strict=True)] for n in SCORERS}
    c = paired_comparison(right["confidence"], right["monte carlo"])
    print(
        f"Exercise 7.3 passed: both scorers measured on {len(items)} items (checked again on "
        f"{len(sample)}), 6 forward passes per ending each.\n"
        f"  confidence score: the true ending first on {c.right_a} of {c.n}\n"
        f"  Monte Carlo likelihood, 6 samples: on {c.right_b} of {c.n}\n"
        f"  {c.only_a} items right only under the confidence score, {c.only_b} only under Monte "
        f"Carlo; McNemar exact p = {c.p_two_sided:.3f} (two-sided)"
    )
    return CheckResult(True)


# --- Exercise 7.4: one rank's share of a sharded evaluation, with a resume file -------------------


class Killed(BaseException):
    """The checker's stand-in for a process killed mid-run (a BaseException, like
    KeyboardInterrupt, so that no ``except Exception`` catches it)."""


def _items(n: int) -> list[dict]:
    return [{"question": f"q{i}", "x": (7 * i + 3) % 13} for i in range(n)]


def _score(item: dict) -> dict:
    """The cheap fake scorer: a dict of JSON values, as a results file holds."""
    return {"answer": item["x"] * item["x"] % 17, "text": f"{item['question']}: {item['x'] / 4}"}


FINGERPRINT = {"model": "fake", "settings": {"budget": 8}, "task": "exercise 7.4"}


def _complete_lines(path: Path) -> list[bytes]:
    """The lines of ``path`` that end with a newline (what a reader trusts)."""
    return path.read_bytes().split(b"\n")[:-1] if path.is_file() else []


class _Spy:
    """The scorer the learner's function gets: counts every call, checks that every item scored
    before is already in the file, and raises Killed after ``kill_after`` items."""

    def __init__(self, label: str, path: Path, items: list, kill_after: int | None = None):
        self.label, self.path, self.items, self.kill_after = label, path, items, kill_after
        self.index_of = {item["question"]: i for i, item in enumerate(items)}
        self.before = max(0, len(_complete_lines(path)) - 1)  # item lines already in the file
        self.scored: list[int] = []

    def __call__(self, item: dict) -> dict:
        index = self.index_of.get(item.get("question")) if isinstance(item, dict) else None
        if index is None:
            raise ExerciseFailed(
                f"{self.label}:\n  score was called on {item!r}, not one of the items"
            )
        in_file = len(_complete_lines(self.path)) - 1
        if self.scored and in_file < self.before + len(self.scored):
            data = self.path.read_bytes() if self.path.is_file() else b""
            why = (
                "the last line has no newline yet, and a reader takes such a line for one torn "
                "by a kill and drops it: end each line with its newline as you write it"
                if data and not data.endswith(b"\n")
                else "append each result as soon as it is done, and flush it, not only at the "
                "end: a killed run keeps only what reached the file"
            )
            raise ExerciseFailed(
                f"{self.label}:\n  when item {index} was being scored, your file held "
                f"{max(0, in_file)} complete item lines, expected {self.before + len(self.scored)} "
                f"(items {self.scored} were scored in this run already): {why}"
            )
        if self.kill_after is not None and len(self.scored) == self.kill_after:
            raise Killed(f"killed before item {index}")
        self.scored.append(index)
        return _score(item)


def _run(fn, label, items, rank, world, path, kill_after=None):
    """One run of the learner's function; (what it returned or None when killed, scored indices)."""
    spy = _Spy(label, path, items, kill_after)
    try:
        got = fn(spy, items, rank, world, path, copy.deepcopy(FINGERPRINT))
    except Killed:
        return None, spy.scored
    except (ExerciseFailed, NotImplementedError):
        raise
    except Exception as err:
        raise ExerciseFailed(
            f"{label}:\n  your function raised {type(err).__name__}: {err}"
        ) from err
    return got, spy.scored


def _check_file(label: str, path: Path, share: list[int]) -> None:
    """The file as the library reads it: the header, then every index of the share exactly once."""
    data = path.read_bytes() if path.is_file() else b""
    if not data.endswith(b"\n"):
        raise ExerciseFailed(
            f"{label}:\n  expected every line to end with a newline, the last one too, but your "
            f"file {'is empty' if not data else 'does not end with one'}: a reader takes a "
            "last line without one for a line torn by a kill, and drops it"
        )
    try:
        fingerprint, pairs = read_results(path)
    except ResultsFileError as err:
        raise ExerciseFailed(f"{label}:\n  the library cannot read your file: {err}") from None
    if fingerprint != FINGERPRINT:
        raise ExerciseFailed(
            f'{label}:\n  expected the first line {{"fingerprint": {FINGERPRINT}}}, found '
            f"{short_repr(fingerprint)}"
        )
    indices = sorted(i for i, _ in pairs)
    if indices != share:
        raise ExerciseFailed(
            f"{label}:\n  expected the file to hold items {share} once each, found {indices}"
        )
    for i, result in pairs:
        if result != _score(_items(i + 1)[i]):
            raise ExerciseFailed(
                f"{label}:\n  item {i}: expected the result {_score(_items(i + 1)[i])} in the "
                f"file, found {short_repr(result)}"
            )


def _check_returned(label: str, got, items: list, share: list[int]) -> None:
    expected = [(i, _score(items[i])) for i in share]
    got_list = [tuple(p) for p in got] if isinstance(got, (list, tuple)) else got
    if got_list != expected:
        raise ExerciseFailed(
            f"{label}:\n  expected the (index, result) pairs of the share, in order:\n"
            f"  expected {short_repr(expected)}\n  got      {short_repr(got)}"
        )


def _scored_once(label: str, scored: list[int], share: list[int]) -> None:
    again = sorted({i for i in scored if scored.count(i) > 1})
    if again:
        raise ExerciseFailed(
            f"{label}:\n  expected each item scored once, but items {again} were scored again "
            "after the restart: skip the items the file already holds (a resumed 8B run must "
            "not pay for them twice)"
        )
    if sorted(scored) != share:
        raise ExerciseFailed(
            f"{label}:\n  expected the items {share} to be scored (rank r of w takes items r, "
            f"r + w, ...), your function scored {sorted(scored)}"
        )


def _line(record: dict) -> bytes:
    return (json.dumps(record) + "\n").encode()


def check_sharded_evaluation(fn: Callable) -> CheckResult:
    """Exercise 7.4: fn(score, items, rank, world, path, fingerprint) -> [(index, score(item))
    for this rank's items, in order]: rank ``rank`` of ``world`` takes items rank, rank + world,
    ...; every result is appended to the results file ``path`` as soon as it is done (first line
    {"fingerprint": ...}, then {"index": i, "result": ...} per item, each ending with a newline);
    a restart skips the items already in the file, ignores (and cuts off) a torn last line, and
    refuses a file with another fingerprint. The last case runs 3 ranks, one killed and restarted,
    and the library's ``merge_result_files`` must read the files into what ``evaluate_sharded``
    returns."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cases = 6

        def label(n: int, what: str) -> str:
            return f"Exercise 7.4: case {n}/{cases} ({what})"

        try:
            # 1. one process, a fresh file
            what = label(1, "one process (rank 0 of 1), 5 items, a fresh file")
            items, path = _items(5), folder / "one.jsonl"
            got, scored = _run(fn, what, items, 0, 1, path)
        except NotImplementedError:
            print("Exercise 7.4 not attempted yet; the lesson continues with "
                  "minillada.evaluation.parallel.evaluate_sharded.")  # fmt: skip
            return CheckResult(False)
        _scored_once(what, scored, list(range(5)))
        _check_file(what, path, list(range(5)))
        _check_returned(what, got, items, list(range(5)))

        # 2. the stride
        what = label(2, "rank 1 of 3 over 10 items: items 1, 4 and 7")
        items, path = _items(10), folder / "stride.rank1-of-3.jsonl"
        got, scored = _run(fn, what, items, 1, 3, path)
        _scored_once(what, scored, [1, 4, 7])
        _check_file(what, path, [1, 4, 7])
        _check_returned(what, got, items, [1, 4, 7])

        # 3. a kill, then a restart
        what = label(3, "rank 0 of 2 over 9 items, killed after 2 items, then restarted")
        items, path = _items(9), folder / "kill.rank0-of-2.jsonl"
        share = [0, 2, 4, 6, 8]
        _, first = _run(fn, what, items, 0, 2, path, kill_after=2)
        got, second = _run(fn, what, items, 0, 2, path)
        _scored_once(what, first + second, share)
        _check_file(what, path, share)
        _check_returned(what, got, items, share)

        # 4. a torn last line
        what = label(
            4, "a kill mid-write left a torn last line: items 0 and 2 are in the file, 4 is not"
        )
        items, path = _items(7), folder / "torn.rank0-of-2.jsonl"
        share = [0, 2, 4, 6]
        path.write_bytes(
            _line({"fingerprint": FINGERPRINT})
            + _line({"index": 0, "result": _score(items[0])})
            + _line({"index": 2, "result": _score(items[2])})
            + b'{"index": 4, "result": {"ans'
        )
        got, scored = _run(fn, what, items, 0, 2, path)
        _scored_once(what, scored, [4, 6])
        _check_file(what, path, share)
        _check_returned(what, got, items, share)

        # 5. another run's file
        what = label(5, "the file holds another run's results (another fingerprint)")
        items, path = _items(4), folder / "other.jsonl"
        other = _line({"fingerprint": {**FINGERPRINT, "settings": {"budget": 16}}})
        path.write_bytes(other + _line({"index": 0, "result": {"answer": 0, "text": "?"}}))
        spy = _Spy(what, path, items)
        try:
            got = fn(spy, items, 0, 1, path, copy.deepcopy(FINGERPRINT))
        except Exception:  # any clear refusal will do; the library raises ResultsFileError
            got = None
        if got is not None or spy.scored or not path.read_bytes().startswith(other):
            raise ExerciseFailed(
                f"{what}:\n  expected an error before anything is scored or written, but your "
                f"function scored items {spy.scored} and returned {short_repr(got)}: continuing "
                "another run's file mixes two experiments in one score"
            )

        # 6. graduation: three ranks, one killed and restarted; the library merges the files
        what = label(6, "3 ranks over 10 items, rank 1 killed after 1 item and restarted")
        items, base = _items(10), folder / "run.jsonl"
        scored = []
        for rank in range(3):
            kill = 1 if rank == 1 else None
            path = rank_path(base, rank, 3)
            _, first = _run(fn, what, items, rank, 3, path, kill_after=kill)
            if kill is not None:
                _, again = _run(fn, what, items, rank, 3, path)
                first = first + again
            scored += first
            _check_file(what, path, list(range(rank, 10, 3)))
        _scored_once(what, scored, list(range(10)))
        merged = merge_result_files(base, 10, 3, FINGERPRINT)
        store = ResultsStore(folder / "library.jsonl", FINGERPRINT, dict, dict)
        reference = evaluate_sharded(_score, items, store=store)
        if merged != reference:
            raise ExerciseFailed(
                f"{what}:\n  merge_result_files read your files as {short_repr(merged)}, "
                f"evaluate_sharded gives {short_repr(reference)}"
            )
    print(
        f"Exercise 7.4 passed: {cases} cases (a fresh file, the stride, a kill and a restart, a "
        "torn last line, another run's file); minillada.evaluation.parallel.merge_result_files "
        "reads your three files into the 10 results evaluate_sharded gives."
    )
    return CheckResult(True)
