"""The migration benchmark: the real `ferry apply` against the local emulator with copy
durations and AWS's default API quotas on, compared with the lower bound those impose.

    scripts/bench                     # all workloads
    scripts/bench a b                 # some of them

Workloads:
  a  400 encrypted snapshots in 2 source regions -> 2 destination regions (same account)
  b  40 AMIs (2 encrypted volumes each) shared with and copied by another account
  c  2,000 SSE-KMS objects replicated and backfilled
  d  all of them in one plan
  e  nightly DR: 30 volumes x 10 snapshots each -> 2 destination regions (same account), copies
     timed by the emulator's byte model (incremental copies, 500 MiB/s per copy, 2,000 MiB/s
     per region pair) in compressed time; ferry against ferry's old order and a boto3 script
  f  45 encrypted RDS DB snapshots -> another region (same account)
  g  20,000 objects backfilled by an S3 Batch Replication job

For (a)-(d), (f), (g): makespan (the whole `ferry apply`, resolve and dry run included), the
lower bound (see `lower_bound`), their ratio, API calls per migrated resource (mutating /
describe), throttled responses as % of calls, ferry's peak memory and CPU time (user + system).
The short workloads run several times (b three, c five), each in a fresh emulator, and show the
run with the median ratio and the range of ratios. The last line is the headline.

(e) has a table of its own, one row per contender, each run in a fresh emulator seeded the same
way: ferry (chains of incremental copies, its default; three runs, the median shown), ferry with
`FERRY_COPY_ORDER=largest-first` (its order before chains: largest snapshot first, every copy on
its own) and benches/boto3_copy.py (the parallel script a careful engineer writes), once each.
Columns: makespan, the bound (see `chain_bound`), their ratio, bytes the copies moved / the least
bytes that can give every snapshot a copy (`chain_minimal_bytes`), full and incremental copies,
API calls and throttled responses. Then a headline line for (e).

    FERRY_BENCH_COPY_SECONDS=15   copy time (default 10; not (e): its copies take their bytes)
    FERRY_BENCH_REPEAT=1          runs of every workload (of ferry's default order in (e))
    FERRY_BENCH_VERBOSE=1         calls per API after each run
    FERRY_BENCH_KEEP=1            keep each run's directory (plan, journal, audit log)
    FERRY_BENCH_TASK_RATE=1000    the emulator's batch job tasks per second (workload g)
    FERRY_BENCH_TIME_SCALE=75     emulated seconds per wall second in (e) (default 75)
    FERRY_BENCH_CHAIN_VOLUMES=6   volumes in (e) (default 30; fewer for a quick check, picked
                                  across the size range)
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import boto3
from botocore.config import Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "emulator"))
from roles import create_assumable_role  # noqa: E402  (the emulator's fixtures, on that path)
A, B = "111111111111", "222222222222"
# Copies stay pending this long (the emulator's `copy_seconds`); real copies take minutes.
COPY_SECONDS = float(os.environ.get("FERRY_BENCH_COPY_SECONDS", "10"))
# FERRY_BENCH_POLL_MS sets ferry's longest poll interval (FERRY_POLL_INTERVAL_MS); unset, ferry
# polls as a user's run does (its defaults).
POLL_MS = int(os.environ["FERRY_BENCH_POLL_MS"]) if os.environ.get("FERRY_BENCH_POLL_MS") else None
SNAPSHOT_SLOTS = 20
# Tasks per second of the emulator's batch jobs (workload g): what S3 Batch Operations does
# with a job is S3's own capacity, so the bound of a batch backfill is the job's tasks at this
# rate. Set to what the emulator's single Python process sustains while replicating (measured:
# see README).
TASK_RATE = float(os.environ.get("FERRY_BENCH_TASK_RATE", "1000"))
# AWS's default token buckets (aws-facts.md): (burst, refill per second).
COPY_SNAPSHOT = (50, 5.0)
COPY_IMAGE = (100, 1.0)


def client(endpoint: str, service: str, account: str, region: str):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=f"AKIA{account}TEST",
        aws_secret_access_key="bench",
        config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 10}),
    )


def control(endpoint: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(endpoint + path, data=data, method="POST" if data is not None else "GET")
    req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"{}")


class Emulator:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [os.path.join(ROOT, "tests/emulator/start")],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "FERRY_EMULATOR_PARENT_PID": str(os.getpid())},
        )
        line = self.proc.stdout.readline().strip()
        if not line.startswith("FERRY_EMULATOR_ENDPOINT="):
            raise SystemExit(f"emulator did not start: {line!r}")
        self.endpoint = line.split("=", 1)[1]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---- seeding ------------------------------------------------------------------------------


def cmk(ep: str, account: str, region: str, alias: str) -> str:
    kms = client(ep, "kms", account, region)
    k = kms.create_key()["KeyMetadata"]
    kms.create_alias(AliasName=alias, TargetKeyId=k["KeyId"])
    return k["Arn"]


def snapshot(ec2, region: str, key: str, size: int, tags: dict) -> str:
    vol = ec2.create_volume(Size=size, AvailabilityZone=f"{region}a", Encrypted=True, KmsKeyId=key)
    extra = {}
    if tags:
        extra["TagSpecifications"] = [{"ResourceType": "snapshot", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
    return ec2.create_snapshot(VolumeId=vol["VolumeId"], **extra)["SnapshotId"]


def seed_snapshots(ep: str, n: int) -> dict:
    """n/2 tagged snapshots in us-east-1 and n/2 in us-west-2, sizes 1..100 GiB."""
    out = {}
    for region in ("us-east-1", "us-west-2"):
        key = cmk(ep, A, region, "alias/bench-src")
        ec2 = client(ep, "ec2", A, region)
        out[region] = [snapshot(ec2, region, key, 1 + (i * 37) % 100, {"Bench": "snapshots"}) for i in range(n // 2)]
    return out


def seed_amis(ep: str, n: int) -> list[str]:
    region = "us-east-1"
    k1, k2 = cmk(ep, A, region, "alias/bench-root"), cmk(ep, A, region, "alias/bench-data")
    ec2 = client(ep, "ec2", A, region)
    amis = []
    for i in range(n):
        s1 = snapshot(ec2, region, k1, 8, {})
        s2 = snapshot(ec2, region, k2, 20, {})
        amis.append(
            ec2.register_image(
                Name=f"bench-{i}",
                RootDeviceName="/dev/xvda",
                Architecture="x86_64",
                VirtualizationType="hvm",
                BlockDeviceMappings=[
                    {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": s1}},
                    {"DeviceName": "/dev/xvdb", "Ebs": {"SnapshotId": s2}},
                ],
                TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": "Bench", "Value": "amis"}]}],
            )["ImageId"]
        )
    cmk(ep, B, region, "alias/bench-backup")
    create_assumable_role(client(ep, "iam", B, region), "ferry-migrator", A)
    return amis


def seed_db_snapshots(ep: str, n: int) -> None:
    """An encrypted postgres instance in us-east-1 and n manual snapshots of it, tagged."""
    region = "us-east-1"
    key = cmk(ep, A, region, "alias/bench-rds")
    rds = client(ep, "rds", A, region)
    rds.create_db_instance(
        DBInstanceIdentifier="bench-db", Engine="postgres", DBInstanceClass="db.t3.micro",
        AllocatedStorage=20, MasterUsername="bench", MasterUserPassword="not-a-secret-1",
        StorageEncrypted=True, KmsKeyId=key, BackupRetentionPeriod=0,
    )
    for i in range(n):
        rds.create_db_snapshot(
            DBInstanceIdentifier="bench-db", DBSnapshotIdentifier=f"bench-db-{i:03d}",
            Tags=[{"Key": "Bench", "Value": "rds"}],
        )


def seed_objects(ep: str, n: int, bucket: str = "bench-logs") -> None:
    region = "us-east-1"
    key = cmk(ep, A, region, f"alias/{bucket}")
    s3 = client(ep, "s3", A, region)
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}}]},
    )
    for i in range(n):
        s3.put_object(Bucket=bucket, Key=f"logs/{i:05d}.json", Body=b'{"n": %d}' % i, ServerSideEncryption="aws:kms", SSEKMSKeyId=key)


# ---- plans --------------------------------------------------------------------------------

def plan_text(snaps: bool, amis: bool, objects: bool, batch: bool = False, dbs: bool = False, chains: bool = False) -> str:
    """The plan of a workload: only the accounts, keys and migrations it uses."""
    text = f'version: 1\nname: bench\naccounts:\n  prod: {{ id: "{A}" }}\n'
    if amis:
        text += f'  backup: {{ id: "{B}", role_arn: "arn:aws:iam::{B}:role/ferry-migrator" }}\n'
    text += "keys:\n"
    if snaps or chains:
        text += "  dr-west-2: { account: prod, region: eu-west-2, alias: alias/bench-dr-west-2, create: true }\n"
        text += "  dr-west-1: { account: prod, region: eu-west-1, alias: alias/bench-dr-west-1, create: true }\n"
    if amis:
        text += "  backup: { account: backup, region: us-east-1, alias: alias/bench-backup }\n"
    if objects:
        text += "  logs-dr: { account: prod, region: eu-west-2, alias: alias/bench-logs-dr, create: true }\n"
    if batch:
        text += "  archive-dr: { account: prod, region: eu-west-2, alias: alias/bench-archive-dr, create: true }\n"
    if dbs:
        text += "  rds-dr: { account: prod, region: eu-west-2, alias: alias/bench-rds-dr, create: true }\n"
    text += "migrations:\n"
    if snaps:
        text += SNAPSHOTS
    if amis:
        text += AMIS
    if objects:
        text += OBJECTS
    if batch:
        text += BATCH
    if dbs:
        text += DB_SNAPSHOTS
    if chains:
        text += CHAINS
    return text


SNAPSHOTS = """  - id: east
    type: snapshot-copy
    source: { account: prod, region: us-east-1, tags: { Bench: snapshots } }
    destination: { region: eu-west-2, key: dr-west-2 }
  - id: west
    type: snapshot-copy
    source: { account: prod, region: us-west-2, tags: { Bench: snapshots } }
    destination: { region: eu-west-1, key: dr-west-1 }
