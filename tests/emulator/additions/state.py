"""Runtime configuration and the state the additions keep beside moto's backends.

Everything here is reset by `POST /_ferry/reset` and by moto's own `POST /moto-api/reset`.
"""

import copy
import json
import os
import random
import threading
from typing import Any

DEFAULTS: dict[str, Any] = {
    # Seconds a CopySnapshot/CopyImage result stays `pending` before it is `completed`/`available`
    # (CopySnapshot: while the byte model below is off).
    "copy_seconds": 2.0,
    # The byte model (ec2_copies.py), CopySnapshot only: 0 = off. > 0: a snapshot copy moves its
    # bytes (the volume, or the changes since its base) at most at this many MiB/s, and is
    # `pending` until they are moved (EBS "Time-based copies": 500 MiB/s per copy).
    "copy_throughput_mib_s": 0,
    # With the byte model: the copies in flight for one (destination account, source region,
    # destination region) share this many MiB/s equally; 0 = no cap (EBS: 2,000 MiB/s per
    # Region pair).
    "region_pair_throughput_mib_s": 0,
    # Emulated seconds per wall-clock second: multiplies both rates above (60: a minute of AWS
    # copy time passes in one second). `copy_seconds` is wall-clock time and not scaled.
    "time_scale": 1.0,
    # Bytes a snapshot changed since its volume's previous snapshot, unless seeded
    # (POST /_ferry/snapshots/changed): this share of the volume (an incremental copy's bytes).
    "changed_share": 0.05,
    # Snapshot copies in flight per destination (account, region) before ResourceLimitExceeded.
    "max_pending_snapshot_copies": 20,
    # AMI copies in flight per destination (account, region) before ResourceLimitExceeded.
    "max_pending_image_copies": 300,
    # The most items one DescribeSnapshots / DescribeImages page holds (paging.py), below the
    # request's MaxResults: AWS's largest page is 1000; a test lowers it to spread a small world
    # over several pages.
    "max_page_items": 1000,
    # Token buckets from the AWS quota table (aws-facts.md); off by default.
    "throttle": False,
    # Multiplies every bucket's size and refill rate (0.01 = one hundredth of AWS's quota).
    "throttle_scale": 1.0,
    # Overrides: {"ec2:CopySnapshot": [bucket, refill_per_second], ...}
    "quotas": {},
    # Probability (0..1) that a request is answered with the service's HTTP 500 error.
    "fault_rate": 0.0,
    # Probability (0..1) that a mutating request takes effect and its answer is lost: half of
    # those are answered with the service's HTTP 500 error, half with a dropped connection.
    "lost_response_rate": 0.0,
    # Milliseconds a new snapshot copy stays out of DescribeSnapshots (eventual consistency).
    "visibility_delay_ms": 0,
    # Seconds an AssumeRole session lasts (0: its DurationSeconds); then its calls fail ExpiredToken.
    "session_seconds": 0,
    # Access key ids whose session has ended (sessions.py): every call signed with one answers
    # ExpiredToken, as AWS does for expired temporary credentials (an exported session token).
    "expired_access_keys": [],
    # "service:Action" names (e.g. "ec2:CopySnapshot") answered with the service's access
    # denied error before they take effect (traffic.py), as for an IAM policy without them.
    "deny": [],
    # Judge calls signed with IAM user or AssumeRole session keys against their IAM policies, on
    # the resources the request names (iam_enforce.py); static keys stay their account's root.
    "iam_enforce": False,
    # Milliseconds added before every AWS request is handled.
    "latency_ms": 0,
    # Seed for the fault injector's random numbers (null: not seeded).
    "seed": None,
    # Enforce the source key's policy/grants when another account copies an encrypted resource.
    "enforce_kms": True,
    # How a copy of another account's encrypted data without key access fails: "async" (the copy
    # is created in state error/failed with the KMS message, as AWS documents) or "sync" (the
    # CopySnapshot/CopyImage call itself answers InvalidRequest).
    "kms_denied": "async",
    # {"bucket": ..., "keys": [...]}: the first CopyObject from that bucket deletes every version
    # of those keys first (a concurrent deleter between a listing and a copy; s3_races.py).
    "delete_before_copy": None,
    # Encrypted cross-region CopySnapshot must carry a well-formed PresignedUrl, else the copy
    # ends in `error` (EC2 API reference, CopySnapshot).
    "require_presigned_url": True,
    # The next N snapshot copies end in `error` (StateMessage says so): a copy AWS fails.
    "fail_next_copies": 0,
    # A copy of another account's encrypted snapshot leaves a grant, issued by the copier, on
    # the source key (ec2_copies.ebs_grant).
    "ebs_grants": True,
    # New versions in a bucket with a replication configuration are replicated
    # (s3_live_replication.py).
    "live_replication": True,
    # Milliseconds a new version stays PENDING before live replication replicates it.
    "replication_delay_ms": 300,
    # Tasks per second an S3 Batch Operations job runs (s3_jobs.py), paced by the wall clock.
    "batch_task_rate": 2000,
    # Seconds a CopyDBSnapshot/CopyDBClusterSnapshot target stays `copying` (rds_snapshots.py).
    "rds_copy_seconds": 2.0,
    # DB snapshot copies in flight per destination (account, region) before SnapshotQuotaExceeded.
    "max_pending_db_snapshot_copies": 20,
    # DB cluster snapshot copies in flight per destination (account, region), likewise.
    "max_pending_db_cluster_snapshot_copies": 5,
    # Manual DB snapshots per (account, region) before SnapshotQuotaExceeded.
    "max_manual_db_snapshots": 100,
    # Manual DB cluster snapshots per (account, region) before SnapshotQuotaExceeded.
    "max_manual_db_cluster_snapshots": 100,
}

