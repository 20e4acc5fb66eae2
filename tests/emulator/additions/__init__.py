"""ferry's additions to moto: each module patches one behaviour moto lacks.

`install()` applies them all, in-process, before the moto server starts.
See tests/emulator/README.md for the AWS behaviour each one follows.
"""


def install() -> None:
    from . import (
        accounts,
        ami_devices,
        ebs_default_encryption,
        ec2_copies,
        ec2_shared,
        iam_enforce,
        kms_cross_account,
        paging,
        rds_snapshots,
        s3_jobs,
        s3_live_replication,
        s3_replication,
        sessions,
        visibility,
    )

    accounts.install()
    ami_devices.install()
    ebs_default_encryption.install()
    ec2_shared.install()
    ec2_copies.install()
    # after ec2_shared: pages are cut from the answer it computes
    paging.install()
    kms_cross_account.install()
    rds_snapshots.install()
    s3_replication.install()
    s3_live_replication.install()
    s3_jobs.install()
    sessions.install()
    iam_enforce.install()
    visibility.install()
