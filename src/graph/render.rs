//! The step graph as text, JSON, Graphviz DOT and Mermaid.

use std::fmt::Write;

use serde::Serialize;

use super::StepGraph;

/// One step of `ferry plan --output json` (its shape is documented in the README).
#[derive(Debug, Serialize)]
pub struct PlannedStep<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    pub account: &'a str,
    /// `null` while unknown offline (an S3 source bucket's region is looked up).
    pub region: Option<&'a str>,
    pub depends_on: Vec<&'a str>,
    /// What the step acts on; `for_each` is set when a selector is expanded at run time.
    pub target: String,
    pub for_each: bool,
}

#[derive(Debug, Serialize)]
pub struct PlanDocument<'a> {
    pub format_version: u32,
    pub plan: &'a str,
    pub offline: bool,
    pub steps: Vec<PlannedStep<'a>>,
}

pub fn steps(graph: &StepGraph) -> Vec<PlannedStep<'_>> {
    graph
        .in_order()
        .map(|s| PlannedStep {
            id: &s.id,
            kind: s.kind.as_str(),
            account: &s.scope.account,
            region: s.scope.region.as_deref(),
            depends_on: graph.dependencies(&s.id),
            target: s.target.to_string(),
            for_each: s.target.is_expanded_later(),
        })
        .collect()
}

pub fn json(plan_name: &str, graph: &StepGraph, offline: bool) -> String {
    let doc = PlanDocument {
        format_version: 1,
        plan: plan_name,
        offline,
        steps: steps(graph),
    };
    serde_json::to_string_pretty(&doc).expect("plain data serializes")
}

/// The offline plan as a person reads it: steps in order, where they run, what they wait for.
pub fn text(plan_name: &str, graph: &StepGraph) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Plan `{plan_name}`: {} steps, in execution order (offline: live state not read)\n",
        graph.len()
    );
    for (i, s) in steps(graph).iter().enumerate() {
        let region = s.region.unwrap_or("(looked up)");
        let _ = writeln!(
            out,
            "{:>4}. {}  [{}]  {}/{}",
            i + 1,
            s.id,
            s.kind,
            s.account,
            region
        );
        if s.for_each {
            let verb = if s.kind.contains(".find-") {
                "selects"
            } else {
                "for each of"
            };
            let _ = writeln!(out, "      {verb} {}", s.target);
        }
        if !s.depends_on.is_empty() {
            let _ = writeln!(out, "      after {}", s.depends_on.join(", "));
        }
    }
    out
}

fn quoted(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

pub fn dot(graph: &StepGraph) -> String {
    let mut out = String::from(
        "digraph ferry {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n",
    );
    for s in graph.in_order() {
        let region = s.scope.region.as_deref().unwrap_or("?");
        let _ = writeln!(
            out,
            "  \"{}\" [label=\"{}\\n{} @ {}/{}\"];",
            quoted(&s.id),
            quoted(&s.id),
            s.kind,
            quoted(&s.scope.account),
            quoted(region)
        );
    }
    for s in graph.in_order() {
        for d in graph.dependencies(&s.id) {
            let _ = writeln!(out, "  \"{}\" -> \"{}\";", quoted(d), quoted(&s.id));
        }
    }
    out.push_str("}\n");
    out
}

pub fn mermaid(graph: &StepGraph) -> String {
    let mut out = String::from("flowchart LR\n");
    let node_id = |i: usize| format!("s{i}");
    let index: std::collections::HashMap<&str, usize> = graph
        .in_order()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    for (i, s) in graph.in_order().enumerate() {
        let _ = writeln!(
            out,
            "  {}[\"{}<br/>{}\"]",
            node_id(i),
            s.id.replace('"', "'"),
            s.kind
        );
    }
    for s in graph.in_order() {
        for d in graph.dependencies(&s.id) {
            let _ = writeln!(
                out,
                "  {} --> {}",
                node_id(index[d]),
                node_id(index[s.id.as_str()])
            );
        }
    }
    out
}
