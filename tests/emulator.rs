//! The emulator's additions to moto, each exercised through the real Rust AWS SDK.
//!
//! Tests on the shared emulator use account ids no other test uses; tests that change the
//! emulator's configuration or read global counters start their own.

mod common;

use aws_config::retry::RetryConfig;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, ImageState, LaunchPermission,
    LaunchPermissionModifications, OperationType, ResourceType, SnapshotAttributeName,
    SnapshotState, Tag, TagSpecification,
};
use aws_sdk_kms::types::GrantOperation;
use common::emulator::{Emulator, access_key_for};
use serde_json::json;

const SRC: &str = "us-east-1";
const DST: &str = "eu-west-2";

// --- helpers ---------------------------------------------------------------------------------

async fn customer_key(emu: &Emulator, account: &str, region: &str) -> String {
    emu.kms(account, region)
        .create_key()
        .description("test key")
        .send()
        .await
        .expect("CreateKey")
        .key_metadata()
        .expect("key metadata")
        .arn()
        .expect("key arn")
        .to_string()
}

/// A snapshot of a new 8 GiB volume: encrypted under `key` (Some(None) = the default EBS key),
/// or unencrypted (None).
async fn snapshot(ec2: &aws_sdk_ec2::Client, region: &str, key: Option<Option<&str>>) -> String {
    let mut volume = ec2
        .create_volume()
        .size(8)
        .availability_zone(format!("{region}a"));
    if let Some(key) = key {
        volume = volume
            .encrypted(true)
            .set_kms_key_id(key.map(str::to_string));
    }
    let volume_id = volume
        .send()
        .await
        .expect("CreateVolume")
        .volume_id()
        .expect("volume id")
        .to_string();
    ec2.create_snapshot()
        .volume_id(volume_id)
        .send()
        .await
        .expect("CreateSnapshot")
        .snapshot_id()
        .expect("snapshot id")
        .to_string()
}

async fn register_image(ec2: &aws_sdk_ec2::Client, name: &str, snapshots: &[&str]) -> String {
    let devices = ["/dev/xvda", "/dev/xvdb", "/dev/xvdc", "/dev/xvdd"];
    let mut req = ec2
        .register_image()
        .name(name)
        .root_device_name(devices[0])
        .architecture(aws_sdk_ec2::types::ArchitectureValues::X8664)
        .virtualization_type("hvm");
    for (device, snap) in devices.iter().zip(snapshots) {
        req = req.block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name(*device)
                .ebs(EbsBlockDevice::builder().snapshot_id(*snap).build())
                .build(),
        );
    }
    req.send()
        .await
        .expect("RegisterImage")
        .image_id()
        .expect("image id")
        .to_string()
}

async fn share_snapshot(ec2: &aws_sdk_ec2::Client, snapshot: &str, with: &str) {
    ec2.modify_snapshot_attribute()
        .snapshot_id(snapshot)
        .attribute(SnapshotAttributeName::CreateVolumePermission)
        .operation_type(OperationType::Add)
        .user_ids(with)
        .send()
        .await
        .expect("ModifySnapshotAttribute");
}

async fn share_image(ec2: &aws_sdk_ec2::Client, image: &str, snapshots: &[&str], with: &str) {
    ec2.modify_image_attribute()
        .image_id(image)
        .launch_permission(
            LaunchPermissionModifications::builder()
                .add(LaunchPermission::builder().user_id(with).build())
                .build(),
        )
        .send()
        .await
        .expect("ModifyImageAttribute");
    for snap in snapshots {
        share_snapshot(ec2, snap, with).await;
    }
}

/// Adds a key policy statement that lets `account` use `key` for copies (share-kms-key).
async fn allow_account_on_key(kms: &aws_sdk_kms::Client, key: &str, statement: serde_json::Value) {
    let policy = kms
        .get_key_policy()
        .key_id(key)
        .policy_name("default")
        .send()
        .await
        .expect("GetKeyPolicy")
        .policy()
        .expect("policy")
        .to_string();
    let mut doc: serde_json::Value = serde_json::from_str(&policy).expect("policy JSON");
    doc["Statement"]
        .as_array_mut()
        .expect("statements")
        .push(statement);
    kms.put_key_policy()
        .key_id(key)
        .policy_name("default")
        .policy(doc.to_string())
        .send()
        .await
        .expect("PutKeyPolicy");
}

fn copy_statement(principal: serde_json::Value) -> serde_json::Value {
    json!({
        "Sid": "ferry-test-copy",
        "Effect": "Allow",
        "Principal": {"AWS": principal},
        "Action": ["kms:DescribeKey", "kms:CreateGrant", "kms:GenerateDataKey*",
                   "kms:ReEncrypt*", "kms:Decrypt"],
        "Resource": "*"
    })
}

fn tags(resource: ResourceType, key: &str, value: &str) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(resource)
        .tags(Tag::builder().key(key).value(value).build())
        .build()
}

fn tag_value<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

async fn describe_snapshot(ec2: &aws_sdk_ec2::Client, id: &str) -> aws_sdk_ec2::types::Snapshot {
    ec2.describe_snapshots()
        .snapshot_ids(id)
        .send()
        .await
        .expect("DescribeSnapshots")
        .snapshots()
        .first()
        .expect("one snapshot")
        .clone()
}

async fn describe_image(ec2: &aws_sdk_ec2::Client, id: &str) -> aws_sdk_ec2::types::Image {
    ec2.describe_images()
        .image_ids(id)
        .send()
        .await
        .expect("DescribeImages")
        .images()
        .first()
        .expect("one image")
        .clone()
}

fn image_snapshot_ids(image: &aws_sdk_ec2::types::Image) -> Vec<String> {
    image
        .block_device_mappings()
        .iter()
        .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(str::to_string))
        .collect()
}

fn no_retries(config: &aws_config::SdkConfig) -> aws_config::SdkConfig {
    config
        .to_builder()
        .retry_config(RetryConfig::disabled())
        .build()
}

// --- accounts ----------------------------------------------------------------------------------

#[tokio::test]
async fn static_credentials_and_assumed_roles_map_to_their_accounts() {
    let emu = Emulator::shared();
    let (prod, backup) = ("100000000001", "100000000002");
    let who = emu
        .sts(prod, SRC)
        .get_caller_identity()
        .send()
        .await
        .expect("GetCallerIdentity");
    assert_eq!(who.account(), Some(prod));

    let role_arn = emu
        .create_assumable_role(backup, "ferry-migrator", prod, None)
        .await;
    assert!(role_arn.contains(backup), "{role_arn}");

    let assumed = emu
        .sts(prod, SRC)
        .assume_role()
        .role_arn(&role_arn)
        .role_session_name("ferry")
        .send()
        .await
        .expect("AssumeRole");
    let c = assumed.credentials().expect("credentials");
    let creds = aws_sdk_sts::config::Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_string()),
        None,
        "assumed",
    );
    let config = emu.sdk_config_with(
        aws_types::sdk_config::SharedCredentialsProvider::new(creds),
        DST,
    );
    let who = aws_sdk_sts::Client::new(&config)
        .get_caller_identity()
        .send()
        .await
        .expect("GetCallerIdentity as the role");
    assert_eq!(who.account(), Some(backup));
    // what the role creates belongs to the role's account
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let snap = snapshot(&ec2, DST, None).await;
    let owned = emu
        .ec2(backup, DST)
        .describe_snapshots()
        .snapshot_ids(&snap)
        .send()
        .await
        .expect("the role's snapshot is in the backup account");
    assert_eq!(owned.snapshots()[0].owner_id(), Some(backup));
    assert_eq!(access_key_for(prod), "AKIA100000000001TEST");

    // a child process configured by environment (as the ferry CLI will be) lands in the account
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(root.join(".venv/bin/python"))
        .args([
            "-c",
            "import boto3; print(boto3.client('sts').get_caller_identity()['Account'])",
        ])
        .env_remove("AWS_PROFILE")
        .envs(emu.env(backup, DST))
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), backup);
}

// --- IAM enforced (additions/iam_enforce.py) ----------------------------------------------------

#[tokio::test]
async fn iam_enforcement_judges_user_keys_on_the_resource_arns_the_request_names() {
    let emu = Emulator::start_with(json!({ "iam_enforce": true }));
    let acct = "100000000031";
    let kms = emu.kms(acct, SRC);
    let allowed = customer_key(&emu, acct, SRC).await;
    let other = customer_key(&emu, acct, SRC).await;
    let ec2 = emu.ec2(acct, SRC);
    let tagged = snapshot(&ec2, SRC, None).await;
    ec2.create_tags()
        .resources(&tagged)
        .tags(Tag::builder().key("ferry:plan").value("p").build())
        .send()
        .await
        .unwrap();
    let untagged = snapshot(&ec2, SRC, None).await;
    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [
            { "Effect": "Allow", "Action": "kms:DescribeKey", "Resource": allowed },
            { "Effect": "Allow", "Action": ["ec2:CopySnapshot", "ec2:CreateTags"],
              "Resource": format!("arn:aws:ec2:{DST}::snapshot/*") },
            // CopySnapshot is judged on the source snapshot too.
            { "Effect": "Allow", "Action": "ec2:CopySnapshot",
              "Resource": format!("arn:aws:ec2:{SRC}::snapshot/{untagged}") },
            { "Effect": "Allow", "Action": "ec2:DeleteSnapshot",
              "Resource": format!("arn:aws:ec2:{SRC}::snapshot/*"),
              "Condition": { "StringEquals": { "aws:ResourceTag/ferry:plan": "p" } } }
        ]
    });
    let (id, secret) = emu.create_user_with_policy(acct, "ferry", &policy).await;
    let user = |region: &str| no_retries(&emu.sdk_config_for_key(&id, &secret, region));

    // A statement scoped to one key's ARN allows that key, by ARN or by alias, and no other.
    let ukms = aws_sdk_kms::Client::new(&user(SRC));
    ukms.describe_key()
        .key_id(&allowed)
        .send()
        .await
        .expect("the policy's key");
    let alias = "alias/iam-enforced";
    kms.create_alias()
        .alias_name(alias)
        .target_key_id(&allowed)
        .send()
        .await
        .unwrap();
    ukms.describe_key()
        .key_id(alias)
        .send()
        .await
        .expect("its alias");
    let e = ukms.describe_key().key_id(&other).send().await.unwrap_err();
    assert_eq!(e.code(), Some("AccessDeniedException"), "{e:?}");
    let msg = e.message().unwrap_or_default();
    assert!(
        msg.contains(":user/ferry is not authorized to perform: kms:DescribeKey")
            && msg.contains(&format!("on resource: {other}")),
        "{msg}"
    );

    // The %20 body moto's own signature check refused: CopySnapshot with a Description and
    // tags, into the region the policy names.
    let uec2 = aws_sdk_ec2::Client::new(&user(DST));
    uec2.copy_snapshot()
        .source_snapshot_id(&untagged)
        .source_region(SRC)
        .description("a copy with spaces")
        .tag_specifications(tags(ResourceType::Snapshot, "Purpose", "dr"))
        .send()
        .await
        .expect("CopySnapshot into the allowed region");
    let e = uec2
        .copy_snapshot()
        .source_snapshot_id(&tagged)
        .source_region(SRC)
        .send()
        .await
        .unwrap_err();
    assert!(
        e.message().unwrap_or_default().contains(&format!(
            "ec2:CopySnapshot on resource: arn:aws:ec2:{SRC}::snapshot/{tagged}"
        )),
        "a source the policy does not name: {e:?}"
    );
    let e = aws_sdk_ec2::Client::new(&user(SRC))
        .copy_snapshot()
        .source_snapshot_id(&untagged)
        .source_region(SRC)
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("UnauthorizedOperation"), "{e:?}");
    assert!(
        e.message().unwrap_or_default().contains(&format!(
            "ec2:CopySnapshot on resource: arn:aws:ec2:{SRC}::snapshot/*"
        )),
        "{e:?}"
    );

    // The signature is checked against the bytes sent: a wrong secret fails, for KMS (JSON)
    // and EC2 (a form body).
    let wrong = no_retries(&emu.sdk_config_for_key(&id, "not-the-secret", SRC));
    let e = aws_sdk_kms::Client::new(&wrong)
        .describe_key()
        .key_id(&allowed)
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("InvalidSignatureException"), "{e:?}");
    let e = aws_sdk_ec2::Client::new(&wrong)
        .describe_snapshots()
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("AuthFailure"), "{e:?}");

    // aws:ResourceTag is the snapshot's own tag.
    let src = aws_sdk_ec2::Client::new(&user(SRC));
    src.delete_snapshot()
        .snapshot_id(&tagged)
        .send()
        .await
        .expect("the tagged snapshot");
    let e = src
        .delete_snapshot()
        .snapshot_id(&untagged)
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("UnauthorizedOperation"), "{e:?}");

    // The static key is the account's root: not judged by any IAM policy.
    kms.describe_key()
        .key_id(&other)
        .send()
        .await
        .expect("root");
    // Unless the key policy leaves the account out (no delegation to IAM).
    kms.put_key_policy()
        .key_id(&other)
        .policy_name("default")
        .policy(
            json!({ "Version": "2012-10-17", "Statement": [{ "Effect": "Allow",
                "Principal": { "AWS": format!("arn:aws:iam::{acct}:user/someone") },
                "Action": "kms:*", "Resource": "*" }] })
            .to_string(),
        )
        .bypass_policy_lockout_safety_check(true)
        .send()
        .await
        .unwrap();
    let e = kms.describe_key().key_id(&other).send().await.unwrap_err();
    assert_eq!(e.code(), Some("AccessDeniedException"), "{e:?}");
    assert!(
        e.message()
            .unwrap_or_default()
            .contains("because no resource-based policy allows the kms:DescribeKey action"),
        "{e:?}"
    );

    // Off (the default): the same user key is not judged.
    emu.configure(json!({ "iam_enforce": false }));
    ukms.describe_key()
        .key_id(&allowed)
        .send()
        .await
        .expect("not judged");
    aws_sdk_kms::Client::new(&user(SRC))
        .list_keys()
        .send()
        .await
        .expect("off: not judged");
}

