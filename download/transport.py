"""Which fetcher moves which URI: ``--protocol root`` takes URIs as the record gives them,
``--protocol https`` mirrors ``root://host//eos/opendata/X`` to ``{https_base}/eos/opendata/X``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from download.base import ByteFetcher
from download.fetchers.file import FileFetcher
from download.fetchers.https import HTTPSFetcher, https_url
from download.fetchers.xrootd import XRootDFetcher
from download.sources.cernopendata_index import MAX_INDEX_BYTES  # the defining module: no circle through the source
from ferry.core.config import DEFAULT_PORTAL, Limits
from ferry.core.errors import ConfigError, SourceError

PROTOCOLS = ("root", "https")
_SCHEMES = {
    **{"root": "root", "roots": "root", "xroot": "root", "xroots": "root", "http": "https", "https": "https"},
    "file": "file",  # local folders (download.sources.local)
}


@dataclass
class Transport:
    protocol: str = "root"
    https_base: str = DEFAULT_PORTAL
    fetchers: dict[str, ByteFetcher] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"protocol must be one of {', '.join(PROTOCOLS)}, not {self.protocol!r}")

    @classmethod
    def create(
        cls,
        protocol: str = "root",
        *,
        https_base: str = DEFAULT_PORTAL,
        limits: Limits | None = None,
        verify_tls: bool = True,
    ) -> Transport:
        limits = limits or Limits()
        fetchers: dict[str, ByteFetcher] = {
            "root": XRootDFetcher(chunk_size=limits.chunk_size, chunks_in_flight=limits.chunks_in_flight),
            "https": HTTPSFetcher(connections=max(limits.downloads * 2, 8), verify_tls=verify_tls),
            "file": FileFetcher(chunk_size=limits.chunk_size),
        }
        return cls(protocol=protocol, https_base=https_base, fetchers=fetchers)

    def url_for(self, uri: str) -> str:
        """The URL to fetch a record's file URI from, under the chosen protocol."""
        if self.protocol == "https" and not uri.startswith("file:"):
            return https_url(uri, self.https_base)
        return uri

    def fetcher_for(self, url: str) -> ByteFetcher:
        scheme = _SCHEMES.get(urlsplit(url).scheme.lower())
        fetcher = self.fetchers.get(scheme) if scheme else None
        if fetcher is None:
            raise SourceError(f"no way to fetch {url!r} (supported: root://, https://)")
        return fetcher

    async def read_index(self, uri: str) -> bytes:
        """Read a (small) file index whole, through the same protocol as the data."""
        url = self.url_for(uri)
        return await self.fetcher_for(url).read_small(url, max_size=MAX_INDEX_BYTES)

    async def close(self) -> None:
        for fetcher in self.fetchers.values():
            await fetcher.close()
