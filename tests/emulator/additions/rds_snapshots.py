"""RDS DB snapshots and Aurora DB cluster snapshots as AWS copies and shares them.

AWS (RDS API reference CopyDBSnapshot / CopyDBClusterSnapshot, DescribeDBSnapshots /
DescribeDBClusterSnapshots, ModifyDBSnapshotAttribute, DescribeAccountAttributes; RDS user guide
"Copying a DB snapshot" / USER_CopySnapshot, "Sharing a DB snapshot" / USER_ShareSnapshot,
"Quotas" / CHAP_Limits; Aurora user guide aurora-copy-snapshot):
- a copy stays `copying` with a growing PercentProgress for `rds_copy_seconds`, then `available`
  with 100; the source must be `available` (InvalidDBSnapshotState /
  InvalidDBClusterSnapshotStateFault); a copying target may be deleted;
- at most `max_pending_db_snapshot_copies` (20) DB snapshot copies and
  `max_pending_db_cluster_snapshot_copies` (5) cluster snapshot copies in flight per destination
  (account, region), and `max_manual_db_snapshots` / `max_manual_db_cluster_snapshots` (100)
  manual snapshots per (account, region): `SnapshotQuotaExceeded`; DescribeAccountAttributes
  answers ManualSnapshots / ManualClusterSnapshots (moto did not implement it);
- a snapshot shared with account B (attribute `restore`) is visible to B by its ARN and with
  IncludeShared / SnapshotType=shared, without A's tags; B copies it by ARN in its own region
  only, with a KmsKeyId of its own, and only if A's key allows B (kms_access.py); an encrypted
  copy to another region needs a KmsKeyId too. moto looked only in the caller's account;
- KmsKeyId (id, ARN, alias, alias ARN) is normalised to the key ARN; an unknown, disabled or
  other-region key is `KMSKeyNotAccessibleFault`; an unencrypted DB snapshot copied with a key is
  encrypted, an unencrypted cluster snapshot with a key is `InvalidParameterCombination`;
- an encrypted DB instance or cluster without KmsKeyId is encrypted under the account's AWS
  managed key `alias/aws/rds` (moto stored the text "default_kms_key_id"); BackupRetentionPeriod
  0 makes no automated snapshot (moto made one anyway);
- only manual snapshots can be shared, encrypted ones never publicly, and never ones under the
  AWS managed key;
- CopyTags (same account) copies the source's tags, but only when the request names no Tags:
  with Tags, the copy carries exactly those (moto's behaviour, which its source says was
  checked against AWS; ferry therefore passes the source's tags in Tags itself).
"""

import threading
import time
from typing import Any

from moto.core.responses import ActionResult
from moto.rds.exceptions import (
    DBClusterSnapshotAlreadyExistsError,
    DBClusterSnapshotNotFoundError,
    DBSnapshotAlreadyExistsError,
    DBSnapshotNotFoundFault,
    InvalidParameterCombination,
    InvalidParameterValue,
    KMSKeyNotAccessibleFault,
    RDSClientError,
)
from moto.rds.models import DBCluster, DBClusterSnapshot, DBInstance, DBSnapshot, RDSBackend
from moto.rds.responses import RDSResponse

from . import kms_access, state
from .ec2_shared import viewer

# one copy or create at a time: the in-flight and manual limits must hold under concurrent calls
_lock = threading.Lock()

MANAGED_ALIAS = "alias/aws/rds"


