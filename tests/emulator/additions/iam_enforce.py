"""IAM policies enforced on the resource a request names (`iam_enforce`, off by default).

moto has access control of its own (INITIAL_NO_AUTH_ACTION_COUNT), measured on 5.2.5 unfit for
ferry: it judges every non-S3 action against resource "*", so a statement scoped to an ARN never
matches, and it re-computes the SigV4 signature from the body it parsed, so a form body the Rust
SDK encodes with %20 (a CopySnapshot with a Description) fails AuthFailure. This addition judges
in the traffic middleware instead, where the raw request is at hand:

- who: an IAM user's access key (moto's CreateAccessKey) or an AssumeRole session's key is judged
  against that user's (inline, attached, its groups') or role's (inline, attached) policies;
  a static test key (accounts.py) is its account's root and allowed everything in the account;
- what: the IAM action of the call (S3 operations by their IAM names) on the ARNs the request
  names (the key, snapshot, image, role, bucket, object, DB snapshot; "*" where AWS takes none);
- how: IAM's evaluation logic: an explicit Deny wins, else some Allow is needed (Action,
  NotAction, Resource, NotResource with `*`/`?`; Conditions below);
- KMS key policies in the caller's own account: a key policy with no statement for the account
  (its root or id) does not delegate to IAM, so only a statement naming the caller (or `*`)
  allows, for the root too.

Signatures of judged keys are verified from the raw bytes (S3's are not: chunked and unsigned
payloads); a static key's secret is never checked.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs, unquote

from . import state

# --- principals -----------------------------------------------------------------------------


class Principal:
    """The IAM identity a judged key belongs to: its ARN and its identity policies."""

    def __init__(self, account: str, arn: str, documents: list[Any]) -> None:
        self.account = account
        self.arn = arn
        self.documents = documents


def _default_version(policy: Any) -> Any:
    for version in policy.versions:
        if version.version_id == policy.default_version_id:
            return version.document
    return None


def principal_of(account: str, access_key: str) -> Principal | None:
    """The judged principal of `access_key`, or None for a key that is the account's root."""
    from moto.iam.models import iam_backends
    from moto.sts.models import sts_backends

    iam = iam_backends[account]["global"]
    assumed = sts_backends[account]["aws"].get_assumed_role_from_access_key(access_key)
    if assumed is not None:
        role = next((r for r in iam.roles.values() if r.arn == assumed.role_arn), None)
        docs: list[Any] = []
        if role is not None:
            docs += list(role.policies.values())
            docs += [_default_version(p) for p in role.managed_policies.values()]
        return Principal(account, assumed.arn, docs)
    user = iam.get_user_from_access_key_id(access_key)
    if user is None:
        return None
    docs = list(user.policies.values())
    docs += [_default_version(p) for p in user.managed_policies.values()]
    for group in iam.get_groups_for_user(user.name):
        docs += list(group.policies.values())
        docs += [_default_version(p) for p in group.managed_policies.values()]
    return Principal(account, user.arn, docs)


# --- policy evaluation ----------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _wildcard(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in str(pattern))
    return re.compile(f"^{body}$", (re.IGNORECASE if ignore_case else 0) | re.DOTALL)


def _document(doc: Any) -> dict[str, Any]:
    if isinstance(doc, bytes):
        doc = doc.decode("utf-8", "replace")
    if isinstance(doc, str):
        for text in (doc, unquote(doc)):
            try:
                doc = json.loads(text)
                break
            except ValueError:
                continue
        else:
            return {}
    return doc if isinstance(doc, dict) else {}


# Condition operators this evaluation knows; a statement with any other operator or key never
# applies (an Allow then allows nothing: fail closed).
_OPERATORS = ("StringEquals", "StringNotEquals", "StringLike", "StringNotLike")


