//! Every event agentrun writes to the audit log, one `Serialize` type per kind: the log's
//! schema, readable in one place. [`super::Audit`] adds `ts`, `run` and `event` (the kind's
//! [`Event::NAME`]) and the chain's `prev`; the fields below follow them in one JSON object
//! (keys in sorted order, as `serde_json` writes a map).
//!
//! No event holds a secret value: names, sources as written, outcomes, durations, counts.
//! A run writes, in order: `start`, per secret `secret` (and `verify` for one with checks),
//! then `sandbox`, `spawn` and `exit`, or `refused` at the point it stopped.
//!
//! Imports the report types of `verify` and `sandbox` (plain data, serialized as they are);
//! only `commands` builds events.

use crate::sandbox::Enforcement;
use crate::verify::{Outcome, Verification};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// One kind of audit event.
pub trait Event: Serialize {
    /// The event's `event` field.
    const NAME: &'static str;
}

/// The event's own fields as one JSON object. A value JSON cannot hold (a path that is not
/// UTF-8) leaves the event with no fields of its own rather than stopping the run.
pub fn fields<E: Event>(e: &E) -> Value {
    serde_json::to_value(e).unwrap_or(Value::Null)
}

/// A run starts: the profile (path and hash), who ran what, where.
#[derive(Debug, Serialize)]
pub struct Start<'a> {
    pub profile: &'a Path,
    pub profile_sha256: &'a str,
    pub user: &'a str,
    pub argv0: &'a str,
    pub cwd: &'a Path,
    pub pid: u32,
    pub operator: Operator,
}

/// The operator's flags that weaken the run.
#[derive(Debug, Serialize)]
pub struct Operator {
    pub best_effort: bool,
    pub unconfined: bool,
    pub no_redact: bool,
}

impl Event for Start<'_> {
    const NAME: &'static str = "start";
}

/// One declared secret fetched (or not).
#[derive(Debug, Serialize)]
pub struct Secret<'a> {
    pub name: &'a str,
    /// The scheme: env, dotenv, file, systemd, vault, aws-sm.
    pub source: &'a str,
    /// The source as written in the profile.
    pub location: &'a str,
    pub required: bool,
    pub fetch: Fetch<'a>,
    pub duration_ms: f64,
}

/// How a fetch went: `outcome` (and `reason` when it failed), and `left_out` when an
/// optional secret is not handed over (missing, or failed its check).
#[derive(Debug, Serialize)]
pub struct Fetch<'a> {
    #[serde(flatten)]
    pub outcome: &'a Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left_out: Option<&'static str>,
}

impl Event for Secret<'_> {
    const NAME: &'static str = "secret";
}

/// The verification of one secret with checks: its attempts (see [`Verification`]).
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Verify<'a>(pub &'a Verification);

impl Event for Verify<'_> {
    const NAME: &'static str = "verify";
}

/// What the sandbox enforces for this run (see [`Enforcement`]).
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Sandbox<'a>(pub &'a Enforcement);

impl Event for Sandbox<'_> {
    const NAME: &'static str = "sandbox";
}

/// The child started.
#[derive(Debug, Serialize)]
pub struct Spawn<'a> {
    pub pid: i32,
    pub program: &'a Path,
    pub tty: bool,
}

impl Event for Spawn<'_> {
    const NAME: &'static str = "spawn";
}

/// The run stopped before (or instead of) the child: the message the operator saw.
#[derive(Debug, Serialize)]
pub struct Refused<'a> {
    pub reason: &'a str,
}

impl Event for Refused<'_> {
    const NAME: &'static str = "refused";
}

/// How the child ended, and what its run cost and redacted.
#[derive(Debug, Serialize)]
pub struct Exit<'a> {
    pub pid: i32,
    /// Its exit code, when it exited.
    pub code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// agentrun's own exit status.
    pub exit_status: u8,
    pub duration_ms: f64,
    pub forwarded_signals: &'a [String],
    pub killed_descendants: usize,
    /// Redactions per secret name or rule id, both streams together.
    pub redactions: &'a BTreeMap<String, u64>,
    pub bytes: Bytes,
    /// The broker's counts, in a run with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker: Option<&'a BrokerCounts>,
}

