//! `--migration ID`: only some of a plan's migrations, like Terraform's `-target`.

use std::collections::BTreeSet;

use crate::plan::Plan;

/// The migrations a targeted run works on: those named and, transitively, those they name in
/// `depends_on`. An unknown id is bad input (with the plan's ids to choose from).
pub(crate) fn targets(plan: &Plan, named: &[String]) -> Result<BTreeSet<String>, String> {
    let ids: Vec<&str> = plan
        .migrations
        .iter()
        .map(|m| m.id().value.as_str())
        .collect();
    let mut out = BTreeSet::new();
    let mut todo: Vec<String> = Vec::new();
    for n in named {
        if !ids.contains(&n.as_str()) {
            let close = ids
                .iter()
                .filter(|i| strsim::jaro_winkler(i, n) > 0.8)
                .max_by(|a, b| strsim::jaro_winkler(a, n).total_cmp(&strsim::jaro_winkler(b, n)));
            let hint = match close {
                Some(c) => format!("did you mean `{c}`?"),
                None => format!("its migrations: {}", ids.join(", ")),
            };
            return Err(format!(
                "--migration `{n}`: the plan has no migration with this id; {hint}"
            ));
        }
        todo.push(n.clone());
    }
    while let Some(id) = todo.pop() {
        if !out.insert(id.clone()) {
            continue;
        }
        if let Some(m) = plan.migrations.iter().find(|m| m.id().value == id) {
            todo.extend(m.depends_on().iter().map(|d| d.value.clone()));
        }
    }
    Ok(out)
}

/// The plan with only the targeted migrations (keys and accounts stay: the graph keeps the
/// ones the migrations use).
pub(crate) fn narrowed(plan: &Plan, targets: &BTreeSet<String>) -> Plan {
    let mut p = plan.clone();
    p.migrations
        .retain(|m| targets.contains(m.id().value.as_str()));
    p
}

/// The warning a targeted run prints, like Terraform's.
pub(crate) fn warning(named: &[String], targets: &BTreeSet<String>) -> String {
    let extra: Vec<&str> = targets
        .iter()
        .filter(|t| !named.contains(t))
        .map(|t| t.as_str())
        .collect();
    let also = if extra.is_empty() {
        String::new()
    } else {
        format!(" (and {}, which they depend on)", extra.join(", "))
    };
    format!(
        "warning: only migration(s) {}{also} and the keys they use are planned and applied. \
         Like Terraform's -target, this is for exceptions (a first try, a stuck migration): \
         the rest of the plan is not looked at; run the whole plan to see it.",
        named.join(", ")
    )
}