def _condition_holds(condition: Any, context: dict[str, str | None]) -> bool:
    if not condition:
        return True
    if not isinstance(condition, dict):
        return False
    for operator, pairs in condition.items():
        base = operator.removeprefix("ForAnyValue:").removesuffix("IfExists")
        if base not in _OPERATORS or not isinstance(pairs, dict):
            return False
        for key, wanted in pairs.items():
            lowered = key.lower()
            if not any(lowered.startswith(k) for k in _KNOWN_KEYS):
                return False
            actual = context.get(lowered)
            if actual is None:
                # An absent key fails a positive operator and satisfies a negated one
                # (IAM user guide, condition operators), unless ...IfExists.
                if operator.endswith("IfExists"):
                    continue
                if "Not" in base:
                    continue
                return False
            like = base.startswith("StringLike") or base.startswith("StringNotLike")
            hit = any(
                _wildcard(w, False).match(actual) if like else str(w) == actual
                for w in _as_list(wanted)
            )
            if hit == ("Not" in base):
                return False
    return True


# Condition keys the context below can answer; aws:ResourceTag/* needs the resource's tags.
_KNOWN_KEYS = ("aws:resourcetag/", "kms:viaservice", "aws:principalarn", "aws:principalaccount")


def _statement_applies(st: dict[str, Any], action: str, resource: str, ctx: Any) -> bool:
    if "Action" in st:
        if not any(_wildcard(a, True).match(action) for a in _as_list(st["Action"])):
            return False
    elif "NotAction" in st:
        if any(_wildcard(a, True).match(action) for a in _as_list(st["NotAction"])):
            return False
    else:
        return False
    if "Resource" in st:
        if not any(_wildcard(r, False).match(resource) for r in _as_list(st["Resource"])):
            return False
    elif "NotResource" in st:
        if any(_wildcard(r, False).match(resource) for r in _as_list(st["NotResource"])):
            return False
    condition = st.get("Condition")
    return not condition or _condition_holds(condition, ctx(resource))


def evaluate(documents: list[Any], action: str, resource: str, ctx: Any) -> str:
    """"deny" (an explicit Deny), "allow" (an Allow and no Deny) or "none" (implicit deny)."""
    allowed = False
    for doc in documents:
        for st in _as_list(_document(doc).get("Statement")):
            if not isinstance(st, dict) or not _statement_applies(st, action, resource, ctx):
                continue
            if st.get("Effect") == "Deny":
                return "deny"
            if st.get("Effect") == "Allow":
                allowed = True
    return "allow" if allowed else "none"


# --- the request's action and resources -----------------------------------------------------

_S3_IAM = {
    "GetBucketEncryption": "GetEncryptionConfiguration",
    "PutBucketEncryption": "PutEncryptionConfiguration",
    "GetBucketReplication": "GetReplicationConfiguration",
    "PutBucketReplication": "PutReplicationConfiguration",
    "DeleteBucketReplication": "PutReplicationConfiguration",
    "ListObjectsV2": "ListBucket",
    "ListObjects": "ListBucket",
    "HeadBucket": "ListBucket",
    "ListObjectVersions": "ListBucketVersions",
    "HeadObject": "GetObject",
    "CreateMultipartUpload": "PutObject",
    "CompleteMultipartUpload": "PutObject",
    "UploadPart": "PutObject",
    "UploadPartCopy": "PutObject",
    "CopyObject": "PutObject",
    "ListMultipartUploads": "ListBucketMultipartUploads",
    "ListParts": "ListMultipartUploadParts",
    "ListBuckets": "ListAllMyBuckets",
    "DeleteObjects": "DeleteObject",
}


def _p(params: dict[str, list[str]], name: str) -> str | None:
    v = params.get(name)
    return v[0] if v else None


def _indexed(params: dict[str, list[str]], prefix: str) -> list[str]:
    return [v[0] for k, v in sorted(params.items()) if k.startswith(prefix) and v]


def _kms_key_arn(value: str | None, account: str, region: str) -> str:
    """The ARN of the key `value` (id, ARN, alias name or alias ARN) names; an alias that does
    not resolve stays its alias ARN (the call then fails on its own)."""
    if not value:
        return "*"
    if value.startswith("arn:") and ":key/" in value:
        return value
    m = re.match(r"^arn:[^:]+:kms:([^:]+):(\d{12}):(alias/.+)$", value)
    if m:
        region, account, value = m.group(1), m.group(2), m.group(3)
    if value.startswith("alias/"):
        from moto.kms.models import kms_backends

        try:
            key_id = kms_backends[account][region].get_key_id_from_alias(value)
        except Exception:
            key_id = None
        if not key_id:
            return f"arn:aws:kms:{region}:{account}:{value}"
        value = kms_backends[account][region].get_key_id(key_id)
    return f"arn:aws:kms:{region}:{account}:key/{value}"


