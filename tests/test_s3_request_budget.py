"""An s3 section's request budget (``requests_per_minute``/``_hour``): spent per HTTP request.

S3 rate-limits by itself (SlowDown), so by default (AWS's 3,500 requests a second per
prefix) no budget is applied; a lower one in the section counts every request that
leaves, botocore's own retries included, and holds requests once it is spent. With
``--cluster`` the same hook spends the cluster's shared budget (``ClusterLimiter``).
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

import pytest

from ferry.core.checksums import Checksum
from ferry.core.config import Limits, TargetConfig, config_from_mapping
from pipeline.limits import RateLimiter
from tests.fixtures_s3 import S3Proxy, S3Server, proxied_target
from upload.targets import S3_DEFAULTS, make_target
from upload.targets.s3 import S3Target, budgeted


class FakeTime:
    """A clock the limiter reads and a sleep that moves it: a minute passes in no time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _target(text: str, limiter: RateLimiter) -> S3Target:
    tcfg = config_from_mapping(tomllib.loads(text)).target("b")
    target = make_target(tcfg, Limits(retries=2), token=None, limiter=limiter)
    assert isinstance(target, S3Target)
    return target


@pytest.fixture
def aws_env(moto_s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in moto_s3.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


async def test_a_budget_counts_every_request_sent_retries_included_and_holds_the_rest(
    aws_env: None, s3_proxy: S3Proxy, moto_bucket: str, tmp_path: Path
) -> None:
    time = FakeTime()
    limiter = RateLimiter(4, 1000, clock=time.clock, sleep=time.sleep)
    text = proxied_target("b", f"s3://{moto_bucket}/budget", s3_proxy, layout="plain", requests_per_minute=4)
    target = _target(text, limiter)
    failed: list[str] = []

    def once_500(method: str, path: str) -> tuple[int, str] | None:
        if method == "PUT" and not failed:
            failed.append(path)
            return 500, "InternalError"
        return None

    s3_proxy.fail_when(once_500)
    data = b"budgeted bytes\n"
    (tmp_path / "f").write_bytes(data)
    digest = Checksum("md5", hashlib.md5(data).hexdigest())
    async with target:
        rec = await target.create("r", {})
        for name in ("a.txt", "b.txt", "c.txt"):
            await target.put_file(rec, name, tmp_path / "f", len(data), digest)
    sent = s3_proxy.requests
    assert failed, "the proxy's 500 never happened: botocore's retry was not exercised"
    assert limiter.acquired == len(sent) > 4, sent  # one slot per request the server saw
    # More than 4 requests in a minute of budget 4: the fifth waited out the window.
    assert sum(time.slept) >= 59.0, time.slept


def test_the_default_budget_is_s3s_own_rate_and_attaches_no_limiter(tmp_path: Path) -> None:
    section = config_from_mapping(tomllib.loads('[targets.b]\ntype = "s3"\nurl = "s3://bkt/p"\n')).target("b")
    named = TargetConfig.made("s3://bkt/p", "s3", "s3://bkt/p")  # a URL given on the command line
    for tcfg in (section, named):
        assert tcfg.requests_per_minute == S3_DEFAULTS["requests_per_minute"] == 210_000
        assert not budgeted(tcfg)
        target = make_target(tcfg, Limits(), token=None, limiter=RateLimiter(1, 1))
        assert isinstance(target, S3Target) and target.limiter is None
    lower = config_from_mapping(
        tomllib.loads('[targets.b]\ntype = "s3"\nurl = "s3://bkt/p"\nrequests_per_hour = 100000\n')
    ).target("b")
    assert budgeted(lower)
