//! The one duration parser: `90s`, `30m`, `1h30m`, `500ms` (humantime's syntax), for
//! `[limits]`, `--timeout`, `[vault].timeout`, `[aws].timeout` and `verify.timeout`.
//!
//! The settings differ only in the example a message gives and in whether zero is allowed,
//! so [`DurationKind`] names each setting's rule and the messages stay those users know.
//! Imports nothing of the crate.

use std::time::Duration;

/// Which rule a duration setting follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationKind {
    /// `[limits]` `timeout`, `kill_after`, `cpu` and `--timeout`: zero is allowed.
    Limit,
    /// A backend's per-request time limit (`[vault].timeout`, `[aws].timeout`): not zero.
    Request,
    /// A live probe's time limit (`verify.timeout`): not zero.
    Probe,
}

impl DurationKind {
    /// What a message suggests writing.
    fn examples(self) -> &'static str {
        match self {
            DurationKind::Limit => "\"90s\", \"30m\" or \"1h\"",
            DurationKind::Request => "\"10s\" or \"500ms\"",
            DurationKind::Probe => "\"10s\"",
        }
    }

    /// Why zero is refused, or `None` when it is allowed.
    fn zero_refused(self) -> Option<&'static str> {
        match self {
            DurationKind::Limit => None,
            DurationKind::Request => Some("a time limit of zero would always fail"),
            DurationKind::Probe => Some("a zero time limit always fails"),
        }
    }
}

/// Parse the value `text` of the setting `key` (named in messages) by `kind`'s rule.
pub fn parse_duration(key: &str, text: &str, kind: DurationKind) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| {
        format!(
            "{key} = \"{text}\" is not a duration ({e}): write e.g. {}",
            kind.examples()
        )
    })?;
    match kind.zero_refused() {
        Some(why) if d.is_zero() => Err(format!("{key} = \"{text}\": {why}")),
        _ => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_is_humantime() {
        for kind in [
            DurationKind::Limit,
            DurationKind::Request,
            DurationKind::Probe,
        ] {
            let p = |t| parse_duration("k", t, kind).unwrap();
            assert_eq!(p("90s"), Duration::from_secs(90));
            assert_eq!(p("30m"), Duration::from_secs(1800));
            assert_eq!(p("1h30m"), Duration::from_secs(5400));
            assert_eq!(p("500ms"), Duration::from_millis(500));
            assert_eq!(p("1h 5s"), Duration::from_secs(3605));
        }
    }

    #[test]
    fn messages_are_each_settings_own() {
        // Pinned byte for byte: these are the messages agentrun has always given.
        let e = |key, text, kind| parse_duration(key, text, kind).unwrap_err();
        let reason = humantime::parse_duration("soon").unwrap_err();
        assert_eq!(
            e("limits.timeout", "soon", DurationKind::Limit),
            format!(
                "limits.timeout = \"soon\" is not a duration ({reason}): write e.g. \"90s\", \"30m\" or \"1h\""
            )
        );
        assert_eq!(
            e("timeout", "soon", DurationKind::Request),
            format!(
                "timeout = \"soon\" is not a duration ({reason}): write e.g. \"10s\" or \"500ms\""
            )
        );
        assert_eq!(
            e("timeout", "soon", DurationKind::Probe),
            format!("timeout = \"soon\" is not a duration ({reason}): write e.g. \"10s\"")
        );
        assert_eq!(
            parse_duration("limits.timeout", "0s", DurationKind::Limit).unwrap(),
            Duration::ZERO
        );
        assert_eq!(
            e("timeout", "0s", DurationKind::Request),
            "timeout = \"0s\": a time limit of zero would always fail"
        );
        assert_eq!(
            e("timeout", "0ms", DurationKind::Probe),
            "timeout = \"0ms\": a zero time limit always fails"
        );
    }
}
