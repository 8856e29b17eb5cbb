"""JSON shapes of the Zenodo stand-in, as zenodo-rdm's legacy serializers write them.

* Depositions (``/api/deposit/depositions``): the legacy shape: ``id``, ``conceptrecid``
  (a string), ``state``, ``submitted``, ``metadata`` (with ``prereserve_doi``), ``links``
  and ``files`` with BARE hex md5 checksums (``filename``, ``filesize``).
* Bucket objects (``PUT {links.bucket}/{key}``): the Files-REST shape, ``checksum`` with
  its ``md5:`` prefix.
* Records (``/api/records``): the "zenodo json" shape: ``files`` with ``key``, ``size``,
  ``checksum: "md5:..."`` and ``links.self`` to the content.
"""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import quote

from sandbox.zenodo_metadata import Obj
from sandbox.zenodo_state import Deposition, StoredFile, ZenodoState, restricted_reason

DOI_PREFIX = "10.5281/zenodo"


def _doi(dep_id: int) -> str:
    return f"{DOI_PREFIX}.{dep_id}"


def deposition_links(state: ZenodoState, dep: Deposition, base: str) -> Obj:
    api = f"{base}/api/deposit/depositions/{dep.id}"
    latest = state.latest_version(dep)
    links: Obj = {
        "self": api,
        "html": f"{base}/deposit/{dep.id}",
        "badge": f"{base}/badge/doi/{_doi(dep.id)}.svg",
        "files": f"{api}/files",
        "latest_draft": f"{base}/api/deposit/depositions/{latest.id}",
        "latest_draft_html": f"{base}/deposit/{latest.id}",
        "publish": f"{api}/actions/publish",
        "edit": f"{api}/actions/edit",
        "discard": f"{api}/actions/discard",
        "newversion": f"{api}/actions/newversion",
        "registerconceptdoi": f"{api}/actions/registerconceptdoi",
    }
    if dep.files_editable:
        links["bucket"] = f"{base}/api/files/{dep.bucket}"
    if dep.published:
        links.update(
            record=f"{base}/api/records/{dep.id}",
            record_html=f"{base}/records/{dep.id}",
            latest=f"{base}/api/records/{dep.id}/versions/latest",
            latest_html=f"{base}/records/{dep.id}/latest",
            doi=f"https://doi.org/{_doi(dep.id)}",
            parent_doi=f"https://doi.org/{_doi(dep.concept)}",
        )
    return links


def deposition_file(dep: Deposition, f: StoredFile, base: str) -> Obj:
    links = {"self": f"{base}/api/deposit/depositions/{dep.id}/files/{f.file_id}"}
    if dep.files_editable:
        links["download"] = f"{base}/api/files/{dep.bucket}/{quote(f.key)}"
    return {"id": f.file_id, "filename": f.key, "filesize": f.size, "checksum": f.md5, "links": links}


def deposition_json(state: ZenodoState, dep: Deposition, base: str) -> Obj:
    metadata = copy.deepcopy(dep.visible_metadata())
    metadata["prereserve_doi"] = {"doi": _doi(dep.id), "recid": dep.id}
    out: Obj = {
        "created": dep.created,
        "modified": dep.modified,
        "id": dep.id,
        "record_id": dep.id,
        "conceptrecid": str(dep.concept),
        "owner": dep.owner,
        "metadata": metadata,
        "title": str(metadata.get("title") or ""),
        "links": deposition_links(state, dep, base),
        "files": [deposition_file(dep, f, base) for f in dep.visible_files().values()],
        "state": dep.state,
        "submitted": dep.published,
    }
    if dep.published:
        out.update(doi=_doi(dep.id), conceptdoi=_doi(dep.concept), doi_url=f"https://doi.org/{_doi(dep.id)}")
    return out


