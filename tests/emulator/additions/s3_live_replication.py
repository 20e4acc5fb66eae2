"""S3 live replication: new object versions are replicated, with a replication status.

AWS (S3 user guide "Replicating objects" / replication.html, "Replication status information"
/ replication-status.html, "Setting up permissions for live replication" /
setting-repl-config-perm-overview.html, "Replicating objects encrypted with SSE-KMS" /
replication-config-for-kms-objects.html, "Granting permissions when the source and destination
buckets are owned by different accounts" / replication-walkthrough-2.html); aws-facts-next.md
section 6. moto stores a replication configuration and never replicates (moto-gaps.md).

- After a successful PutObject, CopyObject or CompleteMultipartUpload into a bucket with a
  replication configuration, the new version is replicated if an `Enabled` rule covers it: its
  Filter (`Prefix`, `Tag`, `And` with Prefix and Tags; or the rule's old-style `Prefix`) matches
  the key and the object's tags, and the object is eligible under that rule (an SSE-KMS object
  only if `SourceSelectionCriteria.SseKmsEncryptedObjects.Status` is Enabled; SSE-C objects and
  replicas never). Of several such rules the one with the highest `Priority` wins.
- The version's replication status is `PENDING` at once; after `replication_delay_ms` a
  background worker replicates it: the replication role is judged (`judge()`, below); if it may,
  the same bytes, user metadata, content headers, tags and storage class
  (`Destination.StorageClass`, else the source's) are written to the destination bucket (found
  in whichever account owns it: bucket names are global) as a version with the same version id
  and LastModified, status `REPLICA`, encrypted with SSE-KMS under
  `Destination.EncryptionConfiguration.ReplicaKmsKeyID` (normalised to the key ARN) when the
  source is SSE-KMS, else as the destination bucket's default encryption says. The source
  version becomes `COMPLETED`; if the role may not (or anything else stops it), `FAILED`, with
  the reason kept for `GET /_ferry/replication`.
- HeadObject and GetObject answer `x-amz-replication-status` when a version has one.
- `judge()` is what S3 checks with the rule's role (an IAM role in the source account): the role
  exists and trusts `s3.amazonaws.com`; its identity policies (inline and attached managed
  policies' default versions; Allow and Deny statements, Action/Resource with `*`/`?`
  wildcards, actions case-insensitive; Conditions, NotAction, NotResource not evaluated) allow
  s3:GetObjectVersionForReplication on `arn:aws:s3:::SRC/KEY`, s3:ReplicateObject on
  `arn:aws:s3:::DST/KEY`, and for SSE-KMS kms:Decrypt on the source object's key and kms:Encrypt
  on the replica key; each key's policy allows the role too (a key in the role's account: a
  statement naming the role ARN or `*` with the action, or one for the account root / account id
  with the action, then the identity policy decides; a key in another account: a statement naming
  the role ARN, its account root or id, or `*`, and the identity policy too); a destination
  bucket in another account has a bucket policy allowing the role (its ARN, its account root or
  id, or `*`) s3:ReplicateObject on the destination object. Deny statements that match refuse.
  SSE-KMS objects under the AWS managed key (no key id) are not checked against a key policy.
- Objects written before a rule existed are never replicated by live replication (S3 Batch
  Replication does that, s3_jobs.py). Delete markers are not replicated.
"""

import collections
import heapq
import json
import re
import threading
import time
from typing import Any
from urllib.parse import unquote

from moto.s3.models import FakeKey, S3Backend, s3_backends
from moto.s3.responses import S3Response

from . import kms_access, state

SSE_C_HEADER = "x-amz-server-side-encryption-customer-algorithm"
S3_SERVICE = "s3.amazonaws.com"

_lock = threading.RLock()
_cond = threading.Condition(_lock)
# bumped by every reset: work queued or started before it must not touch the new world
_generation = 0
_queue: list[tuple[float, int, dict[str, Any]]] = []  # (due, seq, item), a heap
_seq = 0
_worker: threading.Thread | None = None
_stats = {"completed": 0, "failed": 0, "pending": 0}
_failures: collections.deque[dict[str, str]] = collections.deque(maxlen=100)
_tls = threading.local()


