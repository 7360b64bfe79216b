//! Listener.
