"""S3 Batch Operations jobs (s3control) that run S3ReplicateObject: S3 Batch Replication.

AWS (S3 API reference CreateJob, DescribeJob, ListJobs, UpdateJobStatus (API_control_*);
S3 user guide "Replicating existing objects with Batch Replication" (s3-batch-replication-batch),
"Create a Batch Replication job for existing replication rules"
(s3-batch-replication-existing-config), "Configuring an IAM role for S3 Batch Replication"
(s3-batch-replication-policies), "Tracking job status and completion reports"
(batch-ops-job-status), "Examples: S3 Batch Operations completion reports"
(batch-ops-examples-reports)); aws-facts-next.md section 2. moto has no CreateJob/DescribeJob.

The SDK sends these as REST-XML to the endpoint itself, signed for service `s3` (traffic.py
routes `/v20180820/jobs...` here and counts them as service `s3control`):

- `POST /v20180820/jobs` CreateJob, `GET /v20180820/jobs/{id}` DescribeJob,
  `GET /v20180820/jobs?jobStatuses=..&nextToken=..&maxResults=..` ListJobs,
  `POST /v20180820/jobs/{id}/status?requestedJobStatus=Ready|Cancelled&statusUpdateReason=..`
  UpdateJobStatus; header `x-amz-account-id` must be the caller's account (else 403
  AccessDenied). Jobs live per (account, region). Errors are S3 control's
  `<ErrorResponse><Error><Code/><Message/></Error><RequestId/></ErrorResponse>`; an unknown job
  is 404 `NotFoundException` (the code the service model, and so every SDK, knows).
- Only Operation `S3ReplicateObject` runs; Manifest (CSV `S3BatchOperations_CSV_20180820`,
  fields Bucket, Key[, VersionId]) xor ManifestGenerator (`S3JobManifestGenerator`).
  The same ClientRequestToken in the same (account, region) answers the same JobId and creates
  nothing; with other parameters it is `IdempotencyException`.
- A job goes New -> Preparing -> (Suspended until UpdateJobStatus Ready, if
  ConfirmationRequired) -> Ready -> Active -> Complete, or Failed, or Cancelled. Preparing
  checks the batch role (exists, trusts batchoperations.s3.amazonaws.com, may
  s3:InitiateReplication on every object, s3:GetReplicationConfiguration and
  s3:PutInventoryConfiguration on the source bucket with a generated manifest, s3:GetObject on a
  CSV manifest, s3:PutObject on the report and manifest output locations) and the source
  bucket's replication configuration; what is missing fails the job with FailureReasons.
- Tasks run in a background thread at `batch_task_rate` per second (paced by the wall clock),
  each replicating one version with s3_live_replication.replicate() under the bucket's
  replication role, synchronously. After at least 1,000 tasks, more than 50% failed fails the
  job; otherwise it is Complete when done (with failures too).
- Reports and generated manifests are written into their buckets as S3 does (layout in
  tests/emulator/README.md).
"""

import csv
import datetime
import gzip
import hashlib
import io
import json
import re
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from typing import Any, Callable
from urllib.parse import parse_qs, quote, unquote_plus
from xml.sax.saxutils import escape

from . import s3_live_replication as repl
from . import state

NS = "http://awss3control.amazonaws.com/doc/2018-08-20/"
BATCH_SERVICE = "batchoperations.s3.amazonaws.com"
_PATH = re.compile(r"^/v20180820/jobs(?:/([^/]+)(?:/([^/]+))?)?/?$")
TERMINAL = ("Complete", "Failed", "Cancelled")
REPORT_SCHEMA = "Bucket, Key, VersionId, TaskStatus, ErrorCode, HTTPStatusCode, ResultMessage"
# elements of list type in CreateJobRequest (their members are <member>, or named otherwise)
_LISTS = {
    "Fields", "ObjectReplicationStatuses", "MatchAnyPrefix", "MatchAnySuffix",
    "MatchAnySubstring", "MatchAnyStorageClass", "MatchAnyObjectEncryption",
}  # fmt: skip

Task = tuple[str, str, str]  # (bucket, key, version id; "" for the latest)
Reason = tuple[str, str]  # (FailureCode, FailureReason)


_lock = threading.RLock()
_jobs: dict[tuple[str, str], dict[str, "Job"]] = {}  # (account, region) -> id -> job
_tokens: dict[tuple[str, str, str], tuple[str, str]] = {}  # (acct, region, token) -> (digest, id)
_counters = {"created": 0, "tasks_succeeded": 0, "tasks_failed": 0}


def _reset(config_only: bool) -> None:
    if config_only:
        return
    with _lock:
        for jobs in _jobs.values():
            for job in jobs.values():
                job.dead = True
                job.wake.set()
        _jobs.clear()
        _tokens.clear()
        _counters.update(created=0, tasks_succeeded=0, tasks_failed=0)


state.on_reset(_reset)


def counters() -> dict[str, int]:
    with _lock:
        return dict(_counters)


def zero_counters() -> None:
    with _lock:
        _counters.update(created=0, tasks_succeeded=0, tasks_failed=0)