def _ec2_arn(region: str, resource_id: str) -> str:
    if resource_id.startswith("ami-"):
        return f"arn:aws:ec2:{region}::image/{resource_id}"
    if resource_id.startswith("snap-"):
        return f"arn:aws:ec2:{region}::snapshot/{resource_id}"
    # Other resource types ferry does not touch: judged on "*" as moto did.
    return "*"


def _rds_arn(value: str | None, account: str, region: str, cluster: bool) -> str:
    if not value:
        return "*"
    if value.startswith("arn:"):
        return value
    kind = "cluster-snapshot" if cluster else "snapshot"
    return f"arn:aws:rds:{region}:{account}:{kind}:{value}"


def checks(
    service: str,
    action: str,
    account: str,
    region: str,
    params: dict[str, list[str]],
    body: bytes,
    environ: dict[str, Any],
) -> list[tuple[str, str]]:
    """The (IAM action, resource ARN) pairs a call needs allowed, AWS's resource types
    (Service Authorization Reference) for the calls ferry makes; "*" elsewhere."""
    if service == "ec2":
        if action in ("ModifySnapshotAttribute", "DeleteSnapshot", "DescribeSnapshotAttribute"):
            return [(f"ec2:{action}", _ec2_arn(region, _p(params, "SnapshotId") or ""))]
        if action in ("ModifyImageAttribute", "DeregisterImage", "DescribeImageAttribute"):
            return [(f"ec2:{action}", _ec2_arn(region, _p(params, "ImageId") or ""))]
        if action in ("CreateTags", "DeleteTags"):
            return [(f"ec2:{action}", _ec2_arn(region, r)) for r in _indexed(params, "ResourceId")]
        if action in ("CopySnapshot", "CopyImage"):
            kind = "snapshot" if action == "CopySnapshot" else "image"
            new = f"arn:aws:ec2:{region}::{kind}/*"
            # The source is in the resource context too (AWS Storage Blog, "Enhancing
            # resource-level permissions for copying Amazon EBS snapshots"; EC2 user guide,
            # copy-ami-permissions: CopyImage on the source AMI since October 2024).
            source_id = _p(params, "SourceSnapshotId" if kind == "snapshot" else "SourceImageId")
            source_region = _p(params, "SourceRegion") or region
            need = [(f"ec2:{action}", new)]
            if source_id:
                need.append((f"ec2:{action}", _ec2_arn(source_region, source_id)))
            # Tagging on creation needs ec2:CreateTags on the new resource (EC2 user guide,
            # "Grant permission to tag resources during creation").
            if any(k.startswith("TagSpecification") for k in params):
                need.append(("ec2:CreateTags", new))
            return need
        return [(f"ec2:{action}", "*")]
    if service == "kms":
        try:
            doc = json.loads(body or b"{}")
        except ValueError:
            doc = {}
        if action in ("CreateKey", "ListKeys", "ListAliases", "GenerateRandom"):
            return [(f"kms:{action}", "*")]
        if action == "CreateAlias":
            alias = doc.get("AliasName") or ""
            return [
                ("kms:CreateAlias", f"arn:aws:kms:{region}:{account}:{alias}"),
                ("kms:CreateAlias", _kms_key_arn(doc.get("TargetKeyId"), account, region)),
            ]
        if action == "ReEncrypt":
            return [
                ("kms:ReEncryptFrom", _kms_key_arn(doc.get("SourceKeyId"), account, region)),
                ("kms:ReEncryptTo", _kms_key_arn(doc.get("DestinationKeyId"), account, region)),
            ]
        return [(f"kms:{action}", _kms_key_arn(doc.get("KeyId"), account, region))]
    if service == "s3":
        path = environ.get("PATH_INFO", "/").lstrip("/")
        bucket, _, key = path.partition("/")
        iam_action = f"s3:{_S3_IAM.get(action, action)}"
        if action == "ListBuckets":
            return [(iam_action, "*")]
        if key and action not in ("ListObjectsV2", "ListObjects", "ListObjectVersions"):
            resource = f"arn:aws:s3:::{bucket}/{key}"
        else:
            resource = f"arn:aws:s3:::{bucket}"
        if action == "HeadObject" or (action == "GetObject" and "versionId" in params):
            if "versionId" in params:
                iam_action = "s3:GetObjectVersion"
        need = [(iam_action, resource)]
        if action in ("CopyObject", "UploadPartCopy"):
            source = unquote(environ.get("HTTP_X_AMZ_COPY_SOURCE", "")).lstrip("/")
            src, _, version = source.partition("?versionId=")
            read = "s3:GetObjectVersion" if version else "s3:GetObject"
            need.append((read, f"arn:aws:s3:::{src}"))
        if action == "PutBucketReplication":
            m = re.search(rb"<Role>([^<]+)</Role>", body or b"")
            if m:
                need.append(("iam:PassRole", m.group(1).decode()))
        return need
    if service == "s3control":
        path = environ.get("PATH_INFO", "/")
        m = re.search(r"/jobs/([^/?]+)", path)
        if m:
            return [(f"s3:{action}", f"arn:aws:s3:{region}:{account}:job/{m.group(1)}")]
        need = [(f"s3:{action}", "*")]
        if action == "CreateJob":
            role = re.search(rb"<RoleArn>([^<]+)</RoleArn>", body or b"")
            if role:
                need.append(("iam:PassRole", role.group(1).decode()))
        return need
    if service == "iam":
        role = _p(params, "RoleName")
        if role:
            path = _p(params, "Path") or "/"
            return [(f"iam:{action}", f"arn:aws:iam::{account}:role{path}{role}")]
        arn = _p(params, "PolicyArn")
        if arn:
            return [(f"iam:{action}", arn)]
        user = _p(params, "UserName")
        if user:
            return [(f"iam:{action}", f"arn:aws:iam::{account}:user/{user}")]
        return [(f"iam:{action}", "*")]
    if service == "sts":
        if action == "AssumeRole":
            return [("sts:AssumeRole", _p(params, "RoleArn") or "*")]
        return [(f"sts:{action}", "*")]
    if service == "rds":
        cluster = "Cluster" in action
        if action in ("CopyDBSnapshot", "CopyDBClusterSnapshot"):
            prefix = "DBClusterSnapshot" if cluster else "DBSnapshot"
            source = _p(params, f"Source{prefix}Identifier")
            target = _p(params, f"Target{prefix}Identifier")
            return [
                (f"rds:{action}", _rds_arn(source, account, region, cluster)),
                (f"rds:{action}", _rds_arn(target, account, region, cluster)),
            ]
        if action in ("AddTagsToResource", "RemoveTagsFromResource", "ListTagsForResource"):
            return [(f"rds:{action}", _p(params, "ResourceName") or "*")]
        if action in (
            "DeleteDBSnapshot",
            "ModifyDBSnapshotAttribute",
            "DescribeDBSnapshotAttributes",
        ):
            ident = _p(params, "DBSnapshotIdentifier")
            return [(f"rds:{action}", _rds_arn(ident, account, region, False))]
        if action in (
            "DeleteDBClusterSnapshot",
            "ModifyDBClusterSnapshotAttribute",
            "DescribeDBClusterSnapshotAttributes",
        ):
            ident = _p(params, "DBClusterSnapshotIdentifier")
            return [(f"rds:{action}", _rds_arn(ident, account, region, True))]
        return [(f"rds:{action}", "*")]
    return [(f"{service}:{action}", "*")]


