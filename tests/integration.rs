//! The appliance's integration tests: one test binary, a module per area, so they are compiled
//! and linked once and share one runner (`cargo test --test integration memory::` runs one area).
//! Most start the real `nexus` binary on port 0 (`common`). The suites on the shared cluster
//! servers (`cluster`, `cluster_faults`, `cluster_start`, `conformance`, `migrate`) are binaries
//! of their own, declared in Cargo.toml.

mod common;

mod backup;
mod cli;
mod crash;
mod data_faults;
mod docs;
mod doctor;
mod dump;
mod embed;
mod graph;
mod graph_analytics;
mod knowledge;
mod knowledge_crash;
mod knowledge_parse;
mod live;
mod llm;
mod mcp;
mod meetings;
mod mem0;
mod memory;
mod packaging;
mod rerank;
mod security;
mod server;
mod service;
mod tls;
mod writepath;
