//! `[limits]`: time limits and resource limits, parsed once.

use super::{DurationKind, LimitsSection};
use serde::Serialize;
use std::time::Duration;

/// The default grace between SIGTERM and SIGKILL.
pub const DEFAULT_KILL_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    #[serde(with = "opt_duration")]
    pub timeout: Option<Duration>,
    #[serde(with = "duration")]
    pub kill_after: Duration,
    pub nofile: Option<u64>,
    pub nproc: Option<u64>,
    /// Address-space limit in bytes.
    pub memory: Option<u64>,
    /// CPU seconds.
    pub cpu: Option<u64>,
    /// Largest file the child may write, in bytes.
    pub fsize: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: None,
            kill_after: DEFAULT_KILL_AFTER,
            nofile: None,
            nproc: None,
            memory: None,
            cpu: None,
            fsize: None,
        }
    }
}

fn bytes(key: &str, v: &toml::Value) -> Result<u64, String> {
    match v {
        toml::Value::Integer(n) if *n > 0 => Ok(*n as u64),
        toml::Value::String(s) => {
            let s = s.trim();
            let (num, mult) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
                None => (s, 1u64),
                Some((i, _)) => {
                    let mult = match s[i..].trim().to_ascii_uppercase().as_str() {
                        "K" | "KB" | "KIB" => 1 << 10,
                        "M" | "MB" | "MIB" => 1 << 20,
                        "G" | "GB" | "GIB" => 1 << 30,
                        "T" | "TB" | "TIB" => 1 << 40,
                        _ => 0,
                    };
                    (&s[..i], mult)
                }
            };
            num.parse::<u64>()
                .ok()
                .filter(|n| *n > 0 && mult > 0)
                .and_then(|n| n.checked_mul(mult))
                .ok_or_else(|| {
                    format!("{key} = \"{s}\" is not a size: write bytes or e.g. \"512M\", \"2G\"")
                })
        }
        _ => Err(format!(
            "{key} must be a positive number of bytes or a size such as \"512M\""
        )),
    }
}

impl Limits {
    pub fn from_section(s: &LimitsSection) -> Result<Limits, String> {
        let timeout = s
            .timeout
            .as_deref()
            .map(|t| super::parse_duration("limits.timeout", t, DurationKind::Limit))
            .transpose()?;
        let kill_after = s
            .kill_after
            .as_deref()
            .map(|t| super::parse_duration("limits.kill_after", t, DurationKind::Limit))
            .transpose()?
            .unwrap_or(DEFAULT_KILL_AFTER);
        let cpu = match &s.cpu {
            None => None,
            Some(toml::Value::Integer(n)) if *n > 0 => Some(*n as u64),
            Some(toml::Value::String(t)) => Some(
                super::parse_duration("limits.cpu", t, DurationKind::Limit)?
                    .as_secs()
                    .max(1),
            ),
            Some(_) => {
                return Err("limits.cpu must be seconds or a duration such as \"10m\"".into());
            }
        };
        for (k, v) in [("limits.nofile", s.nofile), ("limits.nproc", s.nproc)] {
            if v == Some(0) {
                return Err(format!(
                    "{k} = 0 would stop the child from starting: give a positive number"
                ));
            }
        }
        Ok(Limits {
            timeout,
            kill_after,
            nofile: s.nofile,
            nproc: s.nproc,
            memory: s
                .memory
                .as_ref()
                .map(|v| bytes("limits.memory", v))
                .transpose()?,
            cpu,
            fsize: s
                .fsize
                .as_ref()
                .map(|v| bytes("limits.fsize", v))
                .transpose()?,
        })
    }
}

mod duration {
    pub(super) fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

mod opt_duration {
    pub(super) fn serialize<S: serde::Serializer>(
        d: &Option<std::time::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        let s = LimitsSection {
            timeout: Some("90s".into()),
            memory: Some(toml::Value::String("512M".into())),
            cpu: Some(toml::Value::Integer(5)),
            ..Default::default()
        };
        let l = Limits::from_section(&s).unwrap();
        assert_eq!(l.timeout, Some(Duration::from_secs(90)));
        assert_eq!(l.memory, Some(512 << 20));
        assert_eq!(l.kill_after, DEFAULT_KILL_AFTER);
        let bad = LimitsSection {
            timeout: Some("soon".into()),
            ..Default::default()
        };
        assert!(
            Limits::from_section(&bad)
                .unwrap_err()
                .contains("limits.timeout")
        );
    }
}
