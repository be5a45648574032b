//! Nexus: a single-binary memory and knowledge appliance. See ARCHITECTURE.md for the map.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod datadir;
pub mod error;
pub mod http;
pub mod store;
pub mod telemetry;
pub mod writelog;
