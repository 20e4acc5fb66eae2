//! `s3.batch-replication`: the backfill of a big bucket as an S3 Batch Replication job, run by
//! S3 itself (S3 user guide, "Replicating existing objects with S3 Batch Replication"). ferry
//! creates the job once per run (a `ClientRequestToken` from the run and the step), follows it
//! with DescribeJob in the batched poller, and reads its completion report when it ends.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3control::types::{
    JobManifestGenerator, JobManifestGeneratorFilter, JobOperation, JobReport, JobReportFormat,
    JobReportScope, JobStatus, KeyNameConstraint, ReplicationStatus, S3JobManifestGenerator,
    S3ManifestOutputLocation, S3ReplicateObjectOperation,
};
use serde_json::{Value, json};

use super::output::BatchJobOutput;
use super::{Action, Base, Change, Cx, StepOutput, Todo, change, failed, sdk_error, step_identity};
use crate::aws::AwsError;
use crate::exec::{
    Applied, Limits, Observation, PollAnswer, PollKey, Poller, Step, StepCx, StepError, Submitted,
};
use crate::graph::{BatchReplicationSpec, PlannedStep, RoleRef};
use crate::ids::AccountName;
use crate::lookup::role_arn;

type Observed = Result<Observation<StepOutput, Change>, StepError>;
type Done = Result<Applied<StepOutput>, StepError>;

/// Poll key of batch jobs: `s3.batch-job/<account>/<region>`.
pub const JOB_POLL: &str = "s3.batch-job";

fn control_error<E: super::ServiceError>(
    op: &'static str,
) -> impl Fn(super::SdkError<E>) -> AwsError {
    sdk_error("s3control", op)
}

/// Statuses of a job that is still going (or waiting for someone).
fn running(s: &JobStatus) -> bool {
    !matches!(
        s,
        JobStatus::Complete | JobStatus::Failed | JobStatus::Cancelled
    )
}

/// Keys of failed tasks named in a message.
const FAILURES_SHOWN: usize = 5;

pub struct BatchReplication {
    base: Base,
    spec: BatchReplicationSpec,
    poll_key: PollKey,
}

/// One job of this migration, as ListJobs shows it.
struct Job {
    id: String,
    status: JobStatus,
    failed: u64,
    succeeded: u64,
    total: u64,
    created: i128,
}

impl BatchReplication {
    pub fn new(step: &PlannedStep, spec: BatchReplicationSpec) -> Self {
        let base = Base::new(step, "s3:CreateJob");
        BatchReplication {
            poll_key: PollKey::new(JOB_POLL, &base.account, &base.region),
            base,
            spec,
        }
    }

