//! Compile a checked plan into a DAG of steps. Pure: no AWS, no I/O.
//!
//! Two types, two phases: a [`GraphBuilder`] collects steps and edges; [`GraphBuilder::seal`]
//! checks the result is acyclic and yields a [`PlanGraph`] with a fixed execution order.

mod compile;
mod destroy;
mod step;

use std::collections::{BTreeSet, BinaryHeap, HashMap};

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};

pub use compile::{compile, compile_every_path, compile_resolved};
pub use destroy::{DestroyOptions, destroy};
pub use step::*;

use crate::ids::StepId;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CompileError {
    #[error("two steps have the id `{0}`")]
    DuplicateStep(StepId),
    #[error("step `{from}` depends on `{to}`, which does not exist")]
    UnknownStep { from: Box<StepId>, to: Box<StepId> },
    #[error("the steps form a cycle: {}", .0.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(" -> "))]
    Cycle(Vec<StepId>),
}

/// A graph being built: steps may be added and connected in any order.
#[derive(Default)]
pub struct GraphBuilder {
    graph: DiGraph<PlannedStep, ()>,
    index: HashMap<StepId, NodeIndex>,
    pending_edges: Vec<(StepId, StepId)>,
    /// Orderings that are wanted but yield to any the graph already implies the other way.
    soft_edges: Vec<(StepId, StepId)>,
    errors: Vec<CompileError>,
}

impl GraphBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a step; returns its id for convenience.
    pub fn add(&mut self, step: PlannedStep) -> StepId {
        let id = step.id.clone();
        if self.index.contains_key(&id) {
            self.errors.push(CompileError::DuplicateStep(id.clone()));
            return id;
        }
        let n = self.graph.add_node(step);
        self.index.insert(id.clone(), n);
        id
    }

    pub fn contains(&self, id: &StepId) -> bool {
        self.index.contains_key(id)
    }

    /// `step` runs only after `dependency` is done.
    pub fn depends(&mut self, step: &StepId, dependency: &StepId) {
        self.pending_edges.push((step.clone(), dependency.clone()));
    }

    /// `step` should run after `dependency`, unless the graph already makes `dependency` wait
    /// (directly or not) for `step`: then that order wins and this one is dropped.
    pub fn depends_if_acyclic(&mut self, step: &StepId, dependency: &StepId) {
        self.soft_edges.push((step.clone(), dependency.clone()));
    }

    pub fn seal(mut self) -> Result<PlanGraph, CompileError> {
        if let Some(e) = self.errors.into_iter().next() {
            return Err(e);
        }
        // `update_edge` scans a node's edges: quadratic for a key that 50,000 copies wait for.
        let mut seen = std::collections::HashSet::new();
        for (from, to) in std::mem::take(&mut self.pending_edges) {
            let (Some(&a), Some(&b)) = (self.index.get(&from), self.index.get(&to)) else {
                return Err(CompileError::UnknownStep {
                    from: Box::new(from),
                    to: Box::new(to),
                });
            };
            // Edges point from a dependency to its dependent: the direction work flows.
            if seen.insert((b, a)) {
                self.graph.add_edge(b, a, ());
            }
        }
        let mut space = petgraph::algo::DfsSpace::new(&self.graph);
        for (from, to) in std::mem::take(&mut self.soft_edges) {
            let (Some(&a), Some(&b)) = (self.index.get(&from), self.index.get(&to)) else {
                return Err(CompileError::UnknownStep {
                    from: Box::new(from),
                    to: Box::new(to),
                });
            };
            // b -> a closes a cycle exactly when a already reaches b.
            if !seen.contains(&(b, a))
                && !petgraph::algo::has_path_connecting(&self.graph, a, b, Some(&mut space))
            {
                seen.insert((b, a));
                self.graph.add_edge(b, a, ());
            }
        }
        let order = stable_topological_order(&self.graph).map_err(|cycle| {
            CompileError::Cycle(
                cycle
                    .into_iter()
                    .map(|n| self.graph[n].id.clone())
                    .collect(),
            )
        })?;
        let mut rank = vec![0; order.len()];
        for (i, n) in order.iter().enumerate() {
            rank[n.index()] = i;
        }
        Ok(PlanGraph {
            graph: self.graph,
            index: self.index,
            order,
            rank,
        })
    }
}