/// The broker's totals for the exit event.
#[derive(Debug, Serialize)]
pub struct BrokerCounts {
    pub requests: u64,
    pub denied: u64,
    pub rate_limited: u64,
    pub tunnels: u64,
    pub refreshed: u64,
    pub revoked: Vec<String>,
    /// Events left out of the log because there were too many (see `broker.request`).
    #[serde(skip_serializing_if = "is_zero")]
    pub events_dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `broker.request`: one request the broker forwarded (names, method, host, port, path
/// without the query, status, bytes, milliseconds; never a value or a placeholder).
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct BrokerRequest<'a>(pub &'a crate::broker::events::RequestEvent);

impl Event for BrokerRequest<'_> {
    const NAME: &'static str = "broker.request";
}

/// `broker.tunnel`: one connection to an `allow` host, tunnelled unread.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct BrokerTunnel<'a>(pub &'a crate::broker::events::TunnelEvent);

impl Event for BrokerTunnel<'_> {
    const NAME: &'static str = "broker.tunnel";
}

/// `broker.denied`: a request the broker refused, with the reason.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct BrokerDenied<'a>(pub &'a crate::broker::events::DeniedEvent);

impl Event for BrokerDenied<'_> {
    const NAME: &'static str = "broker.denied";
}

/// `broker.revoked`: secrets revoked for the rest of the run (by the ttl, or by whom
/// through the control socket).
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct BrokerRevoked<'a>(pub &'a crate::broker::events::RevokedEvent);

impl Event for BrokerRevoked<'_> {
    const NAME: &'static str = "broker.revoked";
}

/// `preflight`: the profile's `[preflight] require` checks, before the spawn.
#[derive(Debug, Serialize)]
pub struct Preflight<'a> {
    pub dir: &'a std::path::Path,
    pub required: &'a [&'static str],
    pub passed: bool,
    pub failed: Vec<&'static str>,
    pub warned: Vec<&'static str>,
}

impl Event for Preflight<'_> {
    const NAME: &'static str = "preflight";
}

/// `broker.refresh`: a brokered secret fetched again (on a 401, or on the timer).
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct BrokerRefresh<'a>(pub &'a crate::broker::events::RefreshEvent);

impl Event for BrokerRefresh<'_> {
    const NAME: &'static str = "broker.refresh";
}

/// Bytes the child wrote, before redaction.
#[derive(Debug, Serialize)]
pub struct Bytes {
    pub stdout: u64,
    pub stderr: u64,
}

impl Event for Exit<'_> {
    const NAME: &'static str = "exit";
}