def bucket_object(dep: Deposition, f: StoredFile, base: str, mimetype: str) -> Obj:
    url = f"{base}/api/files/{dep.bucket}/{quote(f.key)}"
    return {
        "created": f.created,
        "updated": f.created,
        "version_id": f.file_id,
        "key": f.key,
        "size": f.size,
        "mimetype": mimetype,
        "checksum": f.checksum,
        "is_head": True,
        "delete_marker": False,
        "links": {"self": url, "version": f"{url}?versionId={f.file_id}", "uploads": f"{url}?uploads"},
    }


def bucket_listing(dep: Deposition, base: str, mimetype_of: Any) -> Obj:
    return {
        "id": dep.bucket,
        "size": sum(f.size for f in dep.files.values()),
        "quota_size": None,
        "locked": not dep.files_editable,
        "links": {"self": f"{base}/api/files/{dep.bucket}"},
        "contents": [bucket_object(dep, f, base, mimetype_of(f.key)) for f in dep.files.values()],
    }


def record_links(dep: Deposition, base: str) -> Obj:
    api = f"{base}/api/records/{dep.id}"
    return {
        "self": api,
        "self_html": f"{base}/records/{dep.id}",
        "doi": f"https://doi.org/{_doi(dep.id)}",
        "self_doi": f"https://doi.org/{_doi(dep.id)}",
        "parent": f"{base}/api/records/{dep.concept}",
        "parent_html": f"{base}/records/{dep.concept}",
        "parent_doi": f"https://doi.org/{_doi(dep.concept)}",
        "latest": f"{api}/versions/latest",
        "latest_html": f"{base}/records/{dep.id}/latest",
        "versions": f"{api}/versions",
        "files": f"{api}/files",
        "archive": f"{api}/files-archive",
    }


def record_json(state: ZenodoState, dep: Deposition, base: str, *, can_read_files: bool) -> Obj:
    """A published record; files are listed only to those who may read them (a restricted
    or embargoed record shows its metadata to everyone, its files to its owner only)."""
    metadata = copy.deepcopy(dep.record_metadata or {})
    metadata.setdefault("access_right", "open")
    metadata["doi"] = _doi(dep.id)
    license_id = metadata.pop("license", None)
    if license_id:
        metadata["license"] = {"id": license_id}
    upload_type = metadata.pop("upload_type", None)
    if upload_type:
        sub = metadata.get(f"{upload_type}_type")
        metadata["resource_type"] = {"type": upload_type, "title": upload_type.capitalize()}
        if sub:
            metadata["resource_type"]["subtype"] = sub
    latest = state.latest_published(dep.concept)
    metadata["relations"] = {
        "version": [
            {
                "index": dep.version_index - 1,
                "is_last": latest is not None and latest.id == dep.id,
                "parent": {"pid_type": "recid", "pid_value": str(dep.concept)},
            }
        ]
    }
    links = record_links(dep, base)
    files = []
    if can_read_files:
        for f in dep.record_files.values():
            files.append(
                {
                    "id": f.file_id,
                    "key": f.key,
                    "size": f.size,
                    "checksum": f.checksum,
                    "links": {"self": f"{links['files']}/{quote(f.key)}/content"},
                }
            )
    return {
        "created": dep.published_at or dep.created,
        "modified": dep.modified,
        "updated": dep.modified,
        "id": dep.id,
        "recid": str(dep.id),
        "conceptrecid": str(dep.concept),
        "doi": _doi(dep.id),
        "conceptdoi": _doi(dep.concept),
        "doi_url": f"https://doi.org/{_doi(dep.id)}",
        "metadata": metadata,
        "title": str(metadata.get("title") or ""),
        "links": links,
        "revision": 1,
        "files": files,
        "swh": {},
        "owners": [{"id": dep.owner}],
        "status": "published",
        "state": "done",
        "submitted": True,
        "stats": {"downloads": 0, "unique_downloads": 0, "views": 0, "unique_views": 0, "volume": 0},
    }


def files_readable(dep: Deposition, user: int | None) -> bool:
    return user == dep.owner or restricted_reason(dep.record_metadata or {}) is None
