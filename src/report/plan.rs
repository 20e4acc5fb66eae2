//! The plan a person reviews: one typed document for `ferry plan --output json`, offline (the
//! steps) and live (each step's change against the live state), and its text form.

use serde::Serialize;
use serde_json::{Value, json};

use super::estimate::{Estimate, MigrationEstimate};
use super::style::Style;
use crate::exec::{Observation, Observed};
use crate::graph::PlanGraph;
use crate::resolve::Resolution;
use crate::steps::{Action, Cx, KeptCopy, StepOutput, Todo};

/// `ferry plan --output json` (its shape is documented in the README).
#[derive(Debug, Serialize)]
pub struct PlanDocument {
    pub format_version: u32,
    pub plan: String,
    pub offline: bool,
    pub steps: Vec<ShownStep>,
    /// Live plans only: how many steps change, and how.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// Live plans only: what each migration is expected to move, take and cost.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub migrations: Vec<MigrationEstimate>,
    /// Live plans only: the plan's total (keys included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<Estimate>,
}

/// One step of the document.
#[derive(Debug, Serialize)]
pub struct ShownStep {
    pub id: String,
    pub kind: &'static str,
    pub account: String,
    /// `null` while unknown offline (an S3 source bucket's region is looked up).
    pub region: Option<String>,
    pub depends_on: Vec<String>,
    /// What the step acts on; `for_each` is set when a selector is expanded at run time.
    pub target: String,
    pub for_each: bool,
    /// Live plans only: `create`, `update`, `replace`, `in-progress` or `no-change`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<Shown>,
    /// Live plans only: the change (`action`, `diff`), or the outputs of a step with none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
    #[serde(skip)]
    pub diff: Vec<String>,
    /// Copies under other keys that a new copy joins, kept.
    #[serde(skip)]
    pub kept: Vec<KeptCopy>,
    /// What the step saw of the live state and would act on (a key policy before its edit,
    /// the resources to share), as JSON: part of a saved plan's fingerprint of the step.
    #[serde(skip)]
    pub seen: Value,
}

/// What the live plan says of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    NoChange,
    InProgress,
    Change(Action),
}

