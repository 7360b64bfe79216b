//! The control socket: one JSON request per line, one JSON answer per line. The daemon serves
//! it; the CLI (`status`, `restart`, `stop`, `start`, `reload`) and later the dashboard are its
//! clients.
//!
//! It only translates requests into calls on [`Shared`]; it holds no state of its own.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::daemon::reload::ReloadReport;
use crate::daemon::{DaemonStatus, Shared};
use crate::mux::listener::{self, BoundSocket};
use crate::status::Command;

/// A request on the control socket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    /// The whole daemon's status.
    Status,
    /// Restart one server (also clears a `failed` state).
    Restart {
        /// The server's name.
        server: String,
    },
    /// Stop one server.
    Stop {
        /// The server's name.
        server: String,
    },
    /// Start one server.
    Start {
        /// The server's name.
        server: String,
    },
    /// Read the config file again and apply it (as SIGHUP does).
    Reload,
    /// Restart, stop or start the one instance of a `share = "project"` server that runs for
    /// `project` (`restart NAME --project DIR`).
    Instance {
        /// The server's name.
        server: String,
        /// The project folder.
        project: std::path::PathBuf,
        /// What to do to it.
        action: InstanceAction,
    },
}

/// What [`Request::Instance`] does.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InstanceAction {
    /// Stop and start it again.
    Restart,
    /// Stop its child.
    Stop,
    /// Start its child.
    Start,
}

impl InstanceAction {
    /// The router command it stands for.
    pub fn command(self) -> Command {
        match self {
            InstanceAction::Restart => Command::Restart,
            InstanceAction::Stop => Command::Stop,
            InstanceAction::Start => Command::Start,
        }
    }
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Response {
    /// Whether the request was carried out.
    pub ok: bool,
    /// What went wrong, for the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The status, for `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DaemonStatus>,
    /// What changed, for `reload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<ReloadReport>,
}

impl Response {
    fn ok() -> Response {
        Response {
            ok: true,
            error: None,
            status: None,
            reload: None,
        }
    }

    fn failed(error: String) -> Response {
        Response {
            ok: false,
            error: Some(error),
            ..Response::ok()
        }
    }
}

/// The daemon refused a reload (its config is invalid or gone); the CLI exits 2 on it, as
/// for any config error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReloadRefused(pub String);

/// Serves the control socket until `token` is cancelled, then removes it.
pub async fn serve(socket: BoundSocket, shared: Arc<Shared>, token: CancellationToken) {
    loop {
        let stream = tokio::select! {
            // Cancel safe: accept loses nothing when dropped.
            accepted = socket.listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = token.cancelled() => break,
        };
        if !listener::peer_is_owner(&stream) {
            warn!("refused a control connection from another user");
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &shared).await {
                debug!(error = %e, "control connection ended");
            }
        });
    }
    socket.unlink();
}

async fn answer(stream: UnixStream, shared: &Shared) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(64 * 1024)).lines();
    while let Some(line) = lines.next_line().await? {
        let response = match serde_json::from_str::<Request>(&line) {
            Err(e) => Response::failed(format!("bad control request: {e}")),
            Ok(Request::Status) => Response {
                status: Some(shared.status()),
                ..Response::ok()
            },
            Ok(Request::Reload) => match shared.reload().await {
                Ok(report) => Response {
                    reload: Some(report),
                    ..Response::ok()
                },
                Err(e) => Response::failed(e.to_string()),
            },
            Ok(Request::Instance {
                server,
                project,
                action,
            }) => match shared
                .command_instance(&server, &project, action.command())
                .await
            {
                Ok(()) => Response::ok(),
                Err(e) => Response::failed(format!("{e:#}")),
            },
            Ok(req) => {
                let (name, cmd) = match &req {
                    Request::Restart { server } => (server, Command::Restart),
                    Request::Stop { server } => (server, Command::Stop),
                    Request::Start { server } => (server, Command::Start),
                    Request::Status | Request::Reload | Request::Instance { .. } => {
                        unreachable!("handled above")
                    }
                };
                match shared.command(name, cmd).await {
                    Ok(()) => Response::ok(),
                    Err(e) => Response::failed(format!("{e:#}")),
                }
            }
        };
        let mut out = serde_json::to_vec(&response).unwrap_or_default();
        out.push(b'\n');
        write.write_all(&out).await?;
    }
    Ok(())
}

use tokio::io::AsyncReadExt as _;

/// Sends one request to a daemon's control socket and returns its answer.
///
/// # Errors
/// No daemon listening (with a hint on how to start one), or a daemon that answered with an
/// error.
pub async fn request(socket: &Path, req: &Request) -> anyhow::Result<Response> {
    let response = exchange(socket, req).await?;
    if !response.ok {
        anyhow::bail!(
            "{}",
            response.error.unwrap_or_else(|| "request failed".into())
        );
    }
    Ok(response)
}

/// Asks the daemon to reload its config and returns what changed.
///
/// # Errors
/// [`ReloadRefused`] when the daemon refused the new config (it keeps running the old one);
/// otherwise as [`request`].
pub async fn reload(socket: &Path) -> anyhow::Result<ReloadReport> {
    let response = exchange(socket, &Request::Reload).await?;
    if !response.ok {
        let why = response.error.unwrap_or_else(|| "reload failed".into());
        return Err(ReloadRefused(why).into());
    }
    response
        .reload
        .context("the daemon answered without a reload report")
}

async fn exchange(socket: &Path, req: &Request) -> anyhow::Result<Response> {
    let stream = UnixStream::connect(socket).await.with_context(|| {
        format!(
            "no rmcp-mux daemon is listening on {} (start one with `rmcp-mux daemon start --config FILE`)",
            socket.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let mut lines = BufReader::new(read).lines();
    // A reload may wait for servers to stop (their grace periods): allow for it.
    let limit = if matches!(req, Request::Reload) {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(10)
    };
    let answer = tokio::time::timeout(limit, lines.next_line())
        .await
        .with_context(|| format!("the daemon did not answer within {} s", limit.as_secs()))??
        .context("the daemon closed the control connection without answering")?;
    serde_json::from_str(&answer).context("the daemon sent an unreadable answer")
}
