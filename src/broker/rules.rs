//! The broker's rule syntax as pure functions: host patterns (`name`, `name:port`,
//! `*.example.com`, IP literals, `[::1]:8443`), path globs (`*` within one segment, `**`
//! across), `header` templates with `{value}`, and the address check (SSRF) on resolved IPs.
//!
//! Nothing here does I/O. Errors say what is wrong and how to fix it; the caller adds the
//! file and key.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A rule that cannot be used, with the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("{0:?} is not a host: {1}")]
    Host(String, &'static str),
    #[error("{0:?} is not a path glob: {1}")]
    Glob(String, &'static str),
    #[error("{0:?} is not a header template: {1}")]
    Header(String, &'static str),
}

/// The host part of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostName {
    /// An exact DNS name, lowercase, without a trailing dot.
    Exact(String),
    /// `*.example.com`: any name that ends in `.example.com` (stored as `.example.com`).
    Suffix(String),
    /// An IP literal.
    Ip(IpAddr),
}

/// A parsed host pattern: a name or IP with a port (443 when none is given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    pub host: HostName,
    pub port: u16,
}

impl HostPattern {
    /// Parse `name`, `name:port`, `*.example.com[:port]`, `1.2.3.4[:port]`, `::1`,
    /// `[::1]:8443`.
    pub fn parse(text: &str) -> Result<HostPattern, RuleError> {
        let err = |why| RuleError::Host(text.to_string(), why);
        let t = text.trim();
        if t.is_empty() {
            return Err(err("it is empty; write a name such as api.example.com"));
        }
        if t.contains("://") || t.contains('/') {
            return Err(err(
                "write the host alone, without scheme or path (api.example.com, not https://api.example.com/v1)",
            ));
        }
        // Bare IPv6 literal (more than one colon, no brackets).
        if t.matches(':').count() > 1 && !t.starts_with('[') {
            let ip: Ipv6Addr = t
                .parse()
                .map_err(|_| err("not an IPv6 address; write [addr]:port for a port"))?;
            return Ok(HostPattern {
                host: HostName::Ip(IpAddr::V6(ip)),
                port: 443,
            });
        }
        let (host, port) = if let Some(rest) = t.strip_prefix('[') {
            let (inner, after) = rest
                .split_once(']')
                .ok_or_else(|| err("an opening [ without ]; write [::1]:8443"))?;
            let ip: Ipv6Addr = inner
                .parse()
                .map_err(|_| err("the text inside [ ] is not an IPv6 address"))?;
            let port = match after {
                "" => 443,
                p => parse_port(
                    p.strip_prefix(':')
                        .ok_or_else(|| err("write [addr]:port"))?,
                )
                .ok_or_else(|| err("the port must be a number from 1 to 65535"))?,
            };
            return Ok(HostPattern {
                host: HostName::Ip(IpAddr::V6(ip)),
                port,
            });
        } else {
            match t.rsplit_once(':') {
                Some((h, p)) => (
                    h,
                    parse_port(p)
                        .ok_or_else(|| err("the port must be a number from 1 to 65535"))?,
                ),
                None => (t, 443),
            }
        };
        if let Ok(ip) = host.parse::<Ipv4Addr>() {
            return Ok(HostPattern {
                host: HostName::Ip(IpAddr::V4(ip)),
                port,
            });
        }
        let lower = host.to_ascii_lowercase();
        let lower = lower.strip_suffix('.').unwrap_or(&lower).to_string();
        if let Some(suffix) = lower.strip_prefix("*.") {
            check_dns_name(suffix).map_err(err)?;
            if !suffix.contains('.') {
                return Err(err(
                    "a wildcard must keep at least two labels (*.example.com, not *.com)",
                ));
            }
            return Ok(HostPattern {
                host: HostName::Suffix(format!(".{suffix}")),
                port,
            });
        }
        if lower.contains('*') {
            return Err(err(
                "a wildcard is allowed only as a whole first label: *.example.com",
            ));
        }
        check_dns_name(&lower).map_err(err)?;
        Ok(HostPattern {
            host: HostName::Exact(lower),
            port,
        })
    }