# --- condition context ----------------------------------------------------------------------


def _resource_tags(resource: str) -> dict[str, str] | None:
    """The tags of an EC2 snapshot or image or an RDS snapshot, by ARN (None: not known)."""
    m = re.match(r"^arn:aws:ec2:([^:]+):[^:]*:(?:snapshot|image)/((?:snap|ami)-[0-9a-f]+)$", resource)
    if m:
        from moto.ec2.models import ec2_backends

        region, rid = m.groups()
        for account in list(ec2_backends.keys()):
            backend = ec2_backends[account][region]
            owned = rid in getattr(backend, "snapshots", {}) or rid in getattr(backend, "amis", {})
            if owned:
                return dict(backend.tags.get(rid, {}))
        return None
    m = re.match(r"^arn:aws:rds:([^:]+):(\d{12}):(?:cluster-)?snapshot:", resource)
    if m:
        from moto.rds.models import rds_backends

        region, account = m.groups()
        try:
            tags = rds_backends[account][region].list_tags_for_resource(resource)
        except Exception:
            return None
        return {t["Key"]: t["Value"] for t in tags}
    return None


def context_for(principal_arn: str, account: str, resource: str) -> dict[str, str | None]:
    """Condition keys (lower-cased) for a direct call on `resource`. A direct call has no
    kms:ViaService (only a call an AWS service makes for the caller carries it)."""
    ctx: dict[str, str | None] = {
        "aws:principalarn": principal_arn,
        "aws:principalaccount": account,
        "kms:viaservice": None,
    }
    tags = _resource_tags(resource)
    for k, v in (tags or {}).items():
        ctx[f"aws:resourcetag/{k.lower()}"] = v
    return _Context(ctx)