class Kind:
    """What differs between DB snapshots and DB cluster snapshots."""

    def __init__(self, cluster: bool) -> None:
        self.cluster = cluster
        self.cls: Any = DBClusterSnapshot if cluster else DBSnapshot
        self.resource_type = "cluster-snapshot" if cluster else "snapshot"
        self.word = "DB cluster snapshot" if cluster else "DB snapshot"
        self.id_param = "DBClusterSnapshotIdentifier" if cluster else "DBSnapshotIdentifier"
        self.parent_param = "DBClusterIdentifier" if cluster else "DBInstanceIdentifier"
        self.id_filter = "db-cluster-snapshot-id" if cluster else "db-snapshot-id"
        self.parent_filter = "db-cluster-id" if cluster else "db-instance-id"
        self.list_key = "DBClusterSnapshots" if cluster else "DBSnapshots"
        self.invalid_state = (
            "InvalidDBClusterSnapshotStateFault" if cluster else "InvalidDBSnapshotState"
        )
        self.max_pending = (
            "max_pending_db_cluster_snapshot_copies"
            if cluster
            else "max_pending_db_snapshot_copies"
        )
        self.max_manual = (
            "max_manual_db_cluster_snapshots" if cluster else "max_manual_db_snapshots"
        )

    def store(self, backend: RDSBackend) -> Any:
        return backend.cluster_snapshots if self.cluster else backend.database_snapshots

    def not_found(self, ref: str) -> RDSClientError:
        return DBClusterSnapshotNotFoundError(ref) if self.cluster else DBSnapshotNotFoundFault(ref)

    def already_exists(self, ref: str) -> RDSClientError:
        if self.cluster:
            return DBClusterSnapshotAlreadyExistsError(ref)
        return DBSnapshotAlreadyExistsError(ref)

    def encrypted(self, snap: Any) -> bool:
        return bool(snap.storage_encrypted if self.cluster else snap.encrypted)


DB, CLUSTER = Kind(cluster=False), Kind(cluster=True)


# --- pending state --------------------------------------------------------------------------


def _fraction(snap: Any) -> float | None:
    """Progress in [0, 1) while the copy is in flight, else None."""
    until = snap.__dict__.get("_ferry_until")
    if until is None:
        return None
    now = time.monotonic()
    if now >= until:
        return None
    start = snap._ferry_start
    return max(0.0, min(0.99, (now - start) / max(until - start, 1e-9)))


def _status(self: Any) -> str:
    stored = self.__dict__.get("_ferry_status", "available")
    if stored == "available" and _fraction(self) is not None:
        return "copying"
    return stored


def _set_status(self: Any, value: str) -> None:
    self.__dict__["_ferry_status"] = value


def _percent_progress(self: Any) -> int:
    frac = _fraction(self)
    return 100 if frac is None else int(frac * 100)


def _ignore(self: Any, value: Any) -> None:
    pass  # moto sets 100 at creation; the value is derived from the copy's clock


def _tag_list(self: Any) -> list[dict[str, str]]:
    who = viewer()
    if who and who != self.account_id:
        return []  # tags stay in the owner's account
    return self.tags


def _backends(region: str) -> list[tuple[str, RDSBackend]]:
    """(account, backend) of every account that has an RDS backend for `region`."""
    from moto.rds.models import rds_backends

    out = []
    for account in list(rds_backends.keys()):
        # dict.get: moto's own lookup would create a backend for every account and region
        backend = dict.get(rds_backends[account], region)
        if backend is not None:
            out.append((account, backend))
    return out


def _backend(account: str, region: str) -> RDSBackend | None:
    return next((b for a, b in _backends(region) if a == account), None)


def complete_all() -> int:
    """Finish every RDS copy in flight now (part of /_ferry/copies/complete)."""
    from moto.rds.models import rds_backends

    n = 0
    now = time.monotonic()
    for account in list(rds_backends.keys()):
        for backend in list(dict.values(rds_backends[account])):
            snaps = list(backend.database_snapshots.values())
            snaps += list(backend.cluster_snapshots.values())
            for snap in snaps:
                if _fraction(snap) is not None:
                    snap._ferry_until = now
                    n += 1
    return n


def _pending(store: Any) -> int:
    return sum(1 for s in list(store.values()) if _fraction(s) is not None)


def _manual(store: Any) -> int:
    return sum(1 for s in list(store.values()) if s.snapshot_type == "manual")


# --- keys -----------------------------------------------------------------------------------


def managed_key_arn(account: str, region: str) -> str:
    """The account's AWS managed RDS key (alias/aws/rds) in `region`, made on first use."""
    key = kms_access.kms_backend(account, region).describe_key(MANAGED_ALIAS)
    key.key_manager = "AWS"
    return key.arn


def _usable_key(account: str, region: str, ref: str) -> Any:
    """The key `ref` names for a new encrypted resource of `account` in `region`, else raise."""
    key = kms_access.find_key(account, region, ref)
    if (
        key is None
        or key.region != region
        or not key.enabled
        or key.key_state != "Enabled"
        or (key.account_id != account and not kms_access.account_may_use(key, account))
    ):
        raise KMSKeyNotAccessibleFault(ref)
    if kms_access.is_aws_managed(key):
        key.key_manager = "AWS"
    return key