"""

AMIS = """  - id: amis
    type: ami-copy
    source: { account: prod, region: us-east-1, tags: { Bench: amis } }
    destination: { account: backup, key: backup }
    key_access: policy
"""

OBJECTS = """  - id: logs
    type: s3-replication
    source: { account: prod, bucket: bench-logs }
    destination: { bucket: bench-logs-dr, region: eu-west-2, create: true, key: logs-dr }
    role: { name: bench-logs-replication }
    backfill: true
"""

BATCH = """  - id: archive
    type: s3-replication
    source: { account: prod, bucket: bench-archive }
    destination: { bucket: bench-archive-dr, region: eu-west-2, create: true, key: archive-dr }
    role: { name: bench-archive-replication }
    backfill: batch
    backfill_report: s3://bench-reports/jobs
"""

DB_SNAPSHOTS = """  - id: orders
    type: db-snapshot-copy
    source: { account: prod, region: us-east-1, tags: { Bench: rds } }
    destination: { region: eu-west-2, key: rds-dr }
"""

# Workload (e): the same snapshots, every night, to two DR regions.
CHAINS = """  - id: dr-west-2
    type: snapshot-copy
    source: { account: prod, region: us-east-1, tags: { Bench: chains } }
    destination: { region: eu-west-2, key: dr-west-2 }
  - id: dr-west-1
    type: snapshot-copy
    source: { account: prod, region: us-east-1, tags: { Bench: chains } }
    destination: { region: eu-west-1, key: dr-west-1 }