    /// Does this pattern cover `host:port`? `host` is a name or an IP literal (IPv6 without
    /// brackets), as a CONNECT target carries it.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if port != self.port {
            return false;
        }
        let host = normalize_host(host);
        match &self.host {
            HostName::Exact(name) => *name == host,
            HostName::Suffix(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
            HostName::Ip(ip) => host.parse::<IpAddr>().is_ok_and(|h| h == *ip),
        }
    }

    /// Does this pattern name exactly `host:port` (no wildcard)? Only such a naming lets a
    /// private or loopback address through the address check.
    pub fn names_exactly(&self, host: &str, port: u16) -> bool {
        !matches!(self.host, HostName::Suffix(_)) && self.matches(host, port)
    }

    /// Is this an IP literal in loopback, or `localhost`? Plain http may carry a value only there.
    pub fn is_loopback(&self) -> bool {
        match &self.host {
            HostName::Ip(ip) => ip.is_loopback(),
            HostName::Exact(n) => n == "localhost",
            HostName::Suffix(_) => false,
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            HostName::Exact(n) => write!(f, "{n}:{}", self.port),
            HostName::Suffix(s) => write!(f, "*{s}:{}", self.port),
            HostName::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            HostName::Ip(ip) => write!(f, "{ip}:{}", self.port),
        }
    }
}

/// Lowercase, no trailing dot, no IPv6 brackets.
pub fn normalize_host(host: &str) -> String {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    let h = h.strip_suffix('.').unwrap_or(h);
    h.to_ascii_lowercase()
}

fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok().filter(|&n| n != 0)
}

fn check_dns_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 253 {
        return Err("a host name has 1 to 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each dot-separated label has 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("a host name has only letters, digits, '-' and '.'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label cannot start or end with '-'");
        }
    }
    if name.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err("all digits but not an IPv4 address");
    }
    Ok(())
}

/// A path glob: `*` matches within one segment, `**` across segments. The query is not part
/// of the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathGlob {
    text: String,
    segments: Vec<Seg>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    /// `**`: any number of whole segments, zero included.
    Any,
    /// One segment; pieces split at `*`.
    One(Vec<String>),
}

impl PathGlob {
    pub fn parse(text: &str) -> Result<PathGlob, RuleError> {
        let err = |why| RuleError::Glob(text.to_string(), why);
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| err("a path glob starts with '/' (/v1/**)"))?;
        if text.contains('?') || text.contains('#') {
            return Err(err("the query is not part of the path; leave out '?...'"));
        }
        let mut segments = Vec::new();
        for seg in rest.split('/') {
            if seg == "**" {
                segments.push(Seg::Any);
            } else if seg.contains("**") {
                return Err(err("'**' must be a whole segment (/v1/**/files)"));
            } else {
                segments.push(Seg::One(seg.split('*').map(str::to_string).collect()));
            }
        }
        Ok(PathGlob {
            text: text.to_string(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Does the glob match `path` (without the query)? A path an upstream might resolve
    /// to another one matches no glob: see [`path_is_plain`].
    pub fn matches(&self, path: &str) -> bool {
        if !path_is_plain(path) {
            return false;
        }
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        match_segs(&self.segments, &parts)
    }
}

/// Is `path` free of what an upstream may resolve to a different path: a `.` or `..`
/// segment (with or without `;params`), a percent-encoded `.`, `/`, `\` or `%`, a `\`,
/// or a control character? A `paths` allow-list applies only to such paths; the others
/// are refused rather than normalised, so the upstream gets exactly what was checked.
pub fn path_is_plain(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    if ["%2e", "%2f", "%5c", "%25", "%00"]
        .iter()
        .any(|e| lower.contains(e))
    {
        return false;
    }
    if path.bytes().any(|b| b == b'\\' || b.is_ascii_control()) {
        return false;
    }
    !path.split('/').any(|seg| {
        let seg = seg.split(';').next().unwrap_or(seg);
        seg == "." || seg == ".."
    })
}

fn match_segs(globs: &[Seg], parts: &[&str]) -> bool {
    match globs.split_first() {
        None => parts.is_empty(),
        Some((Seg::Any, rest)) => (0..=parts.len()).any(|i| match_segs(rest, &parts[i..])),
        Some((Seg::One(pieces), rest)) => match parts.split_first() {
            Some((first, more)) => match_one(pieces, first) && match_segs(rest, more),
            None => false,
        },
    }
}

/// `pieces` is a segment split at `*`: the first piece is a prefix, the last a suffix, the
/// middle ones appear in order.
fn match_one(pieces: &[String], seg: &str) -> bool {
    if pieces.len() == 1 {
        return pieces[0] == seg;
    }
    let (first, last) = (&pieces[0], &pieces[pieces.len() - 1]);
    if seg.len() < first.len() + last.len()
        || !seg.starts_with(first.as_str())
        || !seg.ends_with(last.as_str())
    {
        return false;
    }
    let mut mid = &seg[first.len()..seg.len() - last.len()];
    for piece in &pieces[1..pieces.len() - 1] {
        match mid.find(piece.as_str()) {
            Some(i) => mid = &mid[i + piece.len()..],
            None => return false,
        }
    }
    true
}

/// `header = "Name: text {value} text"`, parsed into a header name and the text around
/// `{value}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderTemplate {
    pub name: http::HeaderName,
    pub before: String,
    pub after: String,
}

impl HeaderTemplate {
    pub fn parse(text: &str) -> Result<HeaderTemplate, RuleError> {
        let err = |why| RuleError::Header(text.to_string(), why);
        let (name, value) = text
            .split_once(':')
            .ok_or_else(|| err("write it as a header line: \"Authorization: Bearer {value}\""))?;
        let name = http::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| err("the part before ':' is not a header name"))?;
        let value = value.trim();
        let (before, after) = value.split_once("{value}").ok_or_else(|| {
            err("it has no {value}; write where the value goes: \"Bearer {value}\"")
        })?;
        if after.contains("{value}") {
            return Err(err("{value} may appear only once"));
        }
        if http::HeaderValue::from_str(&format!("{before}x{after}")).is_err() {
            return Err(err(
                "the text around {value} has characters a header cannot hold",
            ));
        }
        if matches!(
            name.as_str(),
            "host" | "content-length" | "transfer-encoding" | "connection"
        ) {
            return Err(err(
                "this header is the proxy's own; use Authorization or an API-key header",
            ));
        }
        Ok(HeaderTemplate {
            name,
            before: before.to_string(),
            after: after.to_string(),
        })
    }
}

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// A public address: always allowed.
    Public,
    /// Loopback, private, link-local, unique-local, shared, unspecified, multicast,
    /// documentation...: allowed only for a host:port the profile names exactly.
    Internal,
    /// Cloud metadata (169.254.169.254, fd00:ec2::254): never.
    Metadata,
}