/// Kahn's algorithm, always taking the earliest-added ready step: the same plan always prints
/// the same order.
fn stable_topological_order(
    g: &DiGraph<PlannedStep, ()>,
) -> Result<Vec<NodeIndex>, Vec<NodeIndex>> {
    let mut indegree: Vec<usize> = g
        .node_indices()
        .map(|n| g.neighbors_directed(n, Direction::Incoming).count())
        .collect();
    let mut ready: BinaryHeap<std::cmp::Reverse<usize>> = g
        .node_indices()
        .filter(|n| indegree[n.index()] == 0)
        .map(|n| std::cmp::Reverse(n.index()))
        .collect();
    let mut order = Vec::with_capacity(g.node_count());
    while let Some(std::cmp::Reverse(i)) = ready.pop() {
        let n = NodeIndex::new(i);
        order.push(n);
        for m in g.neighbors_directed(n, Direction::Outgoing) {
            indegree[m.index()] -= 1;
            if indegree[m.index()] == 0 {
                ready.push(std::cmp::Reverse(m.index()));
            }
        }
    }
    if order.len() == g.node_count() {
        return Ok(order);
    }
    // Name one cycle among the steps that never became ready.
    let stuck: BTreeSet<usize> = (0..g.node_count()).filter(|i| indegree[*i] > 0).collect();
    let start = NodeIndex::new(*stuck.first().expect("some step is stuck"));
    let mut path = vec![start];
    let mut seen = BTreeSet::from([start.index()]);
    let mut cur = start;
    loop {
        let next = g
            .neighbors_directed(cur, Direction::Incoming)
            .find(|m| stuck.contains(&m.index()))
            .expect("a stuck step waits for another stuck step");
        if !seen.insert(next.index()) {
            let from = path.iter().position(|n| *n == next).unwrap_or(0);
            let mut cycle = path.split_off(from);
            cycle.push(next);
            return Err(cycle);
        }
        path.push(next);
        cur = next;
    }
}

/// A sealed, acyclic graph of planned steps with its execution order.
pub struct PlanGraph {
    graph: DiGraph<PlannedStep, ()>,
    index: HashMap<StepId, NodeIndex>,
    order: Vec<NodeIndex>,
    /// Position of each node (by index) in `order`.
    rank: Vec<usize>,
}

impl PlanGraph {
    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    /// Steps in execution order: each after all of its dependencies.
    pub fn in_order(&self) -> impl Iterator<Item = &PlannedStep> {
        self.order.iter().map(|n| &self.graph[*n])
    }

    pub fn get(&self, id: &StepId) -> Option<&PlannedStep> {
        self.index.get(id).map(|n| &self.graph[*n])
    }

    /// Ids of the steps `id` waits for, in execution order.
    pub fn dependencies(&self, id: &StepId) -> Vec<&StepId> {
        let Some(&n) = self.index.get(id) else {
            return Vec::new();
        };
        let mut deps: Vec<NodeIndex> = self
            .graph
            .neighbors_directed(n, Direction::Incoming)
            .collect();
        deps.sort_by_key(|d| self.rank[d.index()]);
        deps.into_iter().map(|d| &self.graph[d].id).collect()
    }

    /// The underlying petgraph (edges run from a dependency to its dependent).
    pub fn petgraph(&self) -> &DiGraph<PlannedStep, ()> {
        &self.graph
    }

    /// Only the steps of the migrations in `migrations`, and everything they wait for: a
    /// step's whole owner is kept (a key with its rotation and replicas, a migration with all
    /// of its steps), so a kept owner is never half applied. The order is the order of this
    /// graph (`--migration`, like Terraform's `-target`).
    pub fn restricted(&self, migrations: &BTreeSet<String>) -> Result<PlanGraph, CompileError> {
        let owner_of = |n: NodeIndex| self.graph[n].id.owner.clone();
        let mut owners: BTreeSet<crate::ids::Owner> = self
            .graph
            .node_indices()
            .map(owner_of)
            .filter(
                |o| matches!(o, crate::ids::Owner::Migration(m) if migrations.contains(m.as_str())),
            )
            .collect();
        // Grow to a fixed point: the owners of what kept steps wait for.
        loop {
            let before = owners.len();
            for n in self.graph.node_indices() {
                if !owners.contains(&owner_of(n)) {
                    continue;
                }
                for d in self.graph.neighbors_directed(n, Direction::Incoming) {
                    owners.insert(owner_of(d));
                }
            }
            if owners.len() == before {
                break;
            }
        }
        let mut b = GraphBuilder::new();
        let kept: Vec<NodeIndex> = self
            .graph
            .node_indices()
            .filter(|n| owners.contains(&owner_of(*n)))
            .collect();
        for n in &kept {
            b.add(self.graph[*n].clone());
        }
        for n in &kept {
            for d in self.graph.neighbors_directed(*n, Direction::Incoming) {
                b.depends(&self.graph[*n].id, &self.graph[d].id);
            }
        }
        b.seal()
    }
}
