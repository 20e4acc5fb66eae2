"""Per-request bookkeeping in front of moto: counters, throttling, faults, latency, control API.

A WSGI middleware around moto's DomainDispatcherApplication. For every signed AWS request it
derives (account, region, service, action):
- region and service from the SigV4 credential scope (`Credential=AKID/date/REGION/SERVICE/...`),
- account the way moto does (x-moto-account-id header, else the access key: keys moto issued,
  including STS AssumeRole credentials, map to their account; `AKIA<account id>XXXX` keys map to
  that account, see accounts.py; anything else to 123456789012),
- action from `X-Amz-Target` (JSON services), the `Action` form/query parameter (query services),
  or method + path + sub-resource for S3 (PutObject, GetBucketEncryption, ...); S3 control's
  Batch Operations jobs API, signed for `s3` too, is told apart by its path (`/v20180820/jobs`)
  and counted as service `s3control` (CreateJob, DescribeJob, ListJobs, UpdateJobStatus), then
  answered by s3_jobs.py instead of moto.

Throttling (off by default) follows aws-facts.md: EC2 token buckets per (account, region, action)
from the EC2 API throttling page, answered with `RequestLimitExceeded` (HTTP 503, EC2 XML);
KMS per-second request quotas per (account, region, API) (cryptographic operations share one
regional bucket), answered with `ThrottlingException` (HTTP 400, JSON `__type`); S3 per
(account, region, bucket, read|write) 5,500 GET/HEAD and 3,500 PUT/COPY/POST/DELETE per second,
answered with `SlowDown` (HTTP 503, S3 XML); RDS per (account, region, action), rates assumed
like EC2's (RDS publishes none), answered with `Throttling` (HTTP 400, the query services'
`<ErrorResponse>` XML). Faults are the services' HTTP 500 errors.

Denials (`deny`, off by default): a listed "service:Action" is answered with the service's
access denied error before it takes effect, worded as IAM words a missing identity-policy
permission ("User: ARN is not authorized to perform: ec2:CopySnapshot because no identity-based
policy allows the ec2:CopySnapshot action"): EC2 `UnauthorizedOperation` (HTTP 403, with an
"Encoded authorization failure message"), KMS `AccessDeniedException` (HTTP 400, JSON), S3
`AccessDenied` (HTTP 403), the query services `AccessDenied` (HTTP 403).

Lost responses (`lost_response_rate`, off by default) are what AWS also does: the request is
applied, and then its answer never arrives, as a 500 (the service's InternalError after the work
was done) or as a connection closed without a response (a reset, a proxy or NAT timeout). A
client cannot tell either from a failure before the work: it must look before it tries again.
"""

import base64
import io
import json
import re
import socket
import time
import uuid
from typing import Any, Callable
from urllib.parse import parse_qs

from . import operations, s3_jobs, state

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")

def is_mutating(service: str, action: str) -> bool:
    """Judged over AWS's service models, not from ferry's list (additions/operations.py)."""
    return operations.is_mutating(service, action)


# (bucket size, refill per second)
# from docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html
EC2_QUOTAS = {
    "CopySnapshot": (50, 5),
    "CopyImage": (100, 1),
    "DescribeSnapshots": (100, 20),
    "DescribeSnapshots(unfiltered)": (50, 10),
    "DescribeImages": (100, 20),
    "ModifyImageAttribute": (100, 5),
    "ModifySnapshotAttribute": (100, 5),
    "CreateTags": (100, 10),
    "DeleteTags": (100, 10),
    "DeleteSnapshot": (100, 5),
    "DeregisterImage": (100, 5),
}
EC2_NON_MUTATING_DEFAULT = (100, 20)
EC2_MUTATING_DEFAULT = (50, 5)

