"""Profiles: how a source record becomes one target repository's draft body.

A profile is declared, not hard-wired: each lives in its own module exposing ``PROFILE``
and is registered here by name (``register_profile``). Modules are imported only when a
profile is asked for, so a new repository costs one module and one registry line (or one
``register_profile`` call from outside).

Interface used by the pipeline and the targets:

- ``get_profile(name) -> Profile``
- ``Profile.name``, ``Profile.transform(record) -> body``, ``Profile.validate(body) ->
  list[FieldIssue]``, ``Profile.find_query(recid) -> str``
- ``transform_and_validate(profile, record) -> body`` (raises ``ValidationError``)

``record`` is the portal JSON, an API answer or a resolved ``ferry.core.model.Record``
(then the file facts come from its real files). The profiles themselves live in
``metadata.profiles``; they read the record through ``metadata.readers``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from ferry.core.errors import ConfigError, InputError, ValidationError
from metadata.readers import read, source_of
from metadata.readers.directory import HINT as DIR_HINT
from metadata.readers.values import text, unwrap
from metadata.schema import Check, FieldIssue, run

__all__ = [
    "FieldIssue",
    "Profile",
    "SchemaProfile",
    "get_profile",
    "profile_names",
    "register_profile",
    "transform_and_validate",
]


@runtime_checkable
class Profile(Protocol):
    """One target repository's metadata dialect."""

    name: str

    def transform(self, record: Any) -> dict[str, Any]:
        """The full draft body to POST for this source record (a mapping, or a resolved
        ``ferry.core.model.Record`` of any source); never mutates ``record``."""
        ...

    def validate(self, body: Mapping[str, Any]) -> list[FieldIssue]:
        """Every problem in ``body`` with its dotted field path; empty when it is valid."""
        ...

    def find_query(self, recid: str) -> str:
        """The ``q=`` search that finds the target record made from this source recid."""
        ...


class SchemaProfile:
    """Shared base: validation is running the profile's declarative ``schema``."""

    name: str = ""
    schema: Check  # set per instance: a function stored on the class would become a method

    def transform(self, record: Mapping[str, Any]) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def find_query(self, recid: str) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def validate(self, body: Mapping[str, Any]) -> list[FieldIssue]:
        return run(self.schema, body)

    def __repr__(self) -> str:
        return f"<profile {self.name}>"


# name -> "module" (exposing PROFILE) or an already built profile
_REGISTRY: dict[str, str | Profile] = {
    "nrp-particles": "metadata.profiles.nrp_particles",
    "inveniordm": "metadata.profiles.inveniordm",
    "zenodo": "metadata.profiles.zenodo",
}


def register_profile(name: str, target: str | Profile) -> None:
    """Declare a profile: a module path exposing ``PROFILE``, or a profile object."""
    _REGISTRY[name] = target


def profile_names() -> list[str]:
    return sorted(_REGISTRY)


def get_profile(name: str) -> Profile:
    """The profile registered as ``name``; ConfigError naming the known ones otherwise."""
    entry = _REGISTRY.get(name)
    if entry is None:
        known = ", ".join(profile_names())
        raise ConfigError(f"unknown metadata profile {name!r}; known profiles: {known}", field="profile")
    if isinstance(entry, str):
        try:
            module = importlib.import_module(entry)
        except ImportError as exc:
            raise ConfigError(f"metadata profile {name!r}: cannot import {entry}: {exc}", field="profile") from exc
        profile = getattr(module, "PROFILE", None)
        if not isinstance(profile, Profile):
            raise ConfigError(f"metadata profile {name!r}: {entry} has no PROFILE", field="profile")
        _REGISTRY[name] = profile
        return profile
    return entry


def _recid_for_errors(record: Any) -> str | None:
    try:
        return text(unwrap(record).get("recid"))
    except InputError:
        return None


# C0 controls and DEL; tab, newline and carriage return are text. A NUL is refused by the
# repositories' databases (PostgreSQL text) with a bare 500, the others corrupt displays.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def control_characters(body: Any, path: str = "") -> list[FieldIssue]:
    """An issue for every string of ``body`` holding a NUL or another control character."""
    if isinstance(body, str):
        m = _CONTROL.search(body)
        if m is None:
            return []
        return [
            FieldIssue(path or "(body)", f"contains the control character U+{ord(m.group()):04X} at offset {m.start()}")
        ]
    if isinstance(body, Mapping):
        return [i for k, v in body.items() for i in control_characters(v, f"{path}.{k}" if path else str(k))]
    if isinstance(body, list | tuple):
        return [i for n, v in enumerate(body) for i in control_characters(v, f"{path}[{n}]")]
    return []


def transform_and_validate(profile: Profile, record: Any) -> dict[str, Any]:
    """Transform ``record`` and check the body; ValidationError listing every bad field.

    Input that is not a record at all (a list, a string) raises InputError.
    """
    recid = _recid_for_errors(record)
    body = profile.transform(record)
    issues = [*control_characters(body), *profile.validate(body)]
    if any(i.path == "metadata.title" for i in issues):
        ds = read(record)
        if ds.metadata_only and not ds.title:
            # The one thing that makes a record impossible to carry: nothing names it.
            raise ValidationError(
                "the record has no title and lists no files: a record needs at least one of them to be migrated",
                errors={"metadata.title": ["the source record has no title and no files"]},
                recid=recid,
            )
    if issues:
        errors: dict[str, list[str]] = {}
        for issue in issues:
            errors.setdefault(issue.path, []).append(issue.message)
        fields = ", ".join(errors)
        hint = f" ({DIR_HINT})" if source_of(record) in ("dir", "local") else ""
        raise ValidationError(
            f"metadata for profile {profile.name} is invalid in {len(errors)} field(s): {fields}{hint}",
            errors=errors,
            recid=recid,
        )
    return body
