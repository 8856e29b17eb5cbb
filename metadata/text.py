"""Descriptions as HTML: portal text sections and their link lists, links kept and absolute.

InvenioRDM sanitises descriptions with a whitelist (a, p, div, h1-h5, ul, li, strong, i,
...), so HTML is the way to keep the portal's links clickable on the target. Plain text is
escaped; text that already holds markup (some DELPHI abstracts carry ``<a href>``, ``<p>``,
``<i>``) is kept, with relative links made absolute against the portal.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

PORTAL = "https://opendata.cern.ch"

_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(?:\s[^<>]*)?/?>")
_HREF = re.compile(r"""(?P<lead>\bhref\s*=\s*)(?P<q>["'])(?P<url>[^"']*)(?P=q)""", re.IGNORECASE)
_SAFE_SCHEMES = {"http", "https", "ftp", "mailto", ""}


@dataclass(frozen=True)
class Link:
    text: str
    url: str


@dataclass(frozen=True)
class Section:
    """One portal text block (abstract, methodology, usage, note)."""

    title: str
    text: str | None
    links: tuple[Link, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.text and not self.links


def absolute_url(url: str, base: str = PORTAL) -> str | None:
    """``/record/80502`` -> ``https://opendata.cern.ch/record/80502``; None for unsafe schemes."""
    url = url.strip()
    if not url:
        return None
    scheme = urlsplit(url).scheme.lower()
    if scheme not in _SAFE_SCHEMES:  # javascript:, data: ... would be stripped or worse
        return None
    return urljoin(base + "/", url) if not scheme else url


def looks_like_html(text: str) -> bool:
    return bool(_TAG.search(text))


def text_to_html(text: str) -> str:
    """Markup kept (links made absolute); plain text escaped, line breaks kept."""
    if looks_like_html(text):

        def fix(m: re.Match[str]) -> str:
            url = absolute_url(html.unescape(m.group("url")))
            return f'{m.group("lead")}"{html.escape(url or "#", quote=True)}"'

        return _HREF.sub(fix, text.strip())
    escaped = html.escape(text.strip(), quote=False)
    return re.sub(r"\r?\n", "<br>", escaped)


def links_to_html(links: Iterable[Link]) -> str:
    items = []
    for link in links:
        url = absolute_url(link.url)
        label = html.escape(link.text or link.url, quote=False)
        if url is None:
            items.append(f"<li>{label}</li>")
        else:
            items.append(f'<li><a href="{html.escape(url, quote=True)}">{label}</a></li>')
    return f"<ul>{''.join(items)}</ul>" if items else ""


def section_to_html(section: Section, *, heading: bool) -> str:
    parts = []
    if heading:
        parts.append(f"<h4>{html.escape(section.title, quote=False)}</h4>")
    if section.text:
        parts.append(f"<div>{text_to_html(section.text)}</div>")
    parts.append(links_to_html(section.links))
    return "".join(parts)


def sections_to_html(sections: Iterable[Section]) -> str:
    """All non-empty sections; the first one without a heading (it is the abstract)."""
    out: list[str] = []
    for section in sections:
        if section.empty:
            continue
        out.append(section_to_html(section, heading=bool(out)))
    return "".join(out)


def plain_text(text: str) -> str:
    """Text without markup, for length checks and titles."""
    return html.unescape(_TAG.sub(" ", text)).strip()