// --- cross-account sharing -------------------------------------------------------------------

#[tokio::test]
async fn shared_snapshots_and_images_are_visible_to_and_copyable_by_the_other_account() {
    let emu = Emulator::shared();
    let (a, b, stranger) = ("100000000011", "100000000012", "100000000013");
    let ec2_a = emu.ec2(a, SRC);
    let snap = snapshot(&ec2_a, SRC, None).await;
    ec2_a
        .create_tags()
        .resources(&snap)
        .tags(Tag::builder().key("team").value("a").build())
        .send()
        .await
        .expect("CreateTags");
    let image = register_image(&ec2_a, "shared-plain", &[&snap]).await;
    let ec2_b = emu.ec2(b, SRC);

    // before sharing: not found for B
    let err = ec2_b
        .describe_images()
        .image_ids(&image)
        .send()
        .await
        .expect_err("not shared yet");
    assert_eq!(err.code(), Some("InvalidAMIID.NotFound"));
    let err = ec2_b
        .describe_snapshots()
        .snapshot_ids(&snap)
        .send()
        .await
        .expect_err("not shared yet");
    assert_eq!(err.code(), Some("InvalidSnapshot.NotFound"));

    share_image(&ec2_a, &image, &[&snap], b).await;

    // by id, by ExecutableUsers / RestorableByUserIds, by owner
    assert_eq!(describe_image(&ec2_b, &image).await.owner_id(), Some(a));
    let by_exec = ec2_b
        .describe_images()
        .executable_users("self")
        .send()
        .await
        .unwrap();
    assert!(
        by_exec
            .images()
            .iter()
            .any(|i| i.image_id() == Some(&image))
    );
    let by_owner = ec2_b.describe_images().owners(a).send().await.unwrap();
    assert_eq!(by_owner.images().len(), 1);
    let seen_by_b = describe_snapshot(&ec2_b, &snap).await;
    assert_eq!(seen_by_b.owner_id(), Some(a));
    assert!(seen_by_b.tags().is_empty(), "tags do not cross accounts");
    assert_eq!(
        tag_value(describe_snapshot(&ec2_a, &snap).await.tags(), "team"),
        Some("a")
    );
    let restorable = ec2_b
        .describe_snapshots()
        .restorable_by_user_ids(b)
        .send()
        .await
        .unwrap();
    assert!(
        restorable
            .snapshots()
            .iter()
            .any(|s| s.snapshot_id() == Some(&snap))
    );
    let owned_by_a = ec2_b
        .describe_snapshots()
        .owner_ids(a)
        .send()
        .await
        .unwrap();
    assert_eq!(owned_by_a.snapshots().len(), 1);

    // a third account still sees nothing
    let err = emu
        .ec2(stranger, SRC)
        .describe_images()
        .image_ids(&image)
        .send()
        .await
        .expect_err("not shared with the stranger");
    assert_eq!(err.code(), Some("InvalidAMIID.NotFound"));

    // B copies both into its own account, in another region
    let ec2_b_dst = emu.ec2(b, DST);
    let snap_copy = ec2_b_dst
        .copy_snapshot()
        .source_snapshot_id(&snap)
        .source_region(SRC)
        .send()
        .await
        .expect("CopySnapshot of a shared snapshot")
        .snapshot_id()
        .unwrap()
        .to_string();
    let copied = describe_snapshot(&ec2_b_dst, &snap_copy).await;
    assert_eq!(copied.owner_id(), Some(b));
    assert_eq!(copied.encrypted(), Some(false));

    let image_copy = ec2_b_dst
        .copy_image()
        .source_image_id(&image)
        .source_region(SRC)
        .name("copy-of-shared")
        .send()
        .await
        .expect("CopyImage of a shared image")
        .image_id()
        .unwrap()
        .to_string();
    let copied = describe_image(&ec2_b_dst, &image_copy).await;
    assert_eq!(copied.owner_id(), Some(b));
    assert_eq!(image_snapshot_ids(&copied).len(), 1);

    // the stranger cannot copy
    let err = emu
        .ec2(stranger, DST)
        .copy_snapshot()
        .source_snapshot_id(&snap)
        .source_region(SRC)
        .send()
        .await
        .expect_err("stranger copy");
    assert_eq!(err.code(), Some("InvalidSnapshot.NotFound"));
}

// --- KMS for another account -----------------------------------------------------------------

#[tokio::test]
async fn copying_a_shared_encrypted_ami_needs_the_source_key_policy() {
    let emu = Emulator::start();
    let (a, b) = ("111111111111", "222222222222");
    let key_a = customer_key(&emu, a, SRC).await;
    let key_b = customer_key(&emu, b, DST).await;
    let ec2_a = emu.ec2(a, SRC);
    let s1 = snapshot(&ec2_a, SRC, Some(Some(&key_a))).await;
    let s2 = snapshot(&ec2_a, SRC, Some(Some(&key_a))).await;
    let image = register_image(&ec2_a, "encrypted-app", &[&s1, &s2]).await;
    share_image(&ec2_a, &image, &[&s1, &s2], b).await;
    let ec2_b = emu.ec2(b, DST);
    let copy = |token: &'static str| {
        ec2_b
            .copy_image()
            .source_image_id(&image)
            .source_region(SRC)
            .name("app-copy")
            .encrypted(true)
            .kms_key_id(&key_b)
            .client_token(token)
    };

    // AWS's documented behaviour: the copy is accepted and fails for lack of KMS permissions.
    let failed = copy("no-access-async")
        .send()
        .await
        .expect("CopyImage accepted");
    let failed = describe_image(&ec2_b, failed.image_id().unwrap()).await;
    assert_eq!(failed.state(), Some(&ImageState::Failed));
    let reason = failed
        .state_reason()
        .and_then(|r| r.message())
        .unwrap_or("");
    assert!(
        reason.contains("Given key ID is not accessible"),
        "{reason}"
    );
    assert!(reason.contains(&key_a) && reason.contains(b), "{reason}");
    for snap in image_snapshot_ids(&failed) {
        let snap = describe_snapshot(&ec2_b, &snap).await;
        assert_eq!(snap.state(), Some(&SnapshotState::Error));
        assert!(
            snap.state_message()
                .unwrap_or("")
                .contains("not accessible")
        );
    }

    // The same refusal as an error of the call itself.
    emu.configure(json!({"kms_denied": "sync"}));
    let err = copy("no-access-sync")
        .send()
        .await
        .expect_err("no key access");
    assert_eq!(err.code(), Some("InvalidRequest"));
    let message = err.message().unwrap_or("");
    assert!(
        message.contains("Given key ID is not accessible") && message.contains(&key_a),
        "{message}"
    );

    // A adds the statement for B's root: the copy succeeds, encrypted with B's key.
    allow_account_on_key(
        &emu.kms(a, SRC),
        &key_a,
        copy_statement(json!(format!("arn:aws:iam::{b}:root"))),
    )
    .await;
    let ok = copy("with-access")
        .send()
        .await
        .expect("CopyImage with key access");
    let ok = describe_image(&ec2_b, ok.image_id().unwrap()).await;
    assert_eq!(ok.state(), Some(&ImageState::Pending));
    let snaps = image_snapshot_ids(&ok);
    assert_eq!(snaps.len(), 2);
    for snap in &snaps {
        let snap = describe_snapshot(&ec2_b, snap).await;
        assert_eq!(snap.encrypted(), Some(true));
        assert_eq!(snap.kms_key_id(), Some(key_b.as_str()));
        assert_eq!(snap.owner_id(), Some(b));
    }
}

#[tokio::test]
async fn key_policy_principals_wildcards_and_grants_allow_snapshot_copies() {
    let emu = Emulator::shared();
    let a = "100000000021";
    let ec2_a = emu.ec2(a, SRC);
    let kms_a = emu.kms(a, SRC);

    // (principal form, the other account); each case uses its own key and copying account
    let cases = [
        (
            "100000000022",
            json!([
                "arn:aws:iam::999999999999:root",
                "arn:aws:iam::100000000022:role/ferry"
            ]),
            None,
        ),
        (
            "100000000023",
            json!("100000000023"),
            Some(json!(["kms:*"])),
        ),
        ("100000000024", json!("*"), Some(json!("kms:*"))),
    ];
    for (b, principal, actions) in cases {
        let key = customer_key(emu, a, SRC).await;
        let snap = snapshot(&ec2_a, SRC, Some(Some(&key))).await;
        share_snapshot(&ec2_a, &snap, b).await;
        let ec2_b = emu.ec2(b, SRC);
        let first = ec2_b
            .copy_snapshot()
            .source_snapshot_id(&snap)
            .source_region(SRC)
            .send()
            .await
            .expect("CopySnapshot accepted");
        let first = describe_snapshot(&ec2_b, first.snapshot_id().unwrap()).await;
        assert_eq!(first.state(), Some(&SnapshotState::Error), "{b} before");

        let mut statement = copy_statement(principal);
        if let Some(actions) = actions {
            statement["Action"] = actions;
        }
        allow_account_on_key(&kms_a, &key, statement).await;
        let second = ec2_b
            .copy_snapshot()
            .source_snapshot_id(&snap)
            .source_region(SRC)
            .send()
            .await
            .expect("CopySnapshot with access");
        let second = describe_snapshot(&ec2_b, second.snapshot_id().unwrap()).await;
        assert_ne!(second.state(), Some(&SnapshotState::Error), "{b} after");
        assert_eq!(second.encrypted(), Some(true));
    }

    // A statement missing kms:CreateGrant is not enough.
    let b = "100000000025";
    let key = customer_key(emu, a, SRC).await;
    let snap = snapshot(&ec2_a, SRC, Some(Some(&key))).await;
    share_snapshot(&ec2_a, &snap, b).await;
    let mut partial = copy_statement(json!(format!("arn:aws:iam::{b}:root")));
    partial["Action"] = json!([
        "kms:Decrypt",
        "kms:DescribeKey",
        "kms:ReEncrypt*",
        "kms:GenerateDataKey*"
    ]);
    allow_account_on_key(&kms_a, &key, partial).await;
    let ec2_b = emu.ec2(b, SRC);
    let denied = ec2_b
        .copy_snapshot()
        .source_snapshot_id(&snap)
        .source_region(SRC)
        .send()
        .await
        .unwrap();
    let denied = describe_snapshot(&ec2_b, denied.snapshot_id().unwrap()).await;
    assert_eq!(denied.state(), Some(&SnapshotState::Error));

    // Grants for B: the nine operations the five permissions stand for are enough, in two
    // grants as in one; short of any one (here ReEncryptTo) the copy fails, naming it.
    let b = "100000000028";
    let key = customer_key(emu, a, SRC).await;
    let snap = snapshot(&ec2_a, SRC, Some(Some(&key))).await;
    share_snapshot(&ec2_a, &snap, b).await;
    let ec2_b = emu.ec2(b, SRC);
    let all = [
        GrantOperation::DescribeKey,
        GrantOperation::CreateGrant,
        GrantOperation::GenerateDataKey,
        GrantOperation::GenerateDataKeyWithoutPlaintext,
        GrantOperation::GenerateDataKeyPair,
        GrantOperation::GenerateDataKeyPairWithoutPlaintext,
        GrantOperation::ReEncryptFrom,
        GrantOperation::ReEncryptTo,
        GrantOperation::Decrypt,
    ];
    let grant = |ops: &[GrantOperation]| {
        kms_a
            .create_grant()
            .key_id(&key)
            .grantee_principal(format!("arn:aws:iam::{b}:root"))
            .set_operations(Some(ops.to_vec()))
            .send()
    };
    let copy = || async {
        let out = ec2_b
            .copy_snapshot()
            .source_snapshot_id(&snap)
            .source_region(SRC)
            .send()
            .await
            .unwrap();
        describe_snapshot(&ec2_b, out.snapshot_id().unwrap()).await
    };
    let short: Vec<_> = all
        .iter()
        .filter(|o| **o != GrantOperation::ReEncryptTo)
        .cloned()
        .collect();
    grant(&short[..4]).await.expect("CreateGrant");
    grant(&short[4..]).await.expect("CreateGrant");
    let denied = copy().await;
    assert_eq!(denied.state(), Some(&SnapshotState::Error));
    assert!(
        denied
            .state_message()
            .unwrap_or_default()
            .contains("(missing: kms:ReEncryptTo)"),
        "{:?}",
        denied.state_message()
    );
    grant(&[GrantOperation::ReEncryptTo])
        .await
        .expect("CreateGrant");
    let granted = copy().await;
    assert_ne!(
        granted.state(),
        Some(&SnapshotState::Error),
        "{:?}",
        granted.state_message()
    );
}

