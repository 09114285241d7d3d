"""The shared helpers of the checker tests get pytest's assertion rewriting, as test files do."""

import pytest

pytest.register_assert_rewrite("checker_cases")
