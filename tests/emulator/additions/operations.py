"""Which requests change something: judged over AWS's service models, not from ferry's list.

The counters' `mutating` flag (and the lost-answer fault, which only hits mutating calls) must not
be ferry's own table (`src/aws/audit.rs`, a list of write verbs): the audit test compares ferry's
audit log with these counters, and a shared list would hide an operation both forget. So the
emulator judges every operation of the AWS service models ferry's services are generated from,
as botocore ships them (the AWS SDK for Python, installed with moto; `botocore/data/<service>/
<version>/service-2.json`): an operation is mutating unless

- its name starts with a read verb (`Describe`, `Get`, `List`, `Head`, `Lookup`, `Search`,
  `Select`, `Check`, `Validate`, `Estimate`, `Simulate`, `Decode`, `Download`, `Preview`, `Test`),
  or
- it uses a resource without changing one: KMS's cryptographic operations (they return data made
  with a key; KMS developer guide, "AWS KMS cryptographic operations") and STS's sessions
  (AssumeRole and its kin return temporary credentials; STS API reference).

Everything else in the models is mutating, whatever its verb: ec2 `LockSnapshot`,
`ReleaseAddress`, `RebootInstances`, rds `PromoteReadReplica`, `FailoverDBCluster`, s3
`RenameObject`, …. A name the models do not have (an S3 request the emulator named itself,
e.g. `PostObject`) is judged the same way. `GET /_ferry/operations[?service=ec2]` lists every
operation of the models with its verdict: the emulator test holds ferry's audit to it.
"""

import functools
from typing import Any

READ_VERBS = (
    "Describe", "Get", "List", "Head", "Lookup", "Search", "Select", "Check", "Validate",
    "Estimate", "Simulate", "Decode", "Download", "Preview", "Test",
)  # fmt: skip

# Operations that use a resource and change none (see the docstring).
NO_CHANGE = {
    "kms": {
        "Decrypt", "Encrypt", "ReEncrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext",
        "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext", "GenerateMac", "VerifyMac",
        "GenerateRandom", "Sign", "Verify", "DeriveSharedSecret", "Encapsulate", "Decapsulate",
    },
    "sts": {"AssumeRole", "AssumeRoleWithSAML", "AssumeRoleWithWebIdentity", "AssumeRoot"},
}  # fmt: skip

# The models behind a signing name: S3 Control's requests are signed for `s3` too.
MODELS = {"s3": ("s3", "s3control"), "s3control": ("s3control", "s3")}


@functools.cache
def operations(service: str) -> frozenset[str]:
    """Every operation of `service`'s models (empty when botocore has no such service)."""
    from botocore.exceptions import UnknownServiceError
    from botocore.loaders import Loader

    loader = Loader()
    names: set[str] = set()
    for model in MODELS.get(service, (service,)):
        try:
            doc: dict[str, Any] = loader.load_service_model(model, "service-2")
        except UnknownServiceError:
            continue
        names.update(doc.get("operations", {}))
    return frozenset(names)


@functools.cache
def is_mutating(service: str, action: str) -> bool:
    if action.startswith(READ_VERBS):
        return False
    if action in NO_CHANGE.get(service, ()):
        return False
    # In the models or not, an operation without a read verb changes something.
    return True

