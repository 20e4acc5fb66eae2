"""CopySnapshot and CopyImage as AWS runs them: cross-account, encrypted, slow, limited.

AWS (EC2 API reference CopySnapshot / CopyImage; EBS user guide "Copy an Amazon EBS snapshot";
EC2 user guide "How AMI copy works"; EBS quotas "ebs-resource-quotas"; "Ensuring idempotency"):
- the copy runs in the caller's account and region; the source may belong to another account that
  shared it (createVolumePermission / launch permission), looked up in the owner's backend;
- the copy is encrypted if the source is or `Encrypted` is set, with `KmsKeyId` or else the
  destination account's default EBS key; the copy reports that key and Encrypted=true;
- copies stay `pending` with a growing `Progress` for `copy_seconds`, then `completed`
  (snapshots) / `available` (images); CopyImage makes one new snapshot per EBS mapping;
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
    now = time.monotonic()
    for account in list(ec2_backends.keys()):
        for backend in list(dict.values(ec2_backends[account])):
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
    if denied:
        snapshot.status = "error"
        snapshot.state_message = denied
    else:
        mark_pending(snapshot)
    backend.snapshots[snapshot.id] = snapshot
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
