//! The offline plan: the step graph as text, JSON, Graphviz DOT and Mermaid.

use std::fmt::Write;

use super::plan::PlanDocument;
use crate::graph::PlanGraph;

pub fn json(plan_name: &str, graph: &PlanGraph) -> String {
    PlanDocument::offline(plan_name, graph).json()
}

/// The offline plan as a person reads it: steps in order, where they run, what they wait for.
pub fn text(plan_name: &str, graph: &PlanGraph) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Plan `{plan_name}`: {} steps, in execution order (offline: live state not read)\n",
        graph.len()
    );
    for (i, s) in PlanDocument::offline(plan_name, graph)
        .steps
        .iter()
        .enumerate()
    {
        let region = s.region.as_deref().unwrap_or("(looked up)");
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

pub fn dot(graph: &PlanGraph) -> String {
    let mut out = String::from(
        "digraph ferry {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n",
    );
    for s in graph.in_order() {
        let region = s.scope.region.as_ref().map(|r| r.as_str()).unwrap_or("?");
        let id = quoted(&s.id.to_string());
        let _ = writeln!(
            out,
            "  \"{id}\" [label=\"{id}\\n{} @ {}/{}\"];",
            s.kind(),
            quoted(s.scope.account.as_str()),
            quoted(region)
        );
    }
    for s in graph.in_order() {
        for d in graph.dependencies(&s.id) {
            let (d, id) = (quoted(&d.to_string()), quoted(&s.id.to_string()));
            let _ = writeln!(out, "  \"{d}\" -> \"{id}\";");
        }
    }
    out.push_str("}\n");
    out
}

pub fn mermaid(graph: &PlanGraph) -> String {
    let mut out = String::from("flowchart LR\n");
    let node_id = |i: usize| format!("s{i}");
    let index: std::collections::HashMap<&crate::ids::StepId, usize> = graph
        .in_order()
        .enumerate()
        .map(|(i, s)| (&s.id, i))
        .collect();
    for (i, s) in graph.in_order().enumerate() {
        let _ = writeln!(
            out,
            "  {}[\"{}<br/>{}\"]",
            node_id(i),
            s.id.to_string().replace('"', "'"),
            s.kind()
        );
    }
    for s in graph.in_order() {
        for d in graph.dependencies(&s.id) {
            let _ = writeln!(out, "  {} --> {}", node_id(index[d]), node_id(index[&s.id]));
        }
    }
    out
}
