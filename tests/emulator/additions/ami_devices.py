"""AMIs with real block devices, and snapshots that keep their volume's KMS key.

AWS (EC2 API reference, RegisterImage / DescribeImages; EC2 user guide "Create an AMI from a
snapshot"): RegisterImage takes BlockDeviceMappings whose Ebs.SnapshotId name existing snapshots
(possibly encrypted, several volumes); DescribeImages returns those mappings with Encrypted.
moto ignores the mappings and gives every AMI one unencrypted auto-created snapshot.

DescribeImages' filter `block-device-mapping.snapshot-id` (AWS: the AMIs that use any of the
given snapshots) is not implemented by moto: here it is, with AWS's any-of semantics.

Also: moto's CreateSnapshot drops the volume's KmsKeyId (AWS: a snapshot of an encrypted volume
is encrypted with the volume's key), and moto's default EBS key (alias/aws/ebs, created on first
use of EBS default encryption) is marked as a customer key: here it is AWS managed, as on AWS.
"""

from typing import Any

from moto.core.responses import ActionResult
from moto.ec2.exceptions import InvalidSnapshotIdError
from moto.ec2.models.amis import Ami
from moto.ec2.models.elastic_block_store import EBSBackend
from moto.ec2.responses.amis import AmisResponse
from moto.ec2.utils import random_ami_id

from . import kms_access


def normalize_key_arn(account: str, region: str, key_ref: str | None) -> str | None:
    key = kms_access.find_key(account, region, key_ref)
    return key.arn if key is not None else key_ref


def make_image(backend: Any, ami_id: str, mappings: list[dict[str, Any]], **kwargs: Any) -> Ami:
    """A moto Ami whose block devices are `mappings` (moto's auto snapshot is dropped)."""
    ami = Ami(backend, ami_id, **kwargs)
    backend.snapshots.pop(ami.ebs_snapshot.id, None)
    ami._ferry_bdm = mappings
    root = next(
        (m for m in mappings if m.get("DeviceName") == ami.root_device_name and "Ebs" in m),
        next((m for m in mappings if "Ebs" in m), None),
    )
    if root is not None:
        snap = backend.snapshots.get(root["Ebs"].get("SnapshotId"))
        if snap is not None:
            ami.ebs_snapshot = snap
    return ami


def _block_device_mappings(self: Ami) -> list[dict[str, Any]]:
    mappings = getattr(self, "_ferry_bdm", None)
    if mappings is None:
        return _original_bdm(self)
    return mappings


_original_bdm: Any = None


def _register_image(self: AmisResponse) -> ActionResult:
    self.error_on_dryrun()
    from .ec2_shared import find_snapshot_for

    backend = self.ec2_backend
    account, region = self.current_account, self.region
    mappings = []
    for raw in self._get_param("BlockDeviceMappings", []) or []:
        m: dict[str, Any] = {"DeviceName": raw.get("DeviceName")}
        if raw.get("VirtualName"):
            m["VirtualName"] = raw["VirtualName"]
        ebs = raw.get("Ebs")
        if ebs is not None:
            snap_id = ebs.get("SnapshotId")
            snap = find_snapshot_for(account, region, snap_id) if snap_id else None
            if snap_id and snap is None:
                raise InvalidSnapshotIdError()
            out: dict[str, Any] = {
                "DeleteOnTermination": _bool(ebs.get("DeleteOnTermination"), True),
                "VolumeType": ebs.get("VolumeType") or "gp2",
                "Encrypted": bool(snap.encrypted) if snap else _bool(ebs.get("Encrypted"), False),
            }
            if snap_id:
                out["SnapshotId"] = snap_id
            size = ebs.get("VolumeSize") or (snap.volume_size if snap else None)
            if size is not None:
                out["VolumeSize"] = int(size)
            for k in ("Iops", "Throughput"):
                if ebs.get(k) is not None:
                    out[k] = int(ebs[k])
            m["Ebs"] = out
        mappings.append(m)

    if not mappings:
        image = backend.register_image(self._get_param("Name"), self._get_param("Description", ""))
    else:
        ami_id = random_ami_id()
        image = make_image(
            backend,
            ami_id,
            mappings,
            name=self._get_param("Name"),
            description=self._get_param("Description", ""),
            root_device_name=self._get_param("RootDeviceName") or mappings[0]["DeviceName"],
            root_device_type="ebs",
            architecture=self._get_param("Architecture") or "x86_64",
            virtualization_type=self._get_param("VirtualizationType") or "hvm",
            boot_mode=self._get_param("BootMode") or "uefi",
        )
        for m in mappings:
            snap = backend.snapshots.get(m.get("Ebs", {}).get("SnapshotId"))
            if snap is not None and not snap.from_ami:
                snap.from_ami = ami_id
        backend.amis[ami_id] = image
    image.add_tags(self._parse_tag_specification().get("image", {}))
    return ActionResult({"ImageId": image.id})


def _bool(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return str(value).lower() == "true"


BDM_SNAPSHOT = "block-device-mapping.snapshot-id"


def _snapshot_ids(ami: Ami) -> list[str]:
    return [
        m["Ebs"]["SnapshotId"]
        for m in ami.block_device_mappings
        if isinstance(m.get("Ebs"), dict) and m["Ebs"].get("SnapshotId")
    ]


def install() -> None:
    global _original_bdm
    import fnmatch

    import moto.ec2.utils as ec2_utils

    original_matching = ec2_utils.is_filter_matching

    def is_filter_matching(obj: Any, name: str, value: Any) -> bool:
        if name == BDM_SNAPSHOT and isinstance(obj, Ami):
            patterns = value if isinstance(value, list) else [value]
            return any(fnmatch.fnmatch(s, p) for s in _snapshot_ids(obj) for p in patterns)
        return original_matching(obj, name, value)

    ec2_utils.is_filter_matching = is_filter_matching  # type: ignore[assignment]
    _original_bdm = Ami.block_device_mappings.fget
    Ami.block_device_mappings = property(_block_device_mappings)  # type: ignore[assignment]
    AmisResponse.register_image = _register_image  # type: ignore[method-assign]

    original_create_snapshot = EBSBackend.create_snapshot

    def create_snapshot(self: Any, volume_id: str, description: str, *args: Any, **kw: Any) -> Any:
        snapshot = original_create_snapshot(self, volume_id, description, *args, **kw)
        volume = self.volumes.get(volume_id)
        if volume is not None and volume.encrypted and volume.kms_key_id:
            snapshot.kms_key_id = normalize_key_arn(
                self.account_id, self.region_name, volume.kms_key_id
            )
            snapshot.encrypted = True
        return snapshot

    EBSBackend.create_snapshot = create_snapshot  # type: ignore[method-assign]

    original_default_key = EBSBackend._create_default_encryption_key

    def create_default_key(self: Any) -> str:
        arn = original_default_key(self)
        key = kms_access.find_key(self.account_id, self.region_name, arn)
        if key is not None:
            key.key_manager = "AWS"
        return arn

    EBSBackend._create_default_encryption_key = create_default_key  # type: ignore[method-assign]
