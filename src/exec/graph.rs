//! The graph the walker runs: built with `StepGraphBuilder`, sealed (checked acyclic) into a
//! compact `StepGraph`. Building and running are two phases and two types.

use std::collections::HashMap;
use std::sync::Arc;

use super::step::{Context, Step};

/// Index of a step in its graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StepIndex(pub(crate) u32);

impl StepIndex {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GraphError {
    #[error("two steps have the id `{0}`")]
    DuplicateId(String),
    #[error("the step graph has a cycle through `{0}`")]
    Cycle(String),
    #[error("unknown step index {0}")]
    UnknownIndex(usize),
}

pub struct StepGraphBuilder<C: Context> {
    steps: Vec<Arc<dyn Step<C>>>,
    ids: HashMap<Arc<str>, u32>,
    edges: Vec<(u32, u32)>, // (dependency, dependent)
}

impl<C: Context> Default for StepGraphBuilder<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Context> StepGraphBuilder<C> {
    pub fn new() -> Self {
        StepGraphBuilder {
            steps: Vec::new(),
            ids: HashMap::new(),
            edges: Vec::new(),
        }
    }

    pub fn add_step(&mut self, step: Arc<dyn Step<C>>) -> Result<StepIndex, GraphError> {
        let id: Arc<str> = Arc::from(step.id());
        if self.ids.contains_key(&id) {
            return Err(GraphError::DuplicateId(id.to_string()));
        }
        let i = self.steps.len() as u32;
        self.ids.insert(id, i);
        self.steps.push(step);
        Ok(StepIndex(i))
    }

    /// `dependent` starts only after `dependency` is done, and may read its outputs.
    pub fn add_dependency(
        &mut self,
        dependent: StepIndex,
        dependency: StepIndex,
    ) -> Result<(), GraphError> {
        for i in [dependent, dependency] {
            if i.index() >= self.steps.len() {
                return Err(GraphError::UnknownIndex(i.index()));
            }
        }
        self.edges.push((dependency.0, dependent.0));
        Ok(())
    }

    pub fn index_of(&self, id: &str) -> Option<StepIndex> {
        self.ids.get(id).map(|&i| StepIndex(i))
    }

    /// Check the graph is acyclic and lay it out for the walker.
    pub fn seal(mut self) -> Result<StepGraph<C>, GraphError> {
        let n = self.steps.len();
        self.edges.sort_unstable();
        self.edges.dedup();
        let mut dependents_off = vec![0u32; n + 1];
        let mut deps_off = vec![0u32; n + 1];
        for &(a, b) in &self.edges {
            dependents_off[a as usize + 1] += 1;
            deps_off[b as usize + 1] += 1;
        }
        for i in 0..n {
            dependents_off[i + 1] += dependents_off[i];
            deps_off[i + 1] += deps_off[i];
        }
        let mut dependents = vec![0u32; self.edges.len()];
        let mut deps = vec![0u32; self.edges.len()];
        let mut fill_a = dependents_off.clone();
        let mut fill_b = deps_off.clone();
        for &(a, b) in &self.edges {
            dependents[fill_a[a as usize] as usize] = b;
            fill_a[a as usize] += 1;
            deps[fill_b[b as usize] as usize] = a;
            fill_b[b as usize] += 1;
        }
        let mut ids: Vec<Arc<str>> = vec![Arc::from(""); n];
        for (id, &i) in &self.ids {
            ids[i as usize] = id.clone();
        }
        let g = StepGraph {
            steps: self.steps,
            ids,
            index: self.ids,
            dependents_off,
            dependents,
            deps_off,
            deps,
        };
        // Kahn: every node must be reachable from the roots.
        let mut remaining: Vec<u32> = (0..n).map(|i| g.deps_of(i as u32).len() as u32).collect();
        let mut stack: Vec<u32> = (0..n as u32)
            .filter(|&i| remaining[i as usize] == 0)
            .collect();
        let mut seen = 0usize;
        while let Some(i) = stack.pop() {
            seen += 1;
            for &d in g.dependents_of(i) {
                remaining[d as usize] -= 1;
                if remaining[d as usize] == 0 {
                    stack.push(d);
                }
            }
        }
        if seen != n {
            let i = remaining.iter().position(|&r| r > 0).unwrap_or(0);
            return Err(GraphError::Cycle(g.ids[i].to_string()));
        }
        Ok(g)
    }
}

/// A sealed, acyclic step graph.
pub struct StepGraph<C: Context> {
    pub(crate) steps: Vec<Arc<dyn Step<C>>>,
    pub(crate) ids: Vec<Arc<str>>,
    index: HashMap<Arc<str>, u32>,
    dependents_off: Vec<u32>,
    dependents: Vec<u32>,
    deps_off: Vec<u32>,
    deps: Vec<u32>,
}

impl<C: Context> StepGraph<C> {
    /// From a petgraph DAG whose edge `a -> b` means "b depends on a".
    pub fn from_petgraph<E>(
        g: &petgraph::graph::DiGraph<Arc<dyn Step<C>>, E>,
    ) -> Result<Self, GraphError> {
        let mut b = StepGraphBuilder::new();
        for n in g.node_indices() {
            b.add_step(g[n].clone())?;
        }
        for e in g.raw_edges() {
            b.add_dependency(
                StepIndex(e.target().index() as u32),
                StepIndex(e.source().index() as u32),
            )?;
        }
        b.seal()
    }
    pub fn len(&self) -> usize {
        self.steps.len()
    }
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
    pub fn step(&self, i: StepIndex) -> &Arc<dyn Step<C>> {
        &self.steps[i.index()]
    }
    pub fn index_of(&self, id: &str) -> Option<StepIndex> {
        self.index.get(id).map(|&i| StepIndex(i))
    }
    /// Step ids in insertion order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.ids.iter().map(|s| &**s)
    }
    pub fn dependencies(&self, i: StepIndex) -> impl Iterator<Item = StepIndex> + '_ {
        self.deps_of(i.0).iter().map(|&d| StepIndex(d))
    }
    pub fn dependents(&self, i: StepIndex) -> impl Iterator<Item = StepIndex> + '_ {
        self.dependents_of(i.0).iter().map(|&d| StepIndex(d))
    }
    pub(crate) fn deps_of(&self, i: u32) -> &[u32] {
        &self.deps[self.deps_off[i as usize] as usize..self.deps_off[i as usize + 1] as usize]
    }
    pub(crate) fn dependents_of(&self, i: u32) -> &[u32] {
        &self.dependents
            [self.dependents_off[i as usize] as usize..self.dependents_off[i as usize + 1] as usize]
    }
}
