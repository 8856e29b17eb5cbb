"""Zenodo joins the target conformance suite, against the Zenodo stand-in on loopback."""

from __future__ import annotations

from typing import Any

import pytest

from ferry.core.config import Secret, config_from_mapping
from ferry.testing.target_suite import TargetBackend, TargetSuite
from metadata.base import get_profile
from tests.fixtures_zenodo import ZenodoHandle
from upload.targets.zenodo import ZenodoTarget


def zenodo_body(recid: str) -> dict[str, Any]:
    """A deposit body as the zenodo profile makes one: carrying the source recid keyword."""
    return {
        "metadata": {
            "upload_type": "dataset",
            "title": f"Suite record {recid}",
            "creators": [{"name": "Doe, Jane"}],
            "description": "<p>conformance</p>",
            "access_right": "open",
            "keywords": [f"cernopendata:recid:{recid}"],
        }
    }


def zenodo_query(recid: str) -> str:
    return get_profile("zenodo").find_query(recid)


def make_zenodo_target(zenodo: ZenodoHandle) -> ZenodoTarget:
    config = config_from_mapping({"targets": {"zen": {"type": "zenodo", "url": zenodo.url}}})
    return ZenodoTarget(config.target("zen"), token=Secret(zenodo.token))


class TestZenodo(TargetSuite):
    @pytest.fixture
    def backend(self, zenodo: ZenodoHandle) -> TargetBackend:
        return TargetBackend("zenodo", lambda: make_zenodo_target(zenodo), zenodo_body, zenodo_query)