    fn account_id<'c>(&self, cx: &'c Cx) -> &'c str {
        cx.account_id(&AccountName::new(self.base.account.as_str()))
    }

    /// How ferry knows its own jobs in ListJobs (the only field ListJobs shows that the
    /// creator chooses): the plan, the migration and the bucket.
    fn description(&self, cx: &Cx) -> String {
        format!(
            "ferry {}/{}: backfill of {}",
            cx.plan, self.spec.migration, self.spec.source_bucket
        )
    }

    /// 1-64 characters, the same for the same run, step and number of this migration's jobs
    /// that ended: a retried or resumed apply gets the job it made, never a second one (S3
    /// answers a repeated token with the same job), and a job that ended without success
    /// (Failed, Cancelled, or failed tasks) is replaced by a new one, even in the same run.
    fn token(&self, cx: &Cx, ended: usize) -> String {
        use sha2::Digest;
        let material = format!(
            "{}|{}|{}|{}|{ended}",
            cx.plan,
            cx.run_id.get().map(String::as_str).unwrap_or(""),
            self.base.id_text,
            self.spec.source_bucket
        );
        let digest = hex::encode(sha2::Sha256::digest(material.as_bytes()));
        format!("ferry-{}", &digest[..58])
    }

    fn statuses(&self) -> Vec<ReplicationStatus> {
        let mut s = vec![ReplicationStatus::None];
        if self.spec.redrive_failed {
            s.push(ReplicationStatus::Failed);
        }
        s
    }

    fn report_url(&self) -> String {
        let r = &self.spec.report;
        if r.prefix.is_empty() {
            format!("s3://{}", r.bucket)
        } else {
            format!("s3://{}/{}", r.bucket, r.prefix)
        }
    }

    /// This migration's jobs in the source account and region, newest first.
    async fn jobs(&self, cx: &StepCx<'_, Cx>) -> Result<Vec<Job>, StepError> {
        let client = cx
            .ctx()
            .aws
            .s3control(&self.base.account, &self.base.region);
        let wanted = self.description(cx.ctx());
        let mut jobs = Vec::new();
        let mut token = None;
        loop {
            let out = client
                .list_jobs()
                .account_id(self.account_id(cx.ctx()))
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| failed(control_error("ListJobs")(e), &[]))?;
            for j in out.jobs() {
                if j.description() != Some(wanted.as_str()) {
                    continue;
                }
                let p = j.progress_summary();
                let n = |v: Option<i64>| v.unwrap_or(0).max(0) as u64;
                jobs.push(Job {
                    id: j.job_id().unwrap_or_default().to_string(),
                    status: j.status().cloned().unwrap_or(JobStatus::New),
                    failed: n(p.and_then(|p| p.number_of_tasks_failed())),
                    succeeded: n(p.and_then(|p| p.number_of_tasks_succeeded())),
                    total: n(p.and_then(|p| p.total_number_of_tasks())),
                    created: j.creation_time().map(|t| t.as_nanos()).unwrap_or(0),
                });
            }
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        jobs.sort_by(|a, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
        Ok(jobs)
    }

    /// The inline backfill step of the same migration (`<owner>/backfill/copy`).
    fn inline_step(&self) -> Option<crate::ids::StepId> {
        let id: crate::ids::StepId = self.base.id_text.parse().ok()?;
        Some(crate::ids::StepId::new(id.owner, "backfill", "copy"))
    }

    /// This step's output from an earlier run, if its job succeeded.
    fn earlier_success(&self, cx: &Cx) -> Option<BatchJobOutput> {
        let id: crate::ids::StepId = self.base.id_text.parse().ok()?;
        match cx.earlier_output(&id)? {
            StepOutput::BatchJob(j) if j.failed == 0 => Some(j.clone()),
            _ => None,
        }
    }

    fn role(&self, cx: &Cx) -> String {
        match &self.spec.role {
            RoleRef::Name(n) => role_arn(self.account_id(cx), n),
            RoleRef::Arn(a) => a.clone(),
        }
    }

    /// What `ferry plan` shows of the job it would create.
    fn planned(&self, cx: &Cx) -> Vec<String> {
        let s = &self.spec.sample;
        let statuses = self
            .statuses()
            .iter()
            .map(|s| s.as_str().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let (size, cost) = if s.complete {
            (
                format!("{} object versions, {} bytes", s.objects, s.bytes),
                format!(
                    "${:.2}",
                    crate::prices::batch_replication_usd(s.objects, s.objects)
                ),
            )
        } else {
            (
                format!(
                    "at least {} object versions (the sample listing stopped there; they hold {} bytes)",
                    s.objects, s.bytes
                ),
                format!(
                    "at least ${:.2}",
                    crate::prices::batch_replication_usd(s.objects, s.objects)
                ),
            )
        };
        vec![
            format!(
                "+ S3 Batch Replication job on {} by rule {}: objects with replication status {statuses} -> {} under {}",
                self.spec.source_bucket,
                self.spec.rule_id,
                self.spec.destination_bucket,
                self.spec.key.shown
            ),
            format!("+ estimate: {size}"),
            format!(
                "+ cost: {cost} (${:.2} per job + ${:.2} per million objects + ${:.3} per million listed; prices of {}, {})",
                crate::prices::BATCH_PER_JOB_USD,
                crate::prices::BATCH_PER_MILLION_TASKS_USD,
                crate::prices::MANIFEST_PER_MILLION_OBJECTS_USD,
                crate::prices::READ_ON,
                crate::prices::SOURCE
            ),
            format!(
                "+ role {}; completion report (failed tasks) to {}/job-<id>/",
                self.role(cx),
                self.report_url()
            ),
        ]
    }
}

#[async_trait]
impl Step<Cx> for BatchReplication {
    step_identity!();

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Observed {
        let jobs = self.jobs(cx).await?;
        // A job still going is this step's, from an earlier or killed run: follow it.
        if let Some(j) = jobs.iter().find(|j| running(&j.status)) {
            return Ok(Observation::InProgress(Submitted {
                poll_key: self.poll_key.clone(),
                id: j.id.clone(),
            }));
        }
        // The backfill was done inline by an earlier run (the bucket was smaller then): the
        // rule has replicated every object written since, and a job over status NONE would
        // replicate again every object that run copied.
        if jobs.is_empty()
            && let Some(StepOutput::Backfill(b)) = self
                .inline_step()
                .and_then(|id| cx.ctx().earlier_output(&id))
        {
            return Ok(Observation::Done(StepOutput::BatchJob(BatchJobOutput {
                job_id: String::new(),
                tasks: 0,
                succeeded: b.copied + b.present,
                failed: 0,
                report: "(backfilled inline by an earlier run)".into(),
            })));
        }
        let mut diff = Vec::new();
        let ended = jobs.len();
        match jobs.first() {
            // S3 forgets jobs 90 days after they end: what this step journaled when its job
            // succeeded still says the backfill was done.
            None if let Some(out) = self.earlier_success(cx.ctx()) => {
                return Ok(Observation::Done(StepOutput::BatchJob(out)));
            }
            Some(j) if j.status == JobStatus::Complete && j.failed == 0 => {
                return Ok(Observation::Done(StepOutput::BatchJob(BatchJobOutput {
                    job_id: j.id.clone(),
                    tasks: j.total,
                    succeeded: j.succeeded,
                    failed: 0,
                    report: format!("{}/job-{}/", self.report_url(), j.id),
                })));
            }
            Some(j) if j.failed > 0 && !self.spec.redrive_failed => {
                diff.push(format!(
                    "! job {} left {} of {} objects FAILED: fix the cause, then set `redrive_failed: true` to replicate them again",
                    j.id, j.failed, j.total
                ));
                return Ok(Observation::Todo(change(
                    Action::Update,
                    diff,
                    Todo::Failed {
                        code: "ReplicationFailed".into(),
                        message: format!(
                            "S3 Batch Replication job {} left {} of {} objects FAILED (report: {}/job-{}/); fix the cause (often the replication role's kms:Encrypt on the replica key or kms:Decrypt on the source key), then set `redrive_failed: true` and apply again",
                            j.id,
                            j.failed,
                            j.total,
                            self.report_url(),
                            j.id
                        ),
                    },
                )));
            }
            Some(j) => diff.push(format!(
                "~ the last job {} ended {} ({} of {} tasks failed): a new one replaces it",
                j.id,
                j.status.as_str(),
                j.failed,
                j.total
            )),
            None => {}
        }
        diff.extend(self.planned(cx.ctx()));
        Ok(Observation::Todo(change(
            Action::Create,
            diff,
            Todo::BatchJob { ended },
        )))
    }

    fn intent(&self, _change: &Change) -> Value {
        json!({ "migration": self.spec.migration, "bucket": self.spec.source_bucket, "report": self.report_url() })
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, change: Change) -> Done {
        let ended = match change.todo {
            Todo::Failed { code, message } => return Err(StepError::permanent(code, message)),
            Todo::BatchJob { ended } => ended,
            _ => 0,
        };
        let c = cx.ctx();
        let account_id = self.account_id(c).to_string();
        let report = &self.spec.report;
        // ManifestPrefix is 1-512 characters when given.
        let output = S3ManifestOutputLocation::builder()
            .bucket(format!("arn:aws:s3:::{}", report.bucket))
            .set_manifest_prefix((!report.prefix.is_empty()).then(|| report.prefix.clone()))
            .manifest_format(
                aws_sdk_s3control::types::GeneratedManifestFormat::S3InventoryReportCsv20211130,
            )
            .build()
            .expect("bucket and format set");
        let mut filter = JobManifestGeneratorFilter::builder()
            .eligible_for_replication(true)
            .set_object_replication_statuses(Some(self.statuses()));
        // A generated manifest follows every rule of the bucket: only this rule's objects.
        if !self.spec.prefix.is_empty() {
            filter = filter.key_name_constraint(
                KeyNameConstraint::builder()
                    .match_any_prefix(&self.spec.prefix)
                    .build(),
            );
        }
        let generator = S3JobManifestGenerator::builder()
            .expected_bucket_owner(&account_id)
            .source_bucket(format!("arn:aws:s3:::{}", self.spec.source_bucket))
            .enable_manifest_output(true)
            .manifest_output_location(output)
            .filter(filter.build())
            .build()
            .expect("bucket and output set");
        let mut job_report = JobReport::builder()
            .bucket(format!("arn:aws:s3:::{}", report.bucket))
            .format(JobReportFormat::ReportCsv20180820)
            .enabled(true)
            .report_scope(JobReportScope::FailedTasksOnly);
        if !report.prefix.is_empty() {
            job_report = job_report.prefix(&report.prefix);
        }
        // With a client token CreateJob is idempotent: the SDK's retries stay on.
        let out = c
            .aws
            .s3control(&self.base.account, &self.base.region)
            .create_job()
            .account_id(&account_id)
            .confirmation_required(false)
            .operation(
                JobOperation::builder()
                    .s3_replicate_object(S3ReplicateObjectOperation::builder().build())
                    .build(),
            )
            .manifest_generator(JobManifestGenerator::S3JobManifestGenerator(generator))
            .report(job_report.build())
            .client_request_token(self.token(c, ended))
            .description(self.description(c))
            .priority(10)
            .role_arn(self.role(c))
            .send()
            .await
            // A batch role made seconds ago may not be assumable yet.
            .map_err(|e| failed(control_error("CreateJob")(e), &["AccessDenied"]))?;
        let id = out.job_id().unwrap_or_default().to_string();
        if id.is_empty() {
            return Err(StepError::permanent(
                "NoJob",
                "CreateJob returned no job id",
            ));
        }
        Ok(Applied::Submitted(Submitted {
            poll_key: self.poll_key.clone(),
            id,
        }))
    }
}

/// Follows batch jobs with DescribeJob (one call per job: S3 Control has no batched read).
pub struct JobPoller;

#[async_trait]
impl Poller<Cx> for JobPoller {
    async fn poll(
        &self,
        ctx: &Arc<Cx>,
        _limits: &Arc<Limits>,
        key: &PollKey,
        ids: &[String],
    ) -> Result<Vec<(String, PollAnswer<StepOutput>)>, StepError> {
        let client = ctx.aws.s3control(&key.account, &key.region);
        let account_id = ctx.account_id(&AccountName::new(key.account.as_str()));
        let mut answers = Vec::with_capacity(ids.len());
        for id in ids {
            let out = client
                .describe_job()
                .account_id(account_id)
                .job_id(id)
                .send()
                .await
                .map_err(|e| {
                    failed(
                        control_error("DescribeJob")(e),
                        &["NoSuchJob", "NotFoundException"],
                    )
                })?;
            let Some(job) = out.job() else { continue };
            let p = job.progress_summary();
            let n = |v: Option<i64>| v.unwrap_or(0).max(0) as u64;
            let total = n(p.and_then(|p| p.total_number_of_tasks()));
            let succeeded = n(p.and_then(|p| p.number_of_tasks_succeeded()));
            let failed_tasks = n(p.and_then(|p| p.number_of_tasks_failed()));
            let status = job.status().cloned().unwrap_or(JobStatus::New);
            let report = job.report().and_then(|r| {
                let bucket = r.bucket()?.trim_start_matches("arn:aws:s3:::").to_string();
                Some((
                    bucket,
                    r.prefix().unwrap_or("").trim_matches('/').to_string(),
                ))
            });
            let report_url = match &report {
                Some((b, p)) if p.is_empty() => format!("s3://{b}/job-{id}/"),
                Some((b, p)) => format!("s3://{b}/{p}/job-{id}/"),
                None => String::new(),
            };
            let answer = if running(&status) {
                let percent = if total == 0 {
                    0.0
                } else {
                    ((succeeded + failed_tasks) as f64 * 100.0 / total as f64) as f32
                };
                let waiting = match status {
                    JobStatus::Suspended => format!(
                        "; suspended ({}): confirm it with `aws s3control update-job-status --requested-job-status Ready`",
                        job.suspended_cause().unwrap_or("waiting for confirmation")
                    ),
                    JobStatus::Paused | JobStatus::Pausing => "; paused".to_string(),
                    _ => String::new(),
                };
                // The job's own rate since it became Active: its finish, not a line from when
                // it was submitted (a manifest of millions of objects takes a while first).
                let active = p
                    .and_then(|p| p.timers())
                    .and_then(|t| t.elapsed_time_in_active_seconds())
                    .unwrap_or(0);
                let ran = succeeded + failed_tasks;
                let eta = (status == JobStatus::Active && active > 0 && ran > 0 && total >= ran)
                    .then(|| {
                        std::time::Duration::from_secs_f64(
                            (total - ran) as f64 * active as f64 / ran as f64,
                        )
                    });
                PollAnswer::Pending {
                    percent: Some(percent),
                    detail: Some(format!(
                        "job {id} {}: {succeeded} of {total} tasks succeeded, {failed_tasks} failed{waiting}",
                        status.as_str()
                    )),
                    eta,
                }
            } else if status == JobStatus::Complete && failed_tasks == 0 {
                PollAnswer::Done(StepOutput::BatchJob(BatchJobOutput {
                    job_id: id.clone(),
                    tasks: total,
                    succeeded,
                    failed: 0,
                    report: report_url,
                }))
            } else {
                let reasons: Vec<String> = job
                    .failure_reasons()
                    .iter()
                    .map(|f| {
                        format!(
                            "{}: {}",
                            f.failure_code().unwrap_or("?"),
                            f.failure_reason().unwrap_or("")
                        )
                    })
                    .collect();
                let first = match &report {
                    Some((bucket, prefix)) if failed_tasks > 0 => {
                        first_failures(ctx, &key.account, &key.region, bucket, prefix, id).await
                    }
                    _ => String::new(),
                };
                let mut message = if failed_tasks > 0 || total > 0 {
                    format!(
                        "S3 Batch Replication job {id} ended {}: {failed_tasks} of {total} objects failed to replicate",
                        status.as_str()
                    )
                } else {
                    format!("S3 Batch Replication job {id} ended {}", status.as_str())
                };
                if !reasons.is_empty() {
                    message.push_str(&format!(" ({})", reasons.join("; ")));
                }
                if !first.is_empty() {
                    message.push_str(&format!("; first: {first}"));
                }
                if !report_url.is_empty() {
                    message.push_str(&format!("; completion report: {report_url}"));
                }
                let hint = if failed_tasks > 0 {
                    "fix the cause (the replication role's kms:Encrypt on the replica key, kms:Decrypt on the source key, or the destination bucket policy), then set `redrive_failed: true` and apply again: only the FAILED objects are replicated again"
                } else {
                    "no object failed: the job itself did (see the reasons). Check the Batch Operations role (its trust of batchoperations.s3.amazonaws.com, s3:InitiateReplication on the source, s3:PutObject under the report location) and that the report bucket exists in the source region, then `ferry resume`: a new job replaces this one"
                };
                PollAnswer::Failed(
                    StepError::permanent("ReplicationFailed", message).with_hint(hint),
                )
            };
            answers.push((id.clone(), answer));
        }
        Ok(answers)
    }
}

/// The first failed keys of a job's completion report, with their reasons: "a (AccessDenied:
/// ...), b (...)". Empty when the report cannot be read (the failure is reported anyway).
async fn first_failures(
    ctx: &Cx,
    account: &str,
    region: &str,
    bucket: &str,
    prefix: &str,
    job: &str,
) -> String {
    let s3 = ctx.aws.s3(account, region);
    let base = if prefix.is_empty() {
        format!("job-{job}")
    } else {
        format!("{prefix}/job-{job}")
    };
    let read = |key: String| {
        let s3 = s3.clone();
        async move {
            let out = s3.get_object().bucket(bucket).key(&key).send().await.ok()?;
            let bytes = out.body.collect().await.ok()?.into_bytes();
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    let Some(manifest) = read(format!("{base}/manifest.json")).await else {
        return String::new();
    };
    let Ok(manifest) = serde_json::from_str::<Value>(&manifest) else {
        return String::new();
    };
    let mut failures: Vec<(String, String)> = Vec::new();
    for r in manifest["Results"].as_array().into_iter().flatten() {
        if r["TaskExecutionStatus"] != "failed" {
            continue;
        }
        let Some(key) = r["Key"].as_str() else {
            continue;
        };
        let Some(csv) = read(key.to_string()).await else {
            continue;
        };
        for row in csv.lines().filter(|l| !l.trim().is_empty()) {
            let f = csv_fields(row);
            // Bucket, Key, VersionId, TaskStatus, then the error code and the HTTP status (the
            // schema line and AWS's examples disagree on their order), then ResultMessage.
            let key = percent_decode(f.get(1).map(String::as_str).unwrap_or(""));
            let code = [f.get(4), f.get(5)]
                .into_iter()
                .flatten()
                .find(|v| !v.is_empty() && !v.bytes().all(|b| b.is_ascii_digit()))
                .map(String::as_str)
                .unwrap_or("");
            let why = format!("{code}: {}", f.get(6).map(String::as_str).unwrap_or(""));
            failures.push((key, why));
        }
    }
    failures.sort();
    let more = failures.len() > FAILURES_SHOWN;
    let mut text = failures
        .iter()
        .take(FAILURES_SHOWN)
        .map(|(k, why)| format!("{k} ({why})"))
        .collect::<Vec<_>>()
        .join(", ");
    if more {
        text.push_str(", ...");
    }
    text
}

/// One CSV row's fields (RFC 4180 quoting).
fn csv_fields(row: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = row.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

/// Report keys are URL-encoded.
fn percent_decode(s: &str) -> String {
    crate::aws::encoding::form_decode(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_rows_split_with_quotes_and_keys_decode() {
        let f = csv_fields(
            r#"b,dir%2Fa%20b.txt,v1,failed,AccessDenied,403,"no kms:Encrypt, says KMS""#,
        );
        assert_eq!(f.len(), 7);
        assert_eq!(percent_decode(&f[1]), "dir/a b.txt");
        assert_eq!(f[6], "no kms:Encrypt, says KMS");
        assert_eq!(percent_decode("x%2"), "x%2");
    }
}
