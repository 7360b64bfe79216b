//! Per-server actor.
pub mod child;
pub mod listener;
