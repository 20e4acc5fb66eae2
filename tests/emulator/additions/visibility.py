"""`visibility_delay_ms` for shares, grants and key policies: reads show a change only later.

AWS: the EC2 API is eventually consistent ("Eventual consistency in the Amazon EC2 API": the
result of a call that modifies a resource may not be seen at once by calls that describe it);
KMS: "AWS KMS is eventually consistent ... a change to a grant or a key policy may not be
visible for a while" (KMS developer guide, "Eventual consistency" under grants and key
policies). The change takes effect at once (a copy the share or grant allows is allowed); only
what the owner reads back lags:
- a snapshot or AMI share with an account, added or removed, shows in the owner's
  DescribeSnapshots `RestorableByUserIds` / DescribeImages `ExecutableUsers` only after the
  delay (until then the owner sees it as it was);
- a new grant is missing from ListGrants, and a revoked or retired one still listed, for the
  delay;
- GetKeyPolicy answers the policy as it was before a PutKeyPolicy for the delay.
A second change inside the delay keeps the oldest state visible until the delay after it.
"""

import copy
import json
import time
from typing import Any

from . import state

# (kind, ...) -> (when it changed, what reads showed before)
_changes: dict[tuple[Any, ...], tuple[float, Any]] = {}


def _delay() -> float:
    return float(state.get("visibility_delay_ms")) / 1000.0


def record(key: tuple[Any, ...], before: Any) -> None:
    """`key` is about to change from `before` (its actual state)."""
    if _delay() <= 0:
        return
    with state.lock:
        shown = seen(key, before)
        _changes[key] = (time.time(), shown)


def seen(key: tuple[Any, ...], actual: Any) -> Any:
    """What a read shows of `key` whose actual state is `actual`."""
    entry = _changes.get(key)
    if entry is None or time.time() - entry[0] >= _delay():
        return actual
    return entry[1]


def _recent(kind: str) -> list[tuple[tuple[Any, ...], Any]]:
    now, delay = time.time(), _delay()
    with state.lock:
        return [(k, v) for k, (t, v) in _changes.items() if k[0] == kind and now - t < delay]


def _clear(config_only: bool) -> None:
    if not config_only:
        _changes.clear()


# --- EC2 shares -----------------------------------------------------------------------------


def user_ids(resp: Any, attribute: str) -> list[str]:
    """Account ids a ModifySnapshotAttribute / ModifyImageAttribute request adds or removes."""
    ids = list(resp._get_param("UserIds", []) or [])
    mods = resp._get_param(attribute, {}) or {}
    for op in ("Add", "Remove"):
        for p in mods.get(op, []) or []:
            if isinstance(p, dict) and p.get("UserId"):
                ids.append(p["UserId"])
    return ids


# --- KMS ------------------------------------------------------------------------------------


def install() -> None:
    from moto.kms.responses import KmsResponse

    state.on_reset(_clear)

    original_create = KmsResponse.create_grant

    def create_grant(self: KmsResponse) -> str:
        out = original_create(self)
        grant_id = json.loads(out).get("GrantId")
        if grant_id:
            record(("grant", grant_id), None)
            try:
                key = self.kms_backend.describe_key(self._get_param("KeyId"))
                grant = key.grants[grant_id]
                grant._ferry_issuing_account = self.current_account
                grant._ferry_created = time.time()
            except Exception:
                pass
        return out

    def _grant(self: KmsResponse) -> Any:
        try:
            key = self.kms_backend.describe_key(self._get_param("KeyId"))
        except Exception:
            return None
        return key.grants.get(self._get_param("GrantId"))

    original_revoke = KmsResponse.revoke_grant

    def revoke_grant(self: KmsResponse) -> str:
        grant = _grant(self)
        out = original_revoke(self)
        if grant is not None:
            record(("grant", grant.id), copy.copy(grant))
        return out

    original_retire = KmsResponse.retire_grant

    def retire_grant(self: KmsResponse) -> str:
        grant = _grant(self) if self._get_param("GrantId") else None
        out = original_retire(self)
        if grant is not None:
            record(("grant", grant.id), copy.copy(grant))
        return out

    def list_grants(self: KmsResponse) -> str:
        key_id = self._get_param("KeyId")
        grant_id = self._get_param("GrantId")
        grants = self.kms_backend.list_grants(key_id=key_id, grant_id=grant_id)
        shown = [g for g in grants if seen(("grant", g.id), g) is not None]
        key = self.kms_backend.describe_key(key_id)
        listed = {g.id for g in grants}
        for (_, gid), gone in _recent("grant"):
            if gone is not None and gid not in listed and gone.key_id in (key.id, key.arn):
                if not grant_id or grant_id == gid:
                    shown.append(gone)

        def entry(g: Any) -> dict[str, Any]:
            # AWS's GrantListEntry names the account that issued the grant, and when; moto's does not.
            issuer = getattr(g, "_ferry_issuing_account", None) or key.account_id
            out = {**g.to_json(), "IssuingAccount": f"arn:aws:iam::{issuer}:root"}
            created = getattr(g, "_ferry_created", None)
            if created is not None:
                out["CreationDate"] = created
            return out

        return json.dumps(
            {"Grants": [entry(g) for g in shown], "GrantCount": len(shown), "Truncated": False}
        )

    original_put_policy = KmsResponse.put_key_policy

    def put_key_policy(self: KmsResponse) -> str:
        try:
            key = self.kms_backend.describe_key(self._get_param("KeyId"))
            before = key.policy
        except Exception:
            key = None
        out = original_put_policy(self)
        if key is not None:
            record(("policy", key.arn), before)
        return out

    original_get_policy = KmsResponse.get_key_policy

    def get_key_policy(self: KmsResponse) -> str:
        out = original_get_policy(self)
        try:
            key = self.kms_backend.describe_key(self._get_param("KeyId"))
        except Exception:
            return out
        doc = json.loads(out)
        doc["Policy"] = seen(("policy", key.arn), doc.get("Policy")) or "{}"
        return json.dumps(doc)

    KmsResponse.create_grant = create_grant  # type: ignore[method-assign]
    KmsResponse.revoke_grant = revoke_grant  # type: ignore[method-assign]
    KmsResponse.retire_grant = retire_grant  # type: ignore[method-assign]
    KmsResponse.list_grants = list_grants  # type: ignore[method-assign]
    KmsResponse.put_key_policy = put_key_policy  # type: ignore[method-assign]
    KmsResponse.get_key_policy = get_key_policy  # type: ignore[method-assign]