def action_for(method: str, path: str) -> str | None:
    """The s3control action of a request path, or None if it is not a jobs path."""
    m = _PATH.match(path)
    if not m:
        return None
    job_id, sub = m.groups()
    if job_id is None:
        return {"POST": "CreateJob", "GET": "ListJobs"}.get(method, f"{method.title()}Jobs")
    if sub is None:
        return "DescribeJob" if method == "GET" else f"{method.title()}Job"
    if sub == "status":
        return "UpdateJobStatus" if method == "POST" else f"{method.title()}JobStatus"
    if sub == "priority":
        return "UpdateJobPriority"
    if sub == "tagging":
        verb = {"GET": "Get", "PUT": "Put", "DELETE": "Delete"}.get(method, method.title())
        return f"{verb}JobTagging"
    return f"{method.title()}Job{sub.title()}"


# --- errors and XML -------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_body(code: str, message: str, request_id: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ErrorResponse><Error><Code>{escape(code)}'
        f"</Code><Message>{escape(message)}</Message></Error><RequestId>{request_id}"
        f"</RequestId><HostId>{request_id}</HostId></ErrorResponse>"
    ).encode()


def _local(tag: Any) -> str:
    return tag.split("}", 1)[1] if isinstance(tag, str) and "}" in tag else str(tag)


def _strip_namespaces(root: ET.Element) -> ET.Element:
    for el in root.iter():
        el.tag = _local(el.tag)
    return root


def to_value(el: ET.Element | None) -> Any:
    """An element as Python: text for leaves, a dict for structures, a list for lists."""
    if el is None:
        return None
    children = list(el)
    if el.tag in _LISTS:
        return [to_value(c) if len(c) else (c.text or "") for c in children]
    if not children:
        return (el.text or "").strip()
    return {c.tag: to_value(c) for c in children}


def _bool(value: Any) -> bool:
    return str(value).strip().lower() == "true"