def _is_default_key(account: str, region: str, ref: str | None) -> bool:
    key = kms_access.find_key(account, region, ref)
    return key is None or kms_access.is_aws_managed(key)


# --- lookups --------------------------------------------------------------------------------


def _parse(ref: str, account: str, region: str) -> tuple[str, str, str, str]:
    """(region, account, resource type, id) of an ARN or a bare identifier."""
    if ref.startswith("arn:"):
        parts = ref.split(":", 6)
        if len(parts) == 7:
            return parts[3], parts[4], parts[5], parts[6]
        return "", "", "", ref
    return region, account, "", ref


def _restorable_by(snap: Any, account: str) -> bool:
    values = snap.attributes.get("restore", [])
    return snap.account_id == account or account in values or "all" in values


def _own(backend: RDSBackend, kind: Kind, ref: str) -> Any:
    """The caller's own snapshot named by id or by its ARN (same region), else NotFound."""
    region, account, rtype, sid = _parse(ref, backend.account_id, backend.region_name)
    if (region, account) != (backend.region_name, backend.account_id) or rtype not in (
        "",
        kind.resource_type,
    ):
        raise kind.not_found(ref)
    snap = kind.store(backend).get(sid)
    if snap is None:
        raise kind.not_found(ref)
    return snap


def find_source(account: str, region: str, kind: Kind, ref: str) -> Any:
    """The snapshot `ref` names if `account` owns it or it is shared with `account`."""
    src_region, owner, rtype, sid = _parse(ref, account, region)
    if rtype not in ("", kind.resource_type):
        raise InvalidParameterValue(
            f"The parameter Source{kind.id_param} is not a valid identifier: {ref}"
        )
    backend = _backend(owner, src_region)
    snap = kind.store(backend).get(sid) if backend is not None else None
    if snap is None or not _restorable_by(snap, account):
        raise kind.not_found(ref)
    if owner != account and src_region != region:
        raise InvalidParameterValue(
            f"a {kind.word} shared from another account can be copied only in its own region "
            f"({src_region}): {ref}"
        )
    return snap


# --- copies ---------------------------------------------------------------------------------


def _copy(
    backend: RDSBackend,
    kind: Kind,
    source_ref: str,
    target_id: str,
    kms_key_id: str | None,
    tags: list[dict[str, str]] | None,
    copy_tags: bool,
) -> Any:
    account, region = backend.account_id, backend.region_name
    store = kind.store(backend)
    if target_id in store:
        raise kind.already_exists(target_id)
    source = find_source(account, region, kind, source_ref)
    if source.status != "available":
        raise RDSClientError(
            kind.invalid_state,
            f"{kind.word} {source.arn} is {source.status}; only an available snapshot can be "
            "copied",
        )
    encrypted = kind.encrypted(source)
    foreign = source.account_id != account
    if encrypted and not kms_key_id and (foreign or source.region != region):
        why = "shared from another account" if foreign else "copied to another region"
        raise InvalidParameterValue(
            f"KmsKeyId is required: an encrypted {kind.word} {why} must name a KMS key of the "
            f"destination ({account}, {region})"
        )
    if kms_key_id and not encrypted and kind.cluster:
        raise InvalidParameterCombination(
            "KmsKeyId can be given only for an encrypted DB cluster snapshot; "
            f"{source.arn} is not encrypted"
        )
    key_arn = _usable_key(account, region, kms_key_id).arn if kms_key_id else None
    if encrypted and foreign and state.get("enforce_kms"):
        key = kms_access.find_key(source.account_id, source.region, source.kms_key_id)
        ok = key is not None and key.enabled and key.key_state == "Enabled"
        if not ok or not kms_access.account_may_use(key, account):
            name = key.arn if key is not None else source.kms_key_id
            raise RDSClientError(
                "KMSKeyNotAccessibleFault",
                f"The source snapshot KMS key [{name}] does not exist, is not enabled or you do "
                "not have permissions to access it.",
            )
    limit = int(state.get(kind.max_pending))
    if _pending(store) >= limit:
        what = "DB cluster snapshots" if kind.cluster else "snapshots"
        raise RDSClientError(
            "SnapshotQuotaExceeded",
            f"Cannot copy more than {limit} {what} at a time to this region",
        )
    _check_manual(store, kind)

    merged: dict[str, str] = {}
    if copy_tags and not foreign and not tags:
        merged.update({t["Key"]: t["Value"] for t in source.tags})
    merged.update({t["Key"]: t["Value"] for t in tags or []})
    if kind.cluster:
        target = DBClusterSnapshot(backend, source.cluster, target_id, kms_key_id=key_arn)
        target.source_db_cluster_snapshot_arn = source.arn
    else:
        target = DBSnapshot(
            backend,
            source.database,
            target_id,
            original_created_at=source.original_snapshot_create_time,
            kms_key_id=key_arn or (source.kms_key_id if encrypted else None),
        )
        target.source_region = source.region
        target.source_db_snapshot_identifier = source.arn
    target.tags = [{"Key": k, "Value": v} for k, v in merged.items()]
    now = time.monotonic()
    target._ferry_start = now
    target._ferry_until = now + float(state.get("rds_copy_seconds"))
    store[target_id] = target
    state.count_copy(account, region, "db_cluster_snapshots" if kind.cluster else "db_snapshots")
    return target


