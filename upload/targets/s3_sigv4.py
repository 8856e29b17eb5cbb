"""AWS Signature Version 4 for an object GET, written from AWS's description of it.

Why not botocore's ``S3SigV4Auth`` here: per GET it builds an ``AWSRequest``, parses its
URL several times and walks generic header rules, ~0.2 ms of held GIL (py-spy of a
download of 1,000 x 100 KiB from worker threads), more than the rest of such a file's
fetch. A GET has no body and a fixed set of headers, so its canonical request is short;
the signing key is derived once per day, region and secret, and each request costs one
sha256 and one HMAC. ``tests/test_archive_threads.py`` checks the result equals
botocore's signature for the same request, a session token and a range included.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from functools import lru_cache

__all__ = ["EMPTY_SHA256", "get_headers"]

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()  # the payload hash of a GET, which has no body


def get_headers(
    *,
    access_key: str,
    secret_key: str,
    token: str | None,
    region: str,
    host: str,
    path: str,
    headers: dict[str, str],
    now: datetime,
) -> dict[str, str]:
    """The headers to send with ``GET path`` (already URI-encoded, as sent; S3 signs it
    unnormalised) to ``host``: ``headers`` (lower-case names, e.g. ``range``) plus the
    signature's own. ``now`` in UTC."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    signed = {**headers, "host": host, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": stamp}
    if token:
        signed["x-amz-security-token"] = token
    names = sorted(signed)
    canonical = "\n".join(
        [
            "GET",
            path,
            "",  # no query
            "".join(f"{name}:{' '.join(str(signed[name]).split())}\n" for name in names),
            ";".join(names),
            EMPTY_SHA256,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    signature = hmac.new(_key(secret_key, day, region), to_sign.encode(), hashlib.sha256).hexdigest()
    out = {name: value for name, value in signed.items() if name != "host"}
    out["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return out


@lru_cache(maxsize=8)
def _key(secret_key: str, day: str, region: str) -> bytes:
    key = hmac.new(f"AWS4{secret_key}".encode(), day.encode(), hashlib.sha256).digest()
    for part in (region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key
