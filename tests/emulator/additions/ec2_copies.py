"""CopySnapshot and CopyImage as AWS runs them: cross-account, encrypted, slow, limited.

AWS (EC2 API reference CopySnapshot / CopyImage; EBS user guide "Copy an Amazon EBS snapshot";
EC2 user guide "How AMI copy works"; EBS quotas "ebs-resource-quotas"; "Ensuring idempotency"):
- the copy runs in the caller's account and region; the source may belong to another account that
  shared it (createVolumePermission / launch permission), looked up in the owner's backend;
- the copy is encrypted if the source is or `Encrypted` is set, with `KmsKeyId` or else the
  destination account's default EBS key; the copy reports that key and Encrypted=true;
- copies stay `pending` with a growing `Progress` for `copy_seconds`, then `completed`
  (snapshots) / `available` (images); CopyImage makes one new snapshot per EBS mapping;
- incremental copies (EBS user guide "Copy an Amazon EBS snapshot", aws-facts-next.md section 4):
  a snapshot copy is incremental if a copy of an earlier snapshot of the same volume was
  completed in the destination (account, region), the latest copy of that volume there still
  exists, and both are under the same KMS key (or both unencrypted); otherwise it is full: the
  first copy into a region, a copy under another key, a deleted latest copy. An incremental
  copy transfers the blocks the volume changed since its base's source; a full one the whole
  volume. The judgment is made for every CopySnapshot and counted (`snapshot_copies`);
- the byte model (`copy_throughput_mib_s` > 0, off by default; CopySnapshot only): a snapshot
  copy moves its bytes at most at 500 MiB/s, and the copies in flight between one pair of
  regions for one account share 2,000 MiB/s (EBS user guide "Time-based copies": "500 MiB/s per
  copy", "2,000 MiB/s per Region pair", throughput = data / duration); `Progress` is bytes done
  over bytes to do, and the copy completes when they are done;
- TagSpecifications: `snapshot` tags the snapshot copy (CopySnapshot) or the image's new snapshots
  (CopyImage), `image` tags the new image;
- more than `max_pending_snapshot_copies` (20) snapshot copies in flight per destination
  (account, region): `ResourceLimitExceeded` "Too many snapshot copies in progress";
  CopyImage has its own limit (`max_pending_image_copies`, 300);
- CopyImage ClientToken: the same token returns the same image id; the same token with other
  parameters is `IdempotentParameterMismatch`;
- `visibility_delay_ms`: a new copy is left out of DescribeSnapshots (listings, filters and
  explicit ids, which answer `InvalidSnapshot.NotFound`) for that long. AWS: "Eventual
  consistency in the Amazon EC2 API" (EC2 API guide): a resource just created may not be
  returned by Describe calls yet, and NotFound errors right after create are expected;
- another account's encrypted source needs access to its KMS key (kms_access.py). AWS copies
  encrypted snapshots asynchronously and reports a KMS failure in the copy's StateMessage
  (DescribeSnapshots, "if the proper KMS permissions are not obtained"); so by default
  (`kms_denied: "async"`) the call succeeds and the copy is at once `error` (snapshot, with
  StateMessage) or `failed` (image, with StateReason), the message starting "Given key ID is not
  accessible". `kms_denied: "sync"` answers the call itself with `InvalidRequest` instead.
"""

import calendar
import math
import re
import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlparse

from moto.core.responses import ActionResult
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models.amis import Ami
from moto.ec2.models.elastic_block_store import Snapshot
from moto.ec2.responses.amis import AmisResponse
from moto.ec2.responses.elastic_block_store import ElasticBlockStore
from moto.ec2.utils import random_ami_id, random_snapshot_id

from . import kms_access, state
from .ami_devices import make_image
from .ebs_default_encryption import encrypt_by_default
from .ec2_shared import ec2_backends_in, find_image_for, find_snapshot_for

_copy_lock = threading.Lock()

REQUIRED_TEXT = (
    "kms:DescribeKey, kms:CreateGrant, kms:GenerateDataKey*, kms:ReEncrypt*, kms:Decrypt"
)


