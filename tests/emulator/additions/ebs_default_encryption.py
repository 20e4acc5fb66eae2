"""EBS encryption by default.

AWS (EBS user guide "Amazon EBS encryption by default"): once EnableEbsEncryptionByDefault is on
for an account and region, new volumes and copies of unencrypted snapshots there are encrypted,
with the account's default EBS key: the AWS managed key alias/aws/ebs (created on first use) unless
ModifyEbsDefaultKmsKeyId chose a customer managed key. moto stores the setting and ignores it.
"""

from typing import Any

from moto.ec2.models.elastic_block_store import EBSBackend


def encrypt_by_default(backend: Any) -> bool:
    return bool(getattr(backend, "ebs_encryption_by_default", False))


def install() -> None:
    original_create_volume = EBSBackend.create_volume

    def create_volume(self: Any, *args: Any, **kwargs: Any) -> Any:
        if encrypt_by_default(self) and not kwargs.get("encrypted"):
            kwargs["encrypted"] = True
        return original_create_volume(self, *args, **kwargs)

    EBSBackend.create_volume = create_volume  # type: ignore[method-assign]
