//! Nexus: a single-binary memory and knowledge appliance. See ARCHITECTURE.md for the map.

pub mod app;
pub mod auth;
pub mod backup;
pub mod cli;
pub mod config;
pub mod datadir;
pub mod doctor;
pub mod dump;
pub mod embed;
pub mod error;
pub mod events;
pub mod graph;
pub mod http;
pub mod jobs;
pub mod knowledge;
pub mod llm;
pub mod mcp;
pub mod meetings;
pub mod memory;
pub mod migrate;
pub mod search;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod writelog;