class KmsAccessDenied(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- pending state --------------------------------------------------------------------------


def mark_pending(obj: Any) -> None:
    now = time.monotonic()
    obj._ferry_start = now
    obj._ferry_until = now + float(state.get("copy_seconds"))
    # Eventual consistency: a new copy shows in Describe calls only after a while.
    obj._ferry_visible_at = now + float(state.get("visibility_delay_ms")) / 1000.0


def is_visible(obj: Any) -> bool:
    """False while a new copy is not yet visible to Describe calls."""
    return time.monotonic() >= obj.__dict__.get("_ferry_visible_at", 0.0)


def _fraction(obj: Any) -> float | None:
    """Progress in [0, 1) while the copy is pending, else None."""
    flow = obj.__dict__.get("_ferry_flow")
    if flow is not None:
        # A copy under the byte model: its clock is the simulation of its region pair.
        per, pair = _rates()
        with _flow_lock:
            _advance(flow, time.monotonic(), per, pair)
            if obj._ferry_until == math.inf:
                total = max(obj._ferry_bytes_total, 1)
                return min(0.99, obj._ferry_bytes_done / total)
    until = obj.__dict__.get("_ferry_until")
    if until is None:
        return None
    now = time.monotonic()
    if now >= until:
        return None
    start = obj._ferry_start
    return max(0.0, min(0.99, (now - start) / max(until - start, 1e-9)))


def _snapshot_status(self: Any) -> str:
    stored = self.__dict__.get("_ferry_status", "completed")
    if stored == "completed" and _fraction(self) is not None:
        return "pending"
    return stored


def _snapshot_set_status(self: Any, value: str) -> None:
    self.__dict__["_ferry_status"] = value


def _snapshot_progress(self: Any) -> str:
    if self.__dict__.get("_ferry_status") == "error":
        return "0%"
    frac = _fraction(self)
    return "100%" if frac is None else f"{int(frac * 100)}%"


def _ami_state(self: Any) -> str:
    stored = self.__dict__.get("_ferry_state", "available")
    if stored == "available" and _fraction(self) is not None:
        return "pending"
    return stored


def _ami_set_state(self: Any, value: str) -> None:
    self.__dict__["_ferry_state"] = value


def complete_all() -> int:
    """Finish every pending copy now (control endpoint /_ferry/copies/complete), RDS copies
    (rds_snapshots.py) included."""
    from moto.ec2.models import ec2_backends

    from . import rds_snapshots

    n = rds_snapshots.complete_all()
    per, pair = _rates()
    now = time.monotonic()
    for account in list(ec2_backends.keys()):
        for backend in list(dict.values(ec2_backends[account])):
            with _flow_lock:
                for flow in list(backend.__dict__.get("_ferry_flows", {}).values()):
                    _advance(flow, now, per, pair)
                    for copy in flow.copies:
                        _finish(copy, now)
                        n += 1
                    flow.copies = []
            for obj in list(backend.snapshots.values()) + list(backend.amis.values()):
                if _fraction(obj) is not None:
                    obj._ferry_until = now
                    n += 1
    return n


def pending_copies(account: str, region: str) -> tuple[int, int]:
    """(snapshot copies, image copies) in flight into (account, region)."""
    backend = next((b for a, b in ec2_backends_in(region) if a == account), None)
    if backend is None:
        return 0, 0
    snaps = sum(1 for s in list(backend.snapshots.values()) if _fraction(s) is not None)
    images = sum(1 for a in list(backend.amis.values()) if _fraction(a) is not None)
    return snaps, images


# --- the byte model: how long a snapshot copy takes -------------------------------------------
#
# EBS user guide "Time-based copies": a snapshot copy moves at most 500 MiB/s, and the copies
# between one pair of regions share 2,000 MiB/s (per account; adjustable); throughput is data
# over duration. So with `copy_throughput_mib_s` > 0 a CopySnapshot copy is pending until its
# bytes are moved: the copies in flight for one (destination account, source region,
# destination region) share `region_pair_throughput_mib_s` equally, each at most at the per-copy
# rate, and a copy that finishes (or is deleted: that cancels it) gives its share back at that
# instant. The simulation is piecewise-constant and advanced lazily, whenever a copy's state is
# read or a copy starts: until `now`, find the copy that finishes first at the current equal
# share, move everyone to that instant, drop it, and recompute. CopyImage keeps `copy_seconds`.

GIB = 2**30
MIB = 2**20

# Guards every flow below. Never held while taking state.lock (state's reset hooks run under
# that lock), so the rates are read before it is taken.
_flow_lock = threading.Lock()


class _Flow:
    """The snapshot copies in flight for one (destination account, source region, destination
    region) and the instant up to which their bytes have been moved."""

    __slots__ = ("copies", "clock")

    def __init__(self, now: float) -> None:
        self.copies: list[Any] = []
        self.clock = now


def _rates() -> tuple[float, float]:
    """(per copy, per region pair) in bytes per wall-clock second: the MiB/s of the
    configuration times `time_scale` (emulated seconds per wall-clock second). The pair is
    math.inf when it has no cap; the per-copy rate is 0 when the byte model is off."""
    scale = float(state.get("time_scale"))
    per = float(state.get("copy_throughput_mib_s")) * MIB * scale
    pair = float(state.get("region_pair_throughput_mib_s")) * MIB * scale
    return per, pair if pair > 0 else math.inf


def _exists(snap: Any) -> bool:
    return snap.ec2_backend.snapshots.get(snap.id) is snap


def _finish(copy: Any, at: float) -> None:
    copy._ferry_bytes_done = copy._ferry_bytes_total
    copy._ferry_until = at


def _left(copy: Any) -> float:
    return copy._ferry_bytes_total - copy._ferry_bytes_done


def _advance(flow: _Flow, now: float, per: float, pair: float) -> None:
    """Move the flow's copies on to `now` (the caller holds _flow_lock). The rates are read at
    each advance: a change of configuration applies from the last advance on."""
    for copy in [c for c in flow.copies if not _exists(c)]:
        copy._ferry_until = flow.clock  # deleted while pending: the copy is cancelled
    flow.copies = [c for c in flow.copies if _exists(c)]
    if per <= 0:
        # The model was switched off while these copies were in flight: they are done.
        for copy in flow.copies:
            _finish(copy, now)
        flow.copies = []
    t = flow.clock
    while flow.copies and t < now:
        rate = min(per, pair / len(flow.copies))
        first = min(flow.copies, key=_left)
        finish = t + _left(first) / rate
        end = min(now, finish)
        for copy in flow.copies:
            copy._ferry_bytes_done = min(
                copy._ferry_bytes_total, copy._ferry_bytes_done + rate * (end - t)
            )
        t = end
        if finish <= now:
            _finish(first, t)
            # copies that had as much left finish at the same instant (within float rounding)
            for copy in flow.copies:
                if _left(copy) < 1.0:
                    _finish(copy, t)
            flow.copies = [c for c in flow.copies if c._ferry_until == math.inf]
    flow.clock = max(flow.clock, now)


def _start_flow(backend: Any, source_region: str, copy: Any, total: int) -> None:
    """Store `copy` in `backend` and let it move `total` bytes under the byte model."""
    per, pair = _rates()
    now = time.monotonic()
    copy._ferry_bytes_total = total
    copy._ferry_bytes_done = 0.0
    if total <= 0:
        # nothing to move: complete at once (visibility still lags as for any copy)
        copy._ferry_until = now
        backend.snapshots[copy.id] = copy
        return
    with _flow_lock:
        # Flows live on the destination backend, so moto's reset forgets them with the copies.
        flows = backend.__dict__.setdefault("_ferry_flows", {})
        flow = flows.get(source_region)
        if flow is None:
            flow = flows[source_region] = _Flow(now)
        # the copies already in flight moved their bytes at the old share until now
        _advance(flow, now, per, pair)
        copy._ferry_flow = flow
        copy._ferry_until = math.inf
        backend.snapshots[copy.id] = copy
        flow.copies.append(copy)


# --- incremental or full ----------------------------------------------------------------------
#
# A copy keeps the lineage of the data it holds: the volume the original snapshot was taken of
# (moto's copy shares the source's `volume` object, so its id is the volume's), the original
# snapshot and its start time. A copy of a copy keeps the original's lineage. The judgment
# follows aws-facts-next.md section 4 (EBS user guide "Copy an Amazon EBS snapshot"): incremental
# iff the volume was copied to the destination before, the latest copy there still exists, and
# they are under the same key. Judged when the copy is submitted: AWS queues a second copy of a
# volume behind a pending one; the emulator does not, so a pending copy is no base.


def _lineage(snap: Any) -> tuple[Any, str | None, str, Any]:
    """(backend holding the volume's own snapshots, volume id, original snapshot id, its
    start time) of the data in `snap`."""
    if "_ferry_source_id" in snap.__dict__:
        return (
            snap._ferry_source_backend,
            snap._ferry_source_volume,
            snap._ferry_source_id,
            snap._ferry_source_time,
        )
    return snap.ec2_backend, getattr(snap.volume, "id", None), snap.id, snap.start_time


def inherit_lineage(copy: Any, source: Any) -> None:
    (
        copy._ferry_source_backend,
        copy._ferry_source_volume,
        copy._ferry_source_id,
        copy._ferry_source_time,
    ) = _lineage(source)


def _volume_bytes(snap: Any) -> int:
    return int(getattr(snap.volume, "size", 0) or 0) * GIB


def _own_snapshots(backend: Any, volume_id: str) -> list[Any]:
    """The snapshots taken of the volume (not copies), oldest first."""
    snaps = [
        s
        for s in list(backend.snapshots.values())
        if "_ferry_source_id" not in s.__dict__ and getattr(s.volume, "id", None) == volume_id
    ]
    return sorted(snaps, key=lambda s: s.start_time)


def _changed_bytes(snaps: list[Any], i: int) -> int:
    """Bytes snapshot `snaps[i]` changed since its predecessor: seeded
    (/_ferry/snapshots/changed), else `changed_share` of the volume; the first snapshot of a
    volume has no predecessor and holds all of it."""
    snap = snaps[i]
    seeded = snap.__dict__.get("_ferry_changed_bytes")
    if seeded is not None:
        return int(seeded)
    size = _volume_bytes(snap)
    return size if i == 0 else round(size * float(state.get("changed_share")))


def _history_key(source: Any) -> tuple[str, str, str | None]:
    backend, volume_id, _, _ = _lineage(source)
    return backend.account_id, backend.region_name, volume_id


def judge_copy(backend: Any, source: Any, key: str | None) -> tuple[bool, int, str | None]:
    """(incremental, bytes to move, the base copy's source id) of a copy of `source` into
    `backend` under `key` (None: unencrypted). The caller holds _copy_lock."""
    origin, volume_id, source_id, source_time = _lineage(source)
    full = (False, _volume_bytes(source), None)
    if volume_id is None:
        return full
    history = backend.__dict__.get("_ferry_copy_history", {}).get(_history_key(source), [])
    done = [c for c in history if _fraction(c) is None]  # pending copies are no base
    if not done:
        return full  # the first copy of this volume into the destination
    latest = done[-1]
    if not _exists(latest) or latest.kms_key_id != key:
        return full  # the latest copy was deleted, or the data is re-encrypted
    base_time = latest._ferry_source_time
    if base_time > source_time:
        return full  # the latest copy holds a newer snapshot
    snaps = _own_snapshots(origin, volume_id)
    changed = sum(
        _changed_bytes(snaps, i)
        for i, s in enumerate(snaps)
        if base_time < s.start_time <= source_time
    )
    # never more than the whole volume, whatever was seeded
    return True, min(changed, _volume_bytes(source)), latest._ferry_source_id


def _remember_copy(backend: Any, copy: Any) -> None:
    # On the destination backend: moto's reset forgets the history with the copies.
    history = backend.__dict__.setdefault("_ferry_copy_history", {})
    history.setdefault(_history_key(copy), []).append(copy)


def seed_changed(doc: Any) -> int:
    """`POST /_ferry/snapshots/changed`: {"account", "region", "changes": {snapshot id: bytes}}
    sets the bytes each snapshot changed since its volume's previous one. All or nothing;
    ValueError (HTTP 400) for a bad body, an unknown snapshot or a copy."""
    if not isinstance(doc, dict):
        raise ValueError('body must be {"account": ..., "region": ..., "changes": {...}}')
    account, region, changes = doc.get("account"), doc.get("region"), doc.get("changes")
    if not isinstance(account, str) or not isinstance(region, str):
        raise ValueError("account and region must be strings")
    if not isinstance(changes, dict):
        raise ValueError('changes must be an object {"snap-...": bytes, ...}')
    for snap_id, n in changes.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"changes[{snap_id!r}] must be an integer >= 0, got {n!r}")
    backend = next((b for a, b in ec2_backends_in(region) if a == account), None)
    snaps = {} if backend is None else dict(backend.snapshots)
    unknown = sorted(i for i in changes if i not in snaps)
    if unknown:
        raise ValueError(
            f"unknown snapshot ids in account {account}, region {region}: {', '.join(unknown)}"
        )
    copies = sorted(i for i in changes if "_ferry_source_id" in snaps[i].__dict__)
    if copies:
        raise ValueError(
            f"{', '.join(copies)}: copies hold their original's changes; seed the snapshots "
            "taken of the volume"
        )
    for snap_id, n in changes.items():
        snaps[snap_id]._ferry_changed_bytes = n
    return len(changes)


