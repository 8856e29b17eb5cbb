"""Which member goes into which bundle, and what to do to each bundle on disk.

Pure functions over facts gathered by ``zipper``: the record's members (from the download
manifest), the bundles' current contents (from their embedded manifests, or the recorded
state when a bundle is unreadable) and whether each original is still on disk. A fresh
record is split deterministically (keys sorted); an existing split is kept, so adding one
file touches one bundle rather than reshuffling them all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from ferry.core.errors import QuotaError, VerificationError
from upload.zip.format import MemberRecord, bundle_index, bundle_name
from upload.zip.policy import BUNDLE_FIXED_OVERHEAD, ZipPolicy, entry_budget, split
from upload.zip.worker import Inspection, MemberJob, Source

Original = Literal["fresh", "stale", "missing"]


@dataclass(frozen=True)
class Member:
    """A data file of the record: what it must be, and whether its original is on disk."""

    key: str
    size: int
    md5: str
    adler32: str
    mtime_ns: int
    original: Original  # fresh: size+mtime match the manifest; stale: differ (md5 is checked)


@dataclass(frozen=True)
class BundleAction:
    name: str
    kind: Literal["keep", "build", "rebuild", "append", "remove"]
    why: str
    members: tuple[MemberJob, ...] = ()
    old_bundle: bool = False  # some members are copied from the existing bundle

    def describe(self) -> str:
        n = len(self.members)
        if self.kind == "keep":
            return f"kept {self.name} ({n} files, {self.why})"
        if self.kind == "remove":
            return f"removed {self.name} ({self.why})"
        if self.kind == "append":
            added = sum(1 for m in self.members if m.source != "kept")
            return f"appended {added} files to {self.name} ({self.why})"
        return f"{'built' if self.kind == 'build' else 'rebuilt'} {self.name} ({n} files, {self.why})"


def plan_assignment(
    recid: str, members: Mapping[str, Member], current: Mapping[str, Sequence[str]], policy: ZipPolicy
) -> dict[str, list[str]]:
    """bundle name -> member keys in archive order.

    Keeps each member where it is; new members go to the last bundle while it has room,
    then to new bundles. Falls back to a fresh deterministic split when there is no
    current split or a bundle would outgrow the target's file size limit.
    """
    deflated = [k for k in members if policy.deflates(k)]

    def fresh() -> dict[str, list[str]]:
        parts = split([(k, m.size) for k, m in members.items()], policy.max_bundle_size, deflated=deflated)
        return {bundle_name(recid, i + 1): keys for i, keys in enumerate(parts)}

    if not any(current.values()):
        return fresh()
    budget = policy.max_bundle_size - BUNDLE_FIXED_OVERHEAD

    def need(key: str) -> int:
        return entry_budget(key, members[key].size, deflated=policy.deflates(key))

    plan: dict[str, list[str]] = {}
    placed: set[str] = set()
    for name in sorted(current, key=lambda n: bundle_index(recid, n) or 0):
        keys = [k for k in current[name] if k in members and k not in placed]
        placed.update(keys)
        if keys:
            plan[name] = keys
    if any(sum(need(k) for k in keys) > budget for keys in plan.values()):
        return _fresh_or_fail(members, fresh)
    for key in sorted(k for k in members if k not in placed):
        last = max(plan, key=lambda n: bundle_index(recid, n) or 0) if plan else None
        if last is not None and sum(need(k) for k in plan[last]) + need(key) <= budget:
            plan[last].append(key)
        else:
            index = max((bundle_index(recid, n) or 0 for n in [*plan, *current]), default=0) + 1
            if need(key) > budget:
                split([(key, members[key].size)], policy.max_bundle_size)  # raises QuotaError naming it
            plan[bundle_name(recid, index)] = [key]
    return plan


def _fresh_or_fail(members: Mapping[str, Member], fresh: Callable[[], dict[str, list[str]]]) -> dict[str, list[str]]:
    gone = [k for k, m in members.items() if m.original == "missing"]
    if gone:
        raise QuotaError(
            f"a bundle would exceed the target's file size limit after an update, and {len(gone)} originals "
            f"are gone (e.g. {gone[0]}), so the bundles cannot be re-split; download the record again"
        )
    return fresh()


def _job(m: Member, policy: ZipPolicy, source: Source, crc32: str | None = None) -> MemberJob:
    return MemberJob(
        key=m.key,
        size=m.size,
        md5=m.md5,
        adler32=m.adler32,
        mtime_ns=m.mtime_ns,
        source=source,
        deflate=policy.deflates(m.key),
        check_md5=source == "file" and m.original == "stale",
        crc32=crc32,
    )


def plan_actions(
    plan: Mapping[str, Sequence[str]],
    members: Mapping[str, Member],
    inspections: Mapping[str, Inspection],
    policy: ZipPolicy,
    recorded: Mapping[str, Sequence[MemberRecord]] | None = None,
) -> list[BundleAction]:
    """What to do to each bundle so it holds exactly its planned members, verified.

    ``recorded``: what earlier runs wrote into each bundle; a damaged bundle's entries can
    still stand in for originals that are gone (their CRC is checked while copying).
    """
    actions: list[BundleAction] = []
    for name, keys in plan.items():
        ins = inspections.get(name)
        have: dict[str, MemberRecord] = {m.key: m for m in ins.members} if ins and ins.problem is None else {}
        if ins is None or not ins.exists:
            actions.append(_from_originals(name, "build", "new", keys, members, policy))
            continue
        if ins.problem is not None:
            known = {m.key: m for m in (recorded or {}).get(name, ())}
            actions.append(_rebuild(name, ins.problem, keys, members, known, policy))
            continue
        changed = [k for k in keys if k in have and (have[k].md5 != members[k].md5 or have[k].size != members[k].size)]
        extra = [k for k in have if k not in set(keys)]
        missing = [k for k in keys if k not in have]
        if not (changed or extra or missing):
            why = "verified now" if ins.scanned else "unchanged since verified"
            actions.append(BundleAction(name, "keep", why, tuple(_job(members[k], policy, "kept") for k in keys)))
        elif changed or extra:
            why = f"{len(changed)} changed, {len(extra)} no longer in the record, {len(missing)} new"
            actions.append(_rebuild(name, why, keys, members, have, policy))
        elif all(members[k].original != "missing" for k in keys):
            # In place: a crash mid-append is repaired from the originals, all still on disk.
            jobs = [_job(members[k], policy, "kept", have[k].crc32) for k in keys if k in have]
            jobs += [_job(members[k], policy, "file") for k in missing]
            actions.append(BundleAction(name, "append", f"{len(missing)} new", tuple(jobs)))
        else:
            actions.append(
                _rebuild(name, f"{len(missing)} new; originals gone, so not in place", keys, members, have, policy)
            )
    for name, ins in inspections.items():
        if ins.exists and name not in plan:
            actions.append(BundleAction(name, "remove", "none of its files is in the record any more"))
    return actions


def _from_originals(
    name: str,
    kind: Literal["build", "rebuild"],
    why: str,
    keys: Sequence[str],
    members: Mapping[str, Member],
    policy: ZipPolicy,
) -> BundleAction:
    gone = [k for k in keys if members[k].original == "missing"]
    if gone:
        shown = ", ".join(gone[:5]) + (f" and {len(gone) - 5} more" if len(gone) > 5 else "")
        raise VerificationError(
            f"bundle {name} is {'missing' if kind == 'build' else 'damaged (' + why + ')'} and "
            f"{len(gone)} of its files are gone from disk ({shown}); download them again",
            file=name,
        )
    return BundleAction(name, kind, why, tuple(_job(members[k], policy, "file") for k in keys))


def _rebuild(
    name: str,
    why: str,
    keys: Sequence[str],
    members: Mapping[str, Member],
    have: Mapping[str, MemberRecord],
    policy: ZipPolicy,
) -> BundleAction:
    """Rebuild to a temp file: originals where present, else the old bundle's unchanged entry."""
    jobs = []
    for k in keys:
        m = members[k]
        old = have.get(k)
        if m.original != "missing":
            jobs.append(_job(m, policy, "file"))
        elif old is not None and old.md5 == m.md5 and old.size == m.size:
            jobs.append(_job(m, policy, "bundle", old.crc32))
        else:
            return _from_originals(name, "rebuild", why, keys, members, policy)
    return BundleAction(name, "rebuild", why, tuple(jobs), old_bundle=any(j.source == "bundle" for j in jobs))