def _iso(dt: datetime.datetime | None) -> str:
    if dt is None:
        return ""
    dt = dt.astimezone(datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _parse_time(text: str) -> datetime.datetime:
    text = text.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    dt = datetime.datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt


def _el(name: str, value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"<{name}>{escape(str(value))}</{name}>"


# --- jobs -----------------------------------------------------------------------------------


class Job:
    def __init__(self, account: str, region: str, request: dict[str, Any], raw: dict[str, str]):
        self.id = str(uuid.uuid4())
        self.account, self.region = account, region
        self.arn = f"arn:aws:s3:{region}:{account}:job/{self.id}"
        self.request, self.raw = request, raw
        self.status = "New"
        self.priority = int(request["Priority"])
        self.description = request.get("Description") or ""
        self.confirmation_required = _bool(request.get("ConfirmationRequired", "false"))
        self.role_arn = request["RoleArn"]
        self.report = request.get("Report") or {}
        self.creation_time = datetime.datetime.now(datetime.timezone.utc)
        self.termination_date: datetime.datetime | None = None
        self.suspended_date: datetime.datetime | None = None
        self.status_update_reason = ""
        self.failure_reasons: list[Reason] = []
        self.total = self.succeeded = self.failed = 0
        self.active_since: float | None = None
        self.active_seconds = 0.0
        self.generated_manifest: dict[str, str] | None = None
        self.results: list[tuple[str, str, str, str, str, str, str]] = []
        self.confirmed = False
        self.cancel = False
        self.rush = False
        self.dead = False
        self.gen = repl.generation()
        self.wake = threading.Event()
        self.done = threading.Event()

    # the time a job spent Active, as DescribeJob's Timers report it
    def elapsed(self) -> int:
        extra = time.monotonic() - self.active_since if self.active_since is not None else 0.0
        return int(self.active_seconds + extra)

    def progress_xml(self) -> str:
        return (
            f"<ProgressSummary><TotalNumberOfTasks>{self.total}</TotalNumberOfTasks>"
            f"<NumberOfTasksSucceeded>{self.succeeded}</NumberOfTasksSucceeded>"
            f"<NumberOfTasksFailed>{self.failed}</NumberOfTasksFailed><Timers>"
            f"<ElapsedTimeInActiveSeconds>{self.elapsed()}</ElapsedTimeInActiveSeconds>"
            f"</Timers></ProgressSummary>"
        )

    def descriptor_xml(self) -> str:
        failures = "".join(
            f"<member>{_el('FailureCode', c)}{_el('FailureReason', r[:256])}</member>"
            for c, r in self.failure_reasons
        )
        generated = ""
        if self.generated_manifest:
            g = self.generated_manifest
            generated = (
                f"<GeneratedManifestDescriptor><Format>S3InventoryReport_CSV_20211130</Format>"
                f"<Location>{_el('ObjectArn', g['arn'])}{_el('ObjectVersionId', g['version'])}"
                f"{_el('ETag', g['etag'])}</Location></GeneratedManifestDescriptor>"
            )
        suspended = ""
        if self.status == "Suspended":
            suspended = _el("SuspendedDate", _iso(self.suspended_date)) + _el(
                "SuspendedCause", "The job requires confirmation (ConfirmationRequired)"
            )
        return (
            "<Job>"
            + _el("JobId", self.id)
            + _el("ConfirmationRequired", self.confirmation_required)
            + _el("Description", self.description)
            + _el("JobArn", self.arn)
            + _el("Status", self.status)
            + self.raw.get("Manifest", "")
            + self.raw.get("Operation", "")
            + _el("Priority", self.priority)
            + self.progress_xml()
            + _el("StatusUpdateReason", self.status_update_reason)
            + (f"<FailureReasons>{failures}</FailureReasons>" if failures else "")
            + self.raw.get("Report", "")
            + _el("CreationTime", _iso(self.creation_time))
            + _el("TerminationDate", _iso(self.termination_date))
            + _el("RoleArn", self.role_arn)
            + suspended
            + self.raw.get("ManifestGenerator", "")
            + generated
            + "</Job>"
        )

    def list_xml(self) -> str:
        return (
            "<member>"
            + _el("JobId", self.id)
            + _el("Description", self.description)
            + "<Operation>S3ReplicateObject</Operation>"
            + _el("Priority", self.priority)
            + _el("Status", self.status)
            + _el("CreationTime", _iso(self.creation_time))
            + _el("TerminationDate", _iso(self.termination_date))
            + self.progress_xml()
            + "</member>"
        )


def _set_status(job: Job, status: str) -> None:
    with _lock:
        if job.status in TERMINAL:
            return
        if job.status == "Active" and status != "Active" and job.active_since is not None:
            job.active_seconds += time.monotonic() - job.active_since
            job.active_since = None
        job.status = status
        if status == "Active":
            job.active_since = time.monotonic()
        if status == "Suspended":
            job.suspended_date = datetime.datetime.now(datetime.timezone.utc)
        if status in TERMINAL:
            job.termination_date = datetime.datetime.now(datetime.timezone.utc)


def _fail(job: Job, reasons: list[Reason]) -> None:
    with _lock:
        job.failure_reasons = reasons
    _set_status(job, "Failed")


# --- preparing ------------------------------------------------------------------------------


def _object_arn(bucket: str, key: str) -> str:
    return f"arn:aws:s3:::{bucket}/{key}"


def _split_object_arn(arn: str) -> tuple[str, str]:
    rest = arn.split(":::", 1)[1] if ":::" in arn else arn
    bucket, _, key = rest.partition("/")
    return bucket, key


def _encryption_matches(filters: list[Any], key: Any) -> bool:
    for f in filters:
        if not isinstance(f, dict):
            continue
        if "SSE-S3" in f and key.encryption == "AES256":
            return True
        if "SSE-KMS" in f and key.encryption == "aws:kms":
            want = (f["SSE-KMS"] or {}).get("KmsKeyArn") if isinstance(f["SSE-KMS"], dict) else ""
            if not want:
                return True
            from . import kms_access

            k = kms_access.find_key(key.account_id, key.region_name, key.kms_key_id)
            if k is not None and k.arn == want:
                return True
        if "DSSE-KMS" in f and key.encryption == "aws:kms:dsse":
            return True
        if "SSE-C" in f and repl.is_sse_c(key):
            return True
        if "NOT-SSE" in f and not key.encryption and not repl.is_sse_c(key):
            return True
    return False


def _selected(flt: dict[str, Any], bucket: Any, key: Any) -> bool:
    if _bool(flt.get("EligibleForReplication", "false")):
        if repl.rule_for(bucket, key, batch=True) is None:
            return False
    statuses = flt.get("ObjectReplicationStatuses")
    if statuses:
        if (repl.status_of(key) or "NONE") not in statuses:
            return False
    modified = key.last_modified.replace(tzinfo=datetime.timezone.utc)
    if flt.get("CreatedAfter") and modified <= _parse_time(flt["CreatedAfter"]):
        return False
    if flt.get("CreatedBefore") and modified >= _parse_time(flt["CreatedBefore"]):
        return False
    names = flt.get("KeyNameConstraint")
    if isinstance(names, dict):
        if names.get("MatchAnyPrefix") and not any(
            key.name.startswith(p) for p in names["MatchAnyPrefix"]
        ):
            return False
        if names.get("MatchAnySuffix") and not any(
            key.name.endswith(p) for p in names["MatchAnySuffix"]
        ):
            return False
        if names.get("MatchAnySubstring") and not any(
            p in key.name for p in names["MatchAnySubstring"]
        ):
            return False
    if flt.get("ObjectSizeGreaterThanBytes") and not key.size > int(
        flt["ObjectSizeGreaterThanBytes"]
    ):
        return False
    if flt.get("ObjectSizeLessThanBytes") and not key.size < int(flt["ObjectSizeLessThanBytes"]):
        return False
    classes = flt.get("MatchAnyStorageClass")
    if classes and (key.storage_class or "STANDARD") not in classes:
        return False
    encryptions = flt.get("MatchAnyObjectEncryption")
    if encryptions and not _encryption_matches(encryptions, key):
        return False
    return True


def _versions(bucket: Any) -> list[Any]:
    from moto.s3.models import FakeDeleteMarker

    out = []
    for _, versions in sorted(bucket.keys.iterlists()):
        out += [v for v in versions if not isinstance(v, FakeDeleteMarker)]
    return out


def _generate_manifest(job: Job, gen: dict[str, Any]) -> list[Task] | str:
    """The tasks of a ManifestGenerator, or why the job fails."""
    src_name = repl.bucket_name_from_arn(gen.get("SourceBucket") or "")
    found = repl.find_bucket(src_name)
    if found is None:
        return f"NoSuchBucket|source bucket {src_name} does not exist"
    _, bucket = found
    owner = gen.get("ExpectedBucketOwner")
    if owner and owner != bucket.account_id:
        return f"AccessDenied|source bucket {src_name} is not owned by {owner}"
    flt = gen.get("Filter") if isinstance(gen.get("Filter"), dict) else {}
    return [
        (src_name, k.name, k.version_id) for k in _versions(bucket) if _selected(flt, bucket, k)
    ]


def _read_csv_manifest(job: Job, manifest: dict[str, Any], role: Any) -> Any:
    """The tasks of a CSV manifest, or why the job fails."""
    spec = manifest.get("Spec") or {}
    fmt = spec.get("Format")
    if fmt != "S3BatchOperations_CSV_20180820":
        return f"InvalidManifest|manifest format {fmt} is not implemented by the emulator"
    fields = spec.get("Fields") or ["Bucket", "Key"]
    if "Bucket" not in fields or "Key" not in fields:
        return "InvalidManifestContent|Required fields are missing in the schema: Bucket, Key"
    loc = manifest.get("Location") or {}
    arn = loc.get("ObjectArn") or ""
    bucket_name, key_name = _split_object_arn(arn)
    found = repl.find_bucket(bucket_name)
    version = loc.get("ObjectVersionId") or None
    obj = None
    if found is not None:
        versions = found[1].keys.getlist(key_name, [])
        for v in versions:
            if version is None or v.version_id == version:
                obj = v
        if version is None and versions:
            obj = versions[-1]
    if obj is None or not hasattr(obj, "value"):
        return f"ManifestNotFound|manifest object {arn} does not exist"
    if not role.allows("s3:GetObject", arn) or (
        version and not role.allows("s3:GetObjectVersion", arn)
    ):
        what = "s3:GetObjectVersion" if version else "s3:GetObject"
        return f"AccessDenied|role {role.arn} lacks {what} on the manifest {arn}"
    if (loc.get("ETag") or "").strip('"') != obj.etag.strip('"'):
        return (
            f"InvalidManifest|manifest ETag {loc.get('ETag')} does not match the object's "
            f"{obj.etag.strip(chr(34))}"
        )
    tasks = []
    for row in csv.reader(io.StringIO(obj.value.decode("utf-8", "replace"))):
        if not row:
            continue
        values = dict(zip(fields, row, strict=False))
        name = unquote_plus(values.get("Key", ""))
        tasks.append((values.get("Bucket", ""), name, values.get("VersionId") or ""))
    return tasks


def _report_key(job: Job, name: str) -> str:
    prefix = (job.report.get("Prefix") or "").rstrip("/")
    return f"{prefix}/job-{job.id}/{name}" if prefix else f"job-{job.id}/{name}"


def _manifest_key(job: Job, gen: dict[str, Any], name: str) -> tuple[str, str]:
    out = gen.get("ManifestOutputLocation") or {}
    bucket = repl.bucket_name_from_arn(out.get("Bucket") or "")
    prefix = (out.get("ManifestPrefix") or "").rstrip("/")
    return bucket, (f"{prefix}/{job.id}/{name}" if prefix else f"{job.id}/{name}")


def _prepare(job: Job) -> tuple[list[Task], list[Reason]]:
    """The job's tasks, or why it fails (Preparing: the manifest and the batch role)."""
    role = repl.Cache().role(job.role_arn)
    if not role.exists:
        return [], [("AccessDenied", f"role {job.role_arn} does not exist")]
    if not role.trusts(BATCH_SERVICE):
        return [], [("AccessDenied", f"role {job.role_arn} does not trust {BATCH_SERVICE}")]
    reasons: list[Reason] = []
    gen = (job.request.get("ManifestGenerator") or {}).get("S3JobManifestGenerator")
    tasks: list[Task] | str
    if gen is not None:
        src_name = repl.bucket_name_from_arn(gen.get("SourceBucket") or "")
        src_arn = f"arn:aws:s3:::{src_name}"
        for action in ("s3:GetReplicationConfiguration", "s3:PutInventoryConfiguration"):
            if not role.allows(action, src_arn):
                reasons.append(("AccessDenied", f"role {job.role_arn} lacks {action} on {src_arn}"))
        if _bool(gen.get("EnableManifestOutput", "false")):
            out_bucket, out_key = _manifest_key(job, gen, "manifest.json")
            target = _object_arn(out_bucket, out_key)
            if repl.find_bucket(out_bucket) is None:
                reasons.append(("NoSuchBucket", f"manifest bucket {out_bucket} does not exist"))
            elif not role.allows("s3:PutObject", target):
                reasons.append(
                    ("AccessDenied", f"role {job.role_arn} lacks s3:PutObject on {target}")
                )
        found = repl.find_bucket(src_name)
        if found is not None and not getattr(found[1], "replication", None):
            reasons.append(
                (
                    "ReplicationConfigurationNotFoundError",
                    f"source bucket {src_name} has no replication configuration",
                )
            )
        tasks = _generate_manifest(job, gen)
    else:
        tasks = _read_csv_manifest(job, job.request.get("Manifest") or {}, role)
    if isinstance(tasks, str):
        code, _, text = tasks.partition("|")
        reasons.append((code, text))
        tasks = []
    if _bool(job.report.get("Enabled", "false")):
        rb = repl.bucket_name_from_arn(job.report.get("Bucket") or "")
        found = repl.find_bucket(rb)
        target = _object_arn(rb, _report_key(job, "manifest.json"))
        expected = job.report.get("ExpectedBucketOwner")
        if found is None:
            reasons.append(("NoSuchBucket", f"report bucket {rb} does not exist"))
        elif expected and expected != found[1].account_id:
            reasons.append(("AccessDenied", f"report bucket {rb} is not owned by {expected}"))
        elif not role.allows("s3:PutObject", target):
            reasons.append(("AccessDenied", f"role {job.role_arn} lacks s3:PutObject on {target}"))
    if gen is None:
        unconfigured = sorted(
            {
                b
                for b, _, _ in tasks
                if not getattr((repl.find_bucket(b) or (None, None))[1], "replication", None)
            }
        )
        for name in unconfigured:
            reasons.append(
                (
                    "ReplicationConfigurationNotFoundError",
                    f"bucket {name} has no replication configuration",
                )
            )
    denied = [
        _object_arn(b, k)
        for b, k, _ in tasks
        if not role.allows("s3:InitiateReplication", _object_arn(b, k))
    ]
    if denied:
        more = f" (and {len(denied) - 1} other objects)" if len(denied) > 1 else ""
        reasons.append(
            (
                "AccessDenied",
                f"role {job.role_arn} lacks s3:InitiateReplication on {denied[0]}{more}",
            )
        )
    if reasons:
        return [], reasons
    if gen is not None and _bool(gen.get("EnableManifestOutput", "false")):
        _write_generated_manifest(job, gen, tasks)
    return tasks, []


def _write_generated_manifest(job: Job, gen: dict[str, Any], tasks: list[Any]) -> None:
    out = gen.get("ManifestOutputLocation") or {}
    bucket, manifest_key = _manifest_key(job, gen, "manifest.json")
    found = repl.find_bucket(bucket)
    if found is None:
        return
    backend = found[0]
    enc = out.get("ManifestEncryption") if isinstance(out.get("ManifestEncryption"), dict) else {}
    encryption, kms_key = None, None
    if "SSE-KMS" in enc:
        encryption, kms_key = "aws:kms", (enc["SSE-KMS"] or {}).get("KeyId")
    elif "SSE-S3" in enc:
        encryption = "AES256"
    buf = io.StringIO()
    writer = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
    for bucket_name, key_name, version in tasks:
        writer.writerow([bucket_name, quote(key_name), version])
    data = gzip.compress(buf.getvalue().encode())
    _, data_key = _manifest_key(job, gen, f"data/{uuid.uuid4()}.csv.gz")
    repl.write_object(
        backend, bucket, data_key, data, job.gen, "application/x-gzip", encryption, kms_key
    )
    src_name = repl.bucket_name_from_arn(gen.get("SourceBucket") or "")
    doc = {
        "sourceBucket": src_name,
        "destinationBucket": f"arn:aws:s3:::{bucket}",
        "version": "2021-11-30",
        "creationTimestamp": str(int(time.time() * 1000)),
        "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, VersionId",
        "files": [
            {"key": data_key, "size": len(data), "MD5checksum": hashlib.md5(data).hexdigest()}
        ],
    }
    key = repl.write_object(
        backend,
        bucket,
        manifest_key,
        json.dumps(doc, indent=1).encode(),
        job.gen,
        "application/json",
        encryption,
        kms_key,
    )
    if key is not None:
        job.generated_manifest = {
            "arn": _object_arn(bucket, manifest_key),
            "etag": key.etag.strip('"'),
            "version": key.version_id if key.version_id != "null" else "",
        }


# --- running --------------------------------------------------------------------------------


def _task(job: Job, cache: Any, task: Task) -> tuple[str, str, str]:
    """(HTTP status, error code, result message) of one task."""
    bucket_name, key_name, version = task
    found = repl.find_bucket(bucket_name)
    if found is None:
        return "404", "NoSuchBucket", f"bucket {bucket_name} does not exist"
    bucket = found[1]
    versions = found[1].keys.getlist(key_name, [])
    key = None
    for v in versions:
        if (not version and v is versions[-1]) or v.version_id == version:
            key = v
    if key is None or not hasattr(key, "value"):
        code = "NoSuchVersion" if version else "NoSuchKey"
        return "404", code, f"{bucket_name}/{key_name} version {version or 'latest'} not found"
    replication = getattr(bucket, "replication", None) or {}
    rule = repl.rule_for(bucket, key, batch=True)
    if rule is None:
        return "400", "InvalidRequest", "the object is not eligible for replication"
    role = str(replication.get("Role") or "")
    reason = repl.replicate(bucket, key, rule, role, cache=cache, gen=job.gen)
    if reason is None:
        return "200", "", "Successful"
    return "403", "AccessDenied", reason


def _run(job: Job) -> None:
    try:
        _run_job(job)
    finally:
        job.done.set()


def _run_job(job: Job) -> None:
    _set_status(job, "Preparing")
    tasks, reasons = _prepare(job)
    if job.dead:
        return
    if reasons:
        _fail(job, reasons)
        return
    with _lock:
        job.total = len(tasks)
    if job.confirmation_required and not job.confirmed and not job.cancel:
        _set_status(job, "Suspended")
        while not (job.confirmed or job.cancel or job.dead):
            job.wake.wait(0.5)
            job.wake.clear()
    if job.dead:
        return
    if job.cancel:
        _set_status(job, "Cancelled")
        return
    _set_status(job, "Ready")
    _set_status(job, "Active")
    rate = float(state.get("batch_task_rate"))
    cache = repl.Cache()
    start = time.monotonic()
    done = 0
    threshold_failed = False
    while done < len(tasks):
        if job.dead or job.cancel:
            break
        if not job.rush:
            # Pace by the wall clock: task i starts no earlier than start + i / rate.
            due = start + done / rate
            wait = due - time.monotonic()
            if wait > 0:
                job.wake.wait(min(wait, 0.05))
                job.wake.clear()
                continue
        http, code, message = _task(job, cache, tasks[done])
        done += 1
        if job.dead:
            return
        with _lock:
            job.results.append((*tasks[done - 1], "failed" if code else "succeeded", http, code,
                                message))  # fmt: skip
            if code:
                job.failed += 1
                _counters["tasks_failed"] += 1
            else:
                job.succeeded += 1
                _counters["tasks_succeeded"] += 1
            ran = job.succeeded + job.failed
            if ran >= 1000 and job.failed * 2 > ran:
                threshold_failed = True
        if threshold_failed:
            break
    if job.dead:
        return
    if threshold_failed:
        with _lock:
            job.failure_reasons = [
                (
                    "TaskFailureThresholdExceeded",
                    f"Job failed: {job.failed} of the first {job.succeeded + job.failed} tasks "
                    f"failed (more than 50% after at least 1,000 tasks)",
                )
            ]
        _set_status(job, "Failing")
        _write_report(job)
        _set_status(job, "Failed")
        return
    if job.cancel:
        _set_status(job, "Cancelling")
        _write_report(job)
        _set_status(job, "Cancelled")
        return
    _set_status(job, "Completing")
    _write_report(job)
    _set_status(job, "Complete")


def _write_report(job: Job) -> None:
    """The completion report (batch-ops-examples-reports): manifest.json plus one CSV per task
    status, under `<Prefix>/job-<JobId>/`."""
    if not _bool(job.report.get("Enabled", "false")):
        return
    rb = repl.bucket_name_from_arn(job.report.get("Bucket") or "")
    found = repl.find_bucket(rb)
    if found is None:
        return
    backend = found[0]
    failed_only = job.report.get("ReportScope") == "FailedTasksOnly"
    with _lock:
        rows = list(job.results)
    entries = []
    for status in ("succeeded", "failed"):
        if status == "succeeded" and failed_only:
            continue
        mine = [r for r in rows if r[3] == status]
        if not mine:
            continue
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        for bucket_name, key_name, version, task_status, http, code, message in mine:
            # As AWS's reports show it: the HTTP status before the error code.
            writer.writerow([bucket_name, quote(key_name), version, task_status, http, code,
                             message])  # fmt: skip
        data = buf.getvalue().encode()
        name = hashlib.sha1(f"{job.id}/{status}".encode()).hexdigest()
        key = _report_key(job, f"results/{name}.csv")
        repl.write_object(backend, rb, key, data, job.gen, "text/csv", "AES256")
        entries.append(
            {
                "TaskExecutionStatus": status,
                "Bucket": rb,
                "MD5Checksum": hashlib.md5(data).hexdigest(),
                "Key": key,
            }
        )
    doc = {
        "Format": "Report_CSV_20180820",
        "ReportCreationDate": _iso(datetime.datetime.now(datetime.timezone.utc)),
        "Results": entries,
        "ReportSchema": REPORT_SCHEMA,
    }
    repl.write_object(
        backend,
        rb,
        _report_key(job, "manifest.json"),
        json.dumps(doc, indent=4).encode(),
        job.gen,
        "application/json",
        "AES256",
    )


def complete_all(timeout: float = 300.0) -> int:
    """`POST /_ferry/jobs/complete`: runs every running job's remaining tasks now (without the
    rate) and waits for them; jobs waiting for confirmation stay as they are."""
    with _lock:
        running = [j for jobs in _jobs.values() for j in jobs.values() if j.status not in TERMINAL]
    for job in running:
        job.rush = True
        job.wake.set()
    finished = 0
    deadline = time.monotonic() + timeout
    for job in running:
        while not job.done.is_set() and time.monotonic() < deadline:
            if job.status == "Suspended" and not job.confirmed:
                break
            job.done.wait(0.05)
        if job.done.is_set():
            finished += 1
    return finished


# --- the API --------------------------------------------------------------------------------


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ApiError(400, "InvalidRequest", message)


def _create_job(req: Any, body: bytes) -> str:
    try:
        root = _strip_namespaces(ET.fromstring(body))
    except ET.ParseError as e:
        raise ApiError(
            400, "MalformedXML", f"The XML you provided was not well-formed: {e}"
        ) from None
    _require(root.tag == "CreateJobRequest", "the body must be a CreateJobRequest")
    request = {c.tag: to_value(c) for c in root}
    raw = {
        c.tag: ET.tostring(c, encoding="unicode")
        for c in root
        if c.tag in ("Manifest", "Operation", "Report", "ManifestGenerator")
    }
    for name in ("Operation", "Report", "Priority", "RoleArn", "ClientRequestToken"):
        _require(name in request and request[name] not in (None, ""), f"{name} is required")
    _require(
        ("Manifest" in request) != ("ManifestGenerator" in request),
        "exactly one of Manifest and ManifestGenerator is required",
    )
    token = str(request["ClientRequestToken"])
    _require(1 <= len(token) <= 64, "ClientRequestToken must be 1 to 64 characters")
    try:
        priority = int(request["Priority"])
    except ValueError:
        priority = -1
    _require(priority >= 0, "Priority must be an integer >= 0")
    _require(
        bool(re.match(r"^arn:[^:]+:iam::\d{12}:role/.+", str(request["RoleArn"]))),
        f"RoleArn {request['RoleArn']} is not an IAM role ARN",
    )
    op = request["Operation"]
    _require(isinstance(op, dict) and len(op) == 1, "Operation must name one operation")
    name = next(iter(op))
    _require(
        name == "S3ReplicateObject",
        f"Operation {name} is not implemented by the emulator (only S3ReplicateObject)",
    )
    report = request["Report"]
    _require(isinstance(report, dict) and "Enabled" in report, "Report.Enabled is required")
    if _bool(report.get("Enabled")):
        _require(bool(report.get("Bucket")), "Report.Bucket is required when Enabled")
        _require(
            report.get("Format") == "Report_CSV_20180820",
            "Report.Format must be Report_CSV_20180820",
        )
        _require(
            report.get("ReportScope", "AllTasks") in ("AllTasks", "FailedTasksOnly"),
            "Report.ReportScope must be AllTasks or FailedTasksOnly",
        )
    if "ManifestGenerator" in request:
        gen = request["ManifestGenerator"]
        gen = gen.get("S3JobManifestGenerator") if isinstance(gen, dict) else None
        _require(isinstance(gen, dict), "ManifestGenerator must be an S3JobManifestGenerator")
        _require(bool(gen.get("SourceBucket")), "S3JobManifestGenerator.SourceBucket is required")
        _require("EnableManifestOutput" in gen, "EnableManifestOutput is required")
        if _bool(gen.get("EnableManifestOutput")):
            out = gen.get("ManifestOutputLocation")
            _require(
                isinstance(out, dict) and bool(out.get("Bucket")),
                "ManifestOutputLocation.Bucket is required when EnableManifestOutput is true",
            )
            _require(
                out.get("ManifestFormat") == "S3InventoryReport_CSV_20211130",
                "ManifestOutputLocation.ManifestFormat must be S3InventoryReport_CSV_20211130",
            )
        flt = gen.get("Filter")
        if isinstance(flt, dict):
            for status in flt.get("ObjectReplicationStatuses") or []:
                _require(
                    status in ("NONE", "FAILED", "COMPLETED", "REPLICA"),
                    f"ObjectReplicationStatuses value {status} is not valid",
                )
            for when in ("CreatedAfter", "CreatedBefore"):
                if flt.get(when):
                    try:
                        _parse_time(flt[when])
                    except ValueError:
                        raise ApiError(
                            400, "InvalidRequest", f"{when} is not a timestamp"
                        ) from None
    else:
        manifest = request["Manifest"]
        _require(
            isinstance(manifest, dict) and "Spec" in manifest and "Location" in manifest,
            "Manifest.Spec and Manifest.Location are required",
        )
        loc = manifest["Location"]
        _require(
            isinstance(loc, dict) and bool(loc.get("ObjectArn")) and bool(loc.get("ETag")),
            "Manifest.Location.ObjectArn and ETag are required",
        )
    digest = hashlib.sha256(
        json.dumps({k: v for k, v in request.items()}, sort_keys=True).encode()
    ).hexdigest()
    with _lock:
        seen = _tokens.get((req.account, req.region, token))
        if seen is not None:
            if seen[0] != digest:
                raise ApiError(
                    400,
                    "IdempotencyException",
                    f"ClientRequestToken {token} was already used with other parameters",
                )
            return seen[1]
        job = Job(req.account, req.region, request, raw)
        _jobs.setdefault((req.account, req.region), {})[job.id] = job
        _tokens[(req.account, req.region, token)] = (digest, job.id)
        _counters["created"] += 1
    threading.Thread(target=_run, args=(job,), name=f"ferry-job-{job.id}", daemon=True).start()
    return job.id


def _job(req: Any, job_id: str) -> Job:
    with _lock:
        job = _jobs.get((req.account, req.region), {}).get(job_id)
    if job is None:
        raise ApiError(404, "NotFoundException", "The specified job does not exist")
    return job


def _update_status(req: Any, job: Job, query: dict[str, list[str]]) -> str:
    wanted = (query.get("requestedJobStatus") or [""])[0]
    reason = (query.get("statusUpdateReason") or [""])[0]
    _require(wanted in ("Ready", "Cancelled"), "requestedJobStatus must be Ready or Cancelled")
    with _lock:
        if wanted == "Ready":
            if job.status == "Suspended" or (
                job.confirmation_required and job.status in ("New", "Preparing")
            ):
                job.confirmed = True
                if job.status == "Suspended":
                    job.status = "Ready"
            else:
                raise ApiError(
                    400, "JobStatusException", f"job {job.id} is {job.status}, not Suspended"
                )
        else:
            if job.status in TERMINAL:
                raise ApiError(
                    400,
                    "JobStatusException",
                    f"job {job.id} is {job.status} and cannot be cancelled",
                )
            job.cancel = True
            if job.status == "Active":
                job.status = "Cancelling"
                if job.active_since is not None:
                    job.active_seconds += time.monotonic() - job.active_since
                    job.active_since = None
            elif job.status in ("New", "Preparing", "Suspended", "Ready"):
                pass  # the runner ends it as Cancelled
        if reason:
            job.status_update_reason = reason
        job.wake.set()
    # a job not yet running ends at once
    if wanted == "Cancelled":
        for _ in range(100):
            if job.status in TERMINAL or job.status == "Cancelling":
                break
            time.sleep(0.01)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<UpdateJobStatusResult xmlns="{NS}">'
        f"{_el('JobId', job.id)}{_el('Status', job.status)}"
        f"{_el('StatusUpdateReason', job.status_update_reason)}</UpdateJobStatusResult>"
    )


def _list_jobs(req: Any, query: dict[str, list[str]]) -> str:
    statuses = set(query.get("jobStatuses") or [])
    token = (query.get("nextToken") or [""])[0]
    try:
        limit = int((query.get("maxResults") or ["1000"])[0])
    except ValueError:
        raise ApiError(400, "InvalidRequest", "maxResults must be an integer") from None
    limit = 1000 if limit <= 0 or limit > 1000 else limit
    try:
        offset = int(token) if token else 0
    except ValueError:
        raise ApiError(400, "InvalidNextTokenException", "The nextToken is not valid") from None
    with _lock:
        jobs = sorted(
            _jobs.get((req.account, req.region), {}).values(),
            key=lambda j: (j.creation_time, j.id),
            reverse=True,
        )
        jobs = [j for j in jobs if not statuses or j.status in statuses]
        page = jobs[offset : offset + limit]
        items = "".join(j.list_xml() for j in page)
    next_token = str(offset + limit) if offset + limit < len(jobs) else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ListJobsResult xmlns="{NS}">'
        f"{_el('NextToken', next_token)}<Jobs>{items}</Jobs></ListJobsResult>"
    )


