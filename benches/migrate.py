"""The migration benchmark: the real `ferry apply` against the local emulator with copy
durations and AWS's default API quotas on, compared with the lower bound those impose.

    scripts/bench                     # all workloads
    scripts/bench a b                 # some of them

Workloads:
  a  400 encrypted snapshots in 2 source regions -> 2 destination regions (same account)
  b  40 AMIs (2 encrypted volumes each) shared with and copied by another account
  c  2,000 SSE-KMS objects replicated and backfilled
  d  all of them in one plan
  e  20,000 objects backfilled by an S3 Batch Replication job
  f  45 encrypted RDS DB snapshots -> another region (same account)

For each: makespan (the whole `ferry apply`, resolve and dry run included), the lower bound
(see `lower_bound`), their ratio, API calls per migrated resource (mutating / describe),
throttled responses as % of calls, ferry's peak memory and CPU time (user + system). The short
workloads run several times (b three, c five), each in a fresh emulator, and show the run with the median
ratio and the range of ratios. The last line is the headline.

    FERRY_BENCH_COPY_SECONDS=15   copy time (default 10)
    FERRY_BENCH_REPEAT=1          runs of every workload
    FERRY_BENCH_VERBOSE=1         calls per API after each run
    FERRY_BENCH_KEEP=1            keep each run's directory (plan, journal, audit log)
    FERRY_BENCH_TASK_RATE=1000    the emulator's batch job tasks per second (workload e)
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
A, B = "111111111111", "222222222222"
# Copies stay pending this long (the emulator's `copy_seconds`); real copies take minutes.
COPY_SECONDS = float(os.environ.get("FERRY_BENCH_COPY_SECONDS", "10"))
POLL_MS = int(os.environ.get("FERRY_BENCH_POLL_MS", "500"))
SNAPSHOT_SLOTS = 20
# Tasks per second of the emulator's batch jobs: what S3 Batch Operations does with a job is
# S3's own capacity, so the bound of a batch backfill is the job's tasks at this rate. Set to
# what the emulator's single Python process sustains while replicating (measured: see README).
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
    client(ep, "iam", B, region).create_role(
        RoleName="ferry-migrator",
        AssumeRolePolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{A}:root"}, "Action": "sts:AssumeRole"}]}
        ),
    )
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

def plan_text(snaps: bool, amis: bool, objects: bool, batch: bool = False, dbs: bool = False) -> str:
    """The plan of a workload: only the accounts, keys and migrations it uses."""
    text = f'version: 1\nname: bench\naccounts:\n  prod: {{ id: "{A}" }}\n'
    if amis:
        text += f'  backup: {{ id: "{B}", role_arn: "arn:aws:iam::{B}:role/ferry-migrator" }}\n'
    text += "keys:\n"
    if snaps:
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


def run_ferry(ep: str, plan_text: str) -> tuple[float, int, int, float, str]:
    work = tempfile.mkdtemp(prefix="ferry-bench-")
    with open(os.path.join(work, "plan.yaml"), "w") as f:
        f.write(plan_text)
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": f"AKIA{A}TEST",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_REGION": "us-east-1",
        "FERRY_POLL_INTERVAL_MS": str(POLL_MS),
        "FERRY_VERIFY_POLL_MS": "100",
    }
    start = time.monotonic()
    with open(os.path.join(work, "stderr"), "w") as errf:
        proc = subprocess.Popen(
            [FERRY, "--endpoint-url", ep, "-q", "apply", "--yes", "plan.yaml"],
            cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=errf,
        )
        # wait4 gives this child's own peak memory (ru_maxrss, KiB on Linux).
        _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - start
    code = os.waitstatus_to_exitcode(status)
    with open(os.path.join(work, "stderr")) as f:
        err = f.read()
    if os.environ.get("FERRY_BENCH_KEEP"):
        print(f"    kept {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return elapsed, code, usage.ru_maxrss, usage.ru_utime + usage.ru_stime, err


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
REPEATS = {"a": 1, "b": 3, "c": 5, "d": 1, "e": 1, "f": 3}

WORKLOADS = {
    "a": ("400 snapshots, 2 regions -> 2 regions", 400, 0, 0, 0, 0),
    "b": ("40 AMIs x 2 volumes, cross-account", 0, 40, 0, 0, 0),
    "c": ("2,000 SSE-KMS objects backfilled", 0, 0, 2000, 0, 0),
    "d": ("all of the above in one plan", 400, 40, 2000, 0, 0),
    "e": ("20,000 objects by a batch replication job", 0, 0, 0, 20000, 0),
    "f": ("45 RDS DB snapshots -> another region", 0, 0, 0, 0, 45),
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


def main(argv: list[str]) -> int:
    names = [a for a in argv if a in WORKLOADS] or list(WORKLOADS)
    rows = []
    for n in names:
        repeat = int(os.environ.get("FERRY_BENCH_REPEAT", REPEATS[n]))
        runs = []
        for i in range(repeat):
            print(f"running workload {n} ({i + 1}/{repeat}): {WORKLOADS[n][0]} ...", file=sys.stderr, flush=True)
            runs.append(workload(n))
        rows.append(summarize(runs))
    print(f"\nferry migration benchmark — {platform.node()}, {os.cpu_count()} cores, copy time {COPY_SECONDS:g} s, poll {POLL_MS} ms\n")
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
    failed = [r["workload"] for r in rows if not r["ok"]]
    if failed:
        print(f"failed workloads: {', '.join(failed)}")
    return 0 if not failed else 1


if __name__ == "__main__":
    FERRY = os.environ["FERRY_BIN"]
    # Built beside ferry by scripts/bench (cargo build --release --example s3-copy-rate).
    S3_RATE = os.environ.get("FERRY_BENCH_S3_RATE_BIN", os.path.join(os.path.dirname(FERRY), "examples", "s3-copy-rate"))
    sys.exit(main(sys.argv[1:]))