# --- shared checks --------------------------------------------------------------------------


def _bool_param(resp: Any, name: str) -> bool:
    value = resp._get_param(name)
    return value is True or str(value).lower() == "true"


def target_encryption(
    resp: Any, source_encrypted: bool, encrypted: bool, kms_key_id: str | None
) -> tuple[bool, str | None]:
    """(encrypted, key ARN) of a copy made by `resp`'s caller."""
    account, region = resp.current_account, resp.region
    if encrypt_by_default(resp.ec2_backend):
        encrypted = True
    if kms_key_id and not (encrypted or source_encrypted):
        raise EC2ClientError(
            "InvalidParameterDependency",
            "The parameter KmsKeyId requires the parameter Encrypted to be set.",
        )
    if not (encrypted or source_encrypted):
        return False, None
    if not kms_key_id:
        backend = resp.ec2_backend
        return True, backend.default_kms_key_id or backend._create_default_encryption_key()
    key = kms_access.find_key(account, region, kms_key_id)
    if key is None or key.region != region:
        raise EC2ClientError(
            "InvalidParameterValue",
            f"KMS key {kms_key_id} does not exist in account {account}, region {region}",
        )
    if key.account_id != account and not kms_access.account_may_use(key, account):
        raise EC2ClientError(
            "InvalidParameterValue", f"KMS key {key.arn} is not accessible to account {account}"
        )
    return True, key.arn