def _check_manual(store: Any, kind: Kind) -> None:
    limit = int(state.get(kind.max_manual))
    if _manual(store) + 1 > limit:
        what = "manual DB cluster snapshots" if kind.cluster else "manual snapshots"
        raise RDSClientError("SnapshotQuotaExceeded", f"Cannot create more than {limit} {what}")


def _copy_db_snapshot(
    self: RDSBackend,
    source_db_snapshot_identifier: str,
    target_db_snapshot_identifier: str,
    kms_key_id: str | None = None,
    tags: list[dict[str, str]] | None = None,
    copy_tags: bool | None = False,
    **_: Any,
) -> Any:
    with _lock:
        return _copy(
            self,
            DB,
            source_db_snapshot_identifier,
            target_db_snapshot_identifier,
            kms_key_id,
            tags,
            bool(copy_tags),
        )


def _copy_db_cluster_snapshot(
    self: RDSBackend,
    source_db_cluster_snapshot_identifier: str,
    target_db_cluster_snapshot_identifier: str,
    kms_key_id: str | None = None,
    copy_tags: bool = False,
    tags: list[dict[str, str]] | None = None,
    **_: Any,
) -> Any:
    with _lock:
        return _copy(
            self,
            CLUSTER,
            source_db_cluster_snapshot_identifier,
            target_db_cluster_snapshot_identifier,
            kms_key_id,
            tags,
            bool(copy_tags),
        )


# --- describe -------------------------------------------------------------------------------


def _describe(resp: RDSResponse, kind: Kind) -> ActionResult:
    account, region = resp.current_account, resp.region
    params = resp.params
    ref = params.get(kind.id_param)
    parent = params.get(kind.parent_param)
    snapshot_type = params.get("SnapshotType")
    include_shared = bool(params.get("IncludeShared"))
    include_public = bool(params.get("IncludePublic"))
    filters = {f["Name"]: f["Values"] for f in params.get("Filters", []) or []}

    others = [(a, b) for a, b in _backends(region) if a != account]
    shared = [
        s for _, b in others for s in list(kind.store(b).values()) if _restorable_by(s, account)
    ]
    public = [s for s in shared if "all" in s.attributes.get("restore", [])]

    if ref and ref.startswith("arn:"):
        ref_region, owner, rtype, sid = _parse(ref, account, region)
        backend = _backend(owner, ref_region) if ref_region == region else None
        snap = kind.store(backend).get(sid) if backend is not None else None
        if rtype != kind.resource_type or snap is None or not _restorable_by(snap, account):
            raise kind.not_found(ref)
        candidates = [snap]
        ref = None  # found by ARN; filters narrow it further
    else:
        if snapshot_type == "shared":
            candidates = shared
        elif snapshot_type == "public":
            candidates = public
        else:
            candidates = list(kind.store(resp.backend).values())
            candidates += shared if include_shared else public if include_public else []
            if snapshot_type or "snapshot-type" not in filters:
                wanted = [snapshot_type] if snapshot_type else ["automated", "manual"]
                filters.setdefault("snapshot-type", []).extend(wanted)
    if ref:
        filters.setdefault(kind.id_filter, []).append(ref)
    if parent:
        filters.setdefault(kind.parent_filter, []).append(parent)
    found = {s.arn: s for s in candidates}
    if filters:
        found = RDSBackend._filter_resources(found, filters, kind.cls)
    if ref and snapshot_type != "automated":
        # "If this identifier is for an automated snapshot, the SnapshotType parameter must also
        # be specified" (API reference, DescribeDBSnapshots): without it, none is found [U: the
        # exact answer].
        found = {a: s for a, s in found.items() if s.snapshot_type != "automated"}
    if ref and not found and not parent:
        raise kind.not_found(ref)
    return ActionResult({kind.list_key: list(found.values())})


