//! The graph domain: what Nexus computes over the graph of entities and their relations.
//!
//! `store::graph` keeps the graph (nodes, edges, traversals); this module works on a copy of it
//! held in memory. [`analytics`] ranks entities (PageRank, betweenness, closeness, degree) and
//! groups them (weakly connected components, Louvain communities), each as networkx defines it.

pub mod analytics;
