//! `AgentTable`: interns agent ids so hot per-window state can name a record's agent in
//! four bytes.
//!
//! Role: maps agent id text ↔ dense `u32`, and orders two interned ids by their text (the
//! tie-break of `last`). Touches nothing else.

use std::cmp::Ordering;
use std::sync::Arc;

use hashbrown::HashMap;

/// Dense agent index, valid for the `AgentTable` that issued it.
pub type AgentIdx = u32;

/// Interned agent ids.
#[derive(Debug, Default, Clone)]
pub struct AgentTable {
    by_name: HashMap<Arc<str>, AgentIdx>,
    names: Vec<Arc<str>>,
}

impl AgentTable {
    /// The index of `agent`, interning it on first sight.
    pub fn intern(&mut self, agent: &str) -> AgentIdx {
        if let Some(&idx) = self.by_name.get(agent) {
            return idx;
        }
        let idx = self.names.len() as AgentIdx;
        let name: Arc<str> = Arc::from(agent);
        self.names.push(name.clone());
        self.by_name.insert(name, idx);
        idx
    }

    /// The agent id text of an interned index.
    pub fn name(&self, idx: AgentIdx) -> &Arc<str> {
        &self.names[idx as usize]
    }

    /// Orders two interned agents by their id text.
    #[inline]
    pub fn cmp(&self, a: AgentIdx, b: AgentIdx) -> Ordering {
        if a == b { Ordering::Equal } else { self.names[a as usize].cmp(&self.names[b as usize]) }
    }

    /// Number of distinct agents seen.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True before any agent was seen.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}