# --- attributes -----------------------------------------------------------------------------


def _modify_attribute(
    backend: RDSBackend,
    kind: Kind,
    ref: str,
    attribute_name: str,
    values_to_add: list[str] | None,
    values_to_remove: list[str] | None,
) -> dict[str, list[str]]:
    snap = _own(backend, kind, ref)
    if values_to_add:
        if snap.snapshot_type != "manual":
            raise RDSClientError(
                kind.invalid_state,
                f"Automated snapshots cannot be shared; copy {snap.resource_id} to a manual "
                "snapshot first",
            )
        if kind.encrypted(snap):
            if "all" in values_to_add:
                raise InvalidParameterValue(
                    f"Encrypted snapshots cannot be made public ({snap.resource_id})"
                )
            if _is_default_key(snap.account_id, snap.region, snap.kms_key_id):
                raise InvalidParameterValue(
                    "Snapshots encrypted with the AWS managed KMS key aws/rds cannot be shared "
                    f"({snap.resource_id})"
                )
    snap.modify_attribute(attribute_name, values_to_add, values_to_remove)
    return snap.attributes


# --- instances and clusters -----------------------------------------------------------------


def _encryption_key(resource: Any, ref: str | None) -> str:
    account, region = resource.account_id, resource.region
    if not ref or ref == "default_kms_key_id":
        return managed_key_arn(account, region)
    return _usable_key(account, region, ref).arn


def _describe_account_attributes(self: RDSResponse) -> ActionResult:
    backend = self.backend
    quotas = [
        ("ManualSnapshots", _manual(backend.database_snapshots), DB.max_manual),
        ("ManualClusterSnapshots", _manual(backend.cluster_snapshots), CLUSTER.max_manual),
    ]
    return ActionResult(
        {
            "AccountQuotas": [
                {"AccountQuotaName": name, "Used": used, "Max": int(state.get(key))}
                for name, used, key in quotas
            ]
        }
    )