/// Classify an address the broker is about to dial.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return classify_v4(v4);
            }
            if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                return AddressClass::Metadata;
            }
            let s = v6.segments();
            let internal = v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64 (may reach v4 internals)
                || (s[0] == 0x2002) // 6to4
                || (s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0 && s[5] == 0); // v4-compatible
            if internal {
                AddressClass::Internal
            } else {
                AddressClass::Public
            }
        }
    }
}

fn classify_v4(v4: Ipv4Addr) -> AddressClass {
    let o = v4.octets();
    if o == [169, 254, 169, 254] || o == [169, 254, 170, 2] || o == [100, 100, 100, 200] {
        return AddressClass::Metadata;
    }
    let internal = v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared address space 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking
        || o[0] >= 240; // reserved
    if internal {
        AddressClass::Internal
    } else {
        AddressClass::Public
    }
}

/// The address check: may the broker dial `ip` for a target the profile names exactly
/// (`named_exactly`) or not?
pub fn address_allowed(ip: IpAddr, named_exactly: bool) -> bool {
    match classify(ip) {
        AddressClass::Public => true,
        AddressClass::Internal => named_exactly,
        AddressClass::Metadata => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(s: &str) -> HostPattern {
        HostPattern::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn host_patterns_parse() {
        assert_eq!(hp("API.openai.com").to_string(), "api.openai.com:443");
        assert_eq!(hp("api.openai.com.").to_string(), "api.openai.com:443");
        assert_eq!(hp("example.com:8443").port, 8443);
        assert_eq!(hp("*.arxiv.org").to_string(), "*.arxiv.org:443");
        assert_eq!(hp("127.0.0.1:8443").to_string(), "127.0.0.1:8443");
        assert_eq!(hp("[::1]:8443").to_string(), "[::1]:8443");
        assert_eq!(hp("::1").to_string(), "[::1]:443");
        assert_eq!(hp("[::1]").port, 443);
        assert_eq!(hp("localhost:9000").to_string(), "localhost:9000");
    }

    #[test]
    fn bad_host_patterns_say_why() {
        for bad in [
            "",
            "https://api.openai.com",
            "api.openai.com/v1",
            "*.com",
            "a*.example.com",
            "api.*.com",
            "example.com:0",
            "example.com:70000",
            "example.com:http",
            "exa mple.com",
            "-bad.com",
            "[::1",
            "[zz]:1",
            "1.2.3.4.5",
            "a..b",
            "::g",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?} parsed");
        }
        let e = HostPattern::parse("https://x.com").unwrap_err().to_string();
        assert!(e.contains("without scheme"), "{e}");
    }

    #[test]
    fn host_patterns_match() {
        assert!(hp("api.openai.com").matches("API.OpenAI.com", 443));
        assert!(!hp("api.openai.com").matches("api.openai.com", 80));
        assert!(!hp("api.openai.com").matches("api.openai.com.evil.com", 443));
        assert!(!hp("api.openai.com").matches("xapi.openai.com", 443));
        assert!(hp("*.arxiv.org").matches("export.arxiv.org", 443));
        assert!(hp("*.arxiv.org").matches("a.b.arxiv.org", 443));
        assert!(!hp("*.arxiv.org").matches("arxiv.org", 443));
        assert!(!hp("*.arxiv.org").matches("evilarxiv.org", 443));
        assert!(hp("[::1]:8443").matches("::1", 8443));
        assert!(hp("[::1]:8443").matches("[::1]", 8443));
        assert!(hp("127.0.0.1:8443").matches("127.0.0.1", 8443));
        assert!(!hp("127.0.0.1:8443").matches("127.0.0.2", 8443));
        assert!(hp("127.0.0.1:1").names_exactly("127.0.0.1", 1));
        assert!(!hp("*.example.com").names_exactly("a.example.com", 443));
        assert!(hp("127.0.0.1:1").is_loopback() && hp("localhost:1").is_loopback());
        assert!(!hp("10.0.0.1:1").is_loopback());
    }

    #[test]
    fn globs() {
        let g = |s: &str| PathGlob::parse(s).unwrap_or_else(|e| panic!("{e}"));
        assert!(g("/v1/*").matches("/v1/models"));
        assert!(!g("/v1/*").matches("/v1/models/x"));
        assert!(g("/v1/**").matches("/v1/models/x"));
        assert!(g("/v1/**").matches("/v1"));
        assert!(g("/v1/**").matches("/v1/"));
        assert!(g("/repos/*/*/issues").matches("/repos/a/b/issues"));
        assert!(!g("/repos/*/*/issues").matches("/repos/a/issues"));
        assert!(g("/**/files").matches("/a/b/c/files"));
        assert!(g("/**/files").matches("/files"));
        assert!(g("/v1/chat*").matches("/v1/chat"));
        assert!(g("/v1/chat*").matches("/v1/chat-completions"));
        assert!(g("/v1/*.json").matches("/v1/a.json"));
        assert!(!g("/v1/*.json").matches("/v1/a.jso"));
        assert!(g("/a*b*c").matches("/aXbYc"));
        assert!(!g("/a*b*c").matches("/acb"));
        assert!(!g("/ab*ba").matches("/aba"));
        assert!(g("/").matches("/"));
        assert!(!g("/v1").matches("v1"));
        // Dot segments and encoded separators match no glob (review 11, F8).
        for sneaky in [
            "/v1/../secret",
            "/v1/./x",
            "/v1/%2e%2e/secret",
            "/v1/%2E%2E/secret",
            "/v1/..%2fsecret",
            "/v1/..%2Fsecret",
            "/v1/x%5c..%5csecret",
            "/v1/x\\..\\secret",
            "/v1/%252e%252e/secret",
            "/v1;/../secret",
            "/v1/..;/secret",
            "/v1/x/..",
        ] {
            assert!(!g("/v1/**").matches(sneaky), "{sneaky}");
            assert!(!path_is_plain(sneaky), "{sneaky}");
        }
        assert!(path_is_plain("/v1/a.b/..c/c../x.json"));
        assert!(g("/v1/**").matches("/v1/a..b/file.txt"));
        for bad in ["v1/*", "/v1?x=1", "/v1/a**", "/v1/**x/"] {
            assert!(PathGlob::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn header_templates() {
        let t = HeaderTemplate::parse("Authorization: Bearer {value}").expect("parses");
        assert_eq!(t.name.as_str(), "authorization");
        assert_eq!((t.before.as_str(), t.after.as_str()), ("Bearer ", ""));
        let t = HeaderTemplate::parse("x-api-key:{value}").expect("parses");
        assert_eq!(t.before, "");
        for bad in [
            "Authorization Bearer {value}",
            "Authorization: Bearer",
            "Bad Name: {value}",
            "X: {value}{value}",
            "Host: {value}",
            "X: a\u{7f}{value}",
        ] {
            assert!(HeaderTemplate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(classify(ip("169.254.169.254")), AddressClass::Metadata);
        assert_eq!(classify(ip("fd00:ec2::254")), AddressClass::Metadata);
        assert_eq!(
            classify(ip("::ffff:169.254.169.254")),
            AddressClass::Metadata
        );
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert_eq!(classify(ip(internal)), AddressClass::Internal, "{internal}");
            assert!(!address_allowed(ip(internal), false));
            assert!(address_allowed(ip(internal), true));
        }
        for public in ["1.1.1.1", "8.8.8.8", "2606:4700::1111", "100.128.0.1"] {
            assert_eq!(classify(ip(public)), AddressClass::Public, "{public}");
        }
        assert!(!address_allowed(ip("169.254.169.254"), true));
        assert!(!address_allowed(ip("fd00:ec2::254"), true));
    }
}