# (bucket size, refill per second) [U]: assumed. RDS publishes no per-action request rates;
# these are chosen like EC2's. Throttled RDS calls answer `Throttling` (HTTP 400).
RDS_QUOTAS = {
    "CopyDBSnapshot": (50, 5),
    "CopyDBClusterSnapshot": (50, 5),
    "ModifyDBSnapshotAttribute": (100, 5),
    "ModifyDBClusterSnapshotAttribute": (100, 5),
}
RDS_NON_MUTATING_DEFAULT = (100, 20)
RDS_MUTATING_DEFAULT = (50, 5)

# per second; docs.aws.amazon.com/kms/latest/developerguide/requests-per-second.html
KMS_QUOTAS = {
    "CreateGrant": 50, "RetireGrant": 50, "RevokeGrant": 50, "PutKeyPolicy": 15,
    "EnableKeyRotation": 15, "GetKeyPolicy": 1000, "DescribeKey": 2000, "ListGrants": 100,
    "CreateKey": 5, "ReplicateKey": 5, "TagResource": 10,
}  # fmt: skip
KMS_CRYPTO = ("Encrypt", "Decrypt", "GenerateDataKey", "ReEncrypt")
KMS_CRYPTO_BY_REGION = {
    **dict.fromkeys(["us-east-1", "us-west-2", "eu-west-1"], 100_000),
    **dict.fromkeys(
        [
            "us-east-2",
            "ap-southeast-1",
            "ap-southeast-2",
            "ap-northeast-1",
            "eu-central-1",
            "eu-west-2",
        ],
        20_000,
    ),
}
KMS_CRYPTO_DEFAULT = 10_000
S3_READ, S3_WRITE = 5500, 3500

_buckets: dict[tuple[str, str, str, str], list[float]] = {}  # key -> [tokens, last refill]


def _clear_buckets(config_only: bool) -> None:
    with state.lock:
        _buckets.clear()


state.on_reset(_clear_buckets)


def quota(service: str, region: str, bucket: str) -> tuple[float, float] | None:
    """(size, refill per second) of a throttling bucket, before scaling; None: not throttled."""
    override = state.get("quotas").get(f"{service}:{bucket}")
    if override:
        return float(override[0]), float(override[1])
    if service == "ec2":
        if bucket in EC2_QUOTAS:
            return EC2_QUOTAS[bucket]
        if bucket.startswith(("Describe", "Get", "List")):
            return EC2_NON_MUTATING_DEFAULT
        return EC2_MUTATING_DEFAULT
    if service == "rds":
        if bucket in RDS_QUOTAS:
            return RDS_QUOTAS[bucket]
        if bucket.startswith(("Describe", "Get", "List")):
            return RDS_NON_MUTATING_DEFAULT
        return RDS_MUTATING_DEFAULT
    if service == "kms":
        if bucket == "cryptographic":
            rate = KMS_CRYPTO_BY_REGION.get(region, KMS_CRYPTO_DEFAULT)
            return rate, rate
        if bucket in KMS_QUOTAS:
            rate = KMS_QUOTAS[bucket]
            return rate, rate
        return None
    if service == "s3":
        rate = S3_READ if bucket.endswith(":read") else S3_WRITE
        return rate, rate
    return None


def take_token(account: str, region: str, service: str, bucket: str) -> bool:
    """False if the request is throttled."""
    q = quota(service, region, bucket)
    if q is None:
        return True
    scale = float(state.get("throttle_scale"))
    size, refill = max(1.0, q[0] * scale), q[1] * scale
    key = (account, region, service, bucket)
    now = time.monotonic()
    with state.lock:
        b = _buckets.setdefault(key, [size, now])
        b[0] = min(size, b[0] + (now - b[1]) * refill)
        b[1] = now
        if b[0] >= 1.0:
            b[0] -= 1.0
            return True
        return False


# --- classification -------------------------------------------------------------------------

