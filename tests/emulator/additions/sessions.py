"""Assumed-role sessions that end, as AWS's do.

AWS (STS API reference, AssumeRole; IAM user guide "Using temporary credentials"): credentials
from AssumeRole carry an `Expiration`; once it has passed, every call signed with them is
refused with `ExpiredToken` ("The security token included in the request is expired"), and the
caller must assume the role again. moto's sessions never end. With `session_seconds` > 0 (off by
default) an AssumeRole session lasts that long: its `Expiration` says so, and calls signed with
its keys after it fail with `ExpiredToken` (HTTP 400). `expired_access_keys` names static key ids
whose session has ended already (an exported session token that expired): their calls fail the
same way.
"""

import threading
import time
from typing import Any

from . import state

_lock = threading.Lock()
# access key id -> monotonic time its session ends
_ends: dict[str, float] = {}


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


def install() -> None:
    from moto.sts.models import STSBackend

    original = STSBackend.assume_role

    def assume_role(self: Any, *args: Any, **kwargs: Any) -> Any:
        seconds = float(state.get("session_seconds"))
        if seconds > 0 and "duration" in kwargs:
            kwargs["duration"] = max(1, int(seconds))
        role = original(self, *args, **kwargs)
        if seconds > 0:
            with _lock:
                _ends[role.access_key_id] = time.monotonic() + seconds
        return role

    STSBackend.assume_role = assume_role  # type: ignore[method-assign]
