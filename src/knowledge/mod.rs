//! The knowledge base domain: documents and what is made of them.
//!
//! - [`parse`]: uploaded bytes → [`parse::ParsedDoc`]s (title, structured blocks, metadata).
//! - [`chunk`]: a parsed document → [`chunk::Chunk`]s sized for the embedding model, each carrying
//!   its heading path.
//! - [`documents`]: documents, versions and their chunks, written through the one write path.
//! - [`ingest`]: the background job that turns an upload into a document.
//! - [`entities`]: the background job that reads a document version's entities and relations
//!   into the entity graph.
//! - [`ask`]: grounded answers with citations.

pub mod ask;
pub mod chunk;
pub mod documents;
pub mod entities;
pub mod ingest;
pub mod parse;