/// Milliseconds with microsecond precision, as every `duration_ms` is written.
pub fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests {
    //! The schema, pinned: each event's JSON, field names and types, as the log gets it
    //! (the same as the `json!` objects agentrun wrote before the events were typed).
    use super::*;
    use crate::verify::{Attempt, RefetchReport};
    use serde_json::json;
    use std::time::Duration;

    fn text<E: Event>(e: &E) -> String {
        fields(e).to_string()
    }

    #[test]
    fn start() {
        let e = Start {
            profile: Path::new("/p/a.toml"),
            profile_sha256: "ab",
            user: "u",
            argv0: "sh",
            cwd: Path::new("/w"),
            pid: 7,
            operator: Operator {
                best_effort: false,
                unconfined: true,
                no_redact: false,
            },
        };
        assert_eq!(Start::NAME, "start");
        assert_eq!(
            fields(&e),
            json!({
                "profile": "/p/a.toml", "profile_sha256": "ab", "user": "u",
                "argv0": "sh", "cwd": "/w", "pid": 7,
                "operator": {"best_effort": false, "unconfined": true, "no_redact": false},
            })
        );
        assert_eq!(
            text(&e),
            r#"{"argv0":"sh","cwd":"/w","operator":{"best_effort":false,"no_redact":false,"unconfined":true},"pid":7,"profile":"/p/a.toml","profile_sha256":"ab","user":"u"}"#
        );
    }

    #[test]
    fn secret() {
        let failed = Outcome::Failed("gone".into());
        let e = Secret {
            name: "K",
            source: "env",
            location: "env:K",
            required: false,
            fetch: Fetch {
                outcome: &failed,
                left_out: Some("optional"),
            },
            duration_ms: ms(Duration::from_micros(1500)),
        };
        assert_eq!(Secret::NAME, "secret");
        assert_eq!(
            text(&e),
            r#"{"duration_ms":1.5,"fetch":{"left_out":"optional","outcome":"failed","reason":"gone"},"location":"env:K","name":"K","required":false,"source":"env"}"#
        );
        let ok = Outcome::Ok;
        let e = Secret {
            fetch: Fetch {
                outcome: &ok,
                left_out: None,
            },
            required: true,
            ..e
        };
        assert_eq!(fields(&e)["fetch"], json!({"outcome": "ok"}));
    }

    #[test]
    fn preflight() {
        let e = Preflight {
            dir: std::path::Path::new("/p"),
            required: &["secrets.hardcoded", "deps.hashes"],
            passed: false,
            failed: vec!["secrets.hardcoded"],
            warned: vec![],
        };
        assert_eq!(Preflight::NAME, "preflight");
        assert_eq!(
            text(&e),
            r#"{"dir":"/p","failed":["secrets.hardcoded"],"passed":false,"required":["secrets.hardcoded","deps.hashes"],"warned":[]}"#
        );
    }

    #[test]
    fn verify() {
        let v = Verification {
            name: "K".into(),
            required: true,
            attempts: vec![
                Attempt {
                    attempt: 1,
                    refetch: None,
                    outcome: Outcome::Failed("bad".into()),
                    duration: Duration::from_micros(2),
                },
                Attempt {
                    attempt: 2,
                    refetch: Some(RefetchReport {
                        outcome: Outcome::Ok,
                        duration: Duration::from_millis(3),
                        same_value: false,
                    }),
                    outcome: Outcome::Ok,
                    duration: Duration::ZERO,
                },
            ],
        };
        assert_eq!(Verify::NAME, "verify");
        assert_eq!(
            text(&Verify(&v)),
            r#"{"attempts":[{"attempt":1,"duration_ms":0.002,"outcome":"failed","reason":"bad"},{"attempt":2,"duration_ms":0.0,"outcome":"ok","refetch":{"duration_ms":3.0,"outcome":"ok","same_value":false}}],"name":"K","required":true}"#
        );
    }

    #[test]
    fn spawn_refused_exit() {
        assert_eq!(Spawn::NAME, "spawn");
        assert_eq!(
            text(&Spawn {
                pid: 9,
                program: Path::new("/bin/sh"),
                tty: false
            }),
            r#"{"pid":9,"program":"/bin/sh","tty":false}"#
        );
        assert_eq!(Refused::NAME, "refused");
        assert_eq!(text(&Refused { reason: "no" }), r#"{"reason":"no"}"#);
        assert_eq!(Exit::NAME, "exit");
        let redactions = BTreeMap::from([("K".to_string(), 2u64)]);
        let forwarded = vec!["SIGTERM".to_string()];
        let e = Exit {
            pid: 9,
            code: None,
            signal: Some(15),
            timed_out: false,
            exit_status: 143,
            duration_ms: 12.25,
            forwarded_signals: &forwarded,
            killed_descendants: 1,
            redactions: &redactions,
            bytes: Bytes {
                stdout: 3,
                stderr: 0,
            },
            broker: None,
        };
        assert_eq!(
            text(&e),
            r#"{"bytes":{"stderr":0,"stdout":3},"code":null,"duration_ms":12.25,"exit_status":143,"forwarded_signals":["SIGTERM"],"killed_descendants":1,"pid":9,"redactions":{"K":2},"signal":15,"timed_out":false}"#
        );
        let counts = BrokerCounts {
            requests: 2,
            denied: 1,
            rate_limited: 0,
            tunnels: 0,
            refreshed: 0,
            revoked: vec![],
            events_dropped: 0,
        };
        let e = Exit {
            broker: Some(&counts),
            ..e
        };
        assert!(
            text(&e).contains(
                r#""broker":{"denied":1,"rate_limited":0,"refreshed":0,"requests":2,"revoked":[],"tunnels":0}"#
            ),
            "{}",
            text(&e)
        );
    }

    #[test]
    fn sandbox_is_the_enforcement_report() {
        assert_eq!(Sandbox::NAME, "sandbox");
        let policy = crate::sandbox::Policy::resolve(None, Path::new("/w"), None, None).unwrap();
        let report = crate::sandbox::kernel_report(&policy).would_enforce;
        assert_eq!(
            fields(&Sandbox(&report)),
            serde_json::to_value(&report).unwrap()
        );
    }
}