def install() -> None:
    for cls in (DBSnapshot, DBClusterSnapshot):
        cls.status = property(_status, _set_status)  # type: ignore[attr-defined]
        cls.percent_progress = property(_percent_progress, _ignore)  # type: ignore[attr-defined]
        cls.tag_list = property(_tag_list)  # type: ignore[assignment]

    RDSBackend.copy_db_snapshot = _copy_db_snapshot  # type: ignore[method-assign]
    RDSBackend.copy_db_cluster_snapshot = _copy_db_cluster_snapshot  # type: ignore[method-assign]

    original_create = RDSBackend.create_db_snapshot

    def create_db_snapshot(
        self: RDSBackend,
        db_instance_identifier: str,
        db_snapshot_identifier: str,
        snapshot_type: str = "manual",
        *args: Any,
        **kw: Any,
    ) -> Any:
        def create() -> Any:
            return original_create(
                self, db_instance_identifier, db_snapshot_identifier, snapshot_type, *args, **kw
            )

        if snapshot_type != "manual":
            return create()
        with _lock:
            _check_manual(self.database_snapshots, DB)
            return create()

    RDSBackend.create_db_snapshot = create_db_snapshot  # type: ignore[method-assign]

    original_create_cluster = RDSBackend.create_db_cluster_snapshot

    def create_db_cluster_snapshot(
        self: RDSBackend,
        db_cluster_identifier: str,
        db_cluster_snapshot_identifier: str,
        snapshot_type: str = "manual",
        *args: Any,
        **kw: Any,
    ) -> Any:
        def create() -> Any:
            return original_create_cluster(
                self,
                db_cluster_identifier,
                db_cluster_snapshot_identifier,
                snapshot_type,
                *args,
                **kw,
            )

        if snapshot_type != "manual":
            return create()
        with _lock:
            _check_manual(self.cluster_snapshots, CLUSTER)
            return create()

    RDSBackend.create_db_cluster_snapshot = create_db_cluster_snapshot  # type: ignore[method-assign]

    def describe_db_snapshots(self: RDSResponse) -> ActionResult:
        return _describe(self, DB)

    def describe_db_cluster_snapshots(self: RDSResponse) -> ActionResult:
        return _describe(self, CLUSTER)

    RDSResponse.describe_db_snapshots = describe_db_snapshots  # type: ignore[method-assign]
    RDSResponse.describe_db_cluster_snapshots = describe_db_cluster_snapshots  # type: ignore[method-assign]
    RDSResponse.describe_account_attributes = _describe_account_attributes  # type: ignore[attr-defined]

    def modify_db_snapshot_attribute(
        self: RDSBackend,
        db_snapshot_identifier: str,
        attribute_name: str,
        values_to_add: list[str] | None = None,
        values_to_remove: list[str] | None = None,
    ) -> dict[str, list[str]]:
        return _modify_attribute(
            self, DB, db_snapshot_identifier, attribute_name, values_to_add, values_to_remove
        )

    def modify_db_cluster_snapshot_attribute(
        self: RDSBackend,
        db_cluster_snapshot_identifier: str,
        attribute_name: str,
        values_to_add: list[str] | None = None,
        values_to_remove: list[str] | None = None,
    ) -> dict[str, list[str]]:
        return _modify_attribute(
            self,
            CLUSTER,
            db_cluster_snapshot_identifier,
            attribute_name,
            values_to_add,
            values_to_remove,
        )

    RDSBackend.modify_db_snapshot_attribute = modify_db_snapshot_attribute  # type: ignore[method-assign]
    RDSBackend.modify_db_cluster_snapshot_attribute = modify_db_cluster_snapshot_attribute  # type: ignore[method-assign]

    def describe_db_snapshot_attributes(
        self: RDSBackend, db_snapshot_identifier: str
    ) -> dict[str, list[str]]:
        return _own(self, DB, db_snapshot_identifier).attributes

    def describe_db_cluster_snapshot_attributes(
        self: RDSBackend, db_cluster_snapshot_identifier: str
    ) -> dict[str, list[str]]:
        return _own(self, CLUSTER, db_cluster_snapshot_identifier).attributes

    RDSBackend.describe_db_snapshot_attributes = describe_db_snapshot_attributes  # type: ignore[method-assign]
    RDSBackend.describe_db_cluster_snapshot_attributes = describe_db_cluster_snapshot_attributes  # type: ignore[method-assign]

    # Tags by ARN: moto looked the name up in the caller's backend whatever the ARN's account
    # and region (another account's snapshot ARN answered the caller's snapshot of that name).
    original_for_tagging = RDSBackend._get_resource_for_tagging

    def get_resource_for_tagging(self: RDSBackend, arn: str) -> Any:
        region, account, rtype, _ = _parse(arn, self.account_id, self.region_name)
        for kind in (DB, CLUSTER):
            if rtype == kind.resource_type and (region, account) != (
                self.region_name,
                self.account_id,
            ):
                raise kind.not_found(arn)
        return original_for_tagging(self, arn)

    RDSBackend._get_resource_for_tagging = get_resource_for_tagging  # type: ignore[method-assign]

    original_instance_init = DBInstance.__init__

    def instance_init(self: DBInstance, *args: Any, **kw: Any) -> None:
        original_instance_init(self, *args, **kw)
        if self.db_cluster_identifier is None and self.storage_encrypted:
            self.kms_key_id = _encryption_key(self, self.kms_key_id)

    DBInstance.__init__ = instance_init  # type: ignore[method-assign]

    original_cluster_init = DBCluster.__init__

    def cluster_init(self: DBCluster, *args: Any, **kw: Any) -> None:
        original_cluster_init(self, *args, **kw)
        if self.storage_encrypted:
            self.kms_key_id = _encryption_key(self, self.kms_key_id)
        else:
            self.kms_key_id = None

    DBCluster.__init__ = cluster_init  # type: ignore[method-assign]

    # BackupRetentionPeriod 0 disables automated backups (API reference CreateDBInstance).
    original_backup = DBInstance.save_automated_backup

    def save_automated_backup(self: DBInstance) -> None:
        if self.db_cluster_identifier is None and not self.backup_retention_period:
            return
        original_backup(self)

    DBInstance.save_automated_backup = save_automated_backup  # type: ignore[method-assign]
