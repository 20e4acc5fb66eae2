"""KMS API calls on another account's key, by key ARN.

AWS (KMS developer guide "Allowing users in other accounts to use a KMS key"): a principal in
account B may call CreateGrant, Decrypt, DescribeKey, Encrypt, GenerateDataKey*, GenerateMac,
GetPublicKey, ListGrants, ReEncrypt*, RetireGrant, RevokeGrant, Sign, Verify, VerifyMac on A's
key, naming it by key ARN, when A's key policy (or a grant) allows B that action; otherwise
`AccessDeniedException` ("... is not authorized to perform: kms:X on resource: ... because no
resource-based policy allows the kms:X action"). Other operations (GetKeyPolicy, PutKeyPolicy,
ScheduleKeyDeletion, ...) only work in the key's own account. moto looks every key up in the
caller's account (NotFoundException). Only calls that name the key with `KeyId` are routed;
Decrypt without KeyId and ReEncrypt keep moto's behaviour.
"""

from typing import Any

from moto.core.exceptions import JsonRESTError
from moto.kms.responses import KmsResponse

from . import kms_access

CROSS_ACCOUNT_ACTIONS = {
    "CreateGrant", "Decrypt", "DescribeKey", "Encrypt", "GenerateDataKey",
    "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext",
    "GenerateDataKeyWithoutPlaintext", "GenerateMac", "GetPublicKey", "ListGrants",
    "RetireGrant", "RevokeGrant", "Sign", "Verify", "VerifyMac",
}  # fmt: skip


class AccessDeniedException(JsonRESTError):
    # moto's own AccessDeniedException sends no message
    code = 400

    def __init__(self, message: str) -> None:
        super().__init__("AccessDeniedException", message)


def _grant_allows(key: Any, account: str, action: str) -> bool:
    for grant in list(getattr(key, "grants", {}).values()):
        if kms_access.principal_in_account(grant.grantee_principal, account) and action in (
            grant.operations or []
        ):
            return True
    return False


def _backend(self: KmsResponse) -> Any:
    cached = self.__dict__.get("_ferry_kms_backend")
    if cached is not None:
        return cached
    own = kms_access.kms_backend(self.current_account, self.region)
    backend = own
    action = (self.headers.get("X-Amz-Target") or "").split(".")[-1]
    key_ref = None
    if action in CROSS_ACCOUNT_ACTIONS:
        try:
            key_ref = self._get_param("KeyId")
        except ValueError:
            key_ref = None
    if isinstance(key_ref, str) and key_ref.startswith("arn:") and ":key/" in key_ref:
        parts = key_ref.split(":")
        region, owner = parts[3], parts[4]
        if owner != self.current_account and region == self.region:
            key = kms_access.find_key(owner, region, key_ref)
            if key is not None:
                allowed = kms_access.policy_allows(
                    key.policy, self.current_account, [f"kms:{action}"]
                ) or _grant_allows(key, self.current_account, action)
                if not allowed:
                    raise AccessDeniedException(
                        f"User: arn:aws:iam::{self.current_account}:root is not authorized to "
                        f"perform: kms:{action} on resource: {key.arn} because no "
                        f"resource-based policy allows the kms:{action} action"
                    )
                backend = kms_access.kms_backend(owner, region)
    self.__dict__["_ferry_kms_backend"] = backend
    return backend


def install() -> None:
    KmsResponse.kms_backend = property(_backend)  # type: ignore[assignment]
