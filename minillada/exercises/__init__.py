"""Checkers for the lessons' exercises.

Every exercise follows one pattern. A stub cell in the lesson defines a function whose body raises
``NotImplementedError("Exercise N.M: ...")``; the next cell calls the lesson's checker, e.g.
``lesson1.check_attention(attention)``. The checker runs the learner's function on seeded inputs
and edge cases, compares with minillada's reference and

* prints ``Exercise N.M passed: ...`` when every case agrees;
* prints ``Exercise N.M not attempted yet; ...`` when the stub still raises NotImplementedError, so
  "Run All" on a fresh lesson gets through the whole lesson;
* raises ExerciseFailed, naming the case, the expected and the returned value,
  when an attempt is wrong.

Later cells never call the learner's function, so an unfinished exercise cannot break the lesson.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch


def seeded(seed: int) -> torch.Generator:
    """A fresh CPU generator seeded with ``seed``: the checkers' inputs are drawn from these."""
    return torch.Generator().manual_seed(seed)


class ExerciseFailed(AssertionError):
    """The learner's function disagrees with the reference on some input."""


@dataclass
class Case:
    description: str  # what this input tests, shown when it fails
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


def short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 400 else text[:400] + " ..."


def assert_same(
    expected: Any, got: Any, atol: float = 1e-6, rtol: float = 1e-5, path: str = "result"
) -> None:
    """Compare tensors (shape, dtype kind, values), numbers, and tuples/lists of them."""
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            raise ExerciseFailed(
                f"{path}: expected a tuple of {len(expected)} items, got {short_repr(got)}"
            )
        for i, (e, g) in enumerate(zip(expected, got, strict=True)):
            assert_same(e, g, atol, rtol, f"{path}[{i}]")
        return
    if torch.is_tensor(expected):
        if not torch.is_tensor(got):
            raise ExerciseFailed(
                f"{path}: expected a tensor, got {type(got).__name__}: {short_repr(got)}"
            )
        if tuple(got.shape) != tuple(expected.shape):
            raise ExerciseFailed(
                f"{path}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
            )
        if expected.dtype == torch.bool or not expected.is_floating_point():
            if not torch.equal(got.to(expected.dtype), expected):
                wrong = (got.to(expected.dtype) != expected).nonzero()[:3].tolist()
                raise ExerciseFailed(
                    f"{path}: values differ at indices {wrong} (first ones)\n"
                    f"  expected {short_repr(expected)}\n  got      {short_repr(got)}"
                )
            return
        if not torch.allclose(got.double(), expected.double(), atol=atol, rtol=rtol):
            err = (got.double() - expected.double()).abs().max().item()
            raise ExerciseFailed(
                f"{path}: values differ (max abs error {err:.3g})\n"
                f"  expected {short_repr(expected)}\n  got      {short_repr(got)}"
            )
        return
    if isinstance(expected, float):
        if not isinstance(got, (int, float)) and not (torch.is_tensor(got) and got.numel() == 1):
            raise ExerciseFailed(f"{path}: expected a number, got {short_repr(got)}")
        if abs(float(got) - expected) > atol + rtol * abs(expected):
            raise ExerciseFailed(f"{path}: expected {expected!r}, got {float(got)!r}")
        return
    if expected != got:
        raise ExerciseFailed(f"{path}: expected {short_repr(expected)}, got {short_repr(got)}")


class CheckResult:
    """What a checker returns: truthy when the exercise passed. It shows nothing in a notebook,
    since the checker has already printed its line."""

    def __init__(self, passed: bool):
        self.passed = passed

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return f"CheckResult(passed={self.passed})"

    def _ipython_display_(self) -> None:
        pass


def _copy(value: Any) -> Any:
    if torch.is_tensor(value):
        return value.clone()
    return copy.deepcopy(value) if isinstance(value, (list, dict)) else value


def check(
    exercise: str,
    learner_fn: Callable,
    reference_fn: Callable,
    cases: Iterable[Case],
    reference_name: str,
    compare: Callable[[Any, Any], None] = assert_same,
) -> CheckResult:
    """Run ``learner_fn`` and ``reference_fn`` on every case; report as described in the module doc.

    The result is truthy when the exercise passed, falsy when it was not attempted.
    """
    cases = list(cases)
    for i, case in enumerate(cases):
        # The learner gets copies: tensors cloned, lists and dicts deep-copied, so that neither
        # side can change the other's input (and an in-place change is caught below).
        args = [_copy(a) for a in case.args]
        try:
            got = learner_fn(*args, **case.kwargs)
        except NotImplementedError:
            print(f"{exercise} not attempted yet; the lesson continues with {reference_name}.")
            return CheckResult(False)
        except Exception as err:
            raise ExerciseFailed(
                f"{exercise}: your function raised {type(err).__name__}: {err}\n"
                f"  on case {i + 1}/{len(cases)}: {case.description}"
            ) from err
        for k, (given, original) in enumerate(zip(args, case.args, strict=True)):
            if isinstance(original, (list, dict)) and given != original:
                raise ExerciseFailed(
                    f"{exercise}: case {i + 1}/{len(cases)} ({case.description}): your function "
                    f"changed its argument {k + 1} in place: expected it to stay "
                    f"{short_repr(original)}, found {short_repr(given)}. Work on a copy and return "
                    "a new value."
                )
        expected = reference_fn(*[_copy(a) for a in case.args], **case.kwargs)
        try:
            compare(expected, got)
        except ExerciseFailed as err:
            raise ExerciseFailed(
                f"{exercise}: case {i + 1}/{len(cases)} ({case.description}):\n{err}"
            ) from None
    print(f"{exercise} passed: {len(cases)} cases agree with {reference_name}.")
    return CheckResult(True)


