//! One actor per server: the pure [`router`], the child process ([`child`]), the socket
//! ([`listener`]) and the task that moves bytes between them ([`actor`]).

pub mod actor;
pub mod child;
pub mod listener;
pub mod router;
