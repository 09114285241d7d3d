"""What the checker tests of every lesson share: the solution passes, the stub is "not attempted",
a mistake fails with a message naming the exercise and the case.

The test files import it as ``from checker_cases import ...``: the folder holds no __init__.py,
so pytest's default (prepend) import mode puts it on sys.path. conftest.py next to this file
registers it for pytest's assertion rewriting, so its asserts report like a test file's.
"""

import pytest

from minillada.exercises import ExerciseFailed


def solution_and_stub_tests(exercises):
    """The two tests over ``exercises``, a list of (number, checker, solution, stub), one case
    per exercise; bind them at module level for pytest to collect::

        test_solution_passes, test_stub_is_not_attempted = solution_and_stub_tests(EXERCISES)
    """
    over_exercises = pytest.mark.parametrize(
        "number, checker, solution, stub", exercises, ids=[number for number, *_ in exercises]
    )

    @over_exercises
    def test_solution_passes(capsys, number, checker, solution, stub):
        assert checker(solution)
        assert f"Exercise {number} passed" in capsys.readouterr().out

    @over_exercises
    def test_stub_is_not_attempted(capsys, number, checker, solution, stub):
        result = checker(stub)
        assert not result
        out = capsys.readouterr().out
        assert f"Exercise {number} not attempted yet" in out
        assert "passed" not in out

    return test_solution_passes, test_stub_is_not_attempted


def assert_fails(checker, mistake, number, match):
    """The checker raises ExerciseFailed naming the exercise and the case, with what it expected.

    ``match`` is searched in the message after ``Exercise <number>: ``; returns the message.
    """
    pattern = rf"^Exercise {number.replace('.', '[.]')}: {match}"
    with pytest.raises(ExerciseFailed, match=pattern) as err:
        checker(mistake)
    message = str(err.value)
    assert "expected" in message or "on case" in message, message
    return message


def ids(mistakes):
    """Test ids for a list of mistakes, each a function or a (function, match) pair: their names."""
    return [m[0].__name__ if isinstance(m, tuple) else m.__name__ for m in mistakes]
