"""The role a plan's `role_arn` names, for demos and benchmarks on the emulator.

The emulator refuses AssumeRole unless the role exists and its trust policy allows the caller
(and the external id, when the trust policy asks for one), as AWS does (additions/sessions.py).
"""

import json
from typing import Any


def trust_policy(trusted_account: str, external_id: str | None = None) -> dict[str, Any]:
    """Every principal of `trusted_account` may assume the role (with `external_id`, if given)."""
    statement: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{trusted_account}:root"},
        "Action": "sts:AssumeRole",
    }
    if external_id is not None:
        statement["Condition"] = {"StringEquals": {"sts:ExternalId": external_id}}
    return {"Version": "2012-10-17", "Statement": [statement]}


def create_assumable_role(
    iam: Any, name: str, trusted_account: str, external_id: str | None = None, **extra: Any
) -> dict[str, Any]:
    """Creates role `name` with `iam` (a boto3 client in the role's account); its `Role`."""
    return iam.create_role(
        RoleName=name,
        AssumeRolePolicyDocument=json.dumps(trust_policy(trusted_account, external_id)),
        **extra,
    )["Role"]
