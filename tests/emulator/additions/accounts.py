"""Static test credentials that name their account.

moto maps an access key id to an account only if the key was created by moto (IAM CreateAccessKey,
STS AssumeRole/GetSessionToken...); any other key falls back to the default account 123456789012.
This addition adds one rule after moto's own lookup: an access key id of the form

    AKIA<12-digit account id><4 characters [A-Z0-9]>     e.g. AKIA111111111111TEST

belongs to that account. Keys moto issued keep their mapping (STS credentials from AssumeRole
map to the role's account).
"""

import re
from typing import Any

ACCESS_KEY = re.compile(r"^AKIA(\d{12})[A-Z0-9]{4}$")


def account_for_access_key(access_key: str) -> str | None:
    m = ACCESS_KEY.match(access_key or "")
    return m.group(1) if m else None


def install() -> None:
    import moto.iam.models as iam_models

    original = iam_models.get_account_id_from

    def get_account_id_from(access_key: str) -> Any:
        account = original(access_key)
        if account == iam_models.DEFAULT_ACCOUNT_ID:
            named = account_for_access_key(access_key)
            if named:
                return named
        return account

    iam_models.get_account_id_from = get_account_id_from