_S3_BUCKET_SUB = {
    "encryption": "BucketEncryption", "replication": "BucketReplication",
    "versioning": "BucketVersioning", "policy": "BucketPolicy", "tagging": "BucketTagging",
    "lifecycle": "BucketLifecycleConfiguration", "location": "BucketLocation", "acl": "BucketAcl",
    "cors": "BucketCors", "ownershipControls": "BucketOwnershipControls",
    "publicAccessBlock": "PublicAccessBlock", "notification": "BucketNotificationConfiguration",
    "logging": "BucketLogging", "website": "BucketWebsite",
    "object-lock": "ObjectLockConfiguration",
}  # fmt: skip
_VERB = {"GET": "Get", "PUT": "Put", "DELETE": "Delete", "HEAD": "Get", "POST": "Put"}


def s3_action(method: str, path: str, query: dict[str, Any], headers: dict[str, str]) -> str:
    parts = path.lstrip("/").split("/", 1)
    bucket = parts[0]
    key = parts[1] if len(parts) > 1 and parts[1] else None
    copy = "HTTP_X_AMZ_COPY_SOURCE" in headers
    if not bucket:
        return "ListBuckets"
    if key is None:
        if method == "POST" and "delete" in query:
            return "DeleteObjects"
        if method == "GET" and "versions" in query:
            return "ListObjectVersions"
        if method == "GET" and "uploads" in query:
            return "ListMultipartUploads"
        for sub, name in _S3_BUCKET_SUB.items():
            if sub in query:
                return _VERB.get(method, method.title()) + name
        return {
            "GET": "ListObjectsV2" if "list-type" in query else "ListObjects",
            "PUT": "CreateBucket",
            "DELETE": "DeleteBucket",
            "HEAD": "HeadBucket",
        }.get(method, method.title() + "Bucket")
    if "uploads" in query and method == "POST":
        return "CreateMultipartUpload"
    if "uploadId" in query:
        return {
            "PUT": "UploadPartCopy" if copy else "UploadPart",
            "POST": "CompleteMultipartUpload",
            "DELETE": "AbortMultipartUpload",
            "GET": "ListParts",
        }.get(method, method.title() + "Part")
    object_subs = (
        ("tagging", "ObjectTagging"),
        ("acl", "ObjectAcl"),
        ("retention", "ObjectRetention"),
        ("legal-hold", "ObjectLegalHold"),
    )
    for sub, name in object_subs:
        if sub in query:
            return _VERB.get(method, method.title()) + name
    return {
        "GET": "GetObject",
        "PUT": "CopyObject" if copy else "PutObject",
        "DELETE": "DeleteObject",
        "HEAD": "HeadObject",
        "POST": "PostObject",
    }.get(method, method.title() + "Object")


def _account(access_key: str, environ: dict[str, Any]) -> str:
    import os

    if "MOTO_ACCOUNT_ID" in os.environ:
        return os.environ["MOTO_ACCOUNT_ID"]
    if environ.get("HTTP_X_MOTO_ACCOUNT_ID"):
        return environ["HTTP_X_MOTO_ACCOUNT_ID"]
    from moto.iam import models as iam_models

    return iam_models.get_account_id_from(access_key)


class Request:
    __slots__ = ("account", "region", "service", "action", "bucket", "access_key")

    def __init__(
        self, account: str, region: str, service: str, action: str, bucket: str, access_key: str
    ):
        self.account, self.region, self.service = account, region, service
        self.action, self.bucket, self.access_key = action, bucket, access_key


