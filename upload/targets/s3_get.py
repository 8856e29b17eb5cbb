"""Object GETs on a short path: the client's own signer and HTTP session, without the rest of a botocore call.

Why: a ``get_object`` through the whole botocore call (parameter checks, the endpoint
rules, a dozen event hooks, the response parsed into ~30 fields) cost about 0.9 ms of the
event loop per object, and the loop is what a download of many small files waits on: in
the archive benchmark's 1,000 x 100 KiB that was more than the transfer itself
(docs/benchmarks.md, "archive download").

What stays botocore's: the request is signed by botocore's SigV4 signer (``S3SigV4Auth``)
with the credentials the client itself uses (refreshed as they expire, a session token
included), for the region the client signs for, and sent on aiobotocore's own HTTP
session (its pool, TLS settings, proxies and timeouts). The object's URL is the one
botocore builds for the bucket: learned once per bucket from a URL it presigns, so the
endpoint and addressing style are its choice, with the key encoded as it encodes keys.

What this path never does: decide what a failure means. Any answer but the bytes asked
for (a 200, or a 206 for a range), and any failure before the answer, hands the request
to the whole ``get_object``, which retries by its policy and maps the outcome into
ferry's errors like every other call. When that call then succeeds where this path got a
4xx answer (a region redirect, a signature this path gets wrong), the short path is off
for the bucket. Two private attributes of the aiobotocore client are used (its endpoint's
HTTP session and its signer's credentials); a version without them only turns the short
path off.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.utils import percent_encode

if TYPE_CHECKING:
    from upload.targets.base import RequestLimiter

log = logging.getLogger(__name__)

__all__ = ["Answer", "ShortGet"]

_PROBE = "ferry-url-probe"  # a key name only: no request is made for it


@dataclass
class Answer:
    """What the short GET got: the streaming aiohttp response, or the status of an answer
    that was not the bytes (0: no answer at all)."""

    response: Any = None  # aiohttp.ClientResponse, when ok
    status: int = 0


@dataclass
class ShortGet:
    raw: Any  # the aiobotocore S3 client
    limiter: RequestLimiter | None = None
    _bases: dict[str, str] = field(default_factory=dict)  # bucket -> URL up to the key
    _off: set[str] = field(default_factory=set)  # buckets the short path failed for
    disabled: bool = False

    def __post_init__(self) -> None:
        endpoint = getattr(self.raw, "_endpoint", None)
        signer = getattr(self.raw, "_request_signer", None)
        self._http: Any = getattr(endpoint, "http_session", None)
        self._credentials: Any = getattr(signer, "_credentials", None)
        if self._http is None or self._credentials is None or signer is None:
            self.disabled = True  # anonymous access, or an aiobotocore without these: the whole call
        self._region = str(getattr(self.raw.meta, "region_name", None) or "us-east-1")

    def usable(self, bucket: str) -> bool:
        return not self.disabled and bucket not in self._off

    def turn_off(self, bucket: str, status: int) -> None:
        """The whole call succeeded where this path got ``status``: do not try it again."""
        if bucket not in self._off:
            self._off.add(bucket)
            log.debug("short GET path off for bucket %s (it got HTTP %s where get_object did not)", bucket, status)

    async def _base(self, bucket: str) -> str:
        base = self._bases.get(bucket)
        if base is None:
            url = await self.raw.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": _PROBE})
            plain = str(url).split("?", 1)[0]
            if not plain.endswith("/" + _PROBE):
                raise ValueError(f"unexpected presigned URL form for bucket {bucket}")
            base = self._bases[bucket] = plain[: -len(_PROBE)]
        return base

    async def open(self, bucket: str, key: str, start: int) -> Answer:
        """Send the GET; never raises for what the server or the network does (see the
        module doc): the caller falls back to the whole call on anything but ``response``."""
        try:
            url = await self._base(bucket) + percent_encode(key, safe="/~")
            frozen = await self._credentials.get_frozen_credentials()
            request = AWSRequest(method="GET", url=url, headers={"Range": f"bytes={start}-"} if start else {})
            S3SigV4Auth(frozen, "s3", self._region).add_auth(request)
            prepared = request.prepare()
            prepared.stream_output = True
            if self.limiter is not None:
                async with self.limiter:  # every request that leaves takes its slot
                    pass
            answer = await self._http.send(prepared)
        except Exception as exc:  # noqa: BLE001  # the whole call retries and maps it
            log.debug("short GET of s3://%s/%s failed before an answer (%s): the whole call follows", bucket, key, exc)
            return Answer()
        status = int(answer.status_code)
        if status == (206 if start else 200):
            return Answer(response=answer.raw)
        answer.raw.release()
        return Answer(status=status)
