//! Socket and pipe plumbing shared by the daemon and the proxy. Nothing here frames, routes or
//! keeps sessions: it moves bytes and descriptors the way the callers ask.
//!
//! - [`socket`]: Unix stream sockets registered with the runtime one way per half, so a peer's
//!   reads do not wake this process.
//! - [`handoff`]: passing the host's stdin and stdout from the proxy to the daemon
//!   (`SCM_RIGHTS`), and checking what kind of descriptor came.
//! - `lines` (private): writing lines to a socket or pipe, with or without a task hop.
//! - `trim` (private): giving memory freed after large messages back to the system (glibc).
//! - `atomic_file` (private): replacing a small file whole and atomically.

pub(crate) mod atomic_file;
pub mod handoff;
pub(crate) mod lines;
pub mod socket;
pub(crate) mod trim;
