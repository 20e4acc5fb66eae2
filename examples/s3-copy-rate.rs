//! The emulator's CopyObject throughput, for the bound of the migration benchmark's backfill
//! workload (benches/migrate.py): the copies ferry's backfill makes (SSE-KMS under `KEY_ARN`,
//! Bucket Key on), sent by the same SDK client ferry builds, `CONCURRENCY` at a time, and
//! nothing else: no resolve, no dry run, no journal.
//!
//!     s3-copy-rate ENDPOINT REGION SOURCE_BUCKET DESTINATION_BUCKET KEY_ARN COUNT CONCURRENCY
//!
//! Copies `logs/00000.json` .. from the source bucket; credentials from the environment.
//! Prints the copies per second.

use std::time::Instant;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_sdk_s3::types::ServerSideEncryption;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [
        endpoint,
        region,
        source,
        destination,
        key,
        count,
        concurrency,
    ] = args.as_slice()
    else {
        eprintln!(
            "usage: s3-copy-rate ENDPOINT REGION SOURCE_BUCKET DESTINATION_BUCKET KEY_ARN COUNT CONCURRENCY"
        );
        std::process::exit(2);
    };
    let count: usize = count.parse().expect("COUNT is a number");
    let concurrency: usize = concurrency.parse().expect("CONCURRENCY is a number");
    // As ferry's clients are built (src/aws/mod.rs).
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .http_client(ferry::aws::http_client())
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(region.clone()))
        .load()
        .await;
    let conf = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(true)
        .build();
    let client = aws_sdk_s3::Client::from_conf(conf);

    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        while tasks.len() >= concurrency {
            tasks.join_next().await.expect("a task").expect("no panic");
        }
        let (client, source, destination, key) = (
            client.clone(),
            source.clone(),
            destination.clone(),
            key.clone(),
        );
        tasks.spawn(async move {
            let name = format!("logs/{i:05}.json");
            client
                .copy_object()
                .bucket(&destination)
                .key(&name)
                .copy_source(format!("{source}/{name}"))
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .ssekms_key_id(&key)
                .bucket_key_enabled(true)
                .send()
                .await
                .unwrap_or_else(|e| panic!("CopyObject {name}: {e:?}"));
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("no panic");
    }
    println!("{:.1}", count as f64 / start.elapsed().as_secs_f64());
}
