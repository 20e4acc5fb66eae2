//! The machine-readable report (`--output json`): a subscriber that writes one JSON document
//! when the run finishes.

use std::io::Write;

use serde_json::{Map, Value, json};

use crate::exec::{Event, Subscriber, SubscriberError};

pub struct JsonReport {
    out: Box<dyn Write + Send>,
    run: Map<String, Value>,
    steps: Vec<Value>,
}

impl JsonReport {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        JsonReport {
            out,
            run: Map::new(),
            steps: Vec::new(),
        }
    }
}

impl Subscriber for JsonReport {
    fn on_event(&mut self, ev: &Event) -> Result<(), SubscriberError> {
        match ev {
            Event::RunStarted {
                run_id,
                plan,
                plan_hash,
                steps,
                already_done,
                ..
            } => {
                self.run.insert("run_id".into(), json!(run_id));
                self.run.insert("plan".into(), json!(plan));
                self.run.insert("plan_hash".into(), json!(plan_hash));
                self.run.insert("steps".into(), json!(steps));
                self.run.insert("already_done".into(), json!(already_done));
            }
            Event::StepDone { step, outputs, .. } => self
                .steps
                .push(json!({ "step": step, "state": "done", "outputs": outputs })),
            Event::StepFailed { step, error, .. } => self
                .steps
                .push(json!({ "step": step, "state": "failed", "error": error })),
            Event::StepSkipped { step, root, .. } => self
                .steps
                .push(json!({ "step": step, "state": "skipped", "root": root })),
            Event::RunFinished {
                result,
                done,
                failed,
                skipped,
                not_started,
                ..
            } => {
                let mut doc = std::mem::take(&mut self.run);
                doc.insert("result".into(), json!(result));
                doc.insert(
                    "counts".into(),
                    json!({ "done": done, "failed": failed, "skipped": skipped, "not_started": not_started }),
                );
                doc.insert(
                    "finished".into(),
                    Value::Array(std::mem::take(&mut self.steps)),
                );
                serde_json::to_writer_pretty(&mut self.out, &Value::Object(doc))?;
                writeln!(self.out)?;
                self.out.flush()?;
            }
            _ => {}
        }
        Ok(())
    }
}