#[tokio::test]
async fn another_account_uses_a_key_by_arn_only_when_the_key_policy_allows() {
    let emu = Emulator::shared();
    let (a, b) = ("100000000026", "100000000027");
    let key = customer_key(emu, a, SRC).await;
    let kms_b = emu.kms(b, SRC);

    let err = kms_b
        .describe_key()
        .key_id(&key)
        .send()
        .await
        .expect_err("no policy for B yet");
    assert_eq!(err.code(), Some("AccessDeniedException"));
    assert!(
        err.message()
            .unwrap_or("")
            .contains("is not authorized to perform: kms:DescribeKey")
    );

    allow_account_on_key(
        &emu.kms(a, SRC),
        &key,
        copy_statement(json!(format!("arn:aws:iam::{b}:root"))),
    )
    .await;
    let described = kms_b
        .describe_key()
        .key_id(&key)
        .send()
        .await
        .expect("DescribeKey across accounts");
    assert_eq!(described.key_metadata().unwrap().aws_account_id(), Some(a));
    kms_b
        .create_grant()
        .key_id(&key)
        .grantee_principal(format!("arn:aws:iam::{b}:role/ferry-migrator"))
        .operations(GrantOperation::Decrypt)
        .name("ferry-test")
        .send()
        .await
        .expect("CreateGrant across accounts");
    let grants = emu
        .kms(a, SRC)
        .list_grants()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(grants.grants().len(), 1, "the grant is on A's key");

    // not a cross-account operation: the key does not exist in B
    let err = kms_b
        .get_key_policy()
        .key_id(&key)
        .policy_name("default")
        .send()
        .await
        .expect_err("GetKeyPolicy is for the owner");
    assert_eq!(err.code(), Some("NotFoundException"));
}

#[tokio::test]
async fn data_under_the_aws_managed_key_cannot_be_shared() {
    let emu = Emulator::shared();
    let (a, b) = ("100000000031", "100000000032");
    let ec2_a = emu.ec2(a, SRC);
    // Encrypted without a key: the account's AWS managed key alias/aws/ebs.
    let snap = snapshot(&ec2_a, SRC, Some(None)).await;
    let described = describe_snapshot(&ec2_a, &snap).await;
    let key_arn = described.kms_key_id().expect("default key").to_string();
    let key = emu
        .kms(a, SRC)
        .describe_key()
        .key_id(&key_arn)
        .send()
        .await
        .expect("DescribeKey")
        .key_metadata()
        .unwrap()
        .clone();
    assert_eq!(
        key.key_manager(),
        Some(&aws_sdk_kms::types::KeyManagerType::Aws)
    );

    let err = ec2_a
        .modify_snapshot_attribute()
        .snapshot_id(&snap)
        .attribute(SnapshotAttributeName::CreateVolumePermission)
        .operation_type(OperationType::Add)
        .user_ids(b)
        .send()
        .await
        .expect_err("cannot share");
    assert_eq!(err.code(), Some("OperationNotPermitted"));
    assert!(err.message().unwrap_or("").contains("default key"));

    let image = register_image(&ec2_a, "default-key-image", &[&snap]).await;
    let err = ec2_a
        .modify_image_attribute()
        .image_id(&image)
        .launch_permission(
            LaunchPermissionModifications::builder()
                .add(LaunchPermission::builder().user_id(b).build())
                .build(),
        )
        .send()
        .await
        .expect_err("cannot share");
    assert_eq!(err.code(), Some("OperationNotPermitted"));
}

#[tokio::test]
async fn ebs_encryption_by_default_uses_the_aws_managed_key() {
    let emu = Emulator::shared();
    let a = "100000000033";
    let ec2 = emu.ec2(a, SRC);
    let plain = snapshot(&ec2, SRC, None).await;
    ec2.enable_ebs_encryption_by_default()
        .send()
        .await
        .expect("EnableEbsEncryptionByDefault");
    let by_default = describe_snapshot(&ec2, &snapshot(&ec2, SRC, None).await).await;
    assert_eq!(by_default.encrypted(), Some(true));
    let key = emu
        .kms(a, SRC)
        .describe_key()
        .key_id("alias/aws/ebs")
        .send()
        .await
        .expect("alias/aws/ebs exists")
        .key_metadata()
        .unwrap()
        .clone();
    assert_eq!(by_default.kms_key_id(), key.arn());
    assert_eq!(
        key.key_manager(),
        Some(&aws_sdk_kms::types::KeyManagerType::Aws)
    );
    // a copy of an unencrypted snapshot is encrypted too
    let copy = ec2
        .copy_snapshot()
        .source_snapshot_id(&plain)
        .source_region(SRC)
        .send()
        .await
        .unwrap();
    let copy = describe_snapshot(&ec2, copy.snapshot_id().unwrap()).await;
    assert_eq!(copy.encrypted(), Some(true));
    assert_eq!(copy.kms_key_id(), key.arn());
}

// --- AMIs with real block devices ------------------------------------------------------------

#[tokio::test]
async fn images_keep_their_block_devices_and_copies_copy_each_volume() {
    let emu = Emulator::start();
    let a = "100000000041";
    let key_src = customer_key(&emu, a, SRC).await;
    let key_dst = customer_key(&emu, a, DST).await;
    let ec2 = emu.ec2(a, SRC);
    let root = snapshot(&ec2, SRC, Some(Some(&key_src))).await;
    let data = snapshot(&ec2, SRC, Some(Some(&key_src))).await;
    let image = register_image(&ec2, "two-volumes", &[&root, &data]).await;

    let described = describe_image(&ec2, &image).await;
    let mappings = described.block_device_mappings();
    assert_eq!(mappings.len(), 2);
    assert_eq!(mappings[0].device_name(), Some("/dev/xvda"));
    assert_eq!(
        image_snapshot_ids(&described),
        vec![root.clone(), data.clone()]
    );
    assert!(
        mappings
            .iter()
            .all(|m| m.ebs().and_then(|e| e.encrypted()) == Some(true))
    );
    assert_eq!(described.root_device_name(), Some("/dev/xvda"));

    let copy = emu
        .ec2(a, DST)
        .copy_image()
        .source_image_id(&image)
        .source_region(SRC)
        .name("two-volumes-copy")
        .encrypted(true)
        .kms_key_id(&key_dst)
        .tag_specifications(tags(ResourceType::Image, "ferry:source", &image))
        .tag_specifications(tags(ResourceType::Snapshot, "ferry:plan", "demo"))
        .send()
        .await
        .expect("CopyImage")
        .image_id()
        .unwrap()
        .to_string();
    let ec2_dst = emu.ec2(a, DST);
    let copied = describe_image(&ec2_dst, &copy).await;
    assert_eq!(
        tag_value(copied.tags(), "ferry:source"),
        Some(image.as_str())
    );
    let new_snaps = image_snapshot_ids(&copied);
    assert_eq!(new_snaps.len(), 2);
    assert!(!new_snaps.contains(&root) && !new_snaps.contains(&data));
    for id in &new_snaps {
        let s = describe_snapshot(&ec2_dst, id).await;
        assert_eq!(s.encrypted(), Some(true));
        assert_eq!(s.kms_key_id(), Some(key_dst.as_str()));
        assert_eq!(tag_value(s.tags(), "ferry:plan"), Some("demo"));
        assert_eq!(tag_value(s.tags(), "ferry:source"), None);
    }
    assert_eq!(emu.counters().copies_into(a, DST), (0, 1, 2));
}

// --- copies take time ------------------------------------------------------------------------

