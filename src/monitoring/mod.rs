//! Monitoring beside the actor graph: the memory sampler and the alert channels the binary
//! provides, each with its settings and its start-up helper.

pub mod alerts;
pub mod memory;
