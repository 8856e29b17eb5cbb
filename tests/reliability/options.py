"""``--long``: the reliability loops at full size (the short sizes run in CI).

Loaded from tests/conftest.py's ``pytest_plugins`` so the option exists wherever pytest
starts (an option added by a conftest below the root is unknown to ``pytest tests``).
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="run the reliability loops at full size (kill -9 x 10 per command, more generated inputs)",
    )


# A --long loop runs for minutes by design (36 records at Zenodo's 100 requests/min, a 60 s
# outage, 10 kills per command): the suite-wide 180 s per test is for the short sizes.
LONG_TIMEOUT = 1800


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--long"):
        for item in items:
            item.add_marker(pytest.mark.timeout(LONG_TIMEOUT))


@pytest.fixture(scope="session")
def long_run(request: pytest.FixtureRequest) -> bool:
    """True under ``--long``: the loops of tests/reliability/ take their full counts."""
    return bool(request.config.getoption("--long"))


def rounds(long_run: bool, short: int, long: int) -> int:
    """How many rounds a loop runs: ``short`` in CI, ``long`` with ``--long``."""
    return long if long_run else short
