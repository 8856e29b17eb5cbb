"""The small subset of the OpenSearch query-string language our clients send.

Supported: `path:value`, `path:"quoted value"`, `path:val*` (wildcard), terms joined by
whitespace or `AND` (all must match), `OR` between groups, a leading `-` or `NOT` to
negate, backslash escapes (`cernopendata\\:81009`), and bare words or quoted phrases
matched case-insensitively against title and description. A path matches when any
element of any list on the way equals the value (as OpenSearch flattens arrays).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

FULLTEXT_PATHS = ("metadata.title", "metadata.description")


@dataclass(frozen=True)
class Term:
    path: str | None  # None: full text
    value: str
    negate: bool = False


Query = list[list[Term]]  # OR of AND-groups


class QuerySyntaxError(ValueError):
    pass


def parse_query(q: str) -> Query:
    groups: Query = [[]]
    negate_next = False
    for token in _tokens(q):
        if token == "AND":
            continue
        if token == "OR":
            groups.append([])
            continue
        if token == "NOT":
            negate_next = True
            continue
        negate = negate_next
        negate_next = False
        if token.startswith("-") and len(token) > 1:
            negate, token = True, token[1:]
        path, value = _split_term(token)
        groups[-1].append(Term(path, value, negate))
    return [g for g in groups if g]


def matches(doc: dict[str, Any], query: Query) -> bool:
    if not query:
        return True
    return any(all(_term_matches(doc, t) != t.negate for t in group) for group in query)


def values_at(doc: Any, path: str) -> list[Any]:
    """All leaf values at a dotted path, flattening lists at every step."""
    current: list[Any] = [doc]
    for part in path.split("."):
        nxt: list[Any] = []
        for item in current:
            for elem in item if isinstance(item, list) else [item]:
                if isinstance(elem, dict) and part in elem:
                    nxt.append(elem[part])
                elif isinstance(elem, list) and part.isdigit() and int(part) < len(elem):
                    nxt.append(elem[int(part)])
        current = nxt
    leaves: list[Any] = []
    for item in current:
        leaves.extend(item if isinstance(item, list) else [item])
    return leaves


def _term_matches(doc: dict[str, Any], term: Term) -> bool:
    if term.path is None:
        needle = term.value.lower()
        for path in FULLTEXT_PATHS:
            for leaf in values_at(doc, path):
                if isinstance(leaf, str) and needle in leaf.lower():
                    return True
        return False
    wanted = term.value.lower()
    wildcard = "*" in wanted or "?" in wanted
    for leaf in values_at(doc, term.path):
        if isinstance(leaf, dict | list):
            continue
        text = _as_text(leaf).lower()
        if (wildcard and fnmatch.fnmatchcase(text, wanted)) or text == wanted:
            return True
    return False


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _tokens(q: str) -> list[str]:
    """Split on whitespace outside quotes; quotes stay in the token, escapes are kept."""
    tokens: list[str] = []
    current: list[str] = []
    in_quotes = False
    i = 0
    while i < len(q):
        ch = q[i]
        if ch == "\\" and i + 1 < len(q):
            current.append(q[i : i + 2])
            i += 2
            continue
        if ch == '"':
            in_quotes = not in_quotes
            current.append(ch)
        elif ch.isspace() and not in_quotes:
            if current:
                tokens.append("".join(current))
                current = []
        else:
            current.append(ch)
        i += 1
    if in_quotes:
        raise QuerySyntaxError("unbalanced quotes")
    if current:
        tokens.append("".join(current))
    return tokens


def _split_term(token: str) -> tuple[str | None, str]:
    # The first unescaped, unquoted colon separates the path from the value.
    i = 0
    while i < len(token):
        ch = token[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            break
        if ch == ":":
            return token[:i], _unquote(token[i + 1 :])
        i += 1
    return None, _unquote(token)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        value = value[1:-1]
    out: list[str] = []
    i = 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            out.append(value[i + 1])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)
