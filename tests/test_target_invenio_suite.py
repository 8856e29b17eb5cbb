"""InvenioRDM (plain and NRP mode) joins the target conformance suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.testing.target_suite import TargetBackend, TargetSuite
from tests.fixtures_repository import RepositoryHandle
from tests.test_invenio_support import KiB, make_target, particles_body, particles_query, rdm_body, rdm_query


class TestInvenioRDM(TargetSuite):
    @pytest.fixture
    def backend(self, repository: RepositoryHandle, tmp_path: Path) -> TargetBackend:
        return TargetBackend("invenio", lambda: make_target(repository, tmp_path), rdm_body, rdm_query, large=200 * KiB)


class TestNRP(TargetSuite):
    @pytest.fixture
    def backend(self, repository: RepositoryHandle, tmp_path: Path) -> TargetBackend:
        return TargetBackend(
            "invenio-nrp",
            lambda: make_target(repository, tmp_path, model="particles"),
            particles_body,
            particles_query,
            large=200 * KiB,
        )