class _Context(dict):  # type: ignore[type-arg]
    """Resource-tag keys match case-insensitively (IAM: tag keys in conditions)."""

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


# --- KMS key policies in the caller's account -----------------------------------------------


def _key_policy_denies(account: str, caller_arn: str, action: str, key_arn: str) -> bool:
    """Whether the key policy of `key_arn`, a key in the caller's own account, leaves the
    caller out: no statement for the account (which would delegate to IAM) and none naming
    the caller or `*` for the action (KMS developer guide, key-policy-default)."""
    m = re.match(r"^arn:aws:kms:([^:]+):(\d{12}):key/(.+)$", key_arn)
    if not m or m.group(2) != account:
        return False
    from moto.kms.models import kms_backends

    region, _, key_id = m.groups()
    key = kms_backends[account][region].keys.get(key_id)
    if key is None:
        return False
    root = f"arn:aws:iam::{account}:root"
    delegated = named = False
    for st in _as_list(_document(key.policy).get("Statement")):
        if not isinstance(st, dict) or st.get("Effect") != "Allow":
            continue
        if not any(_wildcard(a, True).match(action) for a in _as_list(st.get("Action"))):
            continue
        principal = st.get("Principal")
        names = ["*"] if principal == "*" else _as_list((principal or {}).get("AWS"))
        if any(p in (root, account) for p in names):
            delegated = True
        if any(p in ("*", caller_arn) for p in names):
            named = True
    return not (delegated or named)


# --- the judgement --------------------------------------------------------------------------


class Denied:
    """A refusal: `signature` True for a request whose SigV4 signature does not verify."""

    __slots__ = ("action", "resource", "message", "signature")

    def __init__(self, action: str, resource: str, message: str, signature: bool = False) -> None:
        self.action, self.resource, self.message = action, resource, message
        self.signature = signature


# --- SigV4, verified against the raw request ------------------------------------------------


def _secret_of(account: str, access_key: str) -> str | None:
    from moto.iam.models import iam_backends
    from moto.sts.models import sts_backends

    assumed = sts_backends[account]["aws"].get_assumed_role_from_access_key(access_key)
    if assumed is not None:
        return str(assumed.secret_access_key)
    user = iam_backends[account]["global"].get_user_from_access_key_id(access_key)
    for key in getattr(user, "access_keys", []) or []:
        if key.access_key_id == access_key:
            return str(key.secret_access_key)
    return None


def _header(environ: dict[str, Any], name: str) -> str:
    special = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}
    value = environ.get(special.get(name, "HTTP_" + name.upper().replace("-", "_")), "")
    return " ".join(str(value).split())


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="-_.~")


