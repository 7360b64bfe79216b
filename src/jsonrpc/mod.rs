//! JSON-RPC.
pub mod framing;
