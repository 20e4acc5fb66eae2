//! Paging and limits: a world of 450 snapshots and 120 AMIs, more than one page of each, with
//! more ids than one filter may carry. The emulator answers DescribeSnapshots / DescribeImages
//! in pages of at most 100 (`max_page_items`) and refuses more than 200 values in a filter
//! (additions/paging.py); its `describes` counters show every page and batch ferry asked for.

use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, ResourceType, Tag, TagSpecification,
};
use futures::StreamExt;
use serde_json::json;

use super::common::emulator::{Counters, DescribeRequest};
use super::{DST, PROD, SRC, World, assert_reapply_changes_nothing};

const SNAPSHOTS: usize = 450;
/// Of the snapshots, this many are named in the plan by id too (two id batches: 200 and 50).
const NAMED: usize = 250;
const IMAGES: usize = 120;
/// The emulator's largest page in this test.
const PAGE: usize = 100;
/// EC2's limit on the values of one filter, and ferry's batch.
const FILTER_VALUES: u64 = 200;

/// Seeds prod/us-east-1 in parallel: `SNAPSHOTS` snapshots tagged Backup=nightly, and `IMAGES`
/// AMIs tagged Role=golden, each on a snapshot of its own (not tagged Backup). Returns
/// (snapshots, images).
fn seed(w: &World, key: &str) -> (Vec<String>, Vec<String>) {
    let ec2 = w.emu.ec2(PROD, SRC);
    let snapshot = |tag: Option<(&'static str, &'static str)>| {
        let ec2 = ec2.clone();
        async move {
            let vol = ec2
                .create_volume()
                .availability_zone(format!("{SRC}a"))
                .size(1)
                .encrypted(true)
                .kms_key_id(key)
                .send()
                .await
                .expect("CreateVolume");
            let mut req = ec2.create_snapshot().volume_id(vol.volume_id().unwrap());
            if let Some((k, v)) = tag {
                req = req.tag_specifications(
                    TagSpecification::builder()
                        .resource_type(ResourceType::Snapshot)
                        .tags(Tag::builder().key(k).value(v).build())
                        .build(),
                );
            }
            let snap = req.send().await.expect("CreateSnapshot");
            snap.snapshot_id().unwrap().to_string()
        }
    };
    w.rt.block_on(async {
        let snapshots: Vec<String> = futures::stream::iter(0..SNAPSHOTS)
            .map(|_| snapshot(Some(("Backup", "nightly"))))
            .buffered(8)
            .collect()
            .await;
        let images: Vec<String> = futures::stream::iter(0..IMAGES)
            .map(|n| {
                let ec2 = ec2.clone();
                let root = snapshot(None);
                async move {
                    let root = root.await;
                    ec2.register_image()
                        .name(format!("golden-{n:03}"))
                        .root_device_name("/dev/xvda")
                        .architecture(aws_sdk_ec2::types::ArchitectureValues::X8664)
                        .virtualization_type("hvm")
                        .block_device_mappings(
                            BlockDeviceMapping::builder()
                                .device_name("/dev/xvda")
                                .ebs(EbsBlockDevice::builder().snapshot_id(root).build())
                                .build(),
                        )
                        .tag_specifications(
                            TagSpecification::builder()
                                .resource_type(ResourceType::Image)
                                .tags(Tag::builder().key("Role").value("golden").build())
                                .build(),
                        )
                        .send()
                        .await
                        .expect("RegisterImage")
                        .image_id()
                        .unwrap()
                        .to_string()
                }
            })
            .buffered(8)
            .collect()
            .await;
        (snapshots, images)
    })
}

fn paging_plan(named_snapshots: &[String], named_images: &[String]) -> String {
    format!(
        r#"version: 1
name: paging
accounts:
  prod: {{ id: "{PROD}" }}
keys:
  dr-ebs: {{ account: prod, region: {DST}, alias: alias/dr-ebs, create: true }}
migrations:
  - id: nightly
    type: snapshot-copy
    source:
      account: prod
      region: {SRC}
      snapshots: [{snapshots}]
      tags: {{ Backup: nightly }}
    destination: {{ region: {DST}, key: dr-ebs }}
  - id: golden
    type: ami-copy
    source:
      account: prod
      region: {SRC}
      images: [{images}]
      tags: {{ Role: golden }}
    destination: {{ region: {DST}, key: dr-ebs }}
# Paging is the subject, not pacing: at AWS's CopySnapshot and CopyImage rates the copies alone
# would take about 100 s.
settings:
  quotas:
    "ec2:CopySnapshot": {{ burst: 1000, per_second: 1000 }}
    "ec2:CopyImage": {{ burst: 1000, per_second: 1000 }}
"#,
        snapshots = named_snapshots.join(", "),
        images = named_images.join(", "),
    )
}

/// The sources of ferry's copies in prod/eu-west-2 of `migration`: snapshots and images, read
/// page by page.
fn copied_sources(w: &World, migration: &str) -> (Vec<String>, Vec<String>) {
    let tag = |tags: &[Tag], k: &str| {
        tags.iter()
            .find(|t| t.key() == Some(k))
            .and_then(|t| t.value())
            .unwrap_or_default()
            .to_string()
    };
    let filters = || {
        [
            Filter::builder()
                .name("tag:ferry:plan")
                .values("paging")
                .build(),
            Filter::builder()
                .name("tag:ferry:migration")
                .values(migration)
                .build(),
        ]
    };
    w.rt.block_on(async {
        let ec2 = w.emu.ec2(PROD, DST);
        let mut snapshots = Vec::new();
        let mut pages = ec2
            .describe_snapshots()
            .owner_ids("self")
            .set_filters(Some(filters().to_vec()))
            .into_paginator()
            .page_size(1000)
            .send();
        while let Some(p) = pages.next().await {
            for s in p.expect("DescribeSnapshots").snapshots() {
                assert_eq!(s.state().map(|s| s.as_str()), Some("completed"));
                snapshots.push(tag(s.tags(), "ferry:source"));
            }
        }
        let mut images = Vec::new();
        let mut pages = ec2
            .describe_images()
            .owners("self")
            .set_filters(Some(filters().to_vec()))
            .into_paginator()
            .page_size(1000)
            .send();
        while let Some(p) = pages.next().await {
            for i in p.expect("DescribeImages").images() {
                assert_eq!(i.state().map(|s| s.as_str()), Some("available"));
                images.push(tag(i.tags(), "ferry:source"));
            }
        }
        snapshots.sort();
        images.sort();
        (snapshots, images)
    })
}