def classify(environ: dict[str, Any]) -> Request | None:
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    m = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
    if m:
        access_key, region, service = m.groups()
    elif "X-Amz-Credential" in query:  # presigned URL
        cred = query["X-Amz-Credential"][0].split("/")
        if len(cred) < 4:
            return None
        access_key, region, service = cred[0], cred[2], cred[3]
    else:
        return None
    method = environ.get("REQUEST_METHOD", "GET")
    params: dict[str, list[str]] = dict(query)
    target = environ.get("HTTP_X_AMZ_TARGET")
    # S3 control's Batch Operations jobs API is signed for `s3` too; its path tells it apart.
    jobs_action = s3_jobs.action_for(method, environ.get("PATH_INFO", "/"))
    if service in ("s3", "s3control") and jobs_action is not None:
        service, action = "s3control", jobs_action
    elif service == "s3":
        action = s3_action(method, environ.get("PATH_INFO", "/"), query, environ)
    elif target:
        action = target.split(".")[-1]
    else:
        if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            params.update(parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True))
        action = (params.get("Action") or ["Unknown"])[0]
    bucket = action
    if service == "ec2" and action == "DescribeSnapshots":
        narrowed = any(
            k.startswith(
                ("Filter", "SnapshotId", "OwnerId", "RestorableBy", "MaxResults", "NextToken")
            )
            for k in params
        )
        bucket = action if narrowed else "DescribeSnapshots(unfiltered)"
    elif service == "kms" and action.startswith(KMS_CRYPTO):
        bucket = "cryptographic"
    elif service == "s3":
        name = environ.get("PATH_INFO", "/").lstrip("/").split("/", 1)[0]
        kind = "read" if method in ("GET", "HEAD") else "write"
        bucket = f"{name}:{kind}"
    return Request(_account(access_key, environ), region, service, action, bucket, access_key)


# --- error bodies ---------------------------------------------------------------------------


def _request_id() -> str:
    return str(uuid.uuid4())


def error_response(service: str, kind: str) -> tuple[int, list[tuple[str, str]], bytes]:
    rid = _request_id()
    if kind == "expired":
        msg = "The security token included in the request is expired"
        if service in ("kms",):
            body = json.dumps({"__type": "ExpiredTokenException", "message": msg}).encode()
            headers = [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-RequestId", rid)]
            return 400, headers, body
        if service in ("s3", "ec2"):
            body = (
                f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>ExpiredToken'
                f"</Code><Message>{msg}</Message></Error></Errors><RequestID>{rid}</RequestID></Response>"
                if service == "ec2"
                else f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ExpiredToken</Code>'
                f"<Message>{msg}</Message><RequestId>{rid}</RequestId></Error>"
            ).encode()
            return 400, [("Content-Type", "text/xml")], body
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>ExpiredToken</Code><Message>{msg}"
            f"</Message></Error><RequestId>{rid}</RequestId></ErrorResponse>"
        ).encode()
        return 400, [("Content-Type", "text/xml"), ("x-amzn-RequestId", rid)], body
    if service == "kms":
        code, status, msg = (
            ("ThrottlingException", 400, "Rate exceeded")
            if kind == "throttle"
            else ("KMSInternalException", 500, "An internal error occurred")
        )
        body = json.dumps({"__type": code, "message": msg}).encode()
        return (
            status,
            [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-RequestId", rid)],
            body,
        )
    if service == "s3":
        code, status, msg = (
            ("SlowDown", 503, "Please reduce your request rate.")
            if kind == "throttle"
            else ("InternalError", 500, "We encountered an internal error. Please try again.")
        )
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{msg}</Message><RequestId>{rid}</RequestId><HostId>{rid}</HostId></Error>"
        ).encode()
        return status, [("Content-Type", "application/xml"), ("x-amz-request-id", rid)], body
    if service == "s3control":
        code, status, msg = (
            ("TooManyRequestsException", 400, "Too many requests")
            if kind == "throttle"
            else ("InternalError", 500, "We encountered an internal error. Please try again.")
        )
        headers = [("Content-Type", "application/xml"), ("x-amz-request-id", rid)]
        return status, headers, s3_jobs.error_body(code, msg, rid)
    if service == "ec2":
        code, status, msg = (
            ("RequestLimitExceeded", 503, "Request limit exceeded.")
            if kind == "throttle"
            else ("InternalError", 500, "An internal error has occurred")
        )
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
            f"<Message>{msg}</Message></Error></Errors><RequestID>{rid}</RequestID></Response>"
        ).encode()
        return status, [("Content-Type", "text/xml;charset=UTF-8")], body
    # The query services' form (STS, IAM, RDS): <ErrorResponse><Error><Type/><Code/><Message/>.
    code, status, msg = (
        ("Throttling", 400, "Rate exceeded")
        if kind == "throttle"
        else ("InternalFailure", 500, "An internal error occurred")
    )
    kind_attr = "Sender" if status == 400 else "Receiver"
    body = (
        f"<ErrorResponse><Error><Type>{kind_attr}</Type><Code>{code}</Code><Message>{msg}</Message>"
        f"</Error><RequestId>{rid}</RequestId></ErrorResponse>"
    ).encode()
    return status, [("Content-Type", "text/xml"), ("x-amzn-RequestId", rid)], body


