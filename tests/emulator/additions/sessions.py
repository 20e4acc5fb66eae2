"""AssumeRole as AWS judges it, and assumed-role sessions that end, as AWS's do.

**Who may assume a role** (IAM user guide "Granting a user permissions to switch roles",
"IAM JSON policy elements: Principal" (principal-roles), "How to use an external ID when
granting access to your AWS resources to a third party" (id_roles_create_for-user_externalid);
STS API reference AssumeRole): the role must exist in the account of its ARN, and its trust policy
must allow the caller `sts:AssumeRole`. moto assumed any ARN, existing or not, and ignored the
trust policy. Here a trust statement allows the caller when its `Action` (string or list, `*`
wildcards, case-insensitive) covers `sts:AssumeRole` and its `Principal` is `"*"`, `{"AWS": "*"}`
or names (string or list) the caller's account (the 12-digit id or `arn:aws:iam::ID:root`: any
principal of that account), the caller's IAM user ARN, the role whose session is calling
(`arn:aws:iam::ID:role/NAME`) or that session's own ARN. A `Condition` of `StringEquals` (or
`StringLike`, with wildcards) on `sts:ExternalId` must match the request's `ExternalId` (none
sent: no match). A matching `Deny` statement refuses. Otherwise the answer is AWS's:
`AccessDenied` (HTTP 403) "User: <caller ARN> is not authorized to perform: sts:AssumeRole on
resource: <role ARN>" (the same for a role that does not exist, as AWS does not tell them apart).
The caller's ARN: an IAM user's ARN, an assumed role's session ARN, else the account root
(`arn:aws:iam::ID:root`; the static keys of accounts.py). Not evaluated: other condition keys and
operators, NotPrincipal/NotAction, the caller's own IAM policies (sts:AssumeRole in them).

**How long a session lasts**: `DurationSeconds` (default 3600) must be at least 900 and at most
the role's `MaxSessionDuration` (default 3600), else `ValidationError` as AWS words it. The
credentials' `Expiration` is now + DurationSeconds; once it has passed, every call signed with
them is refused with `ExpiredToken` ("The security token included in the request is expired",
HTTP 400), and the caller must assume the role again (IAM user guide "Using temporary
credentials"). With `session_seconds` > 0 (tests; off by default) a session lasts that long
instead, whatever was asked. `expired_access_keys` names static key ids whose session has ended
already (an exported session token that expired): their calls fail the same way.
"""

import fnmatch
import json
import threading
import time
import uuid
from typing import Any
from urllib.parse import unquote

from moto.core.exceptions import _RESTError

from . import state

_lock = threading.Lock()
# access key id -> monotonic time its session ends
_ends: dict[str, float] = {}

# STS API reference, AssumeRole: DurationSeconds "Minimum value of 900"; the maximum is the
# role's MaxSessionDuration, which is 3600 unless the role says otherwise.
MIN_DURATION = 900
DEFAULT_DURATION = 3600
DEFAULT_MAX_SESSION = 3600


class AccessDenied(_RESTError):
    # moto's AccessDeniedError wraps the error in <Errors>, which the query protocol does not
    code = 403

    def __init__(self, message: str) -> None:
        super().__init__("AccessDenied", message)
        self.description = (
            '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
            f"<Type>Sender</Type><Code>AccessDenied</Code><Message>{message}</Message></Error>"
            f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
        )


class ValidationError(_RESTError):
    code = 400

    def __init__(self, message: str) -> None:
        super().__init__("ValidationError", message)
        self.description = (
            '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
            f"<Type>Sender</Type><Code>ValidationError</Code><Message>{message}</Message></Error>"
            f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
        )


def _forget(config_only: bool) -> None:
    if not config_only:
        with _lock:
            _ends.clear()


state.on_reset(_forget)


def expired(access_key: str) -> bool:
    if access_key in state.get("expired_access_keys"):
        return True
    with _lock:
        end = _ends.get(access_key)
    return end is not None and time.monotonic() >= end


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


class Caller:
    """Who signed the request: its account, its ARN, and the ARNs a trust policy may name."""

    def __init__(self, account: str, arn: str, names: set[str]) -> None:
        self.account = account
        self.arn = arn
        self.names = names