/// No request carried more than a filter's 200 values or 200 ids, none was refused, and every
/// listing (a request without ids to look up) asked for pages.
fn assert_within_limits(c: &Counters) {
    assert!(!c.describes.is_empty(), "the emulator recorded describes");
    for d in &c.describes {
        assert_eq!(d.error, None, "refused: {d:#?}");
        assert!(
            d.filter_values <= FILTER_VALUES && d.ids <= FILTER_VALUES,
            "more than {FILTER_VALUES} values in one request: {d:#?}"
        );
        let lookup = d.ids > 0 || d.filters.keys().any(|f| f.ends_with("-id"));
        assert!(
            lookup || d.max_results.is_some(),
            "a listing without MaxResults: {d:#?}"
        );
    }
}

/// The requests in prod/us-east-1 of `action` that filter on `filter`.
fn with_filter<'a>(c: &'a Counters, action: &'a str, filter: &'a str) -> Vec<&'a DescribeRequest> {
    c.describes(PROD, SRC, action)
        .filter(|d| d.filters.contains_key(filter))
        .collect()
}

/// Pages of a listing of `n` items: every page but the first continues with a NextToken.
fn assert_pages(pages: &[&DescribeRequest], n: usize, what: &str) {
    assert_eq!(
        pages.len(),
        n.div_ceil(PAGE),
        "{what}: one request per page of {PAGE}: {pages:#?}"
    );
    assert_eq!(
        pages.iter().filter(|d| !d.next_token).count(),
        1,
        "{what}: one listing, then its continuations"
    );
    assert_eq!(
        pages.iter().map(|d| d.items).sum::<u64>(),
        n as u64,
        "{what}: every page read"
    );
}

#[test]
fn a_world_of_450_snapshots_and_120_amis_is_read_in_pages_and_looked_up_in_batches() {
    let w = World::new(json!({ "copy_seconds": 0.0, "max_page_items": PAGE }));
    let key = w.key(SRC, "alias/source");
    let (snapshots, images) = seed(&w, &key);
    let plan_file = w.write_plan(&paging_plan(&snapshots[..NAMED], &images));

    w.emu.reset_counters();
    let plan = w.ferry(&["plan", &plan_file]);
    assert_eq!(plan.status.code(), Some(0));
    let c = w.emu.counters();
    assert_eq!(c.mutating(PROD), 0, "ferry plan makes no mutating call");
    assert_within_limits(&c);
    // The tagged sources: every page of each listing.
    assert_pages(
        &with_filter(&c, "DescribeSnapshots", "tag:Backup"),
        SNAPSHOTS,
        "tagged snapshots",
    );
    assert_pages(
        &with_filter(&c, "DescribeImages", "tag:Role"),
        IMAGES,
        "tagged AMIs",
    );
    // The named sources are looked up in batches of 200 ids (250: 200 and 50), and so are the
    // AMIs' 120 volumes, whose keys the AMI copies need (one batch).
    let mut batches: Vec<u64> = with_filter(&c, "DescribeSnapshots", "snapshot-id")
        .iter()
        .map(|d| d.filters["snapshot-id"])
        .collect();
    batches.sort();
    assert_eq!(
        batches,
        [50, IMAGES as u64, 200],
        "250 named snapshots in two batches, 120 AMI volumes in one"
    );
    let batches: Vec<u64> = with_filter(&c, "DescribeImages", "image-id")
        .iter()
        .map(|d| d.filters["image-id"])
        .collect();
    assert_eq!(batches, [IMAGES as u64], "120 named AMIs in one batch");

    w.emu.reset_counters();
    let apply = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(apply.status.code(), Some(0));
    let c = w.emu.counters();
    assert_within_limits(&c);
    assert_eq!(
        c.copy_totals.snapshots, SNAPSHOTS as u64,
        "one CopySnapshot per snapshot"
    );
    assert_eq!(c.copy_totals.images, IMAGES as u64, "one CopyImage per AMI");
    let (copied_snapshots, _) = copied_sources(&w, "nightly");
    let (_, copied_images) = copied_sources(&w, "golden");
    let mut want = snapshots.clone();
    want.sort();
    assert_eq!(copied_snapshots, want, "each snapshot copied exactly once");
    let mut want = images.clone();
    want.sort();
    assert_eq!(copied_images, want, "each AMI copied exactly once");

    assert_reapply_changes_nothing(&w, &plan_file, &[PROD]);
    let c = w.emu.counters();
    assert_within_limits(&c);
    // The re-apply found the 450 copies in the destination by reading every page there.
    let listing: Vec<_> = c
        .describes(PROD, DST, "DescribeSnapshots")
        .filter(|d| d.filters.contains_key("tag:ferry:plan"))
        .collect();
    assert!(
        listing.iter().map(|d| d.items).sum::<u64>() >= SNAPSHOTS as u64
            && listing.iter().filter(|d| d.next_token).count() >= SNAPSHOTS / PAGE,
        "the destination's copies were read page by page: {listing:#?}"
    );
}