lock = threading.RLock()
config: dict[str, Any] = copy.deepcopy(DEFAULTS)
rng = random.Random()

# (account, region, service, action) -> {"count", "throttled", "faults"}
requests: dict[tuple[str, str, str, str], dict[str, int]] = {}
# (account, region) -> {"snapshots", "images", "image_snapshots", ...}
copies: dict[tuple[str, str], dict[str, int]] = {}
# one entry per CopySnapshot that made a copy, in submission order (count_snapshot_copy)
snapshot_copies: list[dict[str, Any]] = []
# (account, region, client_token) -> (parameters, image_id)
image_tokens: dict[tuple[str, str, str], tuple[Any, str]] = {}
# listeners called on reset (token buckets etc.)
_reset_hooks: list[Any] = []


def on_reset(hook: Any) -> None:
    _reset_hooks.append(hook)


def initial_config() -> dict[str, Any]:
    """Defaults, then FERRY_EMULATOR_CONFIG (a JSON file), then FERRY_EMULATOR_CONFIG_JSON."""
    cfg = copy.deepcopy(DEFAULTS)
    path = os.environ.get("FERRY_EMULATOR_CONFIG")
    if path:
        with open(path, encoding="utf-8") as f:
            cfg.update(validate(json.load(f)))
    inline = os.environ.get("FERRY_EMULATOR_CONFIG_JSON")
    if inline:
        cfg.update(validate(json.loads(inline)))
    return cfg


_STARTUP: dict[str, Any] = {}


def _number(key: str, value: Any, low: float = 0.0, high: float | None = None) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= low
    if not ok or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{key} must be a number {bounds}, got {value!r}")


