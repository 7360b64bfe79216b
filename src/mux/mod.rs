//! One actor per server: the pure [`router`], the child process ([`child`]) and the record of
//! running children that outlives a crash ([`orphans`]), the socket ([`listener`]) and the
//! task that moves bytes between them ([`actor`]).

pub mod actor;
pub mod child;
mod child_in;
mod child_out;
pub mod listener;
pub mod orphans;
pub mod router;

pub(crate) use child_in::LEND_MIN;