impl Serialize for Shown {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Shown {
    pub fn as_str(self) -> &'static str {
        match self {
            Shown::NoChange => "no-change",
            Shown::InProgress => "in-progress",
            Shown::Change(a) => a.as_str(),
        }
    }
    fn mark(self) -> &'static str {
        match self {
            Shown::NoChange => "=",
            Shown::InProgress => ">",
            Shown::Change(Action::Create) => "+",
            Shown::Change(Action::Update) => "~",
            Shown::Change(Action::Replace) => "-/+",
            Shown::Change(Action::Delete) => "-",
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub replace: usize,
    /// `ferry destroy` (and retention): resources deleted or taken back.
    #[serde(skip_serializing_if = "is_zero")]
    pub delete: usize,
    pub unchanged: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl PlanDocument {
    /// The steps of `graph` in execution order, without live state.
    pub fn offline(name: &str, graph: &PlanGraph) -> PlanDocument {
        PlanDocument {
            format_version: 1,
            plan: name.to_string(),
            offline: true,
            steps: graph
                .in_order()
                .map(|s| ShownStep {
                    id: s.id.to_string(),
                    kind: s.kind().as_str(),
                    account: s.scope.account.to_string(),
                    region: s.scope.region.as_ref().map(|r| r.to_string()),
                    depends_on: graph
                        .dependencies(&s.id)
                        .into_iter()
                        .map(|d| d.to_string())
                        .collect(),
                    target: s.target.to_string(),
                    for_each: s.target.is_expanded_later(),
                    change: None,
                    detail: None,
                    diff: Vec::new(),
                    kept: Vec::new(),
                    seen: Value::Null,
                })
                .collect(),
            summary: None,
            migrations: Vec::new(),
            estimate: None,
        }
    }

    /// The live plan with its estimates (from the resolve stage's sizes and samples).
    pub fn with_estimate(mut self, graph: &PlanGraph, resolution: &Resolution) -> Self {
        let (migrations, total) = super::estimate::estimate(&self, graph, resolution);
        self.migrations = migrations;
        self.estimate = Some(total);
        self
    }

    /// The live plan: each step's observation (in the graph's order). Steps that could not
    /// read their live state come back as error lines.
    pub fn live(
        name: &str,
        graph: &PlanGraph,
        answers: Vec<Observed<Cx>>,
    ) -> Result<PlanDocument, Vec<String>> {
        let mut doc = PlanDocument::offline(name, graph);
        doc.offline = false;
        let mut errors = Vec::new();
        for (step, answer) in doc.steps.iter_mut().zip(answers) {
            let (change, detail) = match answer {
                Ok(Observation::Done(v)) => {
                    // What a destroy step leaves, and why, is shown under it.
                    if let StepOutput::Removed(r) = &v {
                        step.diff = r.kept.iter().map(|k| format!("  {k}")).collect();
                    }
                    (Shown::NoChange, json!(v))
                }
                Ok(Observation::InProgress(s)) => (Shown::InProgress, json!({ "id": s.id })),
                Ok(Observation::Todo(c)) => {
                    if let Todo::Copy { kept, .. } = &c.todo {
                        step.kept = kept.clone();
                    }
                    step.diff = c.diff.clone();
                    step.seen = json!(c.todo);
                    (Shown::Change(c.action), json!(c))
                }
                Err(e) => {
                    let hint = e.hint.as_ref().map(|h| format!("\n  hint: {h}"));
                    errors.push(format!("{}: {e}{}", step.id, hint.unwrap_or_default()));
                    continue;
                }
            };
            step.change = Some(change);
            step.detail = Some(detail);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        doc.summary = Some(doc.counts());
        Ok(doc)
    }

    /// A copy in progress counts as one to create.
    fn counts(&self) -> Summary {
        let n = |c: Shown| self.steps.iter().filter(|p| p.change == Some(c)).count();
        Summary {
            create: n(Shown::Change(Action::Create)) + n(Shown::InProgress),
            update: n(Shown::Change(Action::Update)),
            replace: n(Shown::Change(Action::Replace)),
            delete: n(Shown::Change(Action::Delete)),
            unchanged: n(Shown::NoChange),
        }
    }

    pub fn has_changes(&self) -> bool {
        let c = self.counts();
        c.create + c.update + c.replace + c.delete > 0
    }

    /// Copies that the run's new copies join, by step.
    pub fn kept(&self) -> Vec<(String, KeptCopy)> {
        self.steps
            .iter()
            .flat_map(|p| p.kept.iter().map(|k| (p.id.clone(), k.clone())))
            .collect()
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plain data serializes")
    }

    /// The live plan as a person reads it: a line per step with its mark, the diff under it,
    /// and what it all comes to.
    pub fn text(&self, style: Style) -> String {
        let mut out = format!("Plan `{}` against live state:\n\n", self.plan);
        for p in &self.steps {
            let Some(change) = p.change else { continue };
            let region = p.region.as_deref().unwrap_or("(looked up)");
            let what = match change {
                Shown::NoChange => "no change".to_string(),
                Shown::InProgress => format!(
                    "in progress ({})",
                    p.detail
                        .as_ref()
                        .and_then(|d| d["id"].as_str())
                        .unwrap_or("")
                ),
                Shown::Change(a) => a.as_str().to_string(),
            };
            out.push_str(&format!(
                "  {} {}  [{}]  {}/{}  {what}\n",
                style.mark(change.mark()),
                p.id,
                p.kind,
                p.account,
                region
            ));
            for l in &p.diff {
                out.push_str(&format!("      {}\n", style.diff_line(l)));
            }
        }
        let c = self.counts();
        if c.create + c.update + c.replace + c.delete == 0 {
            out.push_str(&format!("\nNo changes: {} unchanged.\n", c.unchanged));
        } else {
            let replace = if c.replace > 0 {
                format!(", {} to replace", c.replace)
            } else {
                String::new()
            };
            let delete = if c.delete > 0 {
                format!(", {} to delete", c.delete)
            } else {
                String::new()
            };
            out.push_str(&format!(
                "\nPlan: {} to create, {} to update{replace}{delete}, {} unchanged.\n",
                c.create, c.update, c.unchanged
            ));
            if let Some(total) = &self.estimate {
                out.push_str(&super::estimate::text(&self.migrations, total));
            }
        }
        out
    }
}
