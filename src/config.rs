//! Configuration (stub until the real module lands).
#![allow(missing_docs)]
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub name: String,
    pub socket: PathBuf,
    pub cmd: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    pub enabled: bool,
    pub lazy_start: bool,
    pub max_active_clients: usize,
    pub max_request_bytes: usize,
    pub max_response_bytes: usize,
    pub request_timeout: Duration,
    pub restart_backoff: Duration,
    pub restart_backoff_max: Duration,
    pub max_restarts: u32,
    pub shutdown_grace: Duration,
    pub capabilities: Capabilities,
    pub roots: Option<Vec<String>>,
    pub server_request_policy: ServerRequestPolicy,
    pub status_file: Option<PathBuf>,
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    pub sampling: bool,
    pub elicitation: bool,
    pub roots: bool,
}
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ServerRequestPolicy {
    #[default]
    MostRecent,
    InFlightOnly,
}
