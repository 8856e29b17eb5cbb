"""What an InvenioRDM / NRP target settles before its first record: its options and its URLs.

Split from ``upload.targets.invenio`` because it runs once per target, not per record:
the ``[targets.X]`` keys beyond ``TargetConfig``'s own (checked when the target is built,
by ``upload.targets.drafts.checked_options``, so a misspelt key fails before any request),
and, for an NRP server (``model`` set), the discovery through ``/.well-known/repository``
of where the model's drafts are created and searched, where requests are listed, and
whether ``M`` transfers are offered. ``hits`` reads the list answers both this and the
record operations get.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ferry.core.config import TargetConfig
from ferry.core.errors import ConfigError, TargetNotFound
from upload.targets.http import HttpClient, Where

log = logging.getLogger(__name__)

# The keys of a [targets.X] section beyond TargetConfig's own fields, with their defaults
# (anything else is refused).
OPTION_DEFAULTS: dict[str, int | float | bool] = {
    "connections": 16,
    "read_timeout": 600.0,
    "parts_in_flight": 4,
    "checksum_timeout": 120.0,
    "file_attempts": 3,
    "strict_metadata": True,
}

# Path options (no default): `ca_file`, a PEM bundle of CAs to trust instead of the system's
# (a private or sandbox CA); TLS verification stays on.
PATH_OPTIONS = ("ca_file",)


def hits(body: Any) -> list[Mapping[str, Any]]:
    """Items of an InvenioRDM list answer: ``{"hits": {"hits": [...]}}``, ``{"hits": [...]}`` or a list."""
    items: Any = body
    if isinstance(items, Mapping):
        items = items.get("hits", [])
        if isinstance(items, Mapping):
            items = items.get("hits", [])
    return [i for i in items if isinstance(i, Mapping)] if isinstance(items, list) else []


@dataclass(frozen=True)
class Discovery:
    """Where an NRP model lives on its server (absolute URLs; None: keep the default)."""

    create_url: str
    search_url: str | None = None
    requests_url: str | None = None
    multipart: bool = True  # False: the server does not list "M" transfers


async def discover(http: HttpClient, config: TargetConfig, model: str) -> Discovery:
    """Read ``/.well-known/repository`` and the model list; ConfigError naming what is missing."""
    name = config.name
    where = Where("NRP discovery")
    try:
        info = (await http.request("GET", ".well-known/repository", where)).body or {}
    except TargetNotFound:
        raise ConfigError(
            f"targets.{name}: model = {model!r} is set but {config.url} has no "
            "/.well-known/repository (not an NRP server? remove 'model' to use /api/records)"
        ) from None
    transfers = info.get("transfers")
    # An NRP server that does not list "M" gets every file as a single PUT.
    multipart = not (isinstance(transfers, list) and "M" not in transfers)
    info_links = info.get("links") or {}
    requests_url = http.url(info_links["requests"]) if info_links.get("requests") else None
    models_link = info_links.get("models")
    if not models_link:
        raise ConfigError(f"targets.{name}: {config.url} lists no models in /.well-known/repository")
    body = (await http.request("GET", models_link, where)).body
    found = _pick_model(body, model)
    if found is None:
        names = ", ".join(sorted(_model_names(body))) or "none"
        raise ConfigError(f"targets.{name}: the server has no model {model!r} (models: {names})")
    links = found.get("links") or {}
    if not links.get("records"):
        raise ConfigError(f"targets.{name}: model {model!r} has no records link")
    # NRP: the model's "user records" listing, where present, searches drafts of this model only.
    search = links.get("user_records") or links.get("user-records")
    found_at = Discovery(
        create_url=http.url(links["records"]),
        search_url=http.url(search) if search else None,
        requests_url=requests_url,
        multipart=multipart,
    )
    log.info("target %s: model %s creates at %s", name, model, found_at.create_url)
    return found_at


def _models(body: Any) -> list[Any]:
    return list(body.values()) if isinstance(body, Mapping) and "hits" not in body else hits(body)


def _pick_model(body: Any, name: str) -> Mapping[str, Any] | None:
    for item in _models(body):
        if isinstance(item, Mapping) and name in (item.get("name"), item.get("type"), item.get("id")):
            return item
    return None


def _model_names(body: Any) -> set[str]:
    return {f"{i.get('type')} ({i.get('name')})" for i in _models(body) if isinstance(i, Mapping)}