"""

PAIR_SETTING = """settings:
  quotas:
    "ec2:snapshot-copies-per-region-pair": { in_flight: 4 }
"""

# ---- lower bound --------------------------------------------------------------------------


def lower_bound(snapshots_per_region: list[int], amis: int, objects: int, s3_rate: float, list_s: float, tasks: int = 0, dbs: int = 0) -> float:
    """The least time the limits allow, from the same quotas and durations the emulator uses:
    - per destination region, ceil(snapshot copies / 20 slots) x copy time;
    - per token bucket, (calls - burst) / refill, then one copy time (CopySnapshot 50/5 s,
      CopyImage 100/1 s: the last copy cannot start earlier, and takes a copy time);
    - for AMIs, one copy time (300 image copies may run at once);
    - for objects, one listing of the source bucket (no backfill can know what to copy
      without it) + objects / the emulator's own CopyObject throughput, both measured just
      before under the same throttling: no AWS quota binds at this size (3,500 COPY/s per
      prefix), the emulator's speed does;
    - for a batch job, its tasks at the emulator's task rate (S3 runs the job: ferry can only
      start it, follow it and read its report);
    - for RDS DB snapshots, ceil(copies / 20 copies in progress per destination region) x copy
      time (CopyDBSnapshot's bucket, 50 then 5/s as assumed, does not bind at 45).
    Workloads in one plan run side by side, so the bound of (d) is the max of its parts."""
    bounds = [0.0]
    for n in snapshots_per_region:
        bounds.append(math.ceil(n / SNAPSHOT_SLOTS) * COPY_SECONDS)
        bounds.append(max(0.0, (n - COPY_SNAPSHOT[0]) / COPY_SNAPSHOT[1]) + COPY_SECONDS)
    if amis:
        bounds.append(COPY_SECONDS)
        bounds.append(max(0.0, (amis - COPY_IMAGE[0]) / COPY_IMAGE[1]) + COPY_SECONDS)
    if objects:
        bounds.append(list_s + objects / s3_rate)
    if tasks:
        bounds.append(tasks / TASK_RATE)
    if dbs:
        bounds.append(math.ceil(dbs / SNAPSHOT_SLOTS) * COPY_SECONDS)
        bounds.append(max(0.0, (dbs - COPY_SNAPSHOT[0]) / COPY_SNAPSHOT[1]) + COPY_SECONDS)
    return max(bounds)


def s3_calibration(n: int, threads: int = 64) -> tuple[float, float]:
    """What the emulator can do for a backfill of `n` objects, measured in an emulator of its own
    seeded like ferry's (the emulator slows down as it stores more objects: 344/s for the first
    2,000 copies, 211/s for the sixth 2,000 on this machine, so the calibration must not share
    ferry's emulator, nor measure more than one round):
    - the time to list the source bucket (a bare HTTP client: its own CPU takes little from the
      emulator on this small machine);
    - CopyObject calls per second for the copies ferry makes (all `n` objects, SSE-KMS under a
      key in the destination region, Bucket Key on, into a new versioned bucket), `threads` at
      a time like ferry's backfill, sent by `examples/s3-copy-rate.rs`: the same SDK client
      ferry uses, and nothing else."""
    emu = Emulator()
    try:
        ep = emu.endpoint
        seed_objects(ep, n)
        control(ep, "/_ferry/config", {"throttle": True, "throttle_scale": 1.0})
        return _calibrate(ep, n, threads)
    finally:
        emu.stop()


def _calibrate(ep: str, n: int, threads: int) -> tuple[float, float]:
    import http.client
    from urllib.parse import quote, urlparse

    region = "eu-west-2"
    key = cmk(ep, A, region, "alias/bench-calibration")
    s3 = client(ep, "s3", A, region)
    url = urlparse(ep)
    day = time.strftime("%Y%m%d", time.gmtime())
    headers = {
        "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
        "x-amz-date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
        # The emulator reads the account and region from the credential scope; it checks no signature.
        "Authorization": f"AWS4-HMAC-SHA256 Credential=AKIA{A}TEST/{day}/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0",
    }

    def list_source() -> float:
        start = time.monotonic()
        conn = http.client.HTTPConnection(url.hostname, url.port)
        token = None
        while True:
            query = "list-type=2" + (f"&continuation-token={quote(token, safe='')}" if token else "")
            conn.request("GET", f"/bench-logs?{query}", headers=headers)
            r = conn.getresponse()
            body = r.read().decode()
            if r.status != 200:
                raise SystemExit(f"calibration ListObjectsV2 failed: {r.status} {body[:200]!r}")
            found = re.search(r"<NextContinuationToken>([^<]+)</NextContinuationToken>", body)
            if not found:
                break
            token = found.group(1)
        conn.close()
        return time.monotonic() - start

    def copy_rate(bucket: str, count: int) -> float:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
        # Like the replication destination ferry creates: versioned (replication needs it).
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        out = subprocess.run(
            [S3_RATE, ep, region, "bench-logs", bucket, key, str(count), str(threads)],
            env={**os.environ, "AWS_ACCESS_KEY_ID": f"AKIA{A}TEST", "AWS_SECRET_ACCESS_KEY": "bench"},
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise SystemExit(f"s3-copy-rate failed: {out.stderr.strip()[-300:]}")
        return float(out.stdout)

    listing = list_source()
    return copy_rate("bench-calibration", n), listing


# ---- running ------------------------------------------------------------------------------


def run_ferry(ep: str, plan_text: str, env_extra: dict | None = None, fixed_poll: bool = True) -> tuple[float, int, int, float, str]:
    """`ferry apply` of `plan_text`: (seconds, exit code, peak KiB, CPU seconds, stderr).
    `fixed_poll`: FERRY_POLL_INTERVAL_MS=POLL_MS (the fixed-duration copies of (a)-(d), (f), (g));
    else ferry's own poll intervals, as a user runs it."""
    work = tempfile.mkdtemp(prefix="ferry-bench-")
    with open(os.path.join(work, "plan.yaml"), "w") as f:
        f.write(plan_text)
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": f"AKIA{A}TEST",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_REGION": "us-east-1",
        "FERRY_VERIFY_POLL_MS": "100",
        **(env_extra or {}),
    }
    env.pop("FERRY_POLL_INTERVAL_MS", None)
    if fixed_poll and POLL_MS is not None:
        env["FERRY_POLL_INTERVAL_MS"] = str(POLL_MS)
    elapsed, code, rss_kb, cpu_s, _, err = run_timed(
        [FERRY, "--endpoint-url", ep, "-q", "apply", "--yes", "plan.yaml"], work, env
    )
    if os.environ.get("FERRY_BENCH_KEEP"):
        print(f"    kept {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return elapsed, code, rss_kb, cpu_s, err


def run_timed(cmd: list[str], cwd: str, env: dict) -> tuple[float, int, int, float, str, str]:
    """Runs `cmd`: (seconds, exit code, peak KiB, CPU seconds, stdout, stderr)."""
    start = time.monotonic()
    with open(os.path.join(cwd, "stdout"), "w") as outf, open(os.path.join(cwd, "stderr"), "w") as errf:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=outf, stderr=errf)
        # wait4 gives this child's own peak memory (ru_maxrss, KiB on Linux).
        _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - start
    code = os.waitstatus_to_exitcode(status)
    with open(os.path.join(cwd, "stdout")) as f:
        out = f.read()
    with open(os.path.join(cwd, "stderr")) as f:
        err = f.read()
    return elapsed, code, usage.ru_maxrss, usage.ru_utime + usage.ru_stime, out, err


