"""Cross-account visibility of shared AMIs and snapshots; refusing to share AWS-managed-key data.

AWS (EC2 user guide "Share an AMI with specific AWS accounts" / sharingamis-explicit; EBS user
guide "Share an Amazon EBS snapshot" / ebs-modifying-snapshot-permissions; EC2 API reference
DescribeImages, DescribeSnapshots):
- an AMI with a launch permission for account B (or public) is visible to B by id, with
  ExecutableUsers=[self|B], with Owners=[A]; a snapshot with a createVolumePermission for B is
  visible to B by id, with RestorableByUserIds=[self|B], with OwnerIds=[A].
- snapshots encrypted with the AWS managed key cannot be shared: ModifySnapshotAttribute answers
  `OperationNotPermitted` ("Encrypted snapshots with EBS default key cannot be shared"); the same
  refusal is given by ModifyImageAttribute for an AMI with such a snapshot. Encrypted snapshots
  cannot be made public.
- tags do not cross accounts: B sees A's shared AMIs and snapshots without A's tags (and tag
  filters do not match them).
moto looks only in the caller's own account.
"""

import threading
from typing import Any

from moto.core.responses import ActionResult
from moto.ec2.exceptions import (
    EC2ClientError,
    InvalidAMIIdError,
    InvalidSnapshotIdError,
    MalformedAMIIdError,
)
from moto.ec2.models.core import TaggedEC2Resource
from moto.ec2.responses.amis import AmisResponse
from moto.ec2.responses.elastic_block_store import ElasticBlockStore
from moto.ec2.utils import generic_filter

from . import kms_access
from .visibility import record, seen, user_ids

_viewer = threading.local()


def set_viewer(account: str | None) -> None:
    """The account whose request this thread is handling (set by traffic.py)."""
    _viewer.account = account


def viewer() -> str | None:
    """The account whose request this thread is handling, if any."""
    return getattr(_viewer, "account", None)


def ec2_backends_in(region: str) -> list[tuple[str, Any]]:
    """(account, backend) of every account that has an EC2 backend for `region`."""
    from moto.ec2.models import ec2_backends

    out = []
    for account in list(ec2_backends.keys()):
        # dict.get: moto's own lookup would create a backend for every account and region
        backend = dict.get(ec2_backends[account], region)
        if backend is not None:
            out.append((account, backend))
    return out


def _backend(account: str, region: str) -> Any:
    from moto.ec2.models import ec2_backends

    return ec2_backends[account][region]


def snapshot_restorable_by(snap: Any, account: str) -> bool:
    return (
        snap.owner_id == account
        or account in snap.create_volume_permission_userids
        or "all" in snap.create_volume_permission_groups
    )


def image_launchable_by(ami: Any, account: str) -> bool:
    return ami.owner_id == account or any(
        lp.get("UserId") == account or lp.get("Group") == "all" for lp in ami.launch_permissions
    )


def _launchable_by_user(ami: Any, account: str) -> bool:
    return any(lp.get("UserId") == account for lp in ami.launch_permissions)


def visible_snapshots(account: str, region: str) -> list[Any]:
    own = _backend(account, region)
    out = list(own.snapshots.values())
    for other, backend in ec2_backends_in(region):
        if other == account:
            continue
        out.extend(
            s for s in list(backend.snapshots.values()) if snapshot_restorable_by(s, account)
        )
    return out


def visible_images(account: str, region: str) -> list[Any]:
    own = _backend(account, region)
    out = list(own.amis.values())
    for other, backend in ec2_backends_in(region):
        if other == account:
            continue
        out.extend(a for a in list(backend.amis.values()) if image_launchable_by(a, account))
    return out


def find_snapshot_for(account: str, region: str, snapshot_id: str) -> Any:
    """The snapshot `snapshot_id` in `region` if `account` owns it or may restore it, else None."""
    for snap in visible_snapshots(account, region):
        if snap.id == snapshot_id:
            return snap
    return None


def find_image_for(account: str, region: str, image_id: str) -> Any:
    for ami in visible_images(account, region):
        if ami.id == image_id:
            return ami
    return None


def _self(values: list[str], account: str) -> list[str]:
    return [account if v == "self" else v for v in values]


