//! The control socket of a running broker (docs/contract.md, "Broker control"): small JSON
//! lines over a unix socket, one request and one answer per connection. It can do nothing
//! but report counts and revoke: nothing in it restores a revoked secret or reads a value.
//! Only a peer with the broker's own uid, or root, is served (`SO_PEERCRED`).

use super::{CountsNow, RevokedBy, Revoker};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The longest request line read; a longer one is refused.
const MAX_LINE: u64 = 64 * 1024;
/// A peer gets this long to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    /// The run's status (`agentrun runs`).
    Status,
    /// Revoke these names; none given: all of them, and the tunnels.
    Revoke {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        names: Option<Vec<String>>,
    },
}

/// A run's status, as `agentrun runs` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub profile: String,
    pub names: Vec<String>,
    pub requests: u64,
    pub denied: u64,
    pub revoked: Vec<String>,
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Reply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// The names this request asked for that this run brokers (all of them for `--all`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matched: Vec<String>,
    /// Newly revoked by this request (a name revoked before matches, but is not new).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked: Vec<String>,
    /// Names asked for that this run does not broker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the server answers with.
#[derive(Clone)]
pub struct Served {
    pub revoker: Revoker,
    pub counts: CountsNow,
    pub pid: u32,
    pub profile: String,
}

/// Serve `listener` until the broker's runtime stops.
pub async fn serve(listener: tokio::net::UnixListener, served: Served) {
    let me = nix::unistd::geteuid().as_raw();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let served = served.clone();
        tokio::spawn(async move {
            let _ = answer(stream, &served, me).await;
        });
    }
}

async fn answer(stream: tokio::net::UnixStream, s: &Served, me: u32) -> std::io::Result<()> {
    let cred = stream.peer_cred()?;
    let (uid, pid) = (cred.uid(), cred.pid().unwrap_or(0));
    let (r, mut w) = stream.into_split();
    // The request is read (bounded) before the peer is judged, so that a refused client
    // gets its answer rather than a broken pipe.
    let mut line = String::new();
    let mut r = BufReader::new(r).take(MAX_LINE);
    let read = tokio::time::timeout(READ_TIMEOUT, r.read_line(&mut line)).await;
    let reply = if uid != me && uid != 0 {
        Reply {
            error: Some(format!(
                "uid {uid} may not control this run (only uid {me} or root)"
            )),
            ..Reply::default()
        }
    } else {
        match read {
            Ok(Ok(_)) => match serde_json::from_str::<Request>(line.trim()) {
                Ok(req) => handle(req, s, uid, pid),
                Err(e) => Reply {
                    error: Some(format!("not a request: {e}")),
                    ..Reply::default()
                },
            },
            _ => Reply {
                error: Some("no request line".into()),
                ..Reply::default()
            },
        }
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    w.write_all(&out).await?;
    w.shutdown().await
}

fn handle(req: Request, s: &Served, uid: u32, pid: i32) -> Reply {
    match req {
        Request::Status => {
            let (requests, denied) = s.counts.requests_denied();
            Reply {
                status: Some(Status {
                    pid: s.pid,
                    profile: s.profile.clone(),
                    names: s.revoker.names().to_vec(),
                    requests,
                    denied,
                    revoked: s.revoker.revoked(),
                }),
                ..Reply::default()
            }
        }
        Request::Revoke { names } => {
            let unknown: Vec<String> = names
                .iter()
                .flatten()
                .filter(|n| !s.revoker.names().contains(n))
                .cloned()
                .collect();
            let matched: Vec<String> = match &names {
                None => s.revoker.names().to_vec(),
                Some(ns) => ns
                    .iter()
                    .filter(|n| s.revoker.names().contains(n))
                    .cloned()
                    .collect(),
            };
            let by = RevokedBy::Peer { uid, pid };
            let revoked = s.revoker.revoke(names.as_deref(), by);
            Reply {
                matched,
                revoked,
                unknown,
                ..Reply::default()
            }
        }
    }
}