def _reset(config_only: bool) -> None:
    global _generation
    if config_only:
        return
    with _lock:
        _generation += 1
        _queue.clear()
        _stats.update(completed=0, failed=0, pending=0)
        _failures.clear()


state.on_reset(_reset)


def generation() -> int:
    return _generation


def summary() -> dict[str, Any]:
    """`GET /_ferry/replication`."""
    with _lock:
        return {**_stats, "failures": list(_failures)}


def counters() -> dict[str, int]:
    with _lock:
        return {"completed": _stats["completed"], "failed": _stats["failed"]}


def zero_counters() -> None:
    with _lock:
        _stats.update(completed=0, failed=0)


# --- small helpers --------------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _text(value: Any) -> str:
    """An xmltodict leaf: a string, None for an empty element."""
    return "" if value is None else str(value)


def status_of(key: Any) -> str | None:
    return key.__dict__.get("_ferry_replication_status")


def set_status(key: Any, status: str | None) -> None:
    key.__dict__["_ferry_replication_status"] = status


def bucket_name_from_arn(arn: str) -> str:
    """`arn:aws:s3:::name` (or a bare name) -> name."""
    return arn.split(":::", 1)[1].split("/", 1)[0] if ":::" in arn else arn


def find_bucket(name: str) -> tuple[Any, Any] | None:
    """(owner's S3Backend, FakeBucket) of a bucket in any account, or None."""
    where = s3_backends.bucket_accounts.get(name)
    if where is None:
        return None
    partition, account = where
    backend = s3_backends[account][partition]
    bucket = backend.buckets.get(name)
    return (backend, bucket) if bucket is not None else None


def owner_backend(key: Any) -> Any:
    """The backend whose tagger holds a key's tags (the account that wrote it)."""
    return s3_backends[key.account_id][key.partition]


def tags_of(key: Any) -> dict[str, str]:
    return owner_backend(key).tagger.get_tag_dict_for_resource(key.arn)


def is_sse_c(key: Any) -> bool:
    return bool(key.__dict__.get("_ferry_sse_c")) or bool(
        getattr(getattr(key, "multipart", None), "_ferry_sse_c", False)
    )


# --- rules ----------------------------------------------------------------------------------


def _tag_pairs(raw: Any) -> list[tuple[str, str]]:
    return [
        (_text(t.get("Key")), _text(t.get("Value"))) for t in _as_list(raw) if isinstance(t, dict)
    ]


def filter_matches(rule: dict[str, Any], name: str, tags: dict[str, str]) -> bool:
    """Whether a rule's Filter (or old-style Prefix) covers a key with these tags."""
    if "Filter" not in rule:
        return name.startswith(_text(rule.get("Prefix")))
    flt = rule.get("Filter")
    if not isinstance(flt, dict):
        return True
    prefix = _text(flt.get("Prefix"))
    pairs = _tag_pairs(flt.get("Tag"))
    conj = flt.get("And")
    if isinstance(conj, dict):
        prefix = _text(conj.get("Prefix"))
        pairs = _tag_pairs(conj.get("Tag")) + _tag_pairs(conj.get("Tags"))
    return name.startswith(prefix) and all(tags.get(k) == v for k, v in pairs)


def _sse_kms_enabled(rule: dict[str, Any]) -> bool:
    crit = rule.get("SourceSelectionCriteria")
    sse = crit.get("SseKmsEncryptedObjects") if isinstance(crit, dict) else None
    return isinstance(sse, dict) and _text(sse.get("Status")) == "Enabled"


