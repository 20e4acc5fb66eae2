"""What a careful engineer writes instead of ferry: a parallel boto3 copy of tagged EBS snapshots
into other regions. The contender of benches/migrate.py workload (e) (nightly DR: 30 volumes x 10
snapshots into 2 destination regions); it runs against the emulator or AWS alike.

    boto3_copy.py --endpoint http://127.0.0.1:PORT --source-region us-east-1 --tag Bench=chains \\
        --destination eu-west-2=arn:aws:kms:... --destination eu-west-1=arn:aws:kms:... \\
        [--threads 20] [--time-scale 75]

- lists the source region's snapshots with the tag (DescribeSnapshots, paginated, OwnerIds self
  and a tag filter) and sorts them largest first (the usual rule: start the long copies first);
- one ThreadPoolExecutor of `--threads` (20: EBS's copies in flight per destination region) per
  destination region, each task a CopySnapshot (Encrypted, KmsKeyId the destination key,
  SourceRegion; tags naming the source snapshot, volume and region, since a copy gets an
  arbitrary volume id) and then the `snapshot_completed` waiter; botocore adds the
  PresignedUrl an encrypted cross-region copy needs itself;
- clients with adaptive retries (10 attempts: throttled calls wait and are retried, and the
  client slows its own rate) and a connection pool as large as the thread pool;
- `--time-scale`: emulated seconds per wall-clock second of the emulator's byte model. The
  waiter's 15 s delay is sized for real copies, which take many minutes; under compressed time
  the script waits 15 s / time scale between polls (at least 0.2 s), i.e. 15 s of emulated
  time, so the compression does not make it see completions later than it would on AWS. Its
  attempts cover 48 emulated hours (EBS copies are not bounded by 10 minutes, the waiter's
  default 40 x 15 s);
- a copy that ends in state `error` (the waiter's failure) or does not finish is a failure:
  listed on stderr, and the exit status is 1.

Prints one JSON line: {"sources", "copies", "completed", "failed": [...], "seconds"}.
Credentials and the rest come from the usual boto3 environment.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, WaiterError

WAITER_DELAY_S = 15.0  # botocore's snapshot_completed default
MIN_DELAY_S = 0.2
WAIT_HOURS = 48


def make_client(region: str, endpoint: str | None, pool: int):
    config = Config(retries={"mode": "adaptive", "max_attempts": 10}, max_pool_connections=pool)
    return boto3.client("ec2", region_name=region, endpoint_url=endpoint, config=config)


def list_sources(ec2, tag_key: str, tag_value: str) -> list[dict]:
    pages = ec2.get_paginator("describe_snapshots").paginate(
        OwnerIds=["self"], Filters=[{"Name": f"tag:{tag_key}", "Values": [tag_value]}]
    )
    return [s for page in pages for s in page["Snapshots"]]


def copy_one(ec2, snap: dict, source_region: str, key_arn: str, delay: float, attempts: int) -> dict:
    """Copies `snap` into `ec2`'s region and waits for it: {"source", "copy", "state", "error"}."""
    out = {"source": snap["SnapshotId"], "region": ec2.meta.region_name, "copy": None, "error": None}
    try:
        copy_id = ec2.copy_snapshot(
            SourceSnapshotId=snap["SnapshotId"],
            SourceRegion=source_region,
            Encrypted=True,
            KmsKeyId=key_arn,
            Description=f"DR copy of {snap['SnapshotId']} from {source_region}",
            TagSpecifications=[
                {
                    "ResourceType": "snapshot",
                    "Tags": [
                        {"Key": "SourceSnapshotId", "Value": snap["SnapshotId"]},
                        {"Key": "SourceVolumeId", "Value": snap.get("VolumeId", "")},
                        {"Key": "SourceRegion", "Value": source_region},
                    ],
                }
            ],
        )["SnapshotId"]
        out["copy"] = copy_id
        ec2.get_waiter("snapshot_completed").wait(
            SnapshotIds=[copy_id], WaiterConfig={"Delay": delay, "MaxAttempts": attempts}
        )
    except WaiterError as e:
        last = e.last_response or {}
        snaps = last.get("Snapshots") or [{}]
        out["error"] = f"{e}: state {snaps[0].get('State')!r} {snaps[0].get('StateMessage', '')}".strip()
    except ClientError as e:
        out["error"] = f"{e.response['Error'].get('Code')}: {e.response['Error'].get('Message')}"
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", help="endpoint URL (the emulator); default: AWS")
    p.add_argument("--source-region", required=True)
    p.add_argument("--tag", required=True, help="KEY=VALUE the source snapshots carry")
    p.add_argument(
        "--destination", action="append", required=True, metavar="REGION=KEY_ARN",
        help="a destination region and the KMS key (in that region) to encrypt its copies with",
    )
    p.add_argument("--threads", type=int, default=20, help="copies in flight per destination region")
    p.add_argument("--time-scale", type=float, default=1.0, help="emulated seconds per wall second")
    args = p.parse_args(argv)
    tag_key, _, tag_value = args.tag.partition("=")
    destinations = [tuple(d.split("=", 1)) for d in args.destination]
    delay = max(MIN_DELAY_S, WAITER_DELAY_S / args.time_scale)
    attempts = int(WAIT_HOURS * 3600 / WAITER_DELAY_S)

    start = time.monotonic()
    source = make_client(args.source_region, args.endpoint, args.threads)
    snaps = list_sources(source, tag_key, tag_value)
    snaps.sort(key=lambda s: s.get("VolumeSize", 0), reverse=True)

    results: list[dict] = []
    lock = threading.Lock()
    pools = []
    futures = []
    for region, key_arn in destinations:
        ec2 = make_client(region, args.endpoint, args.threads)
        pool = ThreadPoolExecutor(max_workers=args.threads, thread_name_prefix=f"copy-{region}")
        pools.append(pool)
        futures += [
            pool.submit(copy_one, ec2, s, args.source_region, key_arn, delay, attempts) for s in snaps
        ]
    for f in as_completed(futures):
        r = f.result()
        with lock:
            results.append(r)
        if r["error"]:
            print(f"copy of {r['source']} into {r['region']} failed: {r['error']}", file=sys.stderr)
    for pool in pools:
        pool.shutdown()
    failed = [r for r in results if r["error"]]
    print(
        json.dumps(
            {
                "sources": len(snaps),
                "copies": sum(1 for r in results if r["copy"]),
                "completed": len(results) - len(failed),
                "failed": failed,
                "seconds": round(time.monotonic() - start, 3),
            }
        )
    )
    return 1 if failed or not snaps else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
