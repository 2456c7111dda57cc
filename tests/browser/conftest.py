"""Browser tests run Debian's chromium (installed by scripts/bootstrap.sh): missing, they
skip on a developer's machine and fail in CI, which must not pass by skipping."""

import pytest

from tests.servers import require


@pytest.fixture(scope="session")
def chromium() -> str:
    return require("chromium")
