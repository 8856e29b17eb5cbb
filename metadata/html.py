"""Source text -> the HTML a target accepts: broken markup repaired, not passed through.

InvenioRDM (and Zenodo, which runs on it) keeps only a whitelist of tags and attributes
in descriptions (``ALLOWED_HTML_TAGS`` / ``ALLOWED_HTML_ATTRS``) and drops the rest on
the server, so a portal abstract with an unclosed ``<p>``, a ``<script>`` or a relative
link would arrive mangled or dead. We rebuild the markup ourselves with the standard
library's tolerant parser: allowed tags are re-emitted with allowed attributes, every
opened tag is closed in order, other tags are dropped (their text kept; ``script`` and
``style`` with their content), relative links are made absolute against the portal and
unsafe schemes (``javascript:``, ``data:``) removed. Plain text is escaped, line breaks
kept.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

PORTAL = "https://opendata.cern.ch"

ALLOWED_TAGS = frozenset(
    {
        "a",
        "abbr",
        "acronym",
        "b",
        "blockquote",
        "br",
        "code",
        "div",
        "em",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "i",
        "li",
        "ol",
        "p",
        "pre",
        "span",
        "strike",
        "strong",
        "sub",
        "sup",
        "table",
        "tbody",
        "td",
        "th",
        "thead",
        "tr",
        "u",
        "ul",
    }
)
_VOID = frozenset({"br"})
_DROP_WITH_CONTENT = frozenset({"script", "style", "iframe", "object", "embed", "template"})
_ALLOWED_ATTRS = {"a": ("href", "title"), "abbr": ("title",), "acronym": ("title",)}
_SAFE_SCHEMES = {"http", "https", "ftp", "mailto", ""}
_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(?:\s[^<>]*)?/?>")


def absolute_url(url: str, base: str = PORTAL) -> str | None:
    """``/record/80502`` -> ``https://opendata.cern.ch/record/80502``; None for unsafe schemes."""
    url = url.strip()
    if not url:
        return None
    scheme = urlsplit(url).scheme.lower()
    if scheme not in _SAFE_SCHEMES:
        return None
    return urljoin(base + "/", url) if not scheme else url


def record_url(recid: int) -> str:
    return f"{PORTAL}/record/{recid}"


class _Rebuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.open: list[str] = []
        self.skipping: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROP_WITH_CONTENT:
            self.skipping.append(tag)
            return
        if self.skipping or tag not in ALLOWED_TAGS:
            return
        kept = []
        for name, value in attrs:
            if name not in _ALLOWED_ATTRS.get(tag, ()) or value is None:
                continue
            if name == "href":
                value = absolute_url(value)
                if value is None:
                    continue
            kept.append(f' {name}="{html.escape(value, quote=True)}"')
        self.out.append(f"<{tag}{''.join(kept)}>")
        if tag not in _VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            self.handle_starttag(tag, attrs)
        elif tag in ALLOWED_TAGS and not self.skipping:
            self.handle_starttag(tag, attrs)
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.skipping:
            if tag == self.skipping[-1]:
                self.skipping.pop()
            return
        if tag not in self.open:
            return  # a stray close tag: dropped
        while self.open:  # close what was left open inside it, in order
            inner = self.open.pop()
            self.out.append(f"</{inner}>")
            if inner == tag:
                break

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.out.append(html.escape(data, quote=False))

    def result(self) -> str:
        self.close()
        tail = "".join(f"</{tag}>" for tag in reversed(self.open))
        return "".join(self.out) + tail


def looks_like_html(text: str) -> bool:
    return bool(_TAG.search(text))


def sanitize(text: str) -> str:
    """Markup rebuilt within the whitelist; plain text escaped with its line breaks kept."""
    text = text.strip()
    if not looks_like_html(text):
        return re.sub(r"\r?\n", "<br>", html.escape(text, quote=False))
    parser = _Rebuilder()
    parser.feed(text)
    return parser.result().strip()


def plain_text(text: str) -> str:
    """Text without markup, for length checks."""
    return " ".join(html.unescape(_TAG.sub(" ", text)).split())


def link_html(label: str, url: str | None) -> str:
    text = html.escape(label, quote=False)
    if url is None:
        return text
    return f'<a href="{html.escape(url, quote=True)}">{text}</a>'


def list_html(items: Iterable[str]) -> str:
    """``items`` are HTML already."""
    rendered = "".join(f"<li>{item}</li>" for item in items)
    return f"<ul>{rendered}</ul>" if rendered else ""


def escape(text: str) -> str:
    return html.escape(text, quote=False)