def signature_verifies(environ: dict[str, Any], body: bytes, secret: str) -> bool:
    """SigV4 (AWS General Reference, *Create a signed AWS API request*) recomputed from the
    bytes received, not from a re-encoded parse of them: a form body with %20 verifies as
    the SDK signed it."""
    import hashlib
    import hmac

    auth = environ.get("HTTP_AUTHORIZATION", "")
    m = re.match(
        r"^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request,\s*"
        r"SignedHeaders=([^,]+),\s*Signature=([0-9a-f]+)$",
        auth,
    )
    if not m:
        return False
    _, day, region, service, signed, given = m.groups()
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ.get("PATH_INFO", "/")
    path = raw.split("?", 1)[0] or "/"
    pairs = []
    for part in filter(None, environ.get("QUERY_STRING", "").split("&")):
        k, _, v = part.partition("=")
        pairs.append((_quote(unquote(k.replace("+", " "))), _quote(unquote(v.replace("+", " ")))))
    query = "&".join(f"{k}={v}" for k, v in sorted(pairs))
    names = signed.split(";")
    headers = "".join(f"{n}:{_header(environ, n)}\n" for n in names)
    payload = environ.get("HTTP_X_AMZ_CONTENT_SHA256") or hashlib.sha256(body).hexdigest()
    canonical = "\n".join(
        [environ.get("REQUEST_METHOD", "GET"), path, query, headers, signed, payload]
    )
    amz_date = _header(environ, "x-amz-date")
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )

    def mac(key: bytes, msg: str) -> bytes:
        return hmac.new(key, msg.encode(), hashlib.sha256).digest()

    key = mac(("AWS4" + secret).encode(), day)
    for part in (region, service, "aws4_request"):
        key = mac(key, part)
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given)


def judge(req: Any, environ: dict[str, Any]) -> Denied | None:
    """None if the call may go on; else what was denied and AWS's sentence for it."""
    if not state.get("iam_enforce"):
        return None
    if req.service == "sts" and req.action == "GetCallerIdentity":
        return None  # always allowed, even under an explicit Deny (STS API reference)
    body = b""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        import io

        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)
    params: dict[str, list[str]] = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        params.update(parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True))
    principal = principal_of(req.account, req.access_key)
    caller_arn = principal.arn if principal else f"arn:aws:iam::{req.account}:root"
    # S3's signatures (chunked and unsigned payloads) are not verified; the other services'
    # are, for the keys whose secret the emulator issued.
    if principal is not None and req.service not in ("s3", "s3control"):
        secret = _secret_of(req.account, req.access_key)
        if secret is None or not signature_verifies(environ, body, secret):
            return Denied(
                f"{req.service}:{req.action}",
                "*",
                "The request signature we calculated does not match the signature you "
                "provided. Check your AWS Secret Access Key and signing method.",
                signature=True,
            )
    for action, resource in checks(
        req.service, req.action, req.account, req.region, params, body, environ
    ):
        if principal is not None:

            def ctx(r: str) -> dict[str, str | None]:
                return context_for(caller_arn, req.account, r)

            verdict = evaluate(principal.documents, action, resource, ctx)
            if verdict != "allow":
                why = (
                    "with an explicit deny in an identity-based policy"
                    if verdict == "deny"
                    else f"because no identity-based policy allows the {action} action"
                )
                return Denied(
                    action,
                    resource,
                    f"User: {caller_arn} is not authorized to perform: {action} on resource: "
                    f"{resource} {why}",
                )
        if action.startswith("kms:") and _key_policy_denies(
            req.account, caller_arn, action, resource
        ):
            return Denied(
                action,
                resource,
                f"User: {caller_arn} is not authorized to perform: {action} on resource: "
                f"{resource} because no resource-based policy allows the {action} action",
            )
    return None


def install() -> None:
    # moto's policy validator refuses every regional S3 ARN but access points'; S3 Batch
    # Operations jobs are regional too (`arn:aws:s3:REGION:ACCOUNT:job/ID`, Service
    # Authorization Reference, Amazon S3 resource types), and ferry's printed policy names them.
    from moto.iam import policy_validation

    starts = policy_validation.SERVICE_TYPE_REGION_INFORMATION_ERROR_ASSOCIATIONS["s3"]
    starts.setdefault("valid_starting_values", [])
    if "job/" not in starts["valid_starting_values"]:
        starts["valid_starting_values"].append("job/")
