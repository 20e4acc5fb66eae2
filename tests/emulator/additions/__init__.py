"""ferry's additions to moto: each module patches one behaviour moto lacks.

`install()` applies them all, in-process, before the moto server starts.
See tests/emulator/README.md for the AWS behaviour each one follows.
"""


def install() -> None:
    from . import accounts, ami_devices, ec2_copies, ec2_shared

    accounts.install()
    ami_devices.install()
    ec2_shared.install()
    ec2_copies.install()
