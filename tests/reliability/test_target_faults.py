"""Server faults against the Zenodo stand-in and S3 (moto), through tests/reliability/fault_proxy.py:
the same four faults as tests/reliability/test_server_faults.py (which uses the sandbox
InvenioRDM's own knobs), for the targets that have no such knobs.

``ferry bulk`` of a few records (one with a 5.5 MB file: multipart on S3) through the
proxy; each fault:

- flaky: 5% answered 500/503, 2% of bodies dropped mid-way (2 certain), 2% answers lost
  after the request took effect;
- a storm: 20 requests refused (Zenodo: 429; S3: 503 SlowDown, what S3 sends) with
  Retry-After and X-RateLimit-Reset, started mid-run (3 storms with ``--long``);
- 2 s latency spikes (3 s on, then off; 4 with ``--long``);
- the target down (3 s; 60 s with ``--long``), then back on its port.

The run exits 0, or 1 bounded and then 0 when run again; then the target, read with its
own tools (the stand-in's admin state, boto), holds every record once with the source's
md5s, nothing else, no open multipart upload; the proxy's log shows the fault hit the run.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.bulk_support import (
    BASE,
    SyntheticSource,
    make_record,
    synthetic_records,
    synthetic_source,
    wait_for,
    write_recids,
)
from tests.fixtures_s3 import S3Server
from tests.fixtures_zenodo import ZenodoHandle
from tests.reliability.fault_proxy import FaultProxy, json_error, s3_error
from tests.reliability.kill_support import exactly, md5, s3_objects, s3_open_uploads, spawn
from tests.reliability.options import rounds

ZenFactory = Callable[..., ZenodoHandle]
BIG = "979001"  # one 5.5 MB file: two parts on S3 (moto's smallest part is 5 MiB)
LIMITS = {"backoff_base": 0.05, "backoff_max": 0.5, "retries": 4, "breaker_cool_down": 0.5, "breaker_trips": 20}


@pytest.fixture(scope="module")
def source(request: pytest.FixtureRequest) -> Iterator[SyntheticSource]:
    count = rounds(bool(request.config.getoption("--long")), 6, 36)
    # Unzipped records only (every 9th and 9th+4 is bundled): the check reads files, not bundles.
    records = [r for i, r in enumerate(synthetic_records(count, seed=31)) if i % 9 not in (0, 4)]
    big = {"uri": f"root://eospublic.cern.ch/{BASE}/{BIG}/f00_{BIG}.dat", "size": 5_500_000, "checksum": ""}
    records.append(make_record(BIG, [big], ["Collision"]))
    with synthetic_source(records) as src:
        yield src


@dataclass
class Target:
    """One target behind the proxy: the config section, the env, and a truth check."""

    proxy: FaultProxy
    section: list[str]
    env: dict[str, str]
    problems: Callable[[SyntheticSource], list[str]]
    storm: tuple[int, str]  # the status and code a storm answers with
    kind: str = ""


def _zenodo(zen: ZenodoHandle, tmp_path: Path) -> Target:
    proxy = FaultProxy(zen.url, seed=5, error_body=json_error)
    # The proxy's faults hit the API and the bucket PUTs; the stand-in's own admin stays clean.
    proxy.configure(faulty=lambda method, path: path.startswith("/api/"))
    token = tmp_path / "zenodo.token"
    token.write_text(zen.token)
    section = ['type = "zenodo"', f'url = "{proxy.url}"', f'token_file = "{token}"']

    def problems(src: SyntheticSource) -> list[str]:
        items: list[dict[str, Any]] = zen.summary()["items"]
        out = []
        for recid in src.recids:
            mine = [i for i in items if recid in str(i["title"])]
            if len(mine) != 1 or mine[0]["state"] != "done":
                out.append(f"zenodo: {recid}: {[(i['id'], i['state']) for i in mine]}, want one published")
                continue
            got = [(k, str(v["md5"])) for k, v in mine[0]["files"].items()]
            out += exactly(src.source_md5(recid), got, f"zenodo {recid}")
        if len(items) != len(src.recids):
            out.append(f"zenodo: {len(items)} depositions for {len(src.recids)} records")
        return out

    return Target(proxy, section, {}, problems, (429, "TooManyRequests"), "zenodo")


def _s3(server: S3Server) -> Target:
    bucket = server.make_bucket()
    proxy = FaultProxy(server.endpoint_url, seed=6, error_body=s3_error)
    section = ['type = "s3"', f'url = "s3://{bucket}/faults"', f'endpoint_url = "{proxy.url}"']
    section += ["multipart_threshold = 5242880", "part_size = 5242880"]
    env = {
        **server.env(),
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }

    def problems(src: SyntheticSource) -> list[str]:
        held = s3_objects(server, bucket)
        out = []
        for recid in src.recids:
            got = [(k.split("/")[2], md5(v)) for k, v in held.items() if k.split("/")[1] == recid]
            out += exactly(src.source_md5(recid), got, f"s3 {recid}")
        strays = [k for k in held if k.split("/")[1] not in src.recids or not k.endswith("/content")]
        out += [f"s3: stray object {k}" for k in strays]
        out += [f"s3: open multipart upload {k}" for k in s3_open_uploads(server, bucket)]
        return out

    return Target(proxy, section, env, problems, (503, "SlowDown"), "s3")


@pytest.fixture(params=["zenodo", "s3"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "zenodo":
        zen_factory: ZenFactory = request.getfixturevalue("zenodo_factory")
        made = _zenodo(zen_factory(rate_per_minute=100_000, rate_per_hour=1_000_000), tmp_path)
    else:
        made = _s3(request.getfixturevalue("moto_s3"))
    try:
        yield made
    finally:
        made.proxy.close()


def _args(tmp_path: Path, src: SyntheticSource, target: Target) -> list[str]:
    lines = ["[source.cernopendata]", f'portal = "{src.portal_url}"', "", "[targets.t]", *target.section, ""]
    lines += ["[limits]", *(f"{k} = {v}" for k, v in LIMITS.items())]
    config = tmp_path / "ferry.toml"
    config.write_text("\n".join(lines) + "\n")
    recids = write_recids(tmp_path / "recids.txt", src.recids)
    dest = tmp_path / "data"
    return ["--config", str(config), "bulk", "--recids", str(recids), "--target", "t", "--dest", str(dest), "--publish"]


def _run(tmp_path: Path, src: SyntheticSource, target: Target, actions: list[Callable[[], None]]) -> None:
    """The bulk run with ``actions`` started once it reached the target; then the truth."""
    args, log = _args(tmp_path, src, target), tmp_path / "ferry.log"
    proc = spawn(args, log, target.env)

    def go() -> None:
        if wait_for(lambda: len(target.proxy.log) > 5 or proc.poll() is not None, timeout=60) and proc.poll() is None:
            for act in actions:
                act()

    thread = threading.Thread(target=go)
    thread.start()
    try:
        first = proc.wait(timeout=600)
    finally:
        thread.join(timeout=180)
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    if first != 0:  # stopped bounded: the same command finishes
        assert first == 1, text[-3000:]
        again = spawn(args, log, target.env)
        assert again.wait(timeout=600) == 0, log.read_text(errors="replace")[-3000:]
    assert target.problems(src) == [], log.read_text(errors="replace")[-3000:]


def test_flaky_500s_drops_and_lost_answers(tmp_path: Path, source: SyntheticSource, target: Target) -> None:
    # drop_next / lost_next: the first two bodies cut and the first answer lost for certain.
    target.proxy.configure(error_rate=0.05, drop_rate=0.02, drop_next=2, lost_rate=0.02, lost_next=1)
    _run(tmp_path, source, target, [])
    assert len(target.proxy.faults("error")) >= 2  # the faults did hit the run
    assert len(target.proxy.faults("drop")) >= 2
    assert len(target.proxy.faults("lost")) >= 1


def test_storm_with_retry_after_and_reset(
    tmp_path: Path, source: SyntheticSource, target: Target, long_run: bool
) -> None:
    storms, per_storm = rounds(long_run, 1, 3), 20
    status, code = target.storm
    target.proxy.configure(storm_status=status, storm_code=code)

    def storm() -> None:
        for _ in range(storms):
            target.proxy.storm(per_storm)
            wait_for(lambda: target.proxy.storm_left() == 0, timeout=120, step=0.05)
            time.sleep(0.5)

    _run(tmp_path, source, target, [storm])
    assert len(target.proxy.faults("storm")) == storms * per_storm  # every refusal was met (and waited out)


def test_latency_spikes_of_2_s(tmp_path: Path, source: SyntheticSource, target: Target, long_run: bool) -> None:
    def spiky() -> None:
        for _ in range(rounds(long_run, 1, 4)):
            target.proxy.configure(latency_s=2.0)
            time.sleep(3.0)
            target.proxy.configure(latency_s=0.0)
            time.sleep(0.5)

    _run(tmp_path, source, target, [spiky])
    assert any(r["duration"] >= 2.0 for r in target.proxy.log)  # the spike hit the run's requests


def test_target_down_for_a_while_then_back(
    tmp_path: Path, source: SyntheticSource, target: Target, long_run: bool
) -> None:
    back: list[float] = []
    # Every answer 0.1 s late: the run still has work when the outage starts (it waits for
    # 5 requests), even when a loaded machine starts the outage late; else the run could
    # end within the outage and no request be left to reach the target once it is back.
    target.proxy.configure(latency_s=0.1)

    def outage() -> None:
        target.proxy.stop()
        time.sleep(rounds(long_run, 3, 60))
        target.proxy.start()
        back.append(time.time())

    _run(tmp_path, source, target, [outage])
    assert back, "the run ended before the target went down"
    assert any(r["ts"] > back[0] for r in target.proxy.log)  # requests reached it once it was back