def denied_response(
    req: "Request", message: str | None = None
) -> tuple[int, list[tuple[str, str]], bytes]:
    """The service's answer to a call the caller's IAM policy does not allow (`deny`, or
    `message` from iam_enforce.py)."""
    rid = _request_id()
    action = f"{req.service}:{req.action}"
    msg = message or (
        f"User: arn:aws:iam::{req.account}:user/ferry-test is not authorized to perform: "
        f"{action} because no identity-based policy allows the {action} action"
    )
    if req.service == "kms":
        body = json.dumps({"__type": "AccessDeniedException", "message": msg}).encode()
        headers = [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-RequestId", rid)]
        return 400, headers, body
    if req.service == "ec2":
        encoded = base64.b64encode(
            json.dumps({"allowed": False, "action": action, "requestId": rid}).encode()
        ).decode()
        text = (
            f"You are not authorized to perform this operation. {msg}. "
            f"Encoded authorization failure message: {encoded}"
        )
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
            f"<Code>UnauthorizedOperation</Code><Message>{text}</Message></Error></Errors>"
            f"<RequestID>{rid}</RequestID></Response>"
        ).encode()
        headers = [("Content-Type", "text/xml;charset=UTF-8"), ("x-amzn-RequestId", rid)]
        return 403, headers, body
    if req.service in ("s3", "s3control"):
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
            f"<Message>{msg}</Message><RequestId>{rid}</RequestId><HostId>{rid}</HostId></Error>"
        ).encode()
        return 403, [("Content-Type", "application/xml"), ("x-amz-request-id", rid)], body
    body = (
        f"<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>{msg}"
        f"</Message></Error><RequestId>{rid}</RequestId></ErrorResponse>"
    ).encode()
    return 403, [("Content-Type", "text/xml"), ("x-amzn-RequestId", rid)], body