def _describe_snapshots(self: ElasticBlockStore) -> ActionResult:
    account, region = self.current_account, self.region
    filters = self._filters_from_querystring()
    ids = self._get_param("SnapshotIds", []) or []
    owners = _self(self._get_param("OwnerIds", []) or [], account)
    restorable = _self(self._get_param("RestorableByUserIds", []) or [], account)
    from .ec2_copies import is_visible

    snaps = [s for s in visible_snapshots(account, region) if is_visible(s)]
    if ids:
        snaps = [s for s in snaps if s.id in ids]
        if len({s.id for s in snaps}) < len(set(ids)):
            raise InvalidSnapshotIdError()
    if owners:
        snaps = [s for s in snaps if s.owner_id in owners]
    if restorable:
        # What the owner reads back of a share lags (visibility.py); the share itself does not.
        snaps = [
            s
            for s in snaps
            if any(
                seen(("snapshot", s.id, u), snapshot_restorable_by(s, u)) for u in restorable
            )
        ]
    if filters:
        snaps = generic_filter(filters, snaps)
    return ActionResult({"Snapshots": snaps})


def _describe_images(self: AmisResponse) -> ActionResult:
    self.error_on_dryrun()
    account, region = self.current_account, self.region
    ids = self._get_param("ImageIds", []) or []
    filters = self._filters_from_querystring()
    owners = _self(self._get_param("Owners", []) or [], account)
    exec_users = _self(self._get_param("ExecutableUsers", []) or [], account)
    images = visible_images(account, region)
    if ids:
        malformed = [i for i in ids if not i.startswith("ami-")]
        if malformed:
            raise MalformedAMIIdError(malformed)
        images = [a for a in images if a.id in ids]
        deleted = [i for i in ids if i in _backend(account, region).deleted_amis]
        if not images and not deleted:
            raise InvalidAMIIdError(ids)
    if exec_users:
        images = [
            a
            for a in images
            if a.is_public
            or any(seen(("image", a.id, u), _launchable_by_user(a, u)) for u in exec_users)
        ]
    if owners:
        images = [a for a in images if a.owner_id in owners or a.owner_alias in owners]
    if filters:
        images = generic_filter(filters, images)
    return ActionResult({"Images": images})


class OperationNotPermitted(EC2ClientError):
    def __init__(self, message: str) -> None:
        super().__init__("OperationNotPermitted", message)


def _refuse_if_default_key(snap: Any) -> None:
    if not snap.encrypted:
        return
    key = kms_access.find_key(snap.owner_id, snap.ec2_backend.region_name, snap.kms_key_id)
    if key is None or kms_access.is_aws_managed(key):
        raise OperationNotPermitted(
            f"Encrypted snapshots with EBS default key cannot be shared ({snap.id})"
        )


def install() -> None:
    original_get_tags = TaggedEC2Resource.get_tags

    def get_tags(self: Any) -> Any:
        viewer = getattr(_viewer, "account", None)
        owner = getattr(getattr(self, "ec2_backend", None), "account_id", None)
        if viewer and owner and owner != viewer:
            return []  # tags stay in the owner's account
        return original_get_tags(self)

    TaggedEC2Resource.get_tags = get_tags  # type: ignore[method-assign]
    ElasticBlockStore.describe_snapshots = _describe_snapshots  # type: ignore[method-assign]
    AmisResponse.describe_images = _describe_images  # type: ignore[method-assign]

    original_modify_snapshot = ElasticBlockStore.modify_snapshot_attribute

    def modify_snapshot_attribute(self: ElasticBlockStore) -> Any:
        snap = self.ec2_backend.get_snapshot(self._get_param("SnapshotId"))
        for uid in user_ids(self, "CreateVolumePermission"):
            record(("snapshot", snap.id, uid), snapshot_restorable_by(snap, uid))
        if self._get_param("OperationType") == "add":
            groups = self._get_param("GroupNames", []) or []
            if snap.encrypted and "all" in groups:
                raise OperationNotPermitted("Encrypted snapshots cannot be shared publicly")
            if self._get_param("UserIds", []):
                _refuse_if_default_key(snap)
        return original_modify_snapshot(self)

    ElasticBlockStore.modify_snapshot_attribute = modify_snapshot_attribute  # type: ignore[method-assign]

    original_modify_image = AmisResponse.modify_image_attribute

    def modify_image_attribute(self: AmisResponse) -> Any:
        adding = bool((self._get_param("LaunchPermission", {}) or {}).get("Add")) or (
            self._get_param("OperationType") == "add"
        )
        ami = self.ec2_backend.amis.get(self._get_param("ImageId"))
        if ami is not None:
            for uid in user_ids(self, "LaunchPermission"):
                record(("image", ami.id, uid), _launchable_by_user(ami, uid))
        if adding:
            backend = self.ec2_backend
            if ami is not None:
                for m in ami.block_device_mappings:
                    snap = backend.snapshots.get((m.get("Ebs") or {}).get("SnapshotId"))
                    if snap is not None:
                        _refuse_if_default_key(snap)
        return original_modify_image(self)

    AmisResponse.modify_image_attribute = modify_image_attribute  # type: ignore[method-assign]