def check_source_key(account: str, region: str, snap: Any) -> None:
    """Raise KmsAccessDenied if `account` may not decrypt another account's snapshot `snap`."""
    if not snap.encrypted or snap.owner_id == account or not state.get("enforce_kms"):
        return
    key = kms_access.find_key(snap.owner_id, region, snap.kms_key_id)
    if kms_access.account_may_use(key, account):
        return
    key_name = key.arn if key is not None else snap.kms_key_id
    why = (
        "it is an AWS managed key, which cannot be shared"
        if kms_access.is_aws_managed(key)
        else f"neither its key policy nor a grant allows account {account} {REQUIRED_TEXT}"
    )
    if key is not None and not kms_access.is_aws_managed(key):
        # Which operations are missing, as grants name them: a grant short of one is the
        # common mistake, and this says which.
        missing = ", ".join(kms_access.missing_operations(key, account))
        why += f" (missing: {missing})"
    raise KmsAccessDenied(
        f"Given key ID is not accessible: snapshot {snap.id} of account {snap.owner_id} is "
        f"encrypted with KMS key {key_name}, and {why}"
    )


_AMZ_DATE = re.compile(r"^\d{8}T\d{6}Z$")
_SIGNATURE = re.compile(r"^[0-9a-f]{64}$")


def presigned_url_problem(
    url: str | None, source_id: str, source_region: str, region: str
) -> str | None:
    """Why `url` is not the PresignedUrl an encrypted cross-region CopySnapshot must carry
    (EC2 API reference, CopySnapshot: a SigV4 presigned CopySnapshot against the source
    region with SourceRegion, SourceSnapshotId and DestinationRegion), or None if it is one.
    The signature's form is checked, not its value (the emulator does not check secrets)."""
    if not url:
        return "no PresignedUrl: an encrypted copy from another region must carry one"
    parsed = urlparse(url)
    query = {k: v[0] for k, v in parse_qs(parsed.query, keep_blank_values=True).items()}
    wanted = {
        "Action": "CopySnapshot",
        "SourceSnapshotId": source_id,
        "SourceRegion": source_region,
        "DestinationRegion": region,
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
    }
    for k, v in wanted.items():
        if query.get(k) != v:
            return f"PresignedUrl has {k}={query.get(k)!r}, not {v!r}"
    scope = query.get("X-Amz-Credential", "").split("/")
    if len(scope) != 5 or scope[2:] != [source_region, "ec2", "aws4_request"]:
        return "PresignedUrl is not signed for ec2 in the source region"
    if "host" not in query.get("X-Amz-SignedHeaders", "").split(";"):
        return "PresignedUrl does not sign the host header"
    if not _SIGNATURE.match(query.get("X-Amz-Signature", "")):
        return "PresignedUrl has no SigV4 signature"
    date = query.get("X-Amz-Date", "")
    if not _AMZ_DATE.match(date) or scope[1] != date[:8]:
        return "PresignedUrl has no valid X-Amz-Date"
    signed = calendar.timegm(time.strptime(date, "%Y%m%dT%H%M%SZ"))
    expires = query.get("X-Amz-Expires", "")
    if not expires.isdigit() or signed + int(expires) < time.time():
        return "PresignedUrl has expired"
    return None