def diagnosing(
    reference: Callable,
    mistakes: list,
    compare: Callable = assert_same,
    matches: Callable | None = None,
    describe: Callable[[str], str] = lambda what: f"Your result is what {what} gives.",
) -> tuple[Callable, Callable]:
    """(reference_fn, compare_fn) for ``check`` that name a known mistake: ``compare_fn(expected,
    got)`` runs ``compare``; on a disagreement every mistake runs on the same input, and the first
    whose result ``matches(result, got)`` (default: ``compare`` agrees) adds ``describe(what)`` to
    the message. ``mistakes``: [(what the mistake is, fn with the reference's arguments)]. A
    mistake that cannot run on the input matches nothing."""
    if matches is None:
        matches = agrees(compare)
    last_args: list = []

    def reference_fn(*args):
        last_args[:] = args  # check() calls the reference right before compare
        return reference(*args)

    def compare_fn(expected, got):
        try:
            compare(expected, got)
        except ExerciseFailed as err:
            for what, mistake in mistakes:
                try:
                    matched = matches(mistake(*last_args), got)
                except Exception:
                    continue
                if matched:
                    raise ExerciseFailed(f"{err}\n{describe(what)}") from None
            raise

    return reference_fn, compare_fn


def agrees(compare: Callable) -> Callable[[Any, Any], bool]:
    """``compare`` (which raises ExerciseFailed) as a yes/no test."""

    def matches(expected, got) -> bool:
        try:
            compare(expected, got)
        except ExerciseFailed:
            return False
        return True

    return matches


@contextmanager
def forbidden(
    *functions: Callable,
    expected: str = "a measurement",
    hint: str = "build the model (on the meta device) and count what it holds",
) -> Iterator[None]:
    """Inside the ``with`` block, calling any of ``functions`` raises RuntimeError ("expected
    <expected>, not a call of <name>: <hint>"): an exercise refuses the library function that would
    answer it. The function objects themselves are changed (and restored), so a name imported into
    the notebook is caught too."""
    saved = [(f, f.__code__, f.__defaults__, f.__kwdefaults__) for f in functions]
    try:
        for f, *_ in saved:
            name = f"{f.__module__}.{f.__qualname__}"
            message = f"expected {expected}, not a call of {name}: {hint}"
            namespace: dict[str, Any] = {}
            exec(f"def refused(*args, **kwargs):\n    raise RuntimeError({message!r})", namespace)
            f.__defaults__, f.__kwdefaults__ = None, None
            f.__code__ = namespace["refused"].__code__
        yield
    finally:
        for f, code, defaults, kwdefaults in saved:
            f.__code__, f.__defaults__, f.__kwdefaults__ = code, defaults, kwdefaults


def run_experiment(exercise: str, fn: Callable, keys: list) -> dict | None:
    """Call an experiment's ``fn(keys)``, which returns {key: measurement}: None (and a "not
    attempted" line) while the stub still raises NotImplementedError, ExerciseFailed for an error
    or a dict with other keys, else the dict."""
    try:
        got = fn(list(keys))
    except NotImplementedError:
        print(f"{exercise} not attempted yet; the lesson continues.")
        return None
    except Exception as err:
        raise ExerciseFailed(
            f"{exercise}: your function raised {type(err).__name__}: {err}"
        ) from err
    if not isinstance(got, dict) or sorted(got) != sorted(keys):
        raise ExerciseFailed(f"{exercise}: expected a dict with the keys {list(keys)}, got {got!r}")
    return got


def accuracy_and_passes(
    exercise: str, key: str, got, correct: int, n: int, passes: float, how: str
):
    """Compare a learner's (accuracy, mean forward passes) with the measured ones."""
    try:
        acc, p = (float(v) for v in got)
    except (TypeError, ValueError):
        raise ExerciseFailed(
            f"{exercise}: {key}: expected (accuracy, passes), got {got!r}"
        ) from None
    if abs(acc - correct / n) > 1e-9 or abs(p - passes) > 1e-9:
        raise ExerciseFailed(
            f"{exercise}: {key}: expected accuracy {correct / n:.4f} and {passes:.2f} forward "
            f"passes per answer on the {n} items, got {acc:.4f} and {p:.2f}. {how}"
        )
