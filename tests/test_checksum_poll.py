"""The read-back poll while a multipart md5 is computed on the server scales with the size."""

from __future__ import annotations

from upload.invenio_files import checksum_poll_cap

GB = 10**9


def test_poll_cap_grows_with_size_within_bounds() -> None:
    caps = [checksum_poll_cap(n) for n in (0, 50 * 2**20, 2**30, 4 * GB, 10 * GB, 100 * GB)]
    assert caps == sorted(caps)  # never shorter for a bigger file
    assert caps[0] == 0.1 and caps[-1] == 2.0  # floor and ceiling
    # A 1 GiB file (~1.5 s of md5 on the sandbox) is read back at least every 0.3 s,
    # not at the old fixed 2 s ceiling.
    assert checksum_poll_cap(2**30) < 0.3
