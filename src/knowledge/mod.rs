//! The knowledge base domain: documents and what is made of them.
//!
//! - [`parse`]: uploaded bytes → [`parse::ParsedDoc`]s (title, structured blocks, metadata).
//! - [`chunk`]: a parsed document → [`chunk::Chunk`]s sized for the embedding model, each carrying
//!   its heading path.
//!
//! Both are pure, blocking functions with no I/O: the ingestion pipeline runs them off the async
//! threads and writes the chunks through the one write path.

pub mod chunk;
pub mod parse;
