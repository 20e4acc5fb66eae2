"""Seeds ferry's demo world into a running emulator and prints what it made as JSON.

    .venv/bin/python tests/emulator/seed_demo.py --endpoint http://127.0.0.1:PORT

Two accounts: 111111111111 "prod" (source) and 222222222222 "backup" (destination);
two regions: us-east-1 (source) and eu-west-2 (destination). In prod/us-east-1:
- a customer managed KMS key with alias alias/demo-source,
- 5 encrypted EBS snapshots under it, tagged Backup=nightly,
- an AMI "demo-app" with two encrypted volumes (root + data) under the same key,
- an S3 bucket demo-app-logs with default SSE-KMS encryption (the key) and 20 objects,
- an encrypted RDS DB instance orders-db (postgres, under the key) with one manual snapshot
  orders-2026-11-30 tagged Backup=nightly (and the automated snapshot RDS makes at creation).
In backup: an IAM role ferry-migrator that prod's root may assume.
"""

import argparse
import json
import sys
import urllib.request

import boto3
from roles import create_assumable_role

PROD, BACKUP = "111111111111", "222222222222"
SRC, DST = "us-east-1", "eu-west-2"


def client(endpoint: str, service: str, account: str, region: str):  # type: ignore[no-untyped-def]
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=f"AKIA{account}TEST",  # the emulator maps this key to `account`
        aws_secret_access_key="ferry-emulator-test-secret",
        config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard"}),
    )


def seed(endpoint: str) -> dict:
    kms = client(endpoint, "kms", PROD, SRC)
    ec2 = client(endpoint, "ec2", PROD, SRC)
    s3 = client(endpoint, "s3", PROD, SRC)
    iam = client(endpoint, "iam", BACKUP, SRC)
    rds = client(endpoint, "rds", PROD, SRC)

    key = kms.create_key(
        Description="ferry demo source key", Tags=[{"TagKey": "Demo", "TagValue": "ferry"}]
    )
    key_arn = key["KeyMetadata"]["Arn"]
    kms.create_alias(AliasName="alias/demo-source", TargetKeyId=key["KeyMetadata"]["KeyId"])

    def encrypted_snapshot(size: int, description: str, tags: dict) -> str:
        vol = ec2.create_volume(
            Size=size, AvailabilityZone=f"{SRC}a", Encrypted=True, KmsKeyId=key_arn
        )
        snap = ec2.create_snapshot(
            VolumeId=vol["VolumeId"],
            Description=description,
            TagSpecifications=[
                {
                    "ResourceType": "snapshot",
                    "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                }
            ],
        )
        return snap["SnapshotId"]

    snapshots = [
        encrypted_snapshot(
            8 * (i + 1), f"demo nightly {i + 1}", {"Backup": "nightly", "Name": f"demo-{i + 1}"}
        )
        for i in range(5)
    ]

    root = encrypted_snapshot(8, "demo-app root volume", {"Name": "demo-app-root"})
    data = encrypted_snapshot(20, "demo-app data volume", {"Name": "demo-app-data"})
    image = ec2.register_image(
        Name="demo-app",
        Description="ferry demo AMI with two encrypted volumes",
        Architecture="x86_64",
        VirtualizationType="hvm",
        RootDeviceName="/dev/xvda",
        BlockDeviceMappings=[
            {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": root, "VolumeType": "gp3"}},
            {"DeviceName": "/dev/xvdb", "Ebs": {"SnapshotId": data, "VolumeType": "gp3"}},
        ],
        TagSpecifications=[
            {"ResourceType": "image", "Tags": [{"Key": "Name", "Value": "demo-app"}]}
        ],
    )["ImageId"]

    bucket = "demo-app-logs"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {
                        "SSEAlgorithm": "aws:kms",
                        "KMSMasterKeyID": key_arn,
                    },
                    "BucketKeyEnabled": True,
                }
            ]
        },
    )
    keys = []
    for i in range(20):
        k = f"app/2026/11/{(i % 5) + 1:02d}/log-{i:03d}.txt"
        s3.put_object(Bucket=bucket, Key=k, Body=f"demo log line {i}\n".encode())
        keys.append(k)

    db = rds.create_db_instance(
        DBInstanceIdentifier="orders-db",
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        AllocatedStorage=20,
        MasterUsername="orders",
        MasterUserPassword="ferry-demo-password",
        StorageEncrypted=True,
        KmsKeyId=key_arn,
    )["DBInstance"]
    db_snapshot = rds.create_db_snapshot(
        DBInstanceIdentifier="orders-db",
        DBSnapshotIdentifier="orders-2026-11-30",
        Tags=[{"Key": "Backup", "Value": "nightly"}],
    )["DBSnapshot"]

    role = create_assumable_role(
        iam, "ferry-migrator", PROD, Description="Role ferry assumes in the backup account"
    )

    return {
        "endpoint": endpoint,
        "accounts": {"prod": PROD, "backup": BACKUP},
        "regions": {"source": SRC, "destination": DST},
        "kms_key": {"arn": key_arn, "alias": "alias/demo-source", "account": PROD, "region": SRC},
        "snapshots": [{"id": s, "tags": {"Backup": "nightly"}} for s in snapshots],
        "image": {"id": image, "name": "demo-app", "snapshots": [root, data]},
        "bucket": {"name": bucket, "region": SRC, "objects": len(keys), "sse": "aws:kms"},
        "role": {"arn": role["Arn"], "account": BACKUP, "trusts": f"arn:aws:iam::{PROD}:root"},
        "rds": {
            "instance": {
                "id": "orders-db",
                "arn": db["DBInstanceArn"],
                "engine": "postgres",
                "kms_key_id": db["KmsKeyId"],
                "region": SRC,
            },
            "snapshots": [
                {
                    "id": db_snapshot["DBSnapshotIdentifier"],
                    "arn": db_snapshot["DBSnapshotArn"],
                    "kms_key_id": db_snapshot["KmsKeyId"],
                    "tags": {"Backup": "nightly"},
                }
            ],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--endpoint", required=True, help="the emulator, e.g. http://127.0.0.1:4566"
    )
    parser.add_argument(
        "--reset",
        action="store_true",
        help="forget everything in the emulator first (POST /_ferry/reset): the seed needs a "
        "fresh emulator, its alias and bucket names are fixed",
    )
    args = parser.parse_args()
    if not args.endpoint.startswith(("http://127.0.0.1:", "http://localhost:")):
        sys.exit("seed_demo.py only talks to a local emulator (http://127.0.0.1:PORT)")
    if args.reset:
        request = urllib.request.Request(f"{args.endpoint}/_ferry/reset", method="POST")
        urllib.request.urlopen(request, timeout=30).read()
    print(json.dumps(seed(args.endpoint), indent=2))


if __name__ == "__main__":
    main()
