"""GetBucketReplication returns the configuration that was put.

AWS (S3 API reference PutBucketReplication / GetBucketReplication; S3 user guide
"Replicating objects encrypted with SSE-KMS" / replication-config-for-kms-objects): the rules come
back as put, with their Filter (Prefix, Tag or And), SourceSelectionCriteria
(SseKmsEncryptedObjects), DeleteMarkerReplication, Destination (Account, EncryptionConfiguration
ReplicaKmsKeyID, AccessControlTranslation, StorageClass, ...). moto reports every Filter as
{Prefix: ""}, DeleteMarkerReplication as Disabled and drops SourceSelectionCriteria.
Replicating the objects themselves is s3_live_replication.py.

Also GetBucketVersioning: AWS answers `<VersioningConfiguration>` (S3 API reference
GetBucketVersioning, "Response Syntax"); moto's serializer names the root
`<GetBucketVersioningResponse>`, which SDKs that check the root element (the Rust SDK) refuse.
"""

from typing import Any

from moto.core.responses import ActionResult
from moto.s3.exceptions import ReplicationConfigurationNotFoundError
from moto.s3.responses import S3Response

_RULE_FIELDS = (
    "ID",
    "Priority",
    "Prefix",
    "Filter",
    "Status",
    "SourceSelectionCriteria",
    "ExistingObjectReplication",
    "Destination",
    "DeleteMarkerReplication",
)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _filter(raw: Any) -> Any:
    if not isinstance(raw, dict):
        return {"Prefix": ""}
    out = dict(raw)
    if isinstance(out.get("And"), dict):
        conj = dict(out["And"])
        if "Tag" in conj:  # the XML's repeated <Tag> is the model's Tags list
            conj["Tags"] = _as_list(conj.pop("Tag"))
        out["And"] = conj
    if out.get("Prefix") is None and "Prefix" in out:
        out["Prefix"] = ""
    return out


def _rule(raw: dict[str, Any]) -> dict[str, Any]:
    rule = {k: raw[k] for k in _RULE_FIELDS if k in raw and raw[k] is not None}
    if "Filter" in raw:
        rule["Filter"] = _filter(raw["Filter"])
    elif "Prefix" not in raw:
        rule["Filter"] = {"Prefix": ""}
    return rule


def _get_bucket_replication(self: S3Response) -> Any:
    self.data["Action"] = "GetBucketReplication"
    replication = self.backend.get_bucket_replication(self.bucket_name)
    if not replication:
        raise ReplicationConfigurationNotFoundError(bucket_name=self.bucket_name)
    rules = [_rule(r) for r in _as_list(replication.get("Rule"))]
    return self.serialized(
        ActionResult(
            {"ReplicationConfiguration": {"Role": replication.get("Role"), "Rules": rules}}
        )
    )


_original_get_bucket_versioning = S3Response.get_bucket_versioning


def _get_bucket_versioning(self: S3Response) -> Any:
    status, headers, body = _original_get_bucket_versioning(self)
    if isinstance(body, bytes):
        body = body.replace(b"GetBucketVersioningResponse", b"VersioningConfiguration")
    elif isinstance(body, str):
        body = body.replace("GetBucketVersioningResponse", "VersioningConfiguration")
    return status, headers, body


def install() -> None:
    S3Response.get_bucket_replication = _get_bucket_replication  # type: ignore[method-assign]
    S3Response.get_bucket_versioning = _get_bucket_versioning  # type: ignore[method-assign]
