"""Just enough KMS key policy and grant evaluation for cross-account copies of encrypted data.

AWS (EBS user guide, "Share a KMS key" / share-kms-key; KMS developer guide, "Allowing users in
other accounts to use a KMS key"): to copy an encrypted snapshot or AMI shared by account A,
account B needs kms:DescribeKey, kms:CreateGrant, kms:GenerateDataKey*, kms:ReEncrypt* and
kms:Decrypt on A's customer managed key, allowed by A's key policy (principal B's root or a
principal in B) or by grants to B. AWS managed keys (alias/aws/ebs) never allow another account.

The five permissions stand for nine operations (REQUIRED_ACTIONS): `kms:GenerateDataKey*` is
GenerateDataKey, GenerateDataKeyWithoutPlaintext, GenerateDataKeyPair and
GenerateDataKeyPairWithoutPlaintext (KMS developer guide, "Default key policy", key-policy-default:
"The console uses the * wildcard character to represent permission for the following API
operations"), and `kms:ReEncrypt*` is ReEncryptFrom and ReEncryptTo (KMS developer guide, "Grants
in AWS KMS", grants.html#terms-grant-operations: "for the ReEncrypt operation, you can specify
ReEncryptFrom, ReEncryptTo, or both ReEncrypt*"). A grant carries operations by those names, and
all nine are grant operations there. Each operation must be allowed by a key policy statement or
by a grant whose grantee is in B (permissions add up across statements and grants, as KMS
authorizes each operation on its own); one missing fails the copy.

Evaluated: `Allow` statements, Principal `AWS` (string or list, "*", account id, any ARN in the
account), Action (string or list, case-insensitive, `*` wildcards); grants' grantee and
operations. Not evaluated: Deny, Condition, NotAction/NotPrincipal, grant constraints, B's own
IAM policies. Whether EBS calls every one of the nine is not documented: the emulator asks for
what AWS documents as required.
"""

import fnmatch
import json
import re
from typing import Any

# The permissions of aws-facts.md as the operations they stand for (above); wildcards in
# policies match them, grants name them.
REQUIRED_ACTIONS = [
    "kms:DescribeKey",
    "kms:CreateGrant",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:GenerateDataKeyPair",
    "kms:GenerateDataKeyPairWithoutPlaintext",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:Decrypt",
]

_ACCOUNT_IN_ARN = re.compile(r"^arn:[^:]+:(?:iam|sts)::(\d{12}):")


def kms_backend(account: str, region: str) -> Any:
    from moto.kms import kms_backends

    return kms_backends[account][region]


def find_key(account: str, region: str, key_ref: str | None) -> Any:
    """The moto Key for any key reference (id, ARN, alias, alias ARN), or None."""
    if not key_ref:
        return None
    if key_ref.startswith("arn:"):
        parts = key_ref.split(":")
        if len(parts) > 5:
            region, account = parts[3], parts[4]
    try:
        return kms_backend(account, region).describe_key(key_ref)
    except Exception:
        return None


def is_aws_managed(key: Any) -> bool:
    if key is None:
        return False
    if getattr(key, "key_manager", "") == "AWS":
        return True
    return any(str(name).startswith("alias/aws/") for name in getattr(key, "aliases", {}))


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def principal_in_account(principal: Any, account: str) -> bool:
    """Whether a policy principal or grantee names `account` (root, any ARN in it, or "*")."""
    return _principal_matches(principal, account)


def _principal_matches(principal: Any, account: str) -> bool:
    if principal == "*":
        return True
    if isinstance(principal, dict):
        candidates = _as_list(principal.get("AWS"))
    else:
        candidates = _as_list(principal)
    for p in candidates:
        if p == "*" or p == account:
            return True
        m = _ACCOUNT_IN_ARN.match(str(p))
        if m and m.group(1) == account:
            return True
    return False


def _action_matches(patterns: list[Any], action: str) -> bool:
    return any(fnmatch.fnmatchcase(action.lower(), str(p).lower()) for p in patterns)


def _policy_allowed(policy: str | dict[str, Any], account: str, actions: list[str]) -> set[str]:
    """The subset of `actions` that some Allow statement for `account` covers."""
    try:
        doc = json.loads(policy) if isinstance(policy, str) else policy
    except ValueError:
        return set()
    statements = _as_list(doc.get("Statement") if isinstance(doc, dict) else None)
    allowed: set[str] = set()
    for st in statements:
        if not isinstance(st, dict) or st.get("Effect") != "Allow":
            continue
        if not _principal_matches(st.get("Principal"), account):
            continue
        patterns = _as_list(st.get("Action"))
        allowed.update(a for a in actions if _action_matches(patterns, a))
    return allowed


def policy_allows(policy: str | dict[str, Any], account: str, actions: list[str]) -> bool:
    allowed = _policy_allowed(policy, account, actions)
    return all(a in allowed for a in actions)


def granted_operations(key: Any, account: str) -> set[str]:
    """Every operation (as `kms:Op`) the grants on `key` give principals of `account`."""
    ops: set[str] = set()
    for grant in list(getattr(key, "grants", {}).values()):
        if _principal_matches(grant.grantee_principal, account):
            ops.update(f"kms:{op}" for op in grant.operations or [])
    return ops


def grant_allows(key: Any, account: str) -> bool:
    """Whether grants alone give `account` every operation a copy needs."""
    ops = granted_operations(key, account)
    return all(a in ops for a in REQUIRED_ACTIONS)


def missing_operations(key: Any, account: str) -> list[str]:
    """The operations a copy needs that neither the key policy nor a grant gives `account`."""
    allowed = _policy_allowed(key.policy, account, REQUIRED_ACTIONS) | granted_operations(
        key, account
    )
    return [a for a in REQUIRED_ACTIONS if a not in allowed]


def account_may_use(key: Any, account: str) -> bool:
    """Whether `account` may use `key` to copy data encrypted under it."""
    if key is None:
        return False
    if key.account_id == account:
        return True
    if is_aws_managed(key):
        return False
    return not missing_operations(key, account)