def signature_response(req: "Request", msg: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """A request whose signature does not verify (iam_enforce.py): EC2 `AuthFailure`, KMS
    `InvalidSignatureException`, the query services `SignatureDoesNotMatch` (HTTP 403; KMS 400)."""
    rid = _request_id()
    if req.service == "kms":
        body = json.dumps({"__type": "InvalidSignatureException", "message": msg}).encode()
        headers = [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-RequestId", rid)]
        return 400, headers, body
    if req.service == "ec2":
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
            f"<Code>AuthFailure</Code><Message>AWS was not able to validate the provided "
            f"access credentials</Message></Error></Errors><RequestID>{rid}</RequestID></Response>"
        ).encode()
        return 403, [("Content-Type", "text/xml;charset=UTF-8"), ("x-amzn-RequestId", rid)], body
    body = (
        f"<ErrorResponse><Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code>"
        f"<Message>{msg}</Message></Error><RequestId>{rid}</RequestId></ErrorResponse>"
    ).encode()
    return 403, [("Content-Type", "text/xml"), ("x-amzn-RequestId", rid)], body


# --- counters -------------------------------------------------------------------------------


def _count(req: Request, field: str | None) -> None:
    with state.lock:
        entry = state.requests.setdefault(
            (req.account, req.region, req.service, req.action),
            {"count": 0, "throttled": 0, "faults": 0, "lost": 0},
        )
        if field is None:
            entry["count"] += 1
        else:
            entry[field] += 1


def counters() -> dict[str, Any]:
    with state.lock:
        rows = [
            {
                "account": a, "region": r, "service": s, "action": act,
                "mutating": is_mutating(s, act), **dict(v),
            }
            for (a, r, s, act), v in sorted(state.requests.items())
        ]  # fmt: skip
        copies = [
            {"account": a, "region": r, **dict(v)} for (a, r), v in sorted(state.copies.items())
        ]
        snapshot_copies = [dict(e) for e in state.snapshot_copies]
    totals = {
        "requests": sum(r["count"] for r in rows),
        "throttled": sum(r["throttled"] for r in rows),
        "faults": sum(r["faults"] for r in rows),
        "lost": sum(r["lost"] for r in rows),
        "mutating": sum(r["count"] for r in rows if r["mutating"]),
    }
    kinds = (
        "snapshots", "images", "image_snapshots", "db_snapshots", "db_cluster_snapshots",
        "time_based_snapshots", "full_snapshots", "incremental_snapshots", "bytes_full",
        "bytes_incremental",
    )  # fmt: skip
    copy_totals = {k: sum(c[k] for c in copies) for k in kinds}
    from . import paging, s3_live_replication

    return {
        "requests": rows,
        "totals": totals,
        "copies": copies,
        "copy_totals": copy_totals,
        "snapshot_copies": snapshot_copies,
        "batch_jobs": s3_jobs.counters(),
        "replication": s3_live_replication.counters(),
        "describes": paging.counters(),
    }


# --- the middleware -------------------------------------------------------------------------


def _json(start_response: Callable[..., Any], status: int, doc: Any) -> list[bytes]:
    body = json.dumps(doc, indent=1).encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
    start_response(
        f"{status} {reason.get(status, 'OK')}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


def reset_everything() -> None:
    from moto.moto_api._internal.models import moto_api_backend

    # The additions first: background work (copies, replication, batch jobs) sees the reset
    # before moto's backends are replaced, and never writes into the new world.
    state.reset()
    moto_api_backend.reset()


class Traffic:
    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path.startswith("/_ferry/"):
            return self.control(path, method, environ, start_response)
        if path == "/moto-api/reset" and method == "POST":
            state.reset()
            return self.app(environ, start_response)
        req = classify(environ)
        if req is None:
            return self.app(environ, start_response)
        latency = float(state.get("latency_ms"))
        if latency > 0:
            time.sleep(latency / 1000.0)
        _count(req, None)
        from .sessions import expired

        if expired(req.access_key):
            _count(req, "faults")
            return self._error(start_response, req.service, "expired")
        if f"{req.service}:{req.action}" in state.get("deny"):
            _count(req, "faults")
            status, headers, body = denied_response(req)
            reason = {400: "Bad Request", 403: "Forbidden"}
            start_response(
                f"{status} {reason[status]}", headers + [("Content-Length", str(len(body)))]
            )
            return [body]
        from .iam_enforce import judge

        denial = judge(req, environ)
        if denial is not None:
            _count(req, "faults")
            status, headers, body = (
                signature_response(req, denial.message)
                if denial.signature
                else denied_response(req, denial.message)
            )
            reason = {400: "Bad Request", 403: "Forbidden"}
            start_response(
                f"{status} {reason[status]}", headers + [("Content-Length", str(len(body)))]
            )
            return [body]
        if state.get("throttle") and not take_token(
            req.account, req.region, req.service, req.bucket
        ):
            _count(req, "throttled")
            return self._error(start_response, req.service, "throttle")
        rate = float(state.get("fault_rate"))
        if rate > 0:
            with state.lock:
                hit = state.rng.random() < rate
            if hit:
                _count(req, "faults")
                return self._error(start_response, req.service, "fault")
        from .ec2_shared import set_viewer

        lost_rate = float(state.get("lost_response_rate"))
        lost = False
        if lost_rate > 0 and is_mutating(req.service, req.action):
            with state.lock:
                lost = state.rng.random() < lost_rate
                dropped = state.rng.random() < 0.5
        if req.action == "CopyObject":
            from .s3_races import before_copy

            before_copy(environ)
        set_viewer(req.account)
        app = self.app
        if req.service == "s3control":
            environ["ferry.request"] = req
            app = s3_jobs.app
        try:
            if not lost:
                return app(environ, start_response)
            # The work is done; the answer is thrown away.
            body = app(environ, lambda status, headers, exc_info=None: (lambda b: None))
            for _ in body:
                pass
            if hasattr(body, "close"):
                body.close()
        finally:
            set_viewer(None)
        _count(req, "lost")
        conn = environ.get("werkzeug.socket")
        if dropped and conn is not None:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            start_response("500 Internal Server Error", [("Content-Length", "0")])
            return []
        return self._error(start_response, req.service, "fault")

    @staticmethod
    def _error(start_response: Callable[..., Any], service: str, kind: str) -> list[bytes]:
        status, headers, body = error_response(service, kind)
        reason = {400: "Bad Request", 500: "Internal Server Error", 503: "Service Unavailable"}
        start_response(f"{status} {reason[status]}", headers + [("Content-Length", str(len(body)))])
        return [body]

    def control(
        self, path: str, method: str, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> list[bytes]:
        from . import ec2_copies, paging, s3_live_replication

        if path == "/_ferry/health":
            return _json(start_response, 200, {"ok": True})
        if path == "/_ferry/config":
            if method == "GET":
                with state.lock:
                    return _json(start_response, 200, dict(state.config))
            if method == "POST":
                length = int(environ.get("CONTENT_LENGTH") or 0)
                raw = environ["wsgi.input"].read(length) if length else b"{}"
                try:
                    return _json(start_response, 200, state.configure(json.loads(raw or b"{}")))
                except ValueError as e:
                    return _json(start_response, 400, {"error": str(e)})
        if path == "/_ferry/counters" and method == "GET":
            return _json(start_response, 200, counters())
        if path == "/_ferry/operations" and method == "GET":
            # every operation of the services' models, and whether the counters call it mutating
            query = parse_qs(environ.get("QUERY_STRING", ""))
            services = query.get("service") or ["ec2", "kms", "s3", "sts", "iam", "rds"]
            return _json(
                start_response,
                200,
                {
                    sv: {op: is_mutating(sv, op) for op in sorted(operations.operations(sv))}
                    for sv in services
                },
            )
        if path == "/_ferry/counters/reset" and method == "POST":
            with state.lock:
                state.requests.clear()
                state.copies.clear()
                state.snapshot_copies.clear()
            s3_jobs.zero_counters()
            s3_live_replication.zero_counters()
            paging.zero_counters()
            return _json(start_response, 200, {"status": "ok"})
        if path == "/_ferry/reset" and method == "POST":
            reset_everything()
            return _json(start_response, 200, {"status": "ok"})
        if path == "/_ferry/copies/complete" and method == "POST":
            return _json(start_response, 200, {"completed": ec2_copies.complete_all()})
        if path == "/_ferry/snapshots/changed" and method == "POST":
            # the bytes each snapshot changed since its volume's previous one (the byte model)
            length = int(environ.get("CONTENT_LENGTH") or 0)
            raw = environ["wsgi.input"].read(length) if length else b"{}"
            try:
                seeded = ec2_copies.seed_changed(json.loads(raw or b"{}"))
            except ValueError as e:
                return _json(start_response, 400, {"error": str(e)})
            return _json(start_response, 200, {"seeded": seeded})
        if path == "/_ferry/replication" and method == "GET":
            return _json(start_response, 200, s3_live_replication.summary())
        if path == "/_ferry/jobs/complete" and method == "POST":
            return _json(start_response, 200, {"completed": s3_jobs.complete_all()})
        return _json(start_response, 404, {"error": f"no control endpoint {method} {path}"})