#[tokio::test]
async fn copies_stay_pending_with_growing_progress_then_complete() {
    let emu = Emulator::start_with(json!({"copy_seconds": 3600}));
    let a = "100000000051";
    let key_dst = customer_key(&emu, a, DST).await;
    let ec2 = emu.ec2(a, SRC);
    let snap = snapshot(&ec2, SRC, None).await;
    let image = register_image(&ec2, "slow", &[&snap]).await;
    let ec2_dst = emu.ec2(a, DST);

    let copy = ec2_dst
        .copy_snapshot()
        .source_snapshot_id(&snap)
        .source_region(SRC)
        .encrypted(true)
        .kms_key_id(&key_dst)
        .tag_specifications(tags(ResourceType::Snapshot, "ferry:copy-of", &snap))
        .send()
        .await
        .expect("CopySnapshot")
        .snapshot_id()
        .unwrap()
        .to_string();
    let image_copy = ec2_dst
        .copy_image()
        .source_image_id(&image)
        .source_region(SRC)
        .name("slow-copy")
        .send()
        .await
        .expect("CopyImage")
        .image_id()
        .unwrap()
        .to_string();

    let pending = describe_snapshot(&ec2_dst, &copy).await;
    assert_eq!(pending.state(), Some(&SnapshotState::Pending));
    assert_ne!(pending.progress(), Some("100%"));
    assert_eq!(pending.encrypted(), Some(true));
    assert_eq!(pending.kms_key_id(), Some(key_dst.as_str()));
    assert_eq!(
        tag_value(pending.tags(), "ferry:copy-of"),
        Some(snap.as_str())
    );
    assert_eq!(
        describe_image(&ec2_dst, &image_copy).await.state(),
        Some(&ImageState::Pending)
    );
    // the copy can be found by its tag while pending, as ferry's observe step does
    let found = ec2_dst
        .describe_snapshots()
        .filters(
            Filter::builder()
                .name("tag:ferry:copy-of")
                .values(&snap)
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(found.snapshots().len(), 1);

    assert_eq!(emu.complete_copies(), 3);
    let done = describe_snapshot(&ec2_dst, &copy).await;
    assert_eq!(done.state(), Some(&SnapshotState::Completed));
    assert_eq!(done.progress(), Some("100%"));
    assert_eq!(
        describe_image(&ec2_dst, &image_copy).await.state(),
        Some(&ImageState::Available)
    );

    // With a short copy time, Progress only grows until the copy completes by itself.
    emu.configure(json!({"copy_seconds": 3}));
    let quick = ec2_dst
        .copy_snapshot()
        .source_snapshot_id(&snap)
        .source_region(SRC)
        .send()
        .await
        .unwrap()
        .snapshot_id()
        .unwrap()
        .to_string();
    let mut last = -1i64;
    let mut seen_pending = false;
    for _ in 0..400 {
        let s = describe_snapshot(&ec2_dst, &quick).await;
        let progress: i64 = s.progress().unwrap().trim_end_matches('%').parse().unwrap();
        assert!(progress >= last, "progress went back: {last} -> {progress}");
        last = progress;
        match s.state() {
            Some(SnapshotState::Pending) => seen_pending = true,
            Some(SnapshotState::Completed) => break,
            other => panic!("unexpected state {other:?}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(seen_pending);
    assert_eq!(last, 100, "the copy completed");
}

#[tokio::test]
async fn snapshot_copies_are_incremental_from_the_latest_completed_copy_under_the_same_key() {
    // Cross-region encrypted copies without PresignedUrl: the judgment is what is tested here.
    let emu = Emulator::start_with(json!({"copy_seconds": 3600, "require_presigned_url": false}));
    let a = "100000000141";
    let key_src = customer_key(&emu, a, SRC).await;
    let key_dst = customer_key(&emu, a, DST).await;
    let other_key = customer_key(&emu, a, DST).await;
    let ec2 = emu.ec2(a, SRC);
    let volume = ec2
        .create_volume()
        .size(1)
        .availability_zone(format!("{SRC}a"))
        .encrypted(true)
        .kms_key_id(&key_src)
        .send()
        .await
        .expect("CreateVolume")
        .volume_id()
        .expect("volume id")
        .to_string();
    let mut snaps = Vec::new();
    for _ in 0..4 {
        let id = ec2
            .create_snapshot()
            .volume_id(&volume)
            .send()
            .await
            .expect("CreateSnapshot")
            .snapshot_id()
            .expect("snapshot id")
            .to_string();
        snaps.push(id);
    }
    let size: u64 = 1 << 30;
    let (changed2, changed3) = (3_000_000u64, 5_000_000u64);
    let seed = json!({"account": a, "region": SRC,
                      "changes": {&snaps[1]: changed2, &snaps[2]: changed3, &snaps[3]: 0}});
    let (status, body) = emu.control("POST", "/_ferry/snapshots/changed", Some(&seed.to_string()));
    assert_eq!(
        (status, body.contains("\"seeded\": 3")),
        (200, true),
        "{body}"
    );
    let unknown = json!({"account": a, "region": SRC, "changes": {"snap-0000000000000000f": 1}});
    let (status, body) = emu.control(
        "POST",
        "/_ferry/snapshots/changed",
        Some(&unknown.to_string()),
    );
    assert_eq!(status, 400);
    assert!(body.contains("unknown snapshot ids") && body.contains("snap-0000000000000000f"));

    let dst = emu.ec2(a, DST);
    let copy = |source: String, key: String| {
        let dst = dst.clone();
        async move {
            dst.copy_snapshot()
                .source_snapshot_id(source)
                .source_region(SRC)
                .encrypted(true)
                .kms_key_id(key)
                .send()
                .await
                .expect("CopySnapshot")
                .snapshot_id()
                .expect("copy id")
                .to_string()
        }
    };
    copy(snaps[0].clone(), key_dst.clone()).await; // the first copy into DST: full
    emu.complete_copies();
    copy(snaps[1].clone(), key_dst.clone()).await; // from copy 1: snapshot 2's changes
    // copy 2 is still pending, so it is no base: from copy 1 again
    copy(snaps[2].clone(), key_dst.clone()).await;
    emu.complete_copies();
    copy(snaps[2].clone(), other_key.clone()).await; // re-encrypted: full

    let c = emu.counters();
    let judged: Vec<_> = c
        .snapshot_copies
        .iter()
        .map(|e| (e.source.as_str(), e.incremental, e.bytes, e.base.as_deref()))
        .collect();
    let s1 = Some(snaps[0].as_str());
    assert_eq!(
        judged,
        vec![
            (snaps[0].as_str(), false, size, None),
            (snaps[1].as_str(), true, changed2, s1),
            (snaps[2].as_str(), true, changed2 + changed3, s1),
            (snaps[2].as_str(), false, size, None),
        ]
    );
    let first = &c.snapshot_copies[0];
    assert_eq!((first.account.as_str(), first.region.as_str()), (a, DST));
    assert_eq!(first.source_region, SRC);
    assert_eq!(first.volume.as_deref(), Some(volume.as_str()));
    assert_eq!(first.key.as_deref(), Some(key_dst.as_str()));
    let into = c
        .copies
        .iter()
        .find(|e| e.account == a && e.region == DST)
        .expect("copies into DST");
    assert_eq!((into.full_snapshots, into.incremental_snapshots), (2, 2));
    assert_eq!(
        (into.bytes_full, into.bytes_incremental),
        (2 * size, 2 * changed2 + changed3)
    );
    assert_eq!(c.copy_totals.incremental_snapshots, 2);

    // The byte model: at 1 MiB/s the full copy of 1 GiB stays pending until the copies are
    // completed; a copy with nothing to move (snapshot 4 changed 0 bytes) completes at once.
    emu.configure(json!({"copy_throughput_mib_s": 1, "region_pair_throughput_mib_s": 2}));
    emu.complete_copies();
    let slow = copy(snaps[0].clone(), key_dst.clone()).await; // latest copy is under other_key
    let pending = describe_snapshot(&dst, &slow).await;
    assert_eq!(pending.state(), Some(&SnapshotState::Pending));
    assert_ne!(pending.progress(), Some("100%"));
    let empty = copy(snaps[3].clone(), other_key.clone()).await;
    let done = describe_snapshot(&dst, &empty).await;
    assert_eq!(
        (done.state(), done.progress()),
        (Some(&SnapshotState::Completed), Some("100%"))
    );
    assert_eq!(emu.complete_copies(), 1);
    let completed = describe_snapshot(&dst, &slow).await;
    assert_eq!(completed.state(), Some(&SnapshotState::Completed));
    let last: Vec<_> = emu.counters().snapshot_copies[4..]
        .iter()
        .map(|e| (e.incremental, e.bytes))
        .collect();
    assert_eq!(last, vec![(false, size), (true, 0)]);

    emu.reset_counters();
    assert!(emu.counters().snapshot_copies.is_empty());
}

// --- limits and idempotency ------------------------------------------------------------------

#[tokio::test]
async fn more_than_twenty_pending_snapshot_copies_are_refused() {
    let emu = Emulator::start_with(json!({"copy_seconds": 3600}));
    let a = "100000000061";
    let ec2 = emu.ec2(a, SRC);
    let snap = snapshot(&ec2, SRC, None).await;
    let ec2_dst = emu.ec2(a, DST);
    let copy = || {
        ec2_dst
            .copy_snapshot()
            .source_snapshot_id(&snap)
            .source_region(SRC)
            .send()
    };
    for i in 0..20 {
        copy().await.unwrap_or_else(|e| panic!("copy {i}: {e:?}"));
    }
    let err = copy().await.expect_err("21st copy in flight");
    assert_eq!(err.code(), Some("ResourceLimitExceeded"));
    assert_eq!(err.message(), Some("Too many snapshot copies in progress"));
    // other destinations have their own limit
    emu.ec2(a, "us-west-2")
        .copy_snapshot()
        .source_snapshot_id(&snap)
        .source_region(SRC)
        .send()
        .await
        .expect("another region");
    // once copies complete, slots free up
    emu.complete_copies();
    copy().await.expect("a slot is free again");
    assert_eq!(emu.counters().copies_into(a, DST), (21, 0, 0));

    // the limit is configurable
    emu.configure(json!({"max_pending_snapshot_copies": 1}));
    let err = copy().await.expect_err("limit of 1 reached");
    assert_eq!(err.code(), Some("ResourceLimitExceeded"));

    // concurrent copies never get past the limit
    emu.configure(json!({"max_pending_snapshot_copies": 20}));
    emu.complete_copies();
    let results = futures::future::join_all((0..30).map(|_| copy())).await;
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(accepted, 20);
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| e.code() == Some("ResourceLimitExceeded"))
    );
}

#[tokio::test]
async fn describes_answer_in_pages_and_refuse_more_than_200_filter_values() {
    let emu = Emulator::start_with(json!({"max_page_items": 4}));
    let a = "100000000062";
    let ec2 = emu.ec2(a, SRC);
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(snapshot(&ec2, SRC, None).await);
    }
    let image = register_image(&ec2, "paged", &[&ids[0]]).await;
    emu.reset_counters();

    // Without MaxResults: everything in one answer, as AWS documents.
    let whole = ec2
        .describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .unwrap();
    assert_eq!(whole.snapshots().len(), 10);
    assert_eq!(whole.next_token(), None);

    // With MaxResults: pages of at most `max_page_items`, each continued by its NextToken.
    let mut pages = Vec::new();
    let mut token = None;
    loop {
        let page = ec2
            .describe_snapshots()
            .owner_ids("self")
            .max_results(1000)
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        pages.push(page.snapshots().len());
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, [4, 4, 2]);
    let mut seen: Vec<String> = Vec::new();
    let mut all = ec2
        .describe_snapshots()
        .owner_ids("self")
        .into_paginator()
        .page_size(5)
        .items()
        .send();
    while let Some(s) = all.next().await {
        seen.push(s.unwrap().snapshot_id().unwrap().to_string());
    }
    seen.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(seen, want, "the SDK paginator reads every snapshot once");

    // AWS's errors.
    let err = ec2
        .describe_snapshots()
        .max_results(4)
        .send()
        .await
        .expect_err("MaxResults below 5");
    assert_eq!(err.code(), Some("InvalidParameterValue"));
    let err = ec2
        .describe_snapshots()
        .snapshot_ids(&ids[0])
        .max_results(5)
        .send()
        .await
        .expect_err("ids and MaxResults");
    assert_eq!(err.code(), Some("InvalidParameterCombination"));
    let err = ec2
        .describe_images()
        .image_ids(&image)
        .max_results(5)
        .send()
        .await
        .expect_err("ids and MaxResults");
    assert_eq!(err.code(), Some("InvalidParameterCombination"));
    let first = ec2
        .describe_snapshots()
        .owner_ids("self")
        .max_results(5)
        .send()
        .await
        .unwrap();
    let token = first.next_token().expect("a second page").to_string();
    let err = ec2
        .describe_snapshots()
        .owner_ids(a)
        .max_results(5)
        .next_token(&token)
        .send()
        .await
        .expect_err("a token of another query");
    assert_eq!(err.code(), Some("InvalidNextToken"));
    let many: Vec<String> = (0..201).map(|i| format!("snap-{i:017x}")).collect();
    let too_many = |name: &str| {
        Filter::builder()
            .name(name)
            .set_values(Some(many.clone()))
            .build()
    };
    let err = ec2
        .describe_snapshots()
        .filters(too_many("snapshot-id"))
        .send()
        .await
        .expect_err("201 filter values");
    assert_eq!(err.code(), Some("FilterLimitExceeded"));
    assert_eq!(
        err.message(),
        Some("The maximum number of filter values specified on a single call is 200")
    );
    let err = ec2
        .describe_images()
        .filters(too_many("image-id"))
        .send()
        .await
        .expect_err("201 filter values");
    assert_eq!(err.code(), Some("FilterLimitExceeded"));
    let at_limit = ec2
        .describe_snapshots()
        .filters(
            Filter::builder()
                .name("snapshot-id")
                .set_values(Some(ids.iter().cloned().cycle().take(200).collect()))
                .build(),
        )
        .send()
        .await
        .expect("200 values are allowed");
    assert_eq!(at_limit.snapshots().len(), 10);

    // The counters: one entry per request, its page and its values.
    let c = emu.counters();
    let d: Vec<_> = c.describes(a, SRC, "DescribeSnapshots").collect();
    assert_eq!(d[0].max_results, None);
    assert_eq!(d[0].items, 10);
    assert_eq!(
        d[1..4]
            .iter()
            .map(|d| (d.max_results, d.next_token, d.items))
            .collect::<Vec<_>>(),
        [
            (Some(1000), false, 4),
            (Some(1000), true, 4),
            (Some(1000), true, 2)
        ]
    );
    let refused: Vec<_> = c
        .describes
        .iter()
        .filter_map(|d| d.error.as_deref())
        .collect();
    assert_eq!(
        refused,
        [
            "InvalidParameterValue",
            "InvalidParameterCombination",
            "InvalidParameterCombination",
            "InvalidNextToken",
            "FilterLimitExceeded",
            "FilterLimitExceeded"
        ]
    );
    let last = c.describes.last().unwrap();
    assert_eq!(
        (last.filter_values, last.filters["snapshot-id"]),
        (200, 200)
    );
}

#[tokio::test]
async fn copy_image_honours_client_token() {
    let emu = Emulator::shared();
    let a = "100000000071";
    let ec2 = emu.ec2(a, SRC);
    let snap = snapshot(&ec2, SRC, None).await;
    let image = register_image(&ec2, "tokened", &[&snap]).await;
    let ec2_dst = emu.ec2(a, DST);
    let copy = |name: &'static str| {
        ec2_dst
            .copy_image()
            .source_image_id(&image)
            .source_region(SRC)
            .name(name)
            .client_token("ferry-plan-1-tokened")
            .send()
    };
    let first = copy("tokened-copy")
        .await
        .unwrap()
        .image_id()
        .unwrap()
        .to_string();
    let again = copy("tokened-copy")
        .await
        .unwrap()
        .image_id()
        .unwrap()
        .to_string();
    assert_eq!(first, again);
    let err = copy("other-name")
        .await
        .expect_err("same token, other parameters");
    assert_eq!(err.code(), Some("IdempotentParameterMismatch"));
    let images = ec2_dst
        .describe_images()
        .owners("self")
        .send()
        .await
        .unwrap();
    assert_eq!(images.images().len(), 1, "one image for one token");
    assert_eq!(emu.counters().copies_into(a, DST), (0, 1, 1));
}

// --- throttling and faults -------------------------------------------------------------------

#[tokio::test]
async fn throttling_answers_with_each_services_error() {
    let emu = Emulator::start();
    let a = "100000000081";
    let config = no_retries(&emu.sdk_config(a, SRC));
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let kms = aws_sdk_kms::Client::new(&config);
    let s3 = common::emulator::s3_client(&config);
    s3.create_bucket().bucket("throttled").send().await.unwrap();

    // a tiny scale: every bucket holds one request and refills in minutes or more
    emu.configure(json!({"throttle": true, "throttle_scale": 0.00001}));

    ec2.describe_images()
        .owners("self")
        .send()
        .await
        .expect("first");
    let err = ec2
        .describe_images()
        .owners("self")
        .send()
        .await
        .expect_err("throttled");
    assert_eq!(err.code(), Some("RequestLimitExceeded"));
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(503));
    // another action has its own bucket
    ec2.describe_volumes().send().await.expect("other bucket");

    kms.create_key().send().await.expect("first");
    let err = kms.create_key().send().await.expect_err("throttled");
    assert_eq!(err.code(), Some("ThrottlingException"));
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));

    let put = |key: &'static str| {
        s3.put_object()
            .bucket("throttled")
            .key(key)
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"x"))
            .send()
    };
    put("one").await.expect("first");
    let err = put("two").await.expect_err("throttled");
    assert_eq!(err.code(), Some("SlowDown"));
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(503));

    let c = emu.counters();
    assert_eq!(c.throttled(a, "ec2", "DescribeImages"), 1);
    assert_eq!(c.requests(a, "ec2", "DescribeImages"), 2);
    assert_eq!(c.throttled(a, "kms", "CreateKey"), 1);
    assert_eq!(c.throttled(a, "s3", "PutObject"), 1);
    assert_eq!(c.totals.throttled, 3);

    // the SDK's standard retries ride out throttling: a 1-request bucket refilled 5 times a second
    emu.configure(json!({"throttle_scale": 1.0, "quotas": {"ec2:DescribeImages": [1, 5]}}));
    let retrying = aws_sdk_ec2::Client::new(
        &emu.sdk_config(a, SRC)
            .to_builder()
            .retry_config(RetryConfig::standard().with_max_attempts(10))
            .build(),
    );
    for _ in 0..10 {
        retrying
            .describe_images()
            .owners("self")
            .send()
            .await
            .expect("retried through throttling");
    }
}

