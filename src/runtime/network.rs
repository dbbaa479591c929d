//! Networks as the runtime creates, lists and removes them.

use std::collections::HashMap;

/// A network to create: its name and labels.
#[derive(Debug, Clone)]
pub struct NetworkSpec {
    pub name: String,
    pub labels: HashMap<String, String>,
}

/// A network as listed: its name and labels.
#[derive(Debug, Clone)]
pub struct NetworkSummary {
    pub name: String,
    pub labels: HashMap<String, String>,
}

/// What removing a network did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkRemoval {
    Removed,
    /// There was no such network.
    Absent,
    /// A container is still attached; the runtime refused.
    InUse,
}