def take_copy_failure() -> bool:
    """True for the next `fail_next_copies` copies (then the count is used up)."""
    with state.lock:
        n = int(state.config.get("fail_next_copies") or 0)
        if n <= 0:
            return False
        state.config["fail_next_copies"] = n - 1
        return True


FAILED_COPY = "ferry emulator: this copy failed (fail_next_copies)"


def ebs_grant(account: str, region: str, snap: Any) -> None:
    """A copy by `account` of another account's encrypted snapshot leaves a grant on the source
    key, issued by `account` (what the kms:CreateGrant the copier needs is for: AWS's
    share-kms-key guidance), and it stays after the copy: the case a revoke must clean up.
    Off with `ebs_grants: false`."""
    if not snap.encrypted or snap.owner_id == account or not state.get("ebs_grants"):
        return
    key = kms_access.find_key(snap.owner_id, region, snap.kms_key_id)
    if key is None or kms_access.is_aws_managed(key):
        return
    from .visibility import record

    grant = key.add_grant(
        "",
        f"arn:aws:iam::{account}:root",
        ["Decrypt", "DescribeKey", "ReEncryptFrom", "CreateGrant"],
        None,
        None,
    )
    grant._ferry_issuing_account = account
    grant._ferry_created = time.time()
    record(("grant", grant.id), None)