def counters(ep: str) -> dict:
    c = control(ep, "/_ferry/counters")
    total = c["totals"]["requests"]
    mutating = c["totals"]["mutating"]
    throttled = c["totals"]["throttled"]
    describes = sum(r["count"] for r in c["requests"] if r["action"].startswith(("Describe", "Get", "List", "Head")))
    if os.environ.get("FERRY_BENCH_VERBOSE"):
        by_action: dict[str, int] = {}
        for r in c["requests"]:
            by_action[f'{r["service"]}:{r["action"]}'] = by_action.get(f'{r["service"]}:{r["action"]}', 0) + r["count"]
        for k, v in sorted(by_action.items(), key=lambda kv: -kv[1]):
            print(f"    {k:40} {v}", file=sys.stderr)
    return {"total": total, "mutating": mutating, "throttled": throttled, "describe": describes}


# Runs per workload: the short ones are repeated and reported by their median ratio, since this
# small VM's speed drifts by 10-15 % from one minute to the next (FERRY_BENCH_REPEAT overrides).
REPEATS = {"a": 1, "b": 3, "c": 5, "d": 1, "e": 3, "f": 3, "g": 1}

WORKLOADS = {
    "a": ("400 snapshots, 2 regions -> 2 regions", 400, 0, 0, 0, 0),
    "b": ("40 AMIs x 2 volumes, cross-account", 0, 40, 0, 0, 0),
    "c": ("2,000 SSE-KMS objects backfilled", 0, 0, 2000, 0, 0),
    "d": ("all of the above in one plan", 400, 40, 2000, 0, 0),
    # (e) is run by chain_workload; its numbers are in CHAIN_SIZES and chain_world.
    "e": ("30 volumes x 10 snapshots, 2 destination regions", 0, 0, 0, 0, 0),
    "f": ("45 RDS DB snapshots -> another region", 0, 0, 0, 0, 45),
    "g": ("20,000 objects by a batch replication job", 0, 0, 0, 20000, 0),
}


