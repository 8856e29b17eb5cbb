"""Multipart uploads that nobody will complete, aborted so that no orphan parts are kept
(and billed): those an earlier run left under a record, and those a create request made
when its answer was lost. Housekeeping for the S3 target, never the proof of a transfer:
what the target verifies does not depend on it, so a sweep that cannot run is logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from ferry.core.errors import AuthError, FerryError
from upload.targets.s3_client import At, S3Client
from upload.targets.s3_layout import Places

log = logging.getLogger(__name__)


class Sweeper:
    """The sweeps of one S3 target (one bucket, one layout) for one run."""

    def __init__(self, client: Callable[[], Awaitable[S3Client]], bucket: str, places: Places) -> None:
        self._client = client
        self.bucket = bucket
        self.places = places
        self.started = time.time()  # uploads begun before this are an earlier run's
        # False where other processes write the same record at once (a Dask worker of
        # ``ferry mirror --cluster``): their uploads are live, the client sweeps after all.
        self.enabled = True
        self._cleanups: dict[str, asyncio.Future[None]] = {}

    async def aclose(self) -> None:
        for task in self._cleanups.values():
            task.cancel()
        await asyncio.gather(*self._cleanups.values(), return_exceptions=True)

    async def abandoned(self, recid: str) -> None:
        """Once per record and run: abort unfinished uploads of this record's keys left by
        earlier runs (started before this target was made), so no orphan parts are billed.
        Every put of the record waits for it, so none of this run's uploads is among them."""
        if not self.enabled:
            return
        task = self._cleanups.get(recid)
        if task is None:
            task = self._cleanups[recid] = asyncio.ensure_future(self._abort_uploads(recid))
        try:
            await asyncio.shield(task)
        except Exception:
            self._cleanups.pop(recid, None)  # the next put tries again
            raise

    async def _abort_uploads(self, recid: str) -> None:
        client = await self._client()
        try:
            found = await client.list_uploads(self.bucket, self.places.record_prefix(recid), at=At(recid))
        except AuthError as exc:
            # Listing uploads is a permission of its own (s3:ListBucketMultipartUploads) that
            # a put-and-get policy may lack; the clean-up is housekeeping, not safety.
            log.warning("record %s: cannot look for unfinished uploads to abort: %s", recid, exc)
            return
        for upload in found:
            started = upload.initiated.timestamp() if upload.initiated is not None else 0.0
            if self.places.file_key(recid, upload.key) is not None and started < self.started:
                log.info("record %s: aborting unfinished upload of %s from an earlier run", recid, upload.key)
                await client.abort_multipart(self.bucket, upload.key, upload.upload_id, at=At(recid))

    async def uncertain(self, client: S3Client, object_key: str, at: At) -> None:
        """After a put whose create-multipart request went out more than once: abort every
        upload of that key still open. None of ours is (the put completed or aborted its
        own), so any there is one the server made for a try whose answer was lost, which
        would otherwise hold its parts until the next run. A second run writing the same key
        at this very moment would see its upload gone and retry it: two runs on one S3 key
        race anyway (the last complete wins). A failure is logged, not raised."""
        if (self.bucket, object_key) not in client.uncertain_creates:
            return
        try:
            for upload in await client.list_uploads(self.bucket, object_key, at=at):
                if upload.key == object_key:
                    log.info("%s: aborting an upload whose create answer was lost", object_key)
                    await client.abort_multipart(self.bucket, upload.key, upload.upload_id, at=at)
            client.uncertain_creates.discard((self.bucket, object_key))  # else the next put of it tries again
        except FerryError as exc:
            log.warning("%s: cannot abort uploads left by a lost create answer: %s", object_key, exc)