def _handle(req: Any, environ: dict[str, Any]) -> str:
    path = environ.get("PATH_INFO", "")
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    account = environ.get("HTTP_X_AMZ_ACCOUNT_ID", "")
    _require(bool(account), "Missing required header for this request: x-amz-account-id")
    if account != req.account:
        raise ApiError(403, "AccessDenied", "Access Denied")
    m = _PATH.match(path)
    job_id = m.group(1) if m else None
    action = req.action
    if action == "CreateJob":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else environ["wsgi.input"].read()
        job_id = _create_job(req, body)
        return (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<CreateJobResult xmlns="{NS}">'
            f"<JobId>{job_id}</JobId></CreateJobResult>"
        )
    if action == "ListJobs":
        return _list_jobs(req, query)
    if action == "DescribeJob" and job_id:
        job = _job(req, job_id)
        with _lock:
            inner = job.descriptor_xml()
        return (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<DescribeJobResult xmlns="{NS}">'
            f"{inner}</DescribeJobResult>"
        )
    if action == "UpdateJobStatus" and job_id:
        return _update_status(req, _job(req, job_id), query)
    raise ApiError(400, "InvalidRequest", f"{action} is not implemented by the emulator")


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """WSGI application for the s3control jobs API; traffic.py sets environ["ferry.request"]."""
    req = environ["ferry.request"]
    rid = uuid.uuid4().hex[:16].upper()
    try:
        body = _handle(req, environ).encode()
        status = 200
    except ApiError as e:
        status, body = e.status, error_body(e.code, e.message, rid)
    reason = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found"}
    start_response(
        f"{status} {reason.get(status, 'Error')}",
        [
            ("Content-Type", "application/xml"),
            ("Content-Length", str(len(body))),
            ("x-amz-request-id", rid),
            ("x-amz-id-2", rid),
        ],
    )
    return [body]


def install() -> None:
    """Nothing to patch in moto: traffic.py routes the jobs paths to `app` before moto."""