def _deny(message: str) -> None:
    if state.get("kms_denied") == "sync":
        raise EC2ClientError("InvalidRequest", message)


def _check_snapshot_limit(account: str, region: str, adding: int) -> None:
    snaps, _ = pending_copies(account, region)
    if snaps + adding > int(state.get("max_pending_snapshot_copies")):
        raise EC2ClientError("ResourceLimitExceeded", "Too many snapshot copies in progress")


def _tags(resp: Any) -> dict[str, dict[str, str]]:
    # moto's parser: InvalidParameter / empty-tag errors as EC2 gives them
    return resp._parse_tag_specification()


# --- CopySnapshot ---------------------------------------------------------------------------


def _copy_snapshot(self: ElasticBlockStore) -> ActionResult:
    account, region = self.current_account, self.region
    source_id = self._get_param("SourceSnapshotId")
    source_region = self._get_param("SourceRegion") or region
    tags = _tags(self).get("snapshot", {})
    # Time-based copies (EBS user guide, "Time-based copies"): 15 to 2880 minutes, in steps
    # of 15; moto ignores the parameter.
    minutes = self._get_param("CompletionDurationMinutes")
    if minutes is not None:
        m = int(minutes)
        if not 15 <= m <= 2880 or m % 15:
            raise EC2ClientError(
                "InvalidParameterValue",
                f"CompletionDurationMinutes must be 15 to 2880 in 15-minute increments: {m}",
            )
    self.error_on_dryrun()

    source = find_snapshot_for(account, source_region, source_id)
    if source is None:
        raise EC2ClientError(
            "InvalidSnapshot.NotFound", f"The snapshot '{source_id}' does not exist."
        )
    encrypted, key_arn = target_encryption(
        self, source.encrypted, _bool_param(self, "Encrypted"), self._get_param("KmsKeyId")
    )
    denied = None
    try:
        check_source_key(account, source_region, source)
    except KmsAccessDenied as e:
        _deny(e.message)
        denied = e.message
    _check_snapshot_limit(account, region, 1)
    # Checked after the call is accepted: a copy without a good PresignedUrl fails
    # asynchronously, as the API reference describes.
    if not denied and source.encrypted and source_region != region and state.get(
        "require_presigned_url"
    ):
        denied = presigned_url_problem(
            self._get_param("PresignedUrl"), source_id, source_region, region
        )
    if not denied and take_copy_failure():
        denied = FAILED_COPY
    if not denied:
        ebs_grant(account, source_region, source)

    backend = self.ec2_backend
    snapshot = Snapshot(
        backend,
        random_snapshot_id(),
        volume=source.volume,
        description=self._get_param("Description") or "",
        encrypted=encrypted,
        kms_key_id=key_arn,
    )
    inherit_lineage(snapshot, source)
    if denied:
        snapshot.status = "error"
        snapshot.state_message = denied
        backend.snapshots[snapshot.id] = snapshot
    else:
        # judged for every copy (counted); only its duration depends on the byte model
        incremental, size, base = judge_copy(backend, source, key_arn)
        mark_pending(snapshot)
        if _rates()[0] > 0:
            _start_flow(backend, source_region, snapshot, size)
        else:
            backend.snapshots[snapshot.id] = snapshot
        _remember_copy(backend, snapshot)
        state.count_snapshot_copy(
            {
                "account": account,
                "region": region,
                "snapshot": snapshot.id,
                "source": source.id,
                "source_region": source_region,
                "volume": snapshot._ferry_source_volume,
                "key": key_arn,
                "incremental": incremental,
                "bytes": size,
                "base": base,
            }
        )
    snapshot.add_tags(tags)
    state.count_copy(account, region, "snapshots")
    if minutes is not None:
        state.count_copy(account, region, "time_based_snapshots")
    return ActionResult({"SnapshotId": snapshot.id, "Tags": snapshot.tag_set})