#[tokio::test]
async fn faults_and_latency_are_configurable_at_runtime() {
    let emu = Emulator::start_with(json!({"fault_rate": 1.0, "seed": 7}));
    let a = "100000000091";
    let config = no_retries(&emu.sdk_config(a, SRC));
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let kms = aws_sdk_kms::Client::new(&config);
    let err = ec2
        .describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .expect_err("fault");
    assert_eq!(err.code(), Some("InternalError"));
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(500));
    let err = kms.list_keys().send().await.expect_err("fault");
    assert_eq!(err.code(), Some("KMSInternalException"));
    assert_eq!(emu.counters().totals.faults, 2);

    let config = emu.configure(json!({"fault_rate": 0.0, "latency_ms": 5}));
    assert_eq!(config["latency_ms"], 5);
    ec2.describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .expect("no faults any more");

    let (status, body) = emu.control("POST", "/_ferry/config", Some(r#"{"no_such_knob": 1}"#));
    assert_eq!(status, 400, "{body}");
    let (status, body) = emu.control("POST", "/_ferry/config", Some(r#"{"fault_rate": 2}"#));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("fault_rate"), "{body}");
}

#[tokio::test]
async fn a_lost_response_takes_effect_and_loses_only_the_answer() {
    let emu = Emulator::start_with(json!({ "copy_seconds": 0.1 }));
    let a = "100000000093";
    let config = no_retries(&emu.sdk_config(a, SRC));
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let source = snapshot(&ec2, SRC, None).await;
    emu.configure(json!({ "lost_response_rate": 1.0, "seed": 3 }));
    // Every mutating call fails for the caller, half with a 500, half with no response.
    let mut errors = Vec::new();
    for _ in 0..6 {
        let err = ec2
            .copy_snapshot()
            .source_snapshot_id(&source)
            .source_region(SRC)
            .send()
            .await
            .expect_err("the answer is lost");
        errors.push(err.raw_response().map(|r| r.status().as_u16()));
    }
    assert!(errors.contains(&Some(500)), "{errors:?}");
    assert!(
        errors.contains(&None),
        "a dropped connection has no response: {errors:?}"
    );
    // Reads are answered; and every copy was made.
    let all = ec2
        .describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .unwrap();
    assert_eq!(all.snapshots().len(), 7, "the source and six copies");
    let c = emu.counters();
    assert_eq!(c.totals.lost, 6);
    assert_eq!(c.copy_totals.snapshots, 6);
    let (status, _) = emu.control(
        "POST",
        "/_ferry/config",
        Some(r#"{"lost_response_rate": 1.5}"#),
    );
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_new_copy_shows_in_describe_calls_only_after_the_visibility_delay() {
    let emu = Emulator::start_with(json!({ "copy_seconds": 0.1, "visibility_delay_ms": 800 }));
    let a = "100000000094";
    let ec2 = aws_sdk_ec2::Client::new(&no_retries(&emu.sdk_config(a, SRC)));
    let source = snapshot(&ec2, SRC, None).await;
    let copy = ec2
        .copy_snapshot()
        .source_snapshot_id(&source)
        .source_region(SRC)
        .send()
        .await
        .unwrap()
        .snapshot_id()
        .unwrap()
        .to_string();
    let listed = |out: aws_sdk_ec2::operation::describe_snapshots::DescribeSnapshotsOutput| {
        out.snapshots()
            .iter()
            .any(|s| s.snapshot_id() == Some(copy.as_str()))
    };
    let now = ec2
        .describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .unwrap();
    assert!(!listed(now), "not listed yet");
    let by_id = ec2.describe_snapshots().snapshot_ids(&copy).send().await;
    assert_eq!(
        by_id.expect_err("not found yet").code(),
        Some("InvalidSnapshot.NotFound")
    );
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    let later = ec2
        .describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .unwrap();
    assert!(listed(later), "listed once the delay passed");
}

#[tokio::test]
async fn an_encrypted_copy_from_another_region_needs_a_well_formed_presigned_url() {
    let emu = Emulator::start_with(json!({ "copy_seconds": 0.1 }));
    let a = "100000000095";
    let key = customer_key(&emu, a, SRC).await;
    let src = aws_sdk_ec2::Client::new(&no_retries(&emu.sdk_config(a, SRC)));
    let dst = aws_sdk_ec2::Client::new(&no_retries(&emu.sdk_config(a, DST)));
    let source = snapshot(&src, SRC, Some(Some(&key))).await;
    let presigned = |snapshot: &str, region: &str| {
        let creds = aws_credential_types::Credentials::new(
            access_key_for(a),
            common::emulator::TEST_SECRET_KEY,
            None,
            None,
            "test",
        );
        ferry::aws::presign::presigned_get(
            creds,
            Some(emu.endpoint()),
            "ec2",
            region,
            &[
                ("Action", "CopySnapshot"),
                ("Version", "2016-11-15"),
                ("SourceRegion", SRC),
                ("SourceSnapshotId", snapshot),
                ("DestinationRegion", DST),
            ],
            std::time::SystemTime::now(),
        )
        .unwrap()
    };
    // The call is accepted either way; a copy without a good URL fails asynchronously.
    let copy = |url: Option<String>| {
        let dst = dst.clone();
        let source = source.clone();
        async move {
            let id = dst
                .copy_snapshot()
                .source_snapshot_id(&source)
                .source_region(SRC)
                .set_presigned_url(url)
                .encrypted(true)
                .send()
                .await
                .expect("CopySnapshot is accepted")
                .snapshot_id()
                .unwrap()
                .to_string();
            describe_snapshot(&dst, &id).await
        }
    };
    let none = copy(None).await;
    assert_eq!(
        none.state(),
        Some(&aws_sdk_ec2::types::SnapshotState::Error)
    );
    assert!(
        none.state_message().unwrap().contains("no PresignedUrl"),
        "{:?}",
        none.state_message()
    );
    let other_snapshot = copy(Some(presigned("snap-0123456789abcdef0", SRC))).await;
    assert!(
        other_snapshot
            .state_message()
            .unwrap_or_default()
            .contains("SourceSnapshotId"),
        "{other_snapshot:?}"
    );
    let wrong_region = copy(Some(presigned(&source, DST))).await;
    assert!(
        wrong_region
            .state_message()
            .unwrap_or_default()
            .contains("source region"),
        "{wrong_region:?}"
    );
    let good = copy(Some(presigned(&source, SRC))).await;
    assert_ne!(
        good.state(),
        Some(&aws_sdk_ec2::types::SnapshotState::Error),
        "{good:?}"
    );
    // Behind a config key; and the next `fail_next_copies` copies fail whatever they carry.
    emu.configure(json!({ "require_presigned_url": false, "fail_next_copies": 1 }));
    let failed = copy(None).await;
    assert!(
        failed
            .state_message()
            .unwrap_or_default()
            .contains("fail_next_copies")
    );
    let unchecked = copy(None).await;
    assert_ne!(
        unchecked.state(),
        Some(&aws_sdk_ec2::types::SnapshotState::Error)
    );
}

#[tokio::test]
async fn shares_grants_and_key_policies_show_only_after_the_visibility_delay() {
    let emu = Emulator::start_with(json!({ "visibility_delay_ms": 800 }));
    let (a, b) = ("100000000096", "100000000097");
    let ec2 = aws_sdk_ec2::Client::new(&no_retries(&emu.sdk_config(a, SRC)));
    let kms = emu.kms(a, SRC);
    let key = customer_key(&emu, a, SRC).await;
    let snap = snapshot(&ec2, SRC, Some(Some(&key))).await;
    let restorable_by_b = || async {
        !ec2.describe_snapshots()
            .owner_ids("self")
            .restorable_by_user_ids(b)
            .send()
            .await
            .unwrap()
            .snapshots()
            .is_empty()
    };
    let grants = || async {
        kms.list_grants()
            .key_id(&key)
            .send()
            .await
            .unwrap()
            .grants()
            .len()
    };
    let policy = || async {
        kms.get_key_policy()
            .key_id(&key)
            .policy_name("default")
            .send()
            .await
            .unwrap()
            .policy()
            .unwrap()
            .to_string()
    };
    let before = policy().await;
    share_snapshot(&ec2, &snap, b).await;
    let grant = kms
        .create_grant()
        .key_id(&key)
        .grantee_principal(format!("arn:aws:iam::{b}:root"))
        .operations(GrantOperation::Decrypt)
        .name("g")
        .send()
        .await
        .unwrap()
        .grant_id()
        .unwrap()
        .to_string();
    allow_account_on_key(&kms, &key, copy_statement(json!({ "AWS": b }))).await;
    // The changes took effect; reads do not show them yet.
    assert!(!restorable_by_b().await, "the share does not show yet");
    assert_eq!(grants().await, 0, "the grant does not show yet");
    assert_eq!(policy().await, before, "the old policy is read");
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    assert!(restorable_by_b().await, "the share shows");
    assert_eq!(grants().await, 1, "the grant shows");
    assert_ne!(policy().await, before, "the new policy is read");
    // Taken back: still read as there for the delay.
    kms.revoke_grant()
        .key_id(&key)
        .grant_id(&grant)
        .send()
        .await
        .unwrap();
    ec2.modify_snapshot_attribute()
        .snapshot_id(&snap)
        .attribute(SnapshotAttributeName::CreateVolumePermission)
        .operation_type(OperationType::Remove)
        .user_ids(b)
        .send()
        .await
        .unwrap();
    assert_eq!(
        grants().await,
        1,
        "a revoked grant is still listed for a while"
    );
    assert!(
        restorable_by_b().await,
        "a removed share still shows for a while"
    );
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    assert_eq!(grants().await, 0);
    assert!(!restorable_by_b().await);
}

#[tokio::test]
async fn an_assumed_role_session_ends_after_session_seconds() {
    let emu = Emulator::start_with(json!({ "session_seconds": 1 }));
    let (prod, backup) = ("100000000095", "100000000096");
    let role_arn = emu
        .create_assumable_role(backup, "ferry-migrator", prod, None)
        .await;
    let assumed = emu
        .sts(prod, SRC)
        .assume_role()
        .role_arn(role_arn)
        .role_session_name("ferry")
        .send()
        .await
        .expect("AssumeRole");
    let c = assumed.credentials().expect("credentials");
    let lasts = c.expiration().secs()
        - aws_smithy_types::DateTime::from(std::time::SystemTime::now()).secs();
    assert!(
        lasts <= 1,
        "Expiration says the session is short: {lasts} s"
    );
    let creds = aws_sdk_sts::config::Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_string()),
        None,
        "assumed",
    );
    let config = no_retries(&emu.sdk_config_with(
        aws_types::sdk_config::SharedCredentialsProvider::new(creds),
        SRC,
    ));
    let ec2 = aws_sdk_ec2::Client::new(&config);
    ec2.describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .expect("the session works at first");
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let err = ec2
        .describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .expect_err("the session ended");
    assert_eq!(err.code(), Some("ExpiredToken"));
}

/// The AssumeRole answer for `role_arn` from `account`'s static credentials: Ok(expiration in
/// seconds from now) or Err((code, message)).
async fn assume(
    emu: &Emulator,
    account: &str,
    role_arn: &str,
    external_id: Option<&str>,
    duration: Option<i32>,
) -> Result<i64, (String, String)> {
    let sts = aws_sdk_sts::Client::new(&no_retries(&emu.sdk_config(account, SRC)));
    let out = sts
        .assume_role()
        .role_arn(role_arn)
        .role_session_name("ferry")
        .set_external_id(external_id.map(str::to_string))
        .set_duration_seconds(duration)
        .send()
        .await;
    match out {
        Ok(o) => Ok(o.credentials().expect("credentials").expiration().secs()
            - aws_smithy_types::DateTime::from(std::time::SystemTime::now()).secs()),
        Err(e) => Err((
            e.code().unwrap_or_default().to_string(),
            e.message().unwrap_or_default().to_string(),
        )),
    }
}

/// A role in `account` that `trust` lets assume, with sessions of up to two hours; its ARN.
async fn two_hour_role(
    emu: &Emulator,
    account: &str,
    name: &str,
    trust: &serde_json::Value,
) -> String {
    emu.iam(account)
        .create_role()
        .role_name(name)
        .assume_role_policy_document(trust.to_string())
        .max_session_duration(7200)
        .send()
        .await
        .expect("CreateRole")
        .role()
        .unwrap()
        .arn()
        .to_string()
}

#[tokio::test]
async fn assume_role_needs_the_role_a_trust_policy_for_the_caller_and_the_external_id() {
    let emu = Emulator::shared();
    let (prod, backup, other) = ("100000000097", "100000000098", "100000000099");
    let denied = |role: &str| {
        format!(
            "User: arn:aws:iam::{prod}:root is not authorized to perform: sts:AssumeRole on resource: {role}"
        )
    };

    // No such role: refused as AWS refuses it (it does not say whether the role exists).
    let missing = format!("arn:aws:iam::{backup}:role/not-there");
    let err = assume(emu, prod, &missing, None, None).await.unwrap_err();
    assert_eq!(err, ("AccessDenied".to_string(), denied(&missing)));

    // A role whose trust policy names another account.
    let theirs = emu
        .create_assumable_role(backup, "trusts-other", other, None)
        .await;
    let err = assume(emu, prod, &theirs, None, None).await.unwrap_err();
    assert_eq!(err, ("AccessDenied".to_string(), denied(&theirs)));
    assert!(assume(emu, other, &theirs, None, None).await.is_ok());

    // A role that asks for an external id: none or a wrong one is refused, the right one works.
    let with_id = emu
        .create_assumable_role(backup, "with-external-id", prod, Some("s3cr3t"))
        .await;
    for wrong in [None, Some("guess")] {
        let err = assume(emu, prod, &with_id, wrong, None).await.unwrap_err();
        assert_eq!(
            err,
            ("AccessDenied".to_string(), denied(&with_id)),
            "{wrong:?}"
        );
    }
    let lasts = assume(emu, prod, &with_id, Some("s3cr3t"), None)
        .await
        .expect("the right external id");
    assert!(
        (3590..=3600).contains(&lasts),
        "an hour by default: {lasts} s"
    );

    // A trust policy naming one user, not the account: the account's root is not that user.
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"AWS": [format!("arn:aws:iam::{prod}:user/alice")]},
        "Action": ["sts:AssumeRole"]}]});
    let for_alice = two_hour_role(emu, backup, "for-alice", &trust).await;
    let err = assume(emu, prod, &for_alice, None, None).await.unwrap_err();
    assert_eq!(err.0, "AccessDenied");

    // DurationSeconds: honoured between 900 and the role's MaxSessionDuration.
    let plain = emu.create_assumable_role(backup, "plain", prod, None).await;
    let lasts = assume(emu, prod, &plain, None, Some(900)).await.unwrap();
    assert!((890..=900).contains(&lasts), "{lasts} s");
    let err = assume(emu, prod, &plain, None, Some(3601))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        (
            "ValidationError".to_string(),
            "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."
                .to_string()
        )
    );
    let err = assume(emu, prod, &plain, None, Some(899))
        .await
        .unwrap_err();
    assert_eq!(err.0, "ValidationError");
    let everyone = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"AWS": "*"}, "Action": "sts:*"}]});
    let long = two_hour_role(emu, backup, "long", &everyone).await;
    let lasts = assume(emu, prod, &long, None, Some(7200)).await.unwrap();
    assert!((7190..=7200).contains(&lasts), "{lasts} s");
}

// --- counters --------------------------------------------------------------------------------