def workload(name: str) -> dict:
    title, snaps, amis, objects, batch, dbs = WORKLOADS[name]
    emu = Emulator()
    try:
        ep = emu.endpoint
        control(ep, "/_ferry/config", {"copy_seconds": COPY_SECONDS, "rds_copy_seconds": COPY_SECONDS, "throttle": False})
        if snaps:
            seed_snapshots(ep, snaps)
        if amis:
            seed_amis(ep, amis)
        if objects:
            seed_objects(ep, objects)
        if batch:
            seed_objects(ep, batch, "bench-archive")
            client(ep, "s3", A, "us-east-1").create_bucket(Bucket="bench-reports")
            control(ep, "/_ferry/config", {"batch_task_rate": TASK_RATE})
        if dbs:
            seed_db_snapshots(ep, dbs)
        # Measured before ferry runs, in an emulator of its own.
        s3_rate, list_s = s3_calibration(objects) if objects else (0.0, 0.0)
        plan = plan_text(bool(snaps), bool(amis), bool(objects), bool(batch), bool(dbs))
        # From here on AWS's quotas apply (the emulator's buckets at scale 1.0).
        control(ep, "/_ferry/config", {"throttle": True, "throttle_scale": 1.0})
        control(ep, "/_ferry/counters/reset", {})
        elapsed, code, rss_kb, cpu_s, err = run_ferry(ep, plan)
        c = counters(ep)
        resources = snaps + amis + objects + batch + dbs
        bound = lower_bound([snaps // 2, snaps // 2] if snaps else [], amis, objects, s3_rate, list_s, batch, dbs)
        return {
            "workload": f"({name}) {title}",
            "ok": code == 0,
            "error": err.strip().splitlines()[-3:] if code != 0 else [],
            "makespan_s": elapsed,
            "lower_bound_s": bound,
            "ratio": elapsed / bound if bound else float("nan"),
            "mutating_per_resource": c["mutating"] / resources,
            "describe_per_resource": c["describe"] / resources,
            "throttled_pct": 100.0 * c["throttled"] / max(1, c["total"]),
            "calls": c["total"],
            "peak_mb": rss_kb / 1024.0,
            "cpu_s": cpu_s,
            "s3_rate": s3_rate,
            "list_s": list_s,
        }
    finally:
        emu.stop()


def summarize(runs: list[dict]) -> dict:
    """The run with the median ratio (a failed run, if any), and the range of the ratios."""
    failed = [r for r in runs if not r["ok"]]
    row = dict(failed[0] if failed else sorted(runs, key=lambda r: r["ratio"])[len(runs) // 2])
    ratios = [r["ratio"] for r in runs]
    row["range"] = f"{min(ratios):.2f}-{max(ratios):.2f}" if len(runs) > 1 else ""
    row["runs"] = len(runs)
    return row


# ---- workload (e): nightly DR, chains of incremental snapshot copies --------------------------
#
# Copies under the emulator's byte model (tests/emulator/additions/ec2_copies.py): a copy is
# incremental when the latest completed copy of the same volume in the destination, under the
# same key, holds an earlier snapshot, and then moves the blocks changed since; else it moves
# the whole volume. Copies move at most COPY_MIB_S each, and the copies in flight for one
# (account, source region, destination region) share PAIR_MIB_S (EBS user guide, "Time-based
# copies"; aws-facts-next.md section 4). Time is compressed: TIME_SCALE emulated seconds pass per
# wall-clock second (the byte rates are multiplied by it; the API token buckets are not).

GIB, MIB = 2**30, 2**20
COPY_MIB_S = 500.0  # per copy (AWS, fixed)
PAIR_MIB_S = 2000.0  # per region pair (AWS default, adjustable)
# Chosen so the bound of the full world is about 64 s of wall time (4,827 emulated seconds).
TIME_SCALE = float(os.environ.get("FERRY_BENCH_TIME_SCALE", "75"))
CHAIN_SOURCE = "us-east-1"
CHAIN_REGIONS = ("eu-west-2", "eu-west-1")
CHAIN_SNAPSHOTS = 10
# The fleet's volume sizes in GiB, 6,698 GiB in all: two 1 TiB data volumes, a few hundred-GiB
# databases and file stores, and many small application and root volumes.
CHAIN_SIZES = (
    1024, 1024, 750, 500, 500, 400, 300, 300, 250, 200, 200, 150, 128, 128, 100,
    100, 100, 80, 80, 64, 50, 50, 40, 40, 30, 30, 20, 20, 20, 20,
)  # fmt: skip
# How a night's changes vary over a week (weekends are quiet): a factor on the volume's rate.
WEEK = (1.0, 1.1, 0.9, 1.2, 1.0, 0.5, 0.4)
CHAIN_VOLUMES = int(os.environ.get("FERRY_BENCH_CHAIN_VOLUMES", str(len(CHAIN_SIZES))))


def chain_world(n: int = CHAIN_VOLUMES) -> list[tuple[int, list[int]]]:
    """(size GiB, bytes each of its 10 snapshots changed since the previous one) per volume:
    volume i of the fleet changes (1 + 7i mod 10) % of its size a night (1-10 %: a log or
    database volume much, a root volume little) times the week's factor for that night (each
    volume's week starts on another day). The first snapshot holds the whole volume. With
    fewer than 30 volumes, `n` of them spread over the size range."""
    out = []
    for k in range(n):
        i = k * len(CHAIN_SIZES) // n
        size = CHAIN_SIZES[i] * GIB
        rate = (1 + (7 * i) % 10) / 100.0
        out.append((CHAIN_SIZES[i], [size] + [round(size * rate * WEEK[(j + i) % 7]) for j in range(1, CHAIN_SNAPSHOTS)]))
    return out


def chain_minimal_bytes(world: list[tuple[int, list[int]]]) -> int:
    """The least bytes that give every snapshot a copy in one destination region: per volume one
    full copy (its oldest snapshot) and then each later snapshot's changes, copied oldest first,
    each from the copy of its predecessor."""
    return sum(sum(changes) for _, changes in world)


def seed_chains(ep: str, world: list[tuple[int, list[int]]]) -> list[list[str]]:
    """The world in account A, us-east-1, under one customer managed key: a volume per entry and
    10 snapshots of each, tagged `Bench: chains`, taken in rounds like nightly backups (each
    round starts in a later second than the last: DescribeSnapshots gives StartTime to the
    second, and it is what tells the snapshots of a volume apart in age); then each snapshot's
    changed bytes (POST /_ferry/snapshots/changed). The snapshot ids, per volume oldest first."""
    region = CHAIN_SOURCE
    key = cmk(ep, A, region, "alias/bench-fleet")
    ec2 = client(ep, "ec2", A, region)
    volumes = [
        ec2.create_volume(Size=size, AvailabilityZone=f"{region}a", Encrypted=True, KmsKeyId=key)["VolumeId"]
        for size, _ in world
    ]
    tags = [{"ResourceType": "snapshot", "Tags": [{"Key": "Bench", "Value": "chains"}]}]
    snaps: list[list[str]] = [[] for _ in volumes]
    for night in range(CHAIN_SNAPSHOTS):
        for i, vol in enumerate(volumes):
            snaps[i].append(ec2.create_snapshot(VolumeId=vol, TagSpecifications=tags)["SnapshotId"])
        if night + 1 < CHAIN_SNAPSHOTS:
            now = time.time()
            time.sleep(math.floor(now) + 1.0 - now + 0.01)
    changes = {sid: world[i][1][j] for i, ids in enumerate(snaps) for j, sid in enumerate(ids)}
    control(ep, "/_ferry/snapshots/changed", {"account": A, "region": region, "changes": changes})
    return snaps


def chain_bound(world: list[tuple[int, list[int]]], regions: int = len(CHAIN_REGIONS)) -> tuple[float, dict[str, float]]:
    """The least wall-clock time the copy limits allow, and its terms:
    - per region pair (us-east-1 -> each destination), the minimal bytes (per volume one full
      copy and the increments of its other nine snapshots: `chain_minimal_bytes`) / the pair's
      2,000 MiB/s: the pair's copies share it, however many run;
    - per chain (one volume into one region), its copies' bytes / the per-copy 500 MiB/s: its
      critical path, each copy incremental only once its predecessor's copy has completed;
    - per destination region, CopySnapshot's token bucket: (copies - 50) / 5 per second, the
      earliest the last copy can be asked for;
    the byte terms divided by the time scale for wall seconds. The bucket term is wall time as
    it stands: the emulator's token buckets run on the wall clock at AWS's rates (throttle_scale
    1.0), the time scale speeds up the bytes only. The bound is the max."""
    per_region = chain_minimal_bytes(world)
    copies = len(world) * CHAIN_SNAPSHOTS
    terms = {
        "region pair": per_region / MIB / PAIR_MIB_S / TIME_SCALE,
        "chain": max(sum(c) for _, c in world) / MIB / COPY_MIB_S / TIME_SCALE,
        "CopySnapshot bucket": max(0.0, (copies - COPY_SNAPSHOT[0]) / COPY_SNAPSHOT[1]),
    }
    return max(terms.values()), terms


CONTENDERS = {
    "ferry": "ferry (chains, its default)",
    "ferry-pair": "ferry, 4 copies per region pair",
    "largest-first": "ferry FERRY_COPY_ORDER=largest-first",
    "boto3": "boto3 script, 20 threads per region",
}


def chain_workload(contender: str) -> dict:
    """One run of (e) by `contender` in a fresh emulator."""
    world = chain_world()
    emu = Emulator()
    try:
        ep = emu.endpoint
        control(ep, "/_ferry/config", {
            "copy_throughput_mib_s": COPY_MIB_S, "region_pair_throughput_mib_s": PAIR_MIB_S,
            "time_scale": TIME_SCALE, "throttle": False,
        })  # fmt: skip
        snaps = seed_chains(ep, world)
        if contender == "boto3":
            # ferry's plan creates its destination keys; the script is given them
            keys = {r: cmk(ep, A, r, f"alias/bench-dr-{r.removeprefix('eu-')}") for r in CHAIN_REGIONS}
        control(ep, "/_ferry/config", {"throttle": True, "throttle_scale": 1.0})
        control(ep, "/_ferry/counters/reset", {})
        out = ""
        if contender == "boto3":
            cmd = [sys.executable, os.path.join(ROOT, "benches", "boto3_copy.py"), "--endpoint", ep,
                   "--source-region", CHAIN_SOURCE, "--tag", "Bench=chains", "--threads", str(SNAPSHOT_SLOTS),
                   "--time-scale", str(TIME_SCALE)]  # fmt: skip
            for r in CHAIN_REGIONS:
                cmd += ["--destination", f"{r}={keys[r]}"]
            env = {**os.environ, "AWS_ACCESS_KEY_ID": f"AKIA{A}TEST", "AWS_SECRET_ACCESS_KEY": "bench"}
            work = tempfile.mkdtemp(prefix="ferry-bench-boto3-")
            elapsed, code, rss_kb, cpu_s, out, err = run_timed(cmd, work, env)
            shutil.rmtree(work, ignore_errors=True)
        else:
            extra = {"FERRY_COPY_ORDER": "largest-first"} if contender == "largest-first" else {}
            text = plan_text(False, False, False, chains=True)
            if contender == "ferry-pair":
                # The world's throughput: 2,000 MiB/s per pair / 500 per copy = 4 copies that
                # move bytes keep the pair busy, each at its full speed (quick copies go
                # beside them).
                text += PAIR_SETTING
            elapsed, code, rss_kb, cpu_s, err = run_ferry(ep, text, extra, fixed_poll=False)
        c = counters(ep)
        detail = control(ep, "/_ferry/counters")
        copies = [e for e in detail.get("snapshot_copies", []) if e["account"] == A]
        problems = check_chain_copies(ep, snaps, copies)
        bound, terms = chain_bound(world)
        minimal = chain_minimal_bytes(world) * len(CHAIN_REGIONS)
        moved = sum(int(e["bytes"]) for e in copies)
        errors = err.strip().splitlines()[-3:] if code != 0 else []
        if code != 0 and contender == "boto3":
            errors = err.strip().splitlines()[:3] or out.strip().splitlines()[-1:]
        return {
            "workload": CONTENDERS[contender],
            "ok": code == 0 and not problems,
            "error": errors + problems,
            "makespan_s": elapsed,
            "lower_bound_s": bound,
            "terms": terms,
            "ratio": elapsed / bound,
            "minimal_bytes": minimal,
            "moved_bytes": moved,
            "bytes_ratio": moved / minimal,
            "full": sum(1 for e in copies if not e["incremental"]),
            "incremental": sum(1 for e in copies if e["incremental"]),
            # every call answered, throttled ones included
            "calls": c["total"] + c["throttled"],
            "throttled_pct": 100.0 * c["throttled"] / max(1, c["total"] + c["throttled"]),
            "peak_mb": rss_kb / 1024.0,
            "cpu_s": cpu_s,
        }
    finally:
        emu.stop()


def check_chain_copies(ep: str, snaps: list[list[str]], copies: list[dict]) -> list[str]:
    """What is wrong with the copies a contender left: a copy in state `error` or not completed,
    a source snapshot without a completed copy in a destination region."""
    sources = {s for ids in snaps for s in ids}
    problems = []
    for region in CHAIN_REGIONS:
        ec2 = client(ep, "ec2", A, region)
        states = {
            s["SnapshotId"]: s
            for page in ec2.get_paginator("describe_snapshots").paginate(OwnerIds=["self"])
            for s in page["Snapshots"]
        }
        bad = [s for s in states.values() if s["State"] != "completed"]
        for s in bad[:3]:
            problems.append(f"{region}: copy {s['SnapshotId']} is {s['State']}: {s.get('StateMessage', '')}".rstrip(": "))
        if len(bad) > 3:
            problems.append(f"{region}: {len(bad)} copies not completed in all")
        done = {e["source"] for e in copies if e["region"] == region and states.get(e["snapshot"], {}).get("State") == "completed"}
        missing = sources - done
        if missing:
            problems.append(f"{region}: {len(missing)} of {len(sources)} snapshots have no completed copy")
    return problems


def chain_rows() -> list[dict]:
    repeat = int(os.environ.get("FERRY_BENCH_REPEAT", REPEATS["e"]))
    rows = []
    # FERRY_BENCH_CONTENDERS=ferry-pair,ferry runs some of them.
    wanted = [c for c in os.environ.get("FERRY_BENCH_CONTENDERS", "").split(",") if c]
    for contender, runs in (("ferry", repeat), ("ferry-pair", repeat), ("largest-first", 1), ("boto3", 1)):
        if wanted and contender not in wanted:
            continue
        results = []
        for i in range(runs):
            print(f"running workload e ({CONTENDERS[contender]}, {i + 1}/{runs}) ...", file=sys.stderr, flush=True)
            results.append(chain_workload(contender))
        rows.append(summarize(results))
    return rows


def print_chains(rows: list[dict]) -> None:
    world = chain_world()
    bound, terms = chain_bound(world)
    minimal = chain_minimal_bytes(world)
    binding = max(terms, key=lambda k: terms[k])
    sizes = [size for size, _ in world]
    print(
        f"\n(e) {len(world)} volumes x {CHAIN_SNAPSHOTS} snapshots ({min(sizes)}-{max(sizes)} GiB, {sum(sizes):,} GiB in all)"
        f" -> {', '.join(CHAIN_REGIONS)}; {COPY_MIB_S:g} MiB/s per copy, {PAIR_MIB_S:,.0f} MiB/s per region pair,"
        f" time scale {TIME_SCALE:g}"
    )
    print(
        f"    minimal bytes {minimal / GIB:,.0f} GiB per region ({100.0 * sum(sizes) * GIB / minimal:.0f} % of it the"
        f" {len(world)} full copies); bound {bound:.1f} s: "
        + ", ".join(f"{k} {v:.1f} s" + (" (binds)" if k == binding else "") for k, v in terms.items())
    )
    header = f"{'contender':38} {'result':6} {'makespan':>9} {'bound':>7} {'ratio':>6} {'bytes/min':>9} {'full':>5} {'incr':>5} {'calls':>6} {'thr %':>6} {'peak MB':>8} {'CPU s':>6} {'runs, ratios':>15}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['workload']:38} {'ok' if r['ok'] else 'FAIL':6} {r['makespan_s']:8.1f}s {r['lower_bound_s']:6.1f}s"
            f" {r['ratio']:6.2f} {r['bytes_ratio']:9.2f} {r['full']:5d} {r['incremental']:5d} {r['calls']:6d}"
            f" {r['throttled_pct']:6.2f} {r['peak_mb']:8.1f} {r['cpu_s']:6.1f}"
            f" {(str(r['runs']) + ', ' + r['range']) if r['range'] else '1':>15}"
        )
        for line in r["error"]:
            print(f"    {line}")
    by = {r["workload"]: r for r in rows}
    ferry = by.get(CONTENDERS["ferry"]) or by[CONTENDERS["ferry-pair"]]
    others = "; ".join(
        f"{name} {by[CONTENDERS[k]]['ratio']:.2f} ({by[CONTENDERS[k]]['bytes_ratio']:.2f} x the bytes)"
        for k, name in (("ferry-pair", "ferry at 4 per pair"), ("largest-first", "largest-first"), ("boto3", "boto3"))
        if CONTENDERS[k] in by
    )
    print(f"\n(e) ratio to the bound: ferry {ferry['ratio']:.2f}, moving {ferry['bytes_ratio']:.2f} x the minimal bytes; {others}")


def main(argv: list[str]) -> int:
    names = [a for a in argv if a in WORKLOADS] or list(WORKLOADS)
    rows = []
    chains: list[dict] = []
    for n in names:
        if n == "e":
            chains = chain_rows()
            continue
        repeat = int(os.environ.get("FERRY_BENCH_REPEAT", REPEATS[n]))
        runs = []
        for i in range(repeat):
            print(f"running workload {n} ({i + 1}/{repeat}): {WORKLOADS[n][0]} ...", file=sys.stderr, flush=True)
            runs.append(workload(n))
        rows.append(summarize(runs))
    poll = f"poll {POLL_MS} ms" if POLL_MS is not None else "ferry's default polling"
    setting = f"copy time {COPY_SECONDS:g} s, {poll}" if rows else "(e) only"
    print(f"\nferry migration benchmark — {platform.node()}, {os.cpu_count()} cores, {setting}")
    if rows:
        print()
    failed = [r["workload"] for r in rows if not r["ok"]]
    failed += [f"(e) {r['workload']}" for r in chains if not r["ok"]]
    if rows:
        print_table(rows)
    if chains:
        print_chains(chains)
    if failed:
        print(f"failed workloads: {', '.join(failed)}")
    return 0 if not failed else 1


def print_table(rows: list[dict]) -> None:
    for r in rows:
        if r.get("s3_rate"):
            print(
                f"emulator, measured for the bound of {r['workload'][:3]}: CopyObject {r['s3_rate']:.0f}/s,"
                f" listing the source {r['list_s']:.2f} s"
            )
    header = f"{'workload':44} {'result':6} {'makespan':>9} {'bound':>7} {'ratio':>6} {'mut/res':>8} {'desc/res':>8} {'thr %':>6} {'calls':>6} {'peak MB':>8} {'CPU s':>6} {'runs, ratios':>15}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['workload']:44} {'ok' if r['ok'] else 'FAIL':6} {r['makespan_s']:8.1f}s {r['lower_bound_s']:6.1f}s"
            f" {r['ratio']:6.2f} {r['mutating_per_resource']:8.2f} {r['describe_per_resource']:8.2f}"
            f" {r['throttled_pct']:6.2f} {r['calls']:6d} {r['peak_mb']:8.1f} {r['cpu_s']:6.1f}"
            f" {(str(r['runs']) + ', ' + r['range']) if r['range'] else '1':>15}"
        )
        for line in r["error"]:
            print(f"    {line}")
    ok = [r for r in rows if r["ok"]]
    if ok:
        worst = max(ok, key=lambda r: r["ratio"])
        print(f"\nratio to lower bound: {worst['ratio']:.2f} (worst workload: {worst['workload']})")


if __name__ == "__main__":
    FERRY = os.environ["FERRY_BIN"]
    # Built beside ferry by scripts/bench (cargo build --release --example s3-copy-rate).
    S3_RATE = os.environ.get("FERRY_BENCH_S3_RATE_BIN", os.path.join(os.path.dirname(FERRY), "examples", "s3-copy-rate"))
    sys.exit(main(sys.argv[1:]))