# --- CopyImage ------------------------------------------------------------------------------


def _copy_image(self: AmisResponse) -> ActionResult:
    account, region = self.current_account, self.region
    source_id = self._get_param("SourceImageId")
    source_region = self._get_param("SourceRegion") or region
    name = self._get_param("Name")
    description = self._get_param("Description")
    encrypted_param = _bool_param(self, "Encrypted")
    kms_param = self._get_param("KmsKeyId")
    token = self._get_param("ClientToken")
    tags = _tags(self)
    self.error_on_dryrun()

    params = (source_id, source_region, name, description, encrypted_param, kms_param)
    if token:
        with state.lock:
            seen = state.image_tokens.get((account, region, token))
        if seen is not None:
            if seen[0] != params:
                raise EC2ClientError(
                    "IdempotentParameterMismatch",
                    f"The client token '{token}' was already used with different parameters.",
                )
            return ActionResult({"ImageId": seen[1]})

    source = find_image_for(account, source_region, source_id)
    if source is None:
        raise EC2ClientError(
            "InvalidAMIID.NotFound", f"The image id '[{source_id}]' does not exist"
        )

    from moto.ec2.models import ec2_backends

    owner_backend = ec2_backends[source.owner_id][source_region]
    plan = []  # (mapping, source snapshot)
    denied = None
    for m in source.block_device_mappings:
        ebs = m.get("Ebs")
        if not ebs or not ebs.get("SnapshotId"):
            plan.append((m, None))
            continue
        snap = owner_backend.snapshots.get(ebs["SnapshotId"])
        if snap is None or (
            source.owner_id != account
            and find_snapshot_for(account, source_region, snap.id) is None
        ):
            raise EC2ClientError(
                "InvalidRequest",
                f"You do not have permission to access the storage of this ami "
                f"(snapshot {ebs['SnapshotId']} is not shared with account {account})",
            )
        try:
            check_source_key(account, source_region, snap)
        except KmsAccessDenied as e:
            _deny(e.message)
            denied = denied or e.message
        plan.append((m, snap))

    _, images_pending = pending_copies(account, region)
    if images_pending + 1 > int(state.get("max_pending_image_copies")):
        raise EC2ClientError("ResourceLimitExceeded", "Too many image copies in progress")
    if not denied:
        for _, snap in plan:
            if snap is not None:
                ebs_grant(account, source_region, snap)

    backend = self.ec2_backend
    ami_id = random_ami_id()
    mappings = []
    new_snaps = []
    for m, snap in plan:
        if snap is None:
            mappings.append(dict(m))
            continue
        encrypted, key_arn = target_encryption(self, snap.encrypted, encrypted_param, kms_param)
        copy = Snapshot(
            backend,
            random_snapshot_id(),
            volume=snap.volume,
            description=(
                f"Copied for DestinationAmi {ami_id} from SourceAmi {source.id} "
                f"for SourceSnapshot {snap.id}"
            ),
            encrypted=encrypted,
            kms_key_id=key_arn,
            from_ami=ami_id,
        )
        # CopyImage keeps `copy_seconds` and its snapshots are no base for CopySnapshot; the
        # lineage keeps them out of the volume's own snapshots, and a CopySnapshot of one of
        # them copies the original's data.
        inherit_lineage(copy, snap)
        new_snaps.append(copy)
        ebs = dict(m["Ebs"])
        ebs["SnapshotId"] = copy.id
        ebs["Encrypted"] = encrypted
        mappings.append({**m, "Ebs": ebs})

    image = make_image(
        backend,
        ami_id,
        mappings,
        source_ami=source,
        name=name,
        description=description,
        root_device_name=source.root_device_name,
        root_device_type=source.root_device_type,
        architecture=source.architecture,
        virtualization_type=source.virtualization_type,
        boot_mode=source.boot_mode,
    )
    for copy in new_snaps:
        if denied:
            copy.status = "error"
            copy.state_message = denied
        else:
            mark_pending(copy)
        backend.snapshots[copy.id] = copy
        copy.add_tags(tags.get("snapshot", {}))
    if denied:
        image.state = "failed"
        image.state_reason = {"Code": "Client.InvalidRequest", "Message": denied}
    else:
        mark_pending(image)
    backend.amis[ami_id] = image
    if _bool_param(self, "CopyImageTags") and source.owner_id == account:
        image.add_tags({t["Key"]: t["Value"] for t in source.get_tags()})
    image.add_tags(tags.get("image", {}))
    if token:
        with state.lock:
            state.image_tokens[(account, region, token)] = (params, ami_id)
    state.count_copy(account, region, "images")
    state.count_copy(account, region, "image_snapshots", len(new_snaps))
    return ActionResult({"ImageId": ami_id})


def install() -> None:
    Snapshot.status = property(_snapshot_status, _snapshot_set_status)  # type: ignore[assignment]
    Snapshot.progress = property(_snapshot_progress)  # type: ignore[assignment]
    Ami.state = property(_ami_state, _ami_set_state)  # type: ignore[assignment]

    # one copy at a time: the in-flight limits and ClientToken must hold under concurrent calls
    def copy_snapshot(self: ElasticBlockStore) -> ActionResult:
        with _copy_lock:
            return _copy_snapshot(self)

    def copy_image(self: AmisResponse) -> ActionResult:
        with _copy_lock:
            return _copy_image(self)

    ElasticBlockStore.copy_snapshot = copy_snapshot  # type: ignore[method-assign]
    AmisResponse.copy_image = copy_image  # type: ignore[method-assign]
