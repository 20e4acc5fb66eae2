"""Checks the byte model of CopySnapshot (additions/ec2_copies.py) by the wall clock; run by hand:

    .venv/bin/python tests/emulator/check_copy_throughput.py [--endpoint http://127.0.0.1:PORT]

Without --endpoint it starts its own emulator (tests/emulator/start) and stops it after. Each
case configures the model, copies unencrypted 1 GiB / 2 GiB volumes' snapshots from us-east-1
to eu-west-2 (one region pair) and polls DescribeSnapshots every 20 ms until each copy is
`completed`, then prints the measured and the expected wall time. Expected, from EBS's
"Time-based copies" rates as the emulator applies them (equal shares of the pair's MiB/s, each
at most the per-copy MiB/s, times `time_scale`):
- 2 copies of 1 GiB, per copy 500, pair 600: 300 MiB/s each, both done after 1024/300 = 3.41 s;
- 1 GiB and 2 GiB, per copy 500, pair 600: both at 300 until the first is done (3.41 s), then
  the second alone at 500 for its last 1024 MiB: done after 3.41 + 2.05 = 5.46 s;
- 2 copies of 1 GiB, per copy 500, no pair cap, time_scale 10: 1024/5000 = 0.20 s.
Exits 1 if a measurement is off by more than 0.3 s (polling and request latency).
"""

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request

import boto3

ACCOUNT = "313131313131"
SRC, DST = "us-east-1", "eu-west-2"
HERE = os.path.dirname(os.path.abspath(__file__))


def client(endpoint: str, region: str):  # type: ignore[no-untyped-def]
    return boto3.client(
        "ec2",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=f"AKIA{ACCOUNT}TEST",  # the emulator maps this key to ACCOUNT
        aws_secret_access_key="ferry-emulator-test-secret",
    )


def control(endpoint: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(
        endpoint + path,
        data=json.dumps(body or {}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req) as resp:
        return json.loads(resp.read())


def measure(endpoint: str, config: dict, sizes: list[int]) -> list[float]:
    """Seconds from the first CopySnapshot until each copy of a `sizes` GiB volume completed."""
    control(endpoint, "/_ferry/reset")
    control(endpoint, "/_ferry/config", config)
    src, dst = client(endpoint, SRC), client(endpoint, DST)
    sources = []
    for size in sizes:
        vol = src.create_volume(Size=size, AvailabilityZone=f"{SRC}a")
        sources.append(src.create_snapshot(VolumeId=vol["VolumeId"])["SnapshotId"])
    start = time.monotonic()
    copies = [
        dst.copy_snapshot(SourceSnapshotId=s, SourceRegion=SRC)["SnapshotId"] for s in sources
    ]
    done: dict[str, float] = {}
    while len(done) < len(copies) and time.monotonic() - start < 60:
        for snap in dst.describe_snapshots(SnapshotIds=copies)["Snapshots"]:
            if snap["State"] == "completed" and snap["SnapshotId"] not in done:
                done[snap["SnapshotId"]] = time.monotonic() - start
        time.sleep(0.02)
    return [done.get(c, float("inf")) for c in copies]


CASES = [
    (
        "2 x 1 GiB, 500 per copy, pair 600",
        {"copy_throughput_mib_s": 500, "region_pair_throughput_mib_s": 600},
        [1, 1],
        [1024 / 300, 1024 / 300],
    ),
    (
        "1 GiB + 2 GiB, 500 per copy, pair 600",
        {"copy_throughput_mib_s": 500, "region_pair_throughput_mib_s": 600},
        [1, 2],
        [1024 / 300, 1024 / 300 + 1024 / 500],
    ),
    (
        "2 x 1 GiB, 500 per copy, no pair cap, time_scale 10",
        {"copy_throughput_mib_s": 500, "region_pair_throughput_mib_s": 0, "time_scale": 10},
        [1, 1],
        [1024 / 5000, 1024 / 5000],
    ),
]


def run(endpoint: str) -> bool:
    ok = True
    for name, config, sizes, expected in CASES:
        measured = measure(endpoint, config, sizes)
        good = all(abs(m - e) <= 0.3 for m, e in zip(measured, expected, strict=True))
        ok &= good
        shown = ", ".join(
            f"{m:.2f} s (expected {e:.2f} s)" for m, e in zip(measured, expected, strict=True)
        )
        print(f"{'ok ' if good else 'BAD'} {name}: {shown}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoint", help="a running emulator (else one is started)")
    args = parser.parse_args()
    if args.endpoint:
        sys.exit(0 if run(args.endpoint) else 1)
    proc = subprocess.Popen(
        ["bash", os.path.join(HERE, "start"), "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        endpoint = ""
        for line in proc.stdout:
            if line.startswith("FERRY_EMULATOR_ENDPOINT="):
                endpoint = line.split("=", 1)[1].strip()
                break
        if not endpoint:
            sys.exit("the emulator printed no endpoint")
        ok = run(endpoint)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
