//! One actor per server: the pure [`router`] (with its [`cache`] of shared results), the child process ([`child`]) and the record of
//! running children that outlives a crash ([`orphans`]), the socket ([`listener`]) and the
//! task that moves bytes between them ([`actor`]).

pub mod actor;
pub mod cache;
pub mod child;
mod child_in;
mod child_out;
pub mod instances;
pub mod listener;
pub mod orphans;
pub mod project;
pub mod router;

pub(crate) use child_in::LEND_MIN;

/// Starts one server on its bound socket: one actor for a `global` server, a dispatcher of
/// per-project or per-client instances otherwise.
pub fn spawn_server(
    cfg: crate::config::ServerConfig,
    socket: listener::BoundSocket,
    shutdown: tokio_util::sync::CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> actor::ServerHandle {
    match cfg.share {
        crate::config::Share::Global => actor::spawn(cfg, socket, shutdown, tracker),
        _ => instances::spawn(cfg, socket, shutdown, tracker),
    }
}