def eligible(rule: dict[str, Any], key: Any, batch: bool = False) -> bool:
    """Whether an object may be replicated under `rule` (S3 Batch Replication also replicates
    replicas, live replication never does)."""
    if is_sse_c(key):
        return False
    if status_of(key) == "REPLICA" and not batch:
        return False
    if key.encryption == "aws:kms" and not _sse_kms_enabled(rule):
        return False
    return True


def _priority(rule: dict[str, Any]) -> int:
    try:
        return int(rule.get("Priority") or 0)
    except (TypeError, ValueError):
        return 0


def rule_for(bucket: Any, key: Any, batch: bool = False) -> dict[str, Any] | None:
    """The replication rule that replicates `key`, or None (no rule covers it, or it is not
    eligible under the rules that do)."""
    replication = getattr(bucket, "replication", None)
    if not replication:
        return None
    tags = tags_of(key)
    best = None
    for rule in _as_list(replication.get("Rule")):
        if not isinstance(rule, dict) or _text(rule.get("Status")) != "Enabled":
            continue
        if not filter_matches(rule, key.name, tags) or not eligible(rule, key, batch):
            continue
        if best is None or _priority(rule) > _priority(best):
            best = rule
    return best


# --- policies -------------------------------------------------------------------------------


def _wildcard(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in str(pattern))
    return re.compile(f"^{body}$", re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


class Statement:
    __slots__ = ("effect", "actions", "resources", "principals")

    def __init__(self, raw: dict[str, Any]) -> None:
        self.effect = raw.get("Effect")
        # NotAction / NotResource are not evaluated: such a statement matches nothing.
        self.actions = [_wildcard(a, True) for a in _as_list(raw.get("Action"))]
        if "Resource" in raw:
            self.resources = [_wildcard(r, False) for r in _as_list(raw.get("Resource"))]
        else:
            self.resources = [] if "NotResource" in raw else [_wildcard("*", False)]
        principal = raw.get("Principal")
        if principal == "*":
            self.principals = ["*"]
        elif isinstance(principal, dict):
            self.principals = [str(p) for p in _as_list(principal.get("AWS"))]
        else:
            self.principals = [str(p) for p in _as_list(principal)]

    def covers(self, action: str, resource: str | None) -> bool:
        if not any(p.match(action) for p in self.actions):
            return False
        return resource is None or any(p.match(resource) for p in self.resources)

    def names(self, role_arn: str, account: str) -> str | None:
        """Whether the statement's principal is the role itself or `*` ("role"), or the role's
        account, its root or its id ("account"); else None."""
        for p in self.principals:
            if p == "*" or p == role_arn:
                return "role"
        for p in self.principals:
            if p == account or p == f"arn:aws:iam::{account}:root":
                return "account"
        return None


def parse_document(doc: Any) -> list[Statement]:
    if isinstance(doc, bytes):
        doc = doc.decode("utf-8", "replace")
    if isinstance(doc, str):
        try:
            doc = json.loads(doc)
        except ValueError:
            try:
                doc = json.loads(unquote(doc))
            except ValueError:
                return []
    if not isinstance(doc, dict):
        return []
    return [Statement(s) for s in _as_list(doc.get("Statement")) if isinstance(s, dict)]


def identity_allows(statements: list[Statement], action: str, resource: str) -> bool:
    allowed = False
    for st in statements:
        if st.covers(action, resource):
            if st.effect == "Deny":
                return False
            if st.effect == "Allow":
                allowed = True
    return allowed


class Role:
    """An IAM role as the judgement needs it, parsed once."""

    def __init__(self, arn: str) -> None:
        self.arn = arn
        m = re.match(r"^arn:[^:]+:iam::(\d{12}):role/", arn or "")
        self.account = m.group(1) if m else ""
        self.role = None
        self.statements: list[Statement] = []
        self.trust: list[Statement] = []
        self.trust_raw: Any = None
        if not m:
            return
        from moto.iam.models import iam_backends

        try:
            role = iam_backends[self.account]["global"].get_role_by_arn(arn)
        except Exception:
            return
        self.role = role
        for doc in role.policies.values():
            self.statements += parse_document(doc)
        for policy in role.managed_policies.values():
            for version in policy.versions:
                if version.version_id == policy.default_version_id:
                    self.statements += parse_document(version.document)
        self.trust_raw = role.assume_role_policy_document

    @property
    def exists(self) -> bool:
        return self.role is not None

    def trusts(self, service: str) -> bool:
        doc = self.trust_raw
        if isinstance(doc, str):
            try:
                doc = json.loads(doc)
            except ValueError:
                try:
                    doc = json.loads(unquote(doc))
                except ValueError:
                    return False
        if not isinstance(doc, dict):
            return False
        for st in _as_list(doc.get("Statement")):
            if not isinstance(st, dict) or st.get("Effect") != "Allow":
                continue
            principal = st.get("Principal")
            services = _as_list(principal.get("Service")) if isinstance(principal, dict) else []
            actions = _as_list(st.get("Action")) or ["sts:AssumeRole"]
            if service in services and any(
                kms_access._action_matches([a], "sts:AssumeRole") for a in actions
            ):
                return True
        return False

    def allows(self, action: str, resource: str) -> bool:
        return identity_allows(self.statements, action, resource)


class Cache:
    """Roles, key policies and bucket policies parsed once per judgement run (a batch job keeps
    one for all of its tasks)."""

    def __init__(self) -> None:
        self.roles: dict[str, Role] = {}
        self.key_policies: dict[str, list[Statement]] = {}
        self.bucket_policies: dict[str, list[Statement]] = {}

    def role(self, arn: str) -> Role:
        if arn not in self.roles:
            self.roles[arn] = Role(arn)
        return self.roles[arn]

    def key_policy(self, key: Any) -> list[Statement]:
        if key.arn not in self.key_policies:
            self.key_policies[key.arn] = parse_document(key.policy)
        return self.key_policies[key.arn]

    def bucket_policy(self, bucket: Any) -> list[Statement]:
        if bucket.name not in self.bucket_policies:
            raw = getattr(bucket, "policy", None)
            self.bucket_policies[bucket.name] = parse_document(raw) if raw else []
        return self.bucket_policies[bucket.name]


def _kms_reason(cache: Cache, role: Role, key: Any, action: str) -> str | None:
    """Why `role` may not call `action` on `key`, or None."""
    if key.key_state != "Enabled":
        return f"KMS key {key.arn} is {key.key_state}"
    if kms_access.is_aws_managed(key):
        if key.account_id == role.account:
            return None
        return f"AWS managed key {key.arn} cannot be used by another account ({role.arn})"
    direct = delegated = False
    for st in cache.key_policy(key):
        if not st.covers(action, None):
            continue
        who = st.names(role.arn, role.account)
        if who is None:
            continue
        if st.effect == "Deny":
            return f"key policy of {key.arn} denies {role.arn} {action}"
        if st.effect == "Allow":
            direct = direct or who == "role"
            delegated = delegated or who == "account"
    identity = role.allows(action, key.arn)
    if key.account_id == role.account:
        if direct or (delegated and identity):
            return None
        if delegated:
            return f"role {role.arn} lacks {action} on {key.arn}"
        return f"key policy of {key.arn} does not allow role {role.arn} {action}"
    if not (direct or delegated):
        return (
            f"key policy of {key.arn} (account {key.account_id}) does not allow role "
            f"{role.arn} {action}"
        )
    if not identity:
        return f"role {role.arn} lacks {action} on {key.arn}"
    return None


class Plan:
    __slots__ = ("dst_backend", "dst_bucket", "replica_key_arn")

    def __init__(self, dst_backend: Any, dst_bucket: Any, replica_key_arn: str | None) -> None:
        self.dst_backend, self.dst_bucket = dst_backend, dst_bucket
        self.replica_key_arn = replica_key_arn


def _plan(
    role_arn: str, src_bucket: Any, key: Any, rule: dict[str, Any], cache: Cache
) -> tuple[str | None, Plan | None]:
    dest = rule.get("Destination") if isinstance(rule.get("Destination"), dict) else {}
    dst_name = bucket_name_from_arn(_text(dest.get("Bucket")))
    found = find_bucket(dst_name)
    if found is None:
        return f"destination bucket {dst_name} does not exist", None
    dst_backend, dst_bucket = found
    if not src_bucket.is_versioned:
        return f"source bucket {src_bucket.name} does not have versioning enabled", None
    if not dst_bucket.is_versioned:
        return f"destination bucket {dst_name} does not have versioning enabled", None
    role = cache.role(role_arn)
    if not role.exists:
        return f"role {role_arn} does not exist", None
    if not role.trusts(S3_SERVICE):
        return f"role {role_arn} does not trust {S3_SERVICE}", None
    src_arn = f"arn:aws:s3:::{src_bucket.name}/{key.name}"
    dst_arn = f"arn:aws:s3:::{dst_name}/{key.name}"
    if not role.allows("s3:GetObjectVersionForReplication", src_arn):
        return f"role {role_arn} lacks s3:GetObjectVersionForReplication on {src_arn}", None
    if not role.allows("s3:ReplicateObject", dst_arn):
        return f"role {role_arn} lacks s3:ReplicateObject on {dst_arn}", None
    if dst_backend.account_id != role.account:
        allowed = False
        for st in cache.bucket_policy(dst_bucket):
            if not st.covers("s3:ReplicateObject", dst_arn):
                continue
            if st.names(role_arn, role.account) is None:
                continue
            if st.effect == "Deny":
                allowed = False
                break
            allowed = allowed or st.effect == "Allow"
        if not allowed:
            return (
                f"bucket policy of {dst_name} (account {dst_backend.account_id}) does not allow "
                f"role {role_arn} s3:ReplicateObject on {dst_arn}"
            ), None
    replica_key_arn = None
    if key.encryption == "aws:kms":
        if key.kms_key_id:
            src_key = kms_access.find_key(
                src_bucket.account_id, src_bucket.region_name, key.kms_key_id
            )
            if src_key is None:
                return f"KMS key {key.kms_key_id} of the source object does not exist", None
            reason = _kms_reason(cache, role, src_key, "kms:Decrypt")
            if reason:
                return reason, None
        enc = dest.get("EncryptionConfiguration")
        ref = _text(enc.get("ReplicaKmsKeyID")) if isinstance(enc, dict) else ""
        if not ref:
            return (
                f"rule {rule.get('ID')} has no Destination.EncryptionConfiguration."
                f"ReplicaKmsKeyID for an SSE-KMS object"
            ), None
        replica_key = kms_access.find_key(dst_backend.account_id, dst_bucket.region_name, ref)
        if replica_key is None:
            return f"replica KMS key {ref} does not exist", None
        reason = _kms_reason(cache, role, replica_key, "kms:Encrypt")
        if reason:
            return reason, None
        replica_key_arn = replica_key.arn
    return None, Plan(dst_backend, dst_bucket, replica_key_arn)


def judge(
    role_arn: str, src_bucket: Any, key: Any, rule: dict[str, Any], cache: Cache | None = None
) -> str | None:
    """Why S3, with replication role `role_arn`, may not replicate `key` (a FakeKey version of
    `src_bucket`) under `rule`; None if it may."""
    return _plan(role_arn, src_bucket, key, rule, cache or Cache())[0]


# --- replicating ----------------------------------------------------------------------------


def _write_replica(plan: Plan, key: Any, rule: dict[str, Any]) -> Any:
    dest = rule.get("Destination") if isinstance(rule.get("Destination"), dict) else {}
    storage = _text(dest.get("StorageClass")) or key.storage_class or "STANDARD"
    dst_bucket = plan.dst_bucket
    if plan.replica_key_arn:
        encryption, kms_key_id = "aws:kms", plan.replica_key_arn
    elif dst_bucket.encryption:
        encryption, kms_key_id = None, None  # moto applies the bucket's default
    else:
        encryption, kms_key_id = key.encryption, None
    replica = plan.dst_backend.put_object(
        dst_bucket.name,
        key.name,
        key.value,
        storage=storage,
        encryption=encryption,
        kms_key_id=kms_key_id,
        disable_notification=True,
    )
    # The replica keeps the source's version id and LastModified (S3 user guide, "What does
    # Amazon S3 replicate?": "same key names and metadata ... creation time, version ID").
    # A replica of an older version (S3 Batch Replication) does not become the current one: the
    # versions stay in the order of their LastModified. A version replicated again replaces its
    # earlier replica.
    replica._version_id = key.version_id
    replica.last_modified = key.last_modified
    others = [
        v
        for v in dst_bucket.keys.getlist(key.name, [])
        if v is not replica and v.version_id != key.version_id
    ]
    at = next((i for i, v in enumerate(others) if v.last_modified > key.last_modified), None)
    ordered = others + [replica] if at is None else others[:at] + [replica] + others[at:]
    dst_bucket.keys.setlist(key.name, ordered)
    replica.set_metadata(dict(key.metadata))
    replica.website_redirect_location = key.website_redirect_location
    if key.checksum_value:
        replica.checksum_value = key.checksum_value
        replica.checksum_algorithm = key.checksum_algorithm
    tags = tags_of(key)
    if tags:
        tagger = plan.dst_backend.tagger
        tagger.tag_resource(replica.arn, tagger.convert_dict_to_tags_input(tags))
    set_status(replica, "REPLICA")
    return replica


def replicate(
    src_bucket: Any,
    key: Any,
    rule: dict[str, Any],
    role_arn: str,
    cache: Cache | None = None,
    gen: int | None = None,
) -> str | None:
    """Replicates one version now: None when the replica was written (the version is
    COMPLETED), else the reason (FAILED). Replicas keep their status REPLICA."""
    cache = cache or Cache()
    with _lock:
        if gen is not None and gen != _generation:
            return "the emulator was reset"
        try:
            reason, plan = _plan(role_arn, src_bucket, key, rule, cache)
            if reason is None and plan is not None:
                _write_replica(plan, key, rule)
        except Exception as e:  # a moto refusal (storage class, tags, ...) fails the version
            reason = f"replication failed: {e}"
        if status_of(key) != "REPLICA":
            set_status(key, "COMPLETED" if reason is None else "FAILED")
        if reason is None:
            _stats["completed"] += 1
        else:
            _stats["failed"] += 1
            _failures.append(
                {
                    "bucket": src_bucket.name,
                    "key": key.name,
                    "version_id": key.version_id,
                    "reason": reason,
                }
            )
        return reason


def write_object(
    backend: Any,
    bucket_name: str,
    name: str,
    body: bytes,
    gen: int,
    content_type: str,
    encryption: str | None = None,
    kms_key_id: str | None = None,
) -> Any:
    """Writes an object as S3 itself does (reports, manifests), unless the emulator was reset
    since `gen`: then nothing is written and None is answered."""
    with _lock:
        if gen != _generation:
            return None
        key = backend.put_object(
            bucket_name,
            name,
            body,
            encryption=encryption,
            kms_key_id=kms_key_id,
            disable_notification=True,
        )
        key.set_metadata({"Content-Type": content_type})
        return key


def _run_worker() -> None:
    while True:
        with _cond:
            while True:
                now = time.monotonic()
                if _queue and _queue[0][0] <= now:
                    _, _, item = heapq.heappop(_queue)
                    break
                _cond.wait(None if not _queue else _queue[0][0] - now)
        if item["gen"] != _generation:
            continue
        with _lock:
            if item["gen"] != _generation:
                continue
            _stats["pending"] = max(0, _stats["pending"] - 1)
        if not _still_there(item["bucket"], item["key"]):
            # Deleted (by version id) before S3 got to it: there is nothing left to replicate.
            continue
        replicate(item["bucket"], item["key"], item["rule"], item["role"], gen=item["gen"])


def _still_there(bucket: Any, key: Any) -> bool:
    try:
        return any(v is key for v in bucket.keys.getlist(key.name, []))
    except Exception:
        return True


def _enqueue(bucket: Any, key: Any, rule: dict[str, Any], role: str) -> None:
    global _seq, _worker
    delay = float(state.get("replication_delay_ms")) / 1000.0
    with _cond:
        _seq += 1
        set_status(key, "PENDING")
        _stats["pending"] += 1
        item = {"gen": _generation, "bucket": bucket, "key": key, "rule": rule, "role": role}
        heapq.heappush(_queue, (time.monotonic() + delay, _seq, item))
        if _worker is None or not _worker.is_alive():
            _worker = threading.Thread(target=_run_worker, name="ferry-replication", daemon=True)
            _worker.start()
        _cond.notify()


def on_new_version(key: Any) -> None:
    """A request just wrote `key` (a new version): replicate it if a rule says so."""
    if not state.get("live_replication"):
        return
    found = find_bucket(key.bucket_name)
    if found is None:
        return
    bucket = found[1]
    replication = getattr(bucket, "replication", None)
    if not replication:
        return
    rule = rule_for(bucket, key)
    if rule is None:
        return
    _enqueue(bucket, key, rule, _text(replication.get("Role")))


# --- hooks into moto ------------------------------------------------------------------------

_original_put_object = S3Backend.put_object
_original_create_multipart = S3Backend.create_multipart_upload


def _put_object(self: S3Backend, *args: Any, **kwargs: Any) -> Any:
    key = _original_put_object(self, *args, **kwargs)
    created = getattr(_tls, "created", None)
    if created is not None:
        created.append(key)
    return key


def _create_multipart_upload(self: S3Backend, *args: Any, **kwargs: Any) -> Any:
    multipart = _original_create_multipart(self, *args, **kwargs)
    if getattr(_tls, "sse_c", False):
        multipart._ferry_sse_c = True
    return multipart


def _watch(original: Any, complete_only: bool = False) -> Any:
    """Wraps an S3Response handler: the versions it creates are looked at afterwards."""

    def handler(self: S3Response, *args: Any, **kwargs: Any) -> Any:
        if complete_only:  # _key_response_post(request, body, bucket_name, query, key_name)
            query = args[3] if len(args) > 3 else kwargs.get("query", {})
            if not query.get("uploadId"):
                _tls.sse_c = bool(self.headers.get(SSE_C_HEADER))
                try:
                    return original(self, *args, **kwargs)
                finally:
                    _tls.sse_c = False
        _tls.created = []
        try:
            result = original(self, *args, **kwargs)
            created = _tls.created
        finally:
            _tls.created = None
        if created and isinstance(result, tuple) and result[0] == 200:
            key = created[-1]
            if not complete_only and self.headers.get(SSE_C_HEADER):
                key._ferry_sse_c = True
            on_new_version(key)
        return result

    return handler


_original_response_dict = FakeKey.response_dict


def _response_dict(self: FakeKey) -> dict[str, Any]:
    res = _original_response_dict.fget(self)  # type: ignore[attr-defined]
    status = status_of(self)
    if status:
        res["x-amz-replication-status"] = status
    return res


def install() -> None:
    S3Backend.put_object = _put_object  # type: ignore[method-assign]
    S3Backend.create_multipart_upload = _create_multipart_upload  # type: ignore[method-assign]
    S3Response.put_object = _watch(S3Response.put_object)  # type: ignore[method-assign]
    S3Response.copy_object = _watch(S3Response.copy_object)  # type: ignore[method-assign]
    S3Response._key_response_post = _watch(  # type: ignore[method-assign]
        S3Response._key_response_post, complete_only=True
    )
    FakeKey.response_dict = property(_response_dict)  # type: ignore[assignment,method-assign]