def caller_of(account: str, access_key: str, partition: str = "aws") -> Caller:
    from moto.iam.models import iam_backends
    from moto.sts.models import sts_backends

    root = f"arn:{partition}:iam::{account}:root"
    assumed = sts_backends[account][partition].get_assumed_role_from_access_key(access_key)
    if assumed is not None:
        return Caller(account, assumed.arn, {assumed.arn, assumed.role_arn})
    user = iam_backends[account][partition].get_user_from_access_key_id(access_key)
    if user is not None:
        return Caller(account, user.arn, {user.arn})
    return Caller(account, root, {root})


def _principal_allows(principal: Any, caller: Caller) -> bool:
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        return False
    for p in _as_list(principal.get("AWS")):
        p = str(p)
        if p == "*" or p == caller.account or p.endswith(f":iam::{caller.account}:root"):
            return True
        if p in caller.names:
            return True
    return False


def _condition_holds(condition: Any, external_id: str | None) -> bool:
    """sts:ExternalId under StringEquals / StringLike; other keys are not evaluated."""
    if not isinstance(condition, dict):
        return True
    for operator, tests in condition.items():
        if not isinstance(tests, dict):
            continue
        for key, wanted in tests.items():
            if key.lower() != "sts:externalid":
                continue
            values = [str(v) for v in _as_list(wanted)]
            if external_id is None:
                return False
            if operator == "StringEquals" and external_id not in values:
                return False
            if operator == "StringLike" and not any(
                fnmatch.fnmatchcase(external_id, v) for v in values
            ):
                return False
    return True


def _trust_document(role: Any) -> dict[str, Any]:
    text = role.assume_role_policy_document or ""
    for candidate in (text, unquote(text)):
        try:
            doc = json.loads(candidate)
        except (TypeError, ValueError):
            continue
        if isinstance(doc, dict):
            return doc
    return {}


def trust_allows(role: Any, caller: Caller, external_id: str | None) -> bool:
    allowed = False
    for st in _as_list(_trust_document(role).get("Statement")):
        if not isinstance(st, dict):
            continue
        actions = [str(a).lower() for a in _as_list(st.get("Action"))]
        if not any(fnmatch.fnmatchcase("sts:assumerole", a) for a in actions):
            continue
        if not _principal_allows(st.get("Principal"), caller):
            continue
        if not _condition_holds(st.get("Condition"), external_id):
            continue
        if st.get("Effect") == "Deny":
            return False
        if st.get("Effect") == "Allow":
            allowed = True
    return allowed


def find_role(role_arn: str) -> Any:
    from moto.iam.models import iam_backends

    parts = (role_arn or "").split(":")
    if len(parts) < 6 or parts[2] != "iam" or not parts[5].startswith("role/"):
        return None
    account, partition = parts[4], parts[1]
    if account not in iam_backends:
        return None
    try:
        return iam_backends[account][partition].get_role_by_arn(role_arn)
    except Exception:
        return None


def install() -> None:
    from moto.sts.models import STSBackend
    from moto.sts.responses import TokenResponse

    original = STSBackend.assume_role

    def assume_role(self: Any, *args: Any, **kwargs: Any) -> Any:
        seconds = float(state.get("session_seconds"))
        if seconds > 0 and "duration" in kwargs:
            kwargs["duration"] = max(1, int(seconds))
        role = original(self, *args, **kwargs)
        lasts = seconds if seconds > 0 else float(kwargs.get("duration") or DEFAULT_DURATION)
        with _lock:
            _ends[role.access_key_id] = time.monotonic() + lasts
        return role

    STSBackend.assume_role = assume_role  # type: ignore[method-assign]

    original_response = TokenResponse.assume_role

    def judged_assume_role(self: Any) -> Any:
        role_arn = self._get_param("RoleArn")
        caller = caller_of(self.current_account, self.get_access_key(), self.partition)
        role = find_role(role_arn)
        if role is None or not trust_allows(role, caller, self._get_param("ExternalId")):
            raise AccessDenied(
                f"User: {caller.arn} is not authorized to perform: sts:AssumeRole on "
                f"resource: {role_arn}"
            )
        duration = self._get_int_param("DurationSeconds", DEFAULT_DURATION)
        if duration < MIN_DURATION:
            raise ValidationError(
                f"1 validation error detected: Value '{duration}' at 'durationSeconds' failed "
                f"to satisfy constraint: Member must have value greater than or equal to "
                f"{MIN_DURATION}"
            )
        most = int(role.max_session_duration or DEFAULT_MAX_SESSION)
        if duration > most:
            raise ValidationError(
                "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."
            )
        return original_response(self)

    TokenResponse.assume_role = judged_assume_role  # type: ignore[method-assign]
