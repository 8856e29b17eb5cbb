"""Paged answers as InvenioRDM gives them: ``page``/``size``, ``links.prev``/``next``, and
no page beyond ``MAX_RESULT_WINDOW`` hits (the search engine's window)."""

from __future__ import annotations

from aiohttp import web

from sandbox.repository_core import fail
from sandbox.repository_store import Obj

MAX_RESULT_WINDOW = 10_000


def paging(request: web.Request) -> tuple[int, int]:
    try:
        page = int(request.query.get("page", "1"))
        size = int(request.query.get("size", "10"))
    except ValueError:
        fail(400, "Invalid querystring parameters.")
    if page < 1 or size < 1 or page * size > MAX_RESULT_WINDOW:
        fail(
            400,
            "Invalid querystring parameters.",
            [{"field": "page", "messages": [f"page * size must not exceed {MAX_RESULT_WINDOW}."]}],
        )
    return page, size


def page_of(hits: list[Obj], page: int, size: int, root: str, params: dict[str, str]) -> Obj:
    def link(p: int) -> str:
        query = "&".join(f"{k}={v}" for k, v in {**params, "page": str(p), "size": str(size)}.items())
        return f"{root}?{query}"

    links: Obj = {"self": link(page)}
    if page > 1:
        links["prev"] = link(page - 1)
    if page * size < len(hits) and (page + 1) * size <= MAX_RESULT_WINDOW:
        links["next"] = link(page + 1)
    return {
        "hits": {"hits": hits[(page - 1) * size : page * size], "total": len(hits)},
        "links": links,
        "sortBy": "newest",
        "aggregations": {},
    }