def validate(update: Any) -> dict[str, Any]:
    """Refuses unknown keys and values of the wrong kind (ValueError, answered with HTTP 400)."""
    if not isinstance(update, dict):
        raise ValueError("configuration must be a JSON object")
    unknown = sorted(set(update) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown configuration keys: {', '.join(unknown)}")
    for key, value in update.items():
        if key in (
            "copy_seconds",
            "throttle_scale",
            "latency_ms",
            "visibility_delay_ms",
            "session_seconds",
            "replication_delay_ms",
            "rds_copy_seconds",
            "copy_throughput_mib_s",
            "region_pair_throughput_mib_s",
        ):
            _number(key, value)
        elif key in ("batch_task_rate", "time_scale"):
            _number(key, value)
            if value <= 0:
                raise ValueError(f"{key} must be a number > 0, got {value!r}")
        elif key == "changed_share":
            _number(key, value, 0, 1)
        elif key == "fail_next_copies":
            _number(key, value)
        elif key in (
            "max_pending_snapshot_copies",
            "max_pending_image_copies",
            "max_pending_db_snapshot_copies",
            "max_pending_db_cluster_snapshot_copies",
            "max_manual_db_snapshots",
            "max_manual_db_cluster_snapshots",
            "max_page_items",
        ):
            _number(key, value, 1)
        elif key in ("fault_rate", "lost_response_rate"):
            _number(key, value, 0, 1)
        elif key in (
            "throttle",
            "enforce_kms",
            "require_presigned_url",
            "ebs_grants",
            "live_replication",
            "iam_enforce",
        ) and not isinstance(
            value, bool
        ):
            raise ValueError(f"{key} must be true or false, got {value!r}")
        elif key in ("expired_access_keys", "deny") and not (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            raise ValueError(f"{key} must be a list of strings, got {value!r}")
        elif key == "deny" and not all(v.count(":") == 1 for v in value):
            raise ValueError(f'deny names "service:Action", got {value!r}')
        elif key == "kms_denied" and value not in ("async", "sync"):
            raise ValueError(f'kms_denied must be "async" or "sync", got {value!r}')
        elif key == "seed" and value is not None and not isinstance(value, int):
            raise ValueError(f"seed must be an integer or null, got {value!r}")
        elif key == "delete_before_copy" and value is not None:
            ok = isinstance(value, dict) and isinstance(value.get("bucket"), str)
            if not ok or not all(isinstance(k, str) for k in value.get("keys", [None])):
                raise ValueError('delete_before_copy must be {"bucket": str, "keys": [str, ...]}')
        elif key == "quotas":
            if not isinstance(value, dict):
                raise ValueError('quotas must be an object {"service:bucket": [size, refill]}')
            for name, q in value.items():
                if not (isinstance(q, list) and len(q) == 2):
                    raise ValueError(f"quotas[{name!r}] must be [size, refill_per_second]")
                _number(f"quotas[{name!r}] size", q[0])
                _number(f"quotas[{name!r}] refill", q[1])
    return update


def load_startup_config() -> None:
    global _STARTUP
    _STARTUP = initial_config()
    with lock:
        config.clear()
        config.update(copy.deepcopy(_STARTUP))
        _seed()


def _seed() -> None:
    seed = config.get("seed")
    if seed is not None:
        rng.seed(seed)


def configure(update: dict[str, Any]) -> dict[str, Any]:
    update = validate(update)
    with lock:
        config.update(update)
        if "seed" in update:
            _seed()
        for hook in _reset_hooks:
            hook(config_only=True)
        return copy.deepcopy(config)


def get(key: str) -> Any:
    with lock:
        return config[key]


def reset(keep_config: bool = False) -> None:
    """Forget counters, tokens and buckets; restore the start-up configuration."""
    with lock:
        requests.clear()
        copies.clear()
        snapshot_copies.clear()
        image_tokens.clear()
        if not keep_config:
            config.clear()
            config.update(copy.deepcopy(_STARTUP or DEFAULTS))
            _seed()
        for hook in _reset_hooks:
            hook(config_only=False)


def count_copy(account: str, region: str, kind: str, n: int = 1) -> None:
    with lock:
        entry = copies.setdefault(
            (account, region),
            {
                "snapshots": 0,
                "images": 0,
                "image_snapshots": 0,
                "db_snapshots": 0,
                "db_cluster_snapshots": 0,
                "time_based_snapshots": 0,
                "full_snapshots": 0,
                "incremental_snapshots": 0,
                "bytes_full": 0,
                "bytes_incremental": 0,
            },
        )
        entry[kind] += n


def count_snapshot_copy(entry: dict[str, Any]) -> None:
    """A CopySnapshot that made a copy: {"account", "region", "snapshot", "source",
    "source_region", "volume", "key", "incremental", "bytes", "base"}."""
    kind = "incremental" if entry["incremental"] else "full"
    with lock:
        snapshot_copies.append(dict(entry))
        count_copy(entry["account"], entry["region"], f"{kind}_snapshots")
        count_copy(entry["account"], entry["region"], f"bytes_{kind}", int(entry["bytes"]))