#[tokio::test]
async fn counters_count_requests_mutations_and_copies_and_reset() {
    let emu = Emulator::start();
    let (a, b) = ("100000000101", "100000000102");
    let ec2 = emu.ec2(a, SRC);
    let snap = snapshot(&ec2, SRC, None).await;
    for _ in 0..3 {
        describe_snapshot(&ec2, &snap).await;
    }
    emu.ec2(b, DST)
        .describe_images()
        .owners("self")
        .send()
        .await
        .unwrap();
    emu.ec2(a, DST)
        .copy_snapshot()
        .source_snapshot_id(&snap)
        .source_region(SRC)
        .send()
        .await
        .unwrap();

    let c = emu.counters();
    assert_eq!(c.requests(a, "ec2", "DescribeSnapshots"), 3);
    assert_eq!(c.requests(a, "ec2", "CreateVolume"), 1);
    assert_eq!(c.requests(b, "ec2", "DescribeImages"), 1);
    assert_eq!(
        c.mutating(a),
        3,
        "CreateVolume, CreateSnapshot, CopySnapshot"
    );
    assert_eq!(c.mutating(b), 0);
    let row = c
        .requests
        .iter()
        .find(|r| r.action == "CopySnapshot")
        .unwrap();
    assert_eq!((row.account.as_str(), row.region.as_str()), (a, DST));
    assert!(row.mutating);
    assert_eq!(c.copies_into(a, DST), (1, 0, 0));
    assert_eq!(c.copy_totals.snapshots, 1);

    // "a repeated run made zero mutating calls": only reads after a counter reset
    emu.reset_counters();
    describe_snapshot(&ec2, &snap).await;
    let c = emu.counters();
    assert_eq!(c.mutating(a), 0);
    assert_eq!(c.totals.requests, 1);

    // moto's own reset clears moto's state and the additions' state
    let (status, _) = emu.control("POST", "/moto-api/reset", None);
    assert_eq!(status, 200);
    assert_eq!(emu.counters().totals.requests, 0);
    let err = ec2
        .describe_snapshots()
        .snapshot_ids(&snap)
        .send()
        .await
        .expect_err("moto was reset");
    assert_eq!(err.code(), Some("InvalidSnapshot.NotFound"));

    emu.configure(json!({"copy_seconds": 99}));
    emu.reset();
    assert_eq!(
        emu.config()["copy_seconds"],
        2.0,
        "reset restores the start-up configuration"
    );
}

// --- S3 replication configuration ------------------------------------------------------------

#[tokio::test]
async fn bucket_replication_configuration_reads_back_as_put() {
    use aws_sdk_s3::types::{
        AccessControlTranslation, BucketLocationConstraint, BucketVersioningStatus,
        CreateBucketConfiguration, DeleteMarkerReplication, DeleteMarkerReplicationStatus,
        Destination, EncryptionConfiguration, OwnerOverride, ReplicationConfiguration,
        ReplicationRule, ReplicationRuleAndOperator, ReplicationRuleFilter, ReplicationRuleStatus,
        SourceSelectionCriteria, SseKmsEncryptedObjects, SseKmsEncryptedObjectsStatus,
        Tag as S3Tag, VersioningConfiguration,
    };
    let emu = Emulator::shared();
    let (a, b) = ("100000000111", "100000000112");
    let s3_a = emu.s3(a, SRC);
    let s3_b = emu.s3(b, DST);
    let replica_key = customer_key(emu, b, DST).await;
    s3_a.create_bucket()
        .bucket("repl-src-111")
        .send()
        .await
        .unwrap();
    s3_b.create_bucket()
        .bucket("repl-dst-112")
        .create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(DST))
                .build(),
        )
        .send()
        .await
        .unwrap();
    for (client, bucket) in [(&s3_a, "repl-src-111"), (&s3_b, "repl-dst-112")] {
        client
            .put_bucket_versioning()
            .bucket(bucket)
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
    let destination = Destination::builder()
        .bucket("arn:aws:s3:::repl-dst-112")
        .account(b)
        .encryption_configuration(
            EncryptionConfiguration::builder()
                .replica_kms_key_id(&replica_key)
                .build(),
        )
        .access_control_translation(
            AccessControlTranslation::builder()
                .owner(OwnerOverride::Destination)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let kms_rule = ReplicationRule::builder()
        .id("ferry-logs")
        .priority(1)
        .status(ReplicationRuleStatus::Enabled)
        .filter(ReplicationRuleFilter::builder().prefix("app/").build())
        .source_selection_criteria(
            SourceSelectionCriteria::builder()
                .sse_kms_encrypted_objects(
                    SseKmsEncryptedObjects::builder()
                        .status(SseKmsEncryptedObjectsStatus::Enabled)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .delete_marker_replication(
            DeleteMarkerReplication::builder()
                .status(DeleteMarkerReplicationStatus::Enabled)
                .build(),
        )
        .destination(destination.clone())
        .build()
        .unwrap();
    let tagged_rule = ReplicationRule::builder()
        .id("ferry-tagged")
        .priority(2)
        .status(ReplicationRuleStatus::Disabled)
        .filter(
            ReplicationRuleFilter::builder()
                .and(
                    ReplicationRuleAndOperator::builder()
                        .prefix("audit/")
                        .tags(S3Tag::builder().key("keep").value("yes").build().unwrap())
                        .tags(S3Tag::builder().key("team").value("ops").build().unwrap())
                        .build(),
                )
                .build(),
        )
        .destination(destination)
        .build()
        .unwrap();
    let role = format!("arn:aws:iam::{a}:role/ferry-replication");
    s3_a.put_bucket_replication()
        .bucket("repl-src-111")
        .replication_configuration(
            ReplicationConfiguration::builder()
                .role(&role)
                .rules(kms_rule.clone())
                .rules(tagged_rule.clone())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("PutBucketReplication");

    let got = s3_a
        .get_bucket_replication()
        .bucket("repl-src-111")
        .send()
        .await
        .expect("GetBucketReplication");
    let config = got.replication_configuration().unwrap();
    assert_eq!(config.role(), role);
    assert_eq!(config.rules(), &[kms_rule, tagged_rule]);
}

// --- live S3 replication and S3 Batch Replication ------------------------------------------

/// How long a replication or a batch job may take before a test gives up on it.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

async fn versioned_bucket(s3: &aws_sdk_s3::Client, name: &str, region: &str) {
    use aws_sdk_s3::types::{
        BucketLocationConstraint, BucketVersioningStatus, CreateBucketConfiguration,
        VersioningConfiguration,
    };
    let mut create = s3.create_bucket().bucket(name);
    if region != "us-east-1" {
        create = create.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region))
                .build(),
        );
    }
    create.send().await.expect("CreateBucket");
    s3.put_bucket_versioning()
        .bucket(name)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .expect("PutBucketVersioning");
}

/// A role that `service` may assume, with one inline policy named "policy"; returns its ARN.
async fn service_role(
    iam: &aws_sdk_iam::Client,
    name: &str,
    service: &str,
    policy: &serde_json::Value,
) -> String {
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]});
    let arn = iam
        .create_role()
        .role_name(name)
        .assume_role_policy_document(trust.to_string())
        .send()
        .await
        .expect("CreateRole")
        .role()
        .expect("role")
        .arn()
        .to_string();
    put_role_policy(iam, name, policy).await;
    arn
}

async fn put_role_policy(iam: &aws_sdk_iam::Client, role: &str, policy: &serde_json::Value) {
    iam.put_role_policy()
        .role_name(role)
        .policy_name("policy")
        .policy_document(policy.to_string())
        .send()
        .await
        .expect("PutRolePolicy");
}

/// The live replication role's policy (setting-repl-config-perm-overview): read `src`, replicate
/// into `dst`, kms:Decrypt on `decrypt` and kms:Encrypt on `encrypt` (keys by ARN).
fn replication_policy(
    src: &str,
    dst: &str,
    decrypt: &[&str],
    encrypt: &[&str],
) -> serde_json::Value {
    let mut statements = vec![
        json!({"Effect": "Allow",
            "Action": ["s3:GetReplicationConfiguration", "s3:ListBucket"],
            "Resource": format!("arn:aws:s3:::{src}")}),
        json!({"Effect": "Allow",
            "Action": ["s3:GetObjectVersionForReplication", "s3:GetObjectVersionAcl",
                       "s3:GetObjectVersionTagging"],
            "Resource": format!("arn:aws:s3:::{src}/*")}),
        json!({"Effect": "Allow",
            "Action": ["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"],
            "Resource": format!("arn:aws:s3:::{dst}/*")}),
    ];
    if !decrypt.is_empty() {
        statements.push(json!({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": decrypt}));
    }
    if !encrypt.is_empty() {
        statements.push(json!({"Effect": "Allow", "Action": "kms:Encrypt", "Resource": encrypt}));
    }
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// One rule for every key (prefix ""), SSE-KMS objects included, replicas under `replica_key`.
async fn replicate_everything(
    s3: &aws_sdk_s3::Client,
    src: &str,
    role: &str,
    dst: &str,
    replica_key: &str,
) {
    use aws_sdk_s3::types::{
        DeleteMarkerReplication, DeleteMarkerReplicationStatus, Destination,
        EncryptionConfiguration, ReplicationConfiguration, ReplicationRule, ReplicationRuleFilter,
        ReplicationRuleStatus, SourceSelectionCriteria, SseKmsEncryptedObjects,
        SseKmsEncryptedObjectsStatus,
    };
    let rule = ReplicationRule::builder()
        .id("everything")
        .priority(1)
        .status(ReplicationRuleStatus::Enabled)
        .filter(ReplicationRuleFilter::builder().prefix("").build())
        .source_selection_criteria(
            SourceSelectionCriteria::builder()
                .sse_kms_encrypted_objects(
                    SseKmsEncryptedObjects::builder()
                        .status(SseKmsEncryptedObjectsStatus::Enabled)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .delete_marker_replication(
            DeleteMarkerReplication::builder()
                .status(DeleteMarkerReplicationStatus::Disabled)
                .build(),
        )
        .destination(
            Destination::builder()
                .bucket(format!("arn:aws:s3:::{dst}"))
                .encryption_configuration(
                    EncryptionConfiguration::builder()
                        .replica_kms_key_id(replica_key)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    s3.put_bucket_replication()
        .bucket(src)
        .replication_configuration(
            ReplicationConfiguration::builder()
                .role(role)
                .rules(rule)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("PutBucketReplication");
}

/// PutObject, SSE-KMS under `key` if given; returns the new version id.
async fn put_object(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: &[u8],
    kms_key: Option<&str>,
) -> String {
    let mut put = s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(aws_sdk_s3::primitives::ByteStream::from(body.to_vec()));
    if let Some(kms_key) = kms_key {
        put = put
            .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
            .ssekms_key_id(kms_key);
    }
    put.send()
        .await
        .expect("PutObject")
        .version_id()
        .expect("a versioned bucket answers a version id")
        .to_string()
}

async fn head(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> aws_sdk_s3::operation::head_object::HeadObjectOutput {
    s3.head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("HeadObject {bucket}/{key}: {e:?}"))
}

async fn replication_status(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<String> {
    head(s3, bucket, key)
        .await
        .replication_status()
        .map(|s| s.as_str().to_string())
}

/// Whether `bucket` has no object `key` (HeadObject answers 404).
async fn absent(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> bool {
    match s3.head_object().bucket(bucket).key(key).send().await {
        Ok(_) => false,
        Err(e) => e.raw_response().map(|r| r.status().as_u16()) == Some(404),
    }
}

async fn body(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    s3.get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetObject {bucket}/{key}: {e:?}"))
        .body
        .collect()
        .await
        .expect("object body")
        .to_vec()
}

/// The replication status of `key` once it is no longer PENDING (at most `SETTLE`).
async fn settled_replication_status(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> String {
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let status = replication_status(s3, bucket, key).await;
        match status.as_deref() {
            Some("PENDING") => {}
            Some(settled) => return settled.to_string(),
            None => panic!("{bucket}/{key} has no replication status"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{bucket}/{key} still PENDING after {SETTLE:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn replication_summary(emu: &Emulator) -> serde_json::Value {
    let (status, body) = emu.control("GET", "/_ferry/replication", None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("replication summary is JSON")
}

#[tokio::test]
async fn a_put_under_a_rule_replicates_or_fails_by_the_roles_kms_permissions() {
    // Long enough that the first HeadObject after a put sees PENDING, even on a busy machine.
    let emu = Emulator::start_with(json!({ "replication_delay_ms": 1000 }));
    let a = "111111111111";
    let (src, dst) = ("live-src", "live-dst");
    let s3_src = emu.s3(a, SRC);
    let s3_dst = emu.s3(a, DST);
    versioned_bucket(&s3_src, src, SRC).await;
    versioned_bucket(&s3_dst, dst, DST).await;
    // Live replication checks kms:Encrypt on the replica key only for SSE-KMS sources (a plain
    // object is replicated under the destination's default encryption): the objects are SSE-KMS
    // under a source key whose policy is moto's default (the account root).
    let source_key = customer_key(&emu, a, SRC).await;
    let replica_key = customer_key(&emu, a, DST).await;
    let root_only = json!({"Version": "2012-10-17", "Statement": [{"Sid": "root",
        "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{a}:root")},
        "Action": "kms:*", "Resource": "*"}]});
    emu.kms(a, DST)
        .put_key_policy()
        .key_id(&replica_key)
        .policy_name("default")
        .policy(root_only.to_string())
        .send()
        .await
        .expect("PutKeyPolicy");
    let iam = emu.iam(a);
    let role_name = "live-replication";
    let role = service_role(
        &iam,
        role_name,
        "s3.amazonaws.com",
        &replication_policy(src, dst, &[&source_key], &[]),
    )
    .await;
    replicate_everything(&s3_src, src, &role, dst, &replica_key).await;

    // Without kms:Encrypt on the replica key the version fails.
    let denied = "docs/denied.txt";
    put_object(&s3_src, src, denied, b"not allowed", Some(&source_key)).await;
    assert_eq!(
        replication_status(&s3_src, src, denied).await.as_deref(),
        Some("PENDING")
    );
    assert_eq!(
        settled_replication_status(&s3_src, src, denied).await,
        "FAILED"
    );
    let summary = replication_summary(&emu);
    let last = summary["failures"]
        .as_array()
        .and_then(|f| f.last())
        .unwrap_or_else(|| panic!("a failure is reported: {summary}"));
    assert_eq!(last["bucket"], src, "{summary}");
    assert_eq!(last["key"], denied, "{summary}");
    let reason = last["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("kms:Encrypt") && reason.contains(&replica_key),
        "the reason names the missing permission on the replica key: {reason}"
    );
    assert!(
        absent(&s3_dst, dst, denied).await,
        "no replica of a FAILED version"
    );

    // With kms:Encrypt the next version is replicated.
    put_role_policy(
        &iam,
        role_name,
        &replication_policy(src, dst, &[&source_key], &[&replica_key]),
    )
    .await;
    let allowed = "docs/allowed.txt";
    let version = put_object(&s3_src, src, allowed, b"replicate me", Some(&source_key)).await;
    assert_eq!(
        replication_status(&s3_src, src, allowed).await.as_deref(),
        Some("PENDING")
    );
    assert_eq!(
        settled_replication_status(&s3_src, src, allowed).await,
        "COMPLETED"
    );
    let replica = head(&s3_dst, dst, allowed).await;
    assert_eq!(
        replica.replication_status().map(|s| s.as_str()),
        Some("REPLICA")
    );
    assert_eq!(replica.ssekms_key_id(), Some(replica_key.as_str()));
    assert_eq!(replica.version_id(), Some(version.as_str()));
    assert_eq!(body(&s3_dst, dst, allowed).await, b"replicate me");

    // The failed version is not retried; the counts add up.
    assert_eq!(
        replication_status(&s3_src, src, denied).await.as_deref(),
        Some("FAILED")
    );
    let summary = replication_summary(&emu);
    assert_eq!(
        (
            &summary["completed"],
            &summary["failed"],
            &summary["pending"]
        ),
        (&json!(1), &json!(1), &json!(0)),
        "{summary}"
    );
}

const BACKFILL_SRC: &str = "backfill-src";
const BACKFILL_DST: &str = "backfill-dst";
const BACKFILL_REPORTS: &str = "backfill-reports";

/// A source bucket whose objects were written before its replication rule, and what a batch job
/// needs: a batch role and a report bucket.
struct Backfill {
    batch_role: String,
    /// Objects the replication role may replicate: plain, or SSE-KMS under a key it may use.
    replicable: Vec<&'static str>,
    /// SSE-KMS objects under a key the replication role may not Decrypt.
    locked: Vec<&'static str>,
    /// The key of `locked`.
    locked_key: String,
    replica_key: String,
}

async fn backfill_world(emu: &Emulator, a: &str) -> Backfill {
    let s3_src = emu.s3(a, SRC);
    versioned_bucket(&s3_src, BACKFILL_SRC, SRC).await;
    versioned_bucket(&emu.s3(a, DST), BACKFILL_DST, DST).await;
    s3_src
        .create_bucket()
        .bucket(BACKFILL_REPORTS)
        .send()
        .await
        .expect("CreateBucket reports");
    let usable_key = customer_key(emu, a, SRC).await;
    let locked_key = customer_key(emu, a, SRC).await;
    let replica_key = customer_key(emu, a, DST).await;
    let replicable = vec!["data/plain-1", "data/plain-2", "data/plain-3", "data/kms-1"];
    let locked = vec!["locked/secret-1", "locked/secret-2"];
    for key in &replicable {
        let kms = key.contains("kms").then_some(usable_key.as_str());
        put_object(&s3_src, BACKFILL_SRC, key, key.as_bytes(), kms).await;
    }
    for key in &locked {
        put_object(
            &s3_src,
            BACKFILL_SRC,
            key,
            key.as_bytes(),
            Some(&locked_key),
        )
        .await;
    }

    let iam = emu.iam(a);
    let replication_role = service_role(
        &iam,
        "backfill-replication",
        "s3.amazonaws.com",
        &replication_policy(BACKFILL_SRC, BACKFILL_DST, &[&usable_key], &[&replica_key]),
    )
    .await;
    replicate_everything(
        &s3_src,
        BACKFILL_SRC,
        &replication_role,
        BACKFILL_DST,
        &replica_key,
    )
    .await;
    // s3-batch-replication-policies
    let batch_policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:InitiateReplication",
         "Resource": format!("arn:aws:s3:::{BACKFILL_SRC}/*")},
        {"Effect": "Allow",
         "Action": ["s3:GetReplicationConfiguration", "s3:PutInventoryConfiguration"],
         "Resource": format!("arn:aws:s3:::{BACKFILL_SRC}")},
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject"],
         "Resource": format!("arn:aws:s3:::{BACKFILL_REPORTS}/*")}]});
    let batch_role = service_role(
        &iam,
        "backfill-batch",
        "batchoperations.s3.amazonaws.com",
        &batch_policy,
    )
    .await;
    Backfill {
        batch_role,
        replicable,
        locked,
        locked_key,
        replica_key,
    }
}

/// CreateJob: replicate every eligible version never replicated (NONE), report failed tasks
/// under `batch/` in the report bucket, no confirmation.
fn create_backfill_job(
    control: &aws_sdk_s3control::Client,
    account: &str,
    batch_role: &str,
    token: &str,
) -> aws_sdk_s3control::operation::create_job::builders::CreateJobFluentBuilder {
    use aws_sdk_s3control::types::{
        JobManifestGenerator, JobManifestGeneratorFilter, JobOperation, JobReport, JobReportFormat,
        JobReportScope, ReplicationStatus, S3JobManifestGenerator, S3ReplicateObjectOperation,
    };
    let generator = S3JobManifestGenerator::builder()
        .expected_bucket_owner(account)
        .source_bucket(format!("arn:aws:s3:::{BACKFILL_SRC}"))
        .enable_manifest_output(false)
        .filter(
            JobManifestGeneratorFilter::builder()
                .eligible_for_replication(true)
                .object_replication_statuses(ReplicationStatus::None)
                .build(),
        )
        .build()
        .expect("source bucket and manifest output set");
    control
        .create_job()
        .account_id(account)
        .confirmation_required(false)
        .operation(
            JobOperation::builder()
                .s3_replicate_object(S3ReplicateObjectOperation::builder().build())
                .build(),
        )
        .manifest_generator(JobManifestGenerator::S3JobManifestGenerator(generator))
        .report(
            JobReport::builder()
                .bucket(format!("arn:aws:s3:::{BACKFILL_REPORTS}"))
                .format(JobReportFormat::ReportCsv20180820)
                .enabled(true)
                .prefix("batch")
                .report_scope(JobReportScope::FailedTasksOnly)
                .build(),
        )
        .client_request_token(token)
        .description("backfill")
        .priority(10)
        .role_arn(batch_role)
}

/// DescribeJob until the job has ended (at most `SETTLE`).
async fn ended_job(
    control: &aws_sdk_s3control::Client,
    account: &str,
    id: &str,
) -> aws_sdk_s3control::types::JobDescriptor {
    use aws_sdk_s3control::types::JobStatus;
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let job = control
            .describe_job()
            .account_id(account)
            .job_id(id)
            .send()
            .await
            .expect("DescribeJob")
            .job()
            .cloned()
            .expect("a job");
        if matches!(
            job.status(),
            Some(JobStatus::Complete | JobStatus::Failed | JobStatus::Cancelled)
        ) {
            return job;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job {id} still {:?} after {SETTLE:?}",
            job.status()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn assert_complete(job: &aws_sdk_s3control::types::JobDescriptor) {
    assert_eq!(
        job.status(),
        Some(&aws_sdk_s3control::types::JobStatus::Complete),
        "failure reasons: {:?}",
        job.failure_reasons()
    );
}

/// (total, succeeded, failed) tasks of a job.
fn tasks(job: &aws_sdk_s3control::types::JobDescriptor) -> (i64, i64, i64) {
    let p = job.progress_summary().expect("progress summary");
    (
        p.total_number_of_tasks().unwrap_or(-1),
        p.number_of_tasks_succeeded().unwrap_or(-1),
        p.number_of_tasks_failed().unwrap_or(-1),
    )
}

#[tokio::test]
async fn a_batch_job_replicates_existing_objects_once_per_client_token_and_reports_failures() {
    let emu = Emulator::start();
    let a = "100000000121";
    let world = backfill_world(&emu, a).await;
    let s3_src = emu.s3(a, SRC);
    let s3_dst = emu.s3(a, DST);
    let all: Vec<&str> = world
        .replicable
        .iter()
        .chain(&world.locked)
        .copied()
        .collect();
    // written before the rule: never tried, not live-replicated
    for key in &all {
        assert_eq!(
            replication_status(&s3_src, BACKFILL_SRC, key).await,
            None,
            "{key}"
        );
    }

    let control = emu.s3control(a, SRC);
    let token = "backfill-run-1";
    let id = create_backfill_job(&control, a, &world.batch_role, token)
        .send()
        .await
        .expect("CreateJob")
        .job_id()
        .expect("job id")
        .to_string();
    let again = create_backfill_job(&control, a, &world.batch_role, token)
        .send()
        .await
        .expect("CreateJob with the same token")
        .job_id()
        .expect("job id")
        .to_string();
    assert_eq!(
        again, id,
        "the same ClientRequestToken answers the same job"
    );
    assert_eq!(emu.counters_json()["batch_jobs"]["created"], 1);

    let job = ended_job(&control, a, &id).await;
    assert_complete(&job);
    let (replicable, locked) = (world.replicable.len() as i64, world.locked.len() as i64);
    assert_eq!(tasks(&job), (replicable + locked, replicable, locked));
    let c = emu.counters();
    assert_eq!(
        (
            c.batch_jobs.created,
            c.batch_jobs.tasks_succeeded,
            c.batch_jobs.tasks_failed
        ),
        (1, replicable as u64, locked as u64)
    );

    for key in &world.replicable {
        assert_eq!(
            replication_status(&s3_src, BACKFILL_SRC, key)
                .await
                .as_deref(),
            Some("COMPLETED"),
            "{key}"
        );
        let replica = head(&s3_dst, BACKFILL_DST, key).await;
        assert_eq!(
            replica.replication_status().map(|s| s.as_str()),
            Some("REPLICA"),
            "{key}"
        );
        assert_eq!(body(&s3_dst, BACKFILL_DST, key).await, key.as_bytes());
        if key.contains("kms") {
            assert_eq!(replica.ssekms_key_id(), Some(world.replica_key.as_str()));
        }
    }
    for key in &world.locked {
        assert_eq!(
            replication_status(&s3_src, BACKFILL_SRC, key)
                .await
                .as_deref(),
            Some("FAILED"),
            "{key}"
        );
        assert!(absent(&s3_dst, BACKFILL_DST, key).await, "{key}");
    }

    // The completion report lists one results CSV: the failed tasks, by key.
    let manifest = body(
        &s3_src,
        BACKFILL_REPORTS,
        &format!("batch/job-{id}/manifest.json"),
    )
    .await;
    let manifest: serde_json::Value =
        serde_json::from_slice(&manifest).expect("report manifest is JSON");
    let results = manifest["Results"].as_array().expect("Results");
    assert_eq!(results.len(), 1, "FailedTasksOnly: {manifest}");
    assert_eq!(results[0]["TaskExecutionStatus"], "failed", "{manifest}");
    assert_eq!(results[0]["Bucket"], BACKFILL_REPORTS, "{manifest}");
    let csv_key = results[0]["Key"].as_str().expect("results key");
    assert!(
        csv_key.starts_with(&format!("batch/job-{id}/results/")),
        "{csv_key}"
    );
    let csv = String::from_utf8(body(&s3_src, BACKFILL_REPORTS, csv_key).await).unwrap();
    let mut failed_keys = Vec::new();
    for row in csv.lines() {
        // Bucket, Key, VersionId, TaskStatus, HTTP status, ErrorCode, ResultMessage
        let fields: Vec<&str> = row.splitn(7, ',').collect();
        assert_eq!(fields.len(), 7, "{row}");
        assert_eq!(fields[0], BACKFILL_SRC, "{row}");
        assert_eq!(&fields[3..6], ["failed", "403", "AccessDenied"], "{row}");
        assert!(
            fields[6].contains("kms:Decrypt") && fields[6].contains(&world.locked_key),
            "the message names the missing permission: {row}"
        );
        failed_keys.push(fields[1].to_string());
    }
    failed_keys.sort();
    assert_eq!(failed_keys, world.locked, "{csv}");
}

#[tokio::test]
async fn a_lost_create_job_answer_still_made_the_job_and_a_retry_with_its_token_finds_it() {
    let emu = Emulator::start();
    let a = "100000000131";
    let world = backfill_world(&emu, a).await;
    let control = emu.s3control(a, SRC);
    let token = "backfill-lost-1";

    emu.configure(json!({ "lost_response_rate": 1.0, "seed": 11 }));
    let lost = create_backfill_job(&control, a, &world.batch_role, token)
        .customize()
        .config_override(
            aws_sdk_s3control::config::Builder::new().retry_config(RetryConfig::disabled()),
        )
        .send()
        .await;
    emu.configure(json!({ "lost_response_rate": 0.0 }));
    let err = lost.expect_err("the CreateJob answer is lost");
    let status = err.raw_response().map(|r| r.status().as_u16());
    assert!(
        matches!(status, None | Some(500)),
        "a 500 or no answer at all: {err:?}"
    );
    let c = emu.counters();
    let create = c
        .requests
        .iter()
        .find(|r| r.service == "s3control" && r.action == "CreateJob")
        .expect("CreateJob counted");
    assert_eq!((create.count, create.lost), (1, 1));
    assert_eq!(c.batch_jobs.created, 1, "the lost call made the job");

    let listed = control
        .list_jobs()
        .account_id(a)
        .send()
        .await
        .expect("ListJobs");
    let ids: Vec<&str> = listed.jobs().iter().filter_map(|j| j.job_id()).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let id = ids[0].to_string();

    let retried = create_backfill_job(&control, a, &world.batch_role, token)
        .send()
        .await
        .expect("CreateJob again with the token")
        .job_id()
        .expect("job id")
        .to_string();
    assert_eq!(retried, id, "the retry finds the job the lost call made");
    assert_eq!(emu.counters_json()["batch_jobs"]["created"], 1);
    let listed = control
        .list_jobs()
        .account_id(a)
        .send()
        .await
        .expect("ListJobs");
    assert_eq!(listed.jobs().len(), 1, "no second job");

    // and it runs like any other
    let job = ended_job(&control, a, &id).await;
    assert_complete(&job);
    let total = (world.replicable.len() + world.locked.len()) as i64;
    assert_eq!(tasks(&job).0, total);
}

// --- the demo world --------------------------------------------------------------------------

#[tokio::test]
async fn seed_demo_builds_the_demo_world() {
    let emu = Emulator::start();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join("tests/emulator/seed_demo.py"))
        .arg("--endpoint")
        .arg(emu.endpoint())
        .output()
        .expect("run seed_demo.py");
    assert!(
        out.status.success(),
        "seed_demo.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let world: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("seed_demo.py prints JSON");
    let prod = world["accounts"]["prod"].as_str().unwrap();
    let backup = world["accounts"]["backup"].as_str().unwrap();

    let ec2 = emu.ec2(prod, SRC);
    let key_arn = world["kms_key"]["arn"].as_str().unwrap();
    let key = emu
        .kms(prod, SRC)
        .describe_key()
        .key_id("alias/demo-source")
        .send()
        .await
        .unwrap();
    assert_eq!(key.key_metadata().unwrap().arn(), Some(key_arn));

    let nightly = ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(
            Filter::builder()
                .name("tag:Backup")
                .values("nightly")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(nightly.snapshots().len(), 5);
    assert!(
        nightly
            .snapshots()
            .iter()
            .all(|s| s.encrypted() == Some(true) && s.kms_key_id() == Some(key_arn))
    );

    let image = describe_image(&ec2, world["image"]["id"].as_str().unwrap()).await;
    assert_eq!(image.block_device_mappings().len(), 2);
    assert!(
        image
            .block_device_mappings()
            .iter()
            .all(|m| m.ebs().and_then(|e| e.encrypted()) == Some(true))
    );

    let s3 = emu.s3(prod, SRC);
    let objects = s3
        .list_objects_v2()
        .bucket("demo-app-logs")
        .send()
        .await
        .unwrap();
    assert_eq!(objects.key_count(), Some(20));
    let encryption = s3
        .get_bucket_encryption()
        .bucket("demo-app-logs")
        .send()
        .await
        .unwrap();
    let rule = &encryption
        .server_side_encryption_configuration()
        .unwrap()
        .rules()[0];
    let default = rule.apply_server_side_encryption_by_default().unwrap();
    assert_eq!(default.sse_algorithm().as_str(), "aws:kms");
    let first = objects.contents()[0].key().unwrap();
    let head = s3
        .head_object()
        .bucket("demo-app-logs")
        .key(first)
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.server_side_encryption().map(|s| s.as_str()),
        Some("aws:kms")
    );

    let role = emu
        .iam(backup)
        .get_role()
        .role_name("ferry-migrator")
        .send()
        .await
        .unwrap();
    let trust = role.role().unwrap().assume_role_policy_document().unwrap();
    let trust = urlencoding_decode(trust);
    assert!(
        trust.contains(&format!("arn:aws:iam::{prod}:root")),
        "{trust}"
    );
    assert_eq!(
        world["role"]["arn"].as_str(),
        Some(role.role().unwrap().arn())
    );

    let rds = emu.rds(prod, SRC);
    let snap = world["rds"]["snapshots"][0]["id"].as_str().unwrap();
    let found = rds
        .describe_db_snapshots()
        .db_snapshot_identifier(snap)
        .send()
        .await
        .unwrap();
    let s = &found.db_snapshots()[0];
    assert_eq!(
        s.kms_key_id(),
        Some(key_arn),
        "the demo's RDS snapshot is under its key"
    );
    assert!(
        s.tag_list()
            .iter()
            .any(|t| t.key() == Some("Backup") && t.value() == Some("nightly"))
    );
}

/// IAM returns policy documents URL-encoded.
fn urlencoding_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) if bytes[i] == b'%' => {
                out.push(b);
                i += 3;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// --- RDS (additions/rds_snapshots.py) ----------------------------------------------------------

const RDS_A: &str = "131313131313";
const RDS_B: &str = "141414141414";

/// An encrypted instance in A (under `key`, or `aws/rds`) and a manual snapshot of it.
async fn rds_snapshot(emu: &Emulator, instance: &str, key: Option<&str>) -> String {
    let rds = emu.rds(RDS_A, SRC);
    let mut req = rds
        .create_db_instance()
        .db_instance_identifier(instance)
        .engine("postgres")
        .db_instance_class("db.t3.micro")
        .allocated_storage(20)
        .master_username("admin")
        .master_user_password("not-a-secret-1")
        .storage_encrypted(true);
    if let Some(k) = key {
        req = req.kms_key_id(k);
    }
    req.send().await.unwrap();
    let id = format!("{instance}-manual");
    rds.create_db_snapshot()
        .db_instance_identifier(instance)
        .db_snapshot_identifier(&id)
        .send()
        .await
        .unwrap();
    id
}

fn rds_code<E: ProvideErrorMetadata>(e: &aws_sdk_rds::error::SdkError<E>) -> String {
    e.as_service_error()
        .and_then(|e| e.code())
        .unwrap_or("none")
        .to_string()
}

#[tokio::test]
async fn rds_shared_snapshots_are_seen_and_copied_by_the_other_account_only_with_key_access() {
    let emu = Emulator::start_with(json!({ "rds_copy_seconds": 30.0 }));
    let kms = emu.kms(RDS_A, SRC);
    let key = kms.create_key().send().await.unwrap();
    let key = key.key_metadata().unwrap().arn().unwrap().to_string();
    let snap = rds_snapshot(&emu, "orders", Some(&key)).await;
    let arn = format!("arn:aws:rds:{SRC}:{RDS_A}:snapshot:{snap}");
    let b = emu.rds(RDS_B, SRC);
    let b_key = emu.kms(RDS_B, SRC).create_key().send().await.unwrap();
    let b_key = b_key.key_metadata().unwrap().arn().unwrap().to_string();

    // Not shared: B does not see it.
    let e = b
        .describe_db_snapshots()
        .db_snapshot_identifier(&arn)
        .send()
        .await
        .unwrap_err();
    assert_eq!(rds_code(&e), "DBSnapshotNotFound");
    emu.rds(RDS_A, SRC)
        .modify_db_snapshot_attribute()
        .db_snapshot_identifier(&snap)
        .attribute_name("restore")
        .values_to_add(RDS_B)
        .send()
        .await
        .unwrap();
    let seen = b
        .describe_db_snapshots()
        .db_snapshot_identifier(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(seen.db_snapshots()[0].db_snapshot_arn(), Some(arn.as_str()));

    // Shared, but A's key does not let B use it: the copy is refused at once.
    let copy = |target: &'static str| {
        b.copy_db_snapshot()
            .source_db_snapshot_identifier(&arn)
            .target_db_snapshot_identifier(target)
            .kms_key_id(&b_key)
            .send()
    };
    let e = copy("theirs-1").await.unwrap_err();
    assert_eq!(rds_code(&e), "KMSKeyNotAccessibleFault");
    // With a statement for B on A's key, it is made, pending with its progress.
    let mut policy: serde_json::Value = serde_json::from_str(
        kms.get_key_policy()
            .key_id(&key)
            .policy_name("default")
            .send()
            .await
            .unwrap()
            .policy()
            .unwrap(),
    )
    .unwrap();
    policy["Statement"]
        .as_array_mut()
        .unwrap()
        .push(copy_statement(json!(RDS_B)));
    kms.put_key_policy()
        .key_id(&key)
        .policy_name("default")
        .policy(policy.to_string())
        .send()
        .await
        .unwrap();
    let made = copy("theirs-1").await.unwrap();
    let made = made.db_snapshot().unwrap();
    assert_eq!(made.status(), Some("copying"));
    assert_eq!(made.kms_key_id(), Some(b_key.as_str()));
    // The name is the idempotency key.
    let e = copy("theirs-1").await.unwrap_err();
    assert_eq!(rds_code(&e), "DBSnapshotAlreadyExists");
    assert_eq!(emu.counters().copy_totals.db_snapshots, 1);
    // Another region than the shared snapshot's: refused.
    let e = emu
        .rds(RDS_B, DST)
        .copy_db_snapshot()
        .source_db_snapshot_identifier(&arn)
        .target_db_snapshot_identifier("theirs-2")
        .kms_key_id(&b_key)
        .send()
        .await
        .unwrap_err();
    assert_eq!(rds_code(&e), "InvalidParameterValue");
}

#[tokio::test]
async fn rds_refuses_to_share_automated_and_aws_managed_key_snapshots_and_limits_copies() {
    let emu = Emulator::start_with(json!({
        "rds_copy_seconds": 30.0,
        "max_pending_db_snapshot_copies": 2,
    }));
    let a = emu.rds(RDS_A, SRC);
    // Under aws/rds (no KmsKeyId): never shared.
    let managed = rds_snapshot(&emu, "managed", None).await;
    let share = |id: String| {
        a.modify_db_snapshot_attribute()
            .db_snapshot_identifier(id)
            .attribute_name("restore")
            .values_to_add(RDS_B)
            .send()
    };
    let e = share(managed.clone()).await.unwrap_err();
    assert_eq!(rds_code(&e), "InvalidParameterValue");
    assert!(format!("{:?}", e.as_service_error()).contains("aws/rds"));
    // Automated snapshots: never shared.
    let automated = a
        .describe_db_snapshots()
        .db_instance_identifier("managed")
        .snapshot_type("automated")
        .send()
        .await
        .unwrap();
    let automated = automated.db_snapshots()[0]
        .db_snapshot_identifier()
        .unwrap()
        .to_string();
    let e = share(automated.clone()).await.unwrap_err();
    assert_eq!(rds_code(&e), "InvalidDBSnapshotState");
    // Copies in progress per destination: at most 2 here (20 by default).
    let key = emu.kms(RDS_A, DST).create_key().send().await.unwrap();
    let key = key.key_metadata().unwrap().arn().unwrap().to_string();
    let src = format!("arn:aws:rds:{SRC}:{RDS_A}:snapshot:{managed}");
    let dst = emu.rds(RDS_A, DST);
    for (i, ok) in [(0, true), (1, true), (2, false)] {
        let r = dst
            .copy_db_snapshot()
            .source_db_snapshot_identifier(&src)
            .target_db_snapshot_identifier(format!("copy-{i}"))
            .kms_key_id(&key)
            .send()
            .await;
        match r {
            Ok(_) => assert!(ok, "copy {i} is over the limit"),
            Err(e) => {
                assert!(!ok, "copy {i}: {e:?}");
                assert_eq!(rds_code(&e), "SnapshotQuotaExceeded");
            }
        }
    }
    let quotas = dst.describe_account_attributes().send().await.unwrap();
    let manual = quotas
        .account_quotas()
        .iter()
        .find(|q| q.account_quota_name() == Some("ManualSnapshots"))
        .unwrap();
    assert_eq!((manual.used(), manual.max()), (Some(2), Some(100)));
}

#[test]
fn ferrys_audit_calls_mutating_exactly_what_the_emulator_judges_from_aws_service_models() {
    // The emulator's verdict is its own (additions/operations.py), over every operation of
    // AWS's models for these services: ferry's audit list may not miss one, or call a read
    // mutating.
    let emu = Emulator::shared();
    let (status, body) = emu.control("GET", "/_ferry/operations", None);
    assert_eq!(status, 200, "{body}");
    let models: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let mut disagree = Vec::new();
    let mut judged = 0;
    for (service, ops) in models.as_object().expect("services") {
        let ops = ops.as_object().expect("operations");
        assert!(
            ops.len() > 10,
            "{service}: the models are there ({} operations)",
            ops.len()
        );
        for (op, mutating) in ops {
            judged += 1;
            if ferry::aws::audit::is_mutating(op) != mutating.as_bool().expect("a verdict") {
                disagree.push(format!("{service}:{op} (emulator: {mutating})"));
            }
        }
    }
    assert!(judged > 1000, "every operation of six services: {judged}");
    assert!(
        disagree.is_empty(),
        "ferry's audit disagrees on {disagree:#?}"
    );
    // Spot checks of the verdicts themselves.
    let verdict = |s: &str, op: &str| models[s][op].as_bool();
    assert_eq!(verdict("ec2", "LockSnapshot"), Some(true));
    assert_eq!(verdict("ec2", "CopySnapshot"), Some(true));
    assert_eq!(verdict("ec2", "DescribeSnapshots"), Some(false));
    assert_eq!(verdict("kms", "ReEncrypt"), Some(false));
    assert_eq!(verdict("kms", "PutKeyPolicy"), Some(true));
    assert_eq!(verdict("sts", "AssumeRole"), Some(false));
    assert_eq!(verdict("s3", "PutBucketReplication"), Some(true));
    assert_eq!(
        verdict("s3", "CreateJob"),
        Some(true),
        "S3 Control's, signed for s3"
    );
}
