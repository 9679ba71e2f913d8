//! The source grammar: `scheme:location[?query][#field]`, in that order (as in a URL).
//!
//! Owns [`SourceKind`] and [`SCHEMES`], the one table of schemes: the parse messages that
//! list the schemes are built from it, and a unit test holds `docs/contract.md` to it. Every
//! `match` over kinds is exhaustive, so adding a kind makes the compiler name each place
//! that must handle it (see `docs/adding-a-source.md`). Pure data and parsing: imports
//! nothing of the crate (`profile` is the leaf), reads no file.

use serde::{Serialize, Serializer};
use std::path::{Path, PathBuf};

/// The kind of a source: one per scheme. The discriminant is the kind's row in [`SCHEMES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum SourceKind {
    Env = 0,
    Dotenv = 1,
    File = 2,
    Systemd = 3,
    Vault = 4,
    AwsSm = 5,
    AwsSsm = 6,
    GcpSm = 7,
    AzureKv = 8,
}

/// One row of [`SCHEMES`].
#[derive(Debug)]
pub struct Scheme {
    pub kind: SourceKind,
    /// As written before the `:` in profiles, and in the audit log.
    pub name: &'static str,
    /// The form shown in messages (`vault:MOUNT/PATH#FIELD`).
    pub syntax: &'static str,
    /// Fetched over the network, by a client `secrets` builds once per run.
    pub remote: bool,
}

/// Every scheme agentrun reads, in the order messages and docs list them.
pub const SCHEMES: [Scheme; 9] = [
    Scheme {
        kind: SourceKind::Env,
        name: "env",
        syntax: "env:NAME",
        remote: false,
    },
    Scheme {
        kind: SourceKind::Dotenv,
        name: "dotenv",
        syntax: "dotenv:PATH#KEY",
        remote: false,
    },
    Scheme {
        kind: SourceKind::File,
        name: "file",
        syntax: "file:PATH",
        remote: false,
    },
    Scheme {
        kind: SourceKind::Systemd,
        name: "systemd",
        syntax: "systemd:NAME",
        remote: false,
    },
    Scheme {
        kind: SourceKind::Vault,
        name: "vault",
        syntax: "vault:MOUNT/PATH#FIELD",
        remote: true,
    },
    Scheme {
        kind: SourceKind::AwsSm,
        name: "aws-sm",
        syntax: "aws-sm:SECRET_ID[#KEY]",
        remote: true,
    },
    Scheme {
        kind: SourceKind::AwsSsm,
        name: "aws-ssm",
        syntax: "aws-ssm:NAME[#KEY]",
        remote: true,
    },
    Scheme {
        kind: SourceKind::GcpSm,
        name: "gcp-sm",
        syntax: "gcp-sm:projects/P/secrets/S[/versions/V][#KEY]",
        remote: true,
    },
    Scheme {
        kind: SourceKind::AzureKv,
        name: "azure-kv",
        syntax: "azure-kv:VAULT/NAME[/VERSION][#KEY]",
        remote: true,
    },
];

// Row `i` of the table is the kind whose discriminant is `i` (checked when compiling).
const _: () = {
    let mut i = 0;
    while i < SCHEMES.len() {
        assert!(SCHEMES[i].kind as usize == i, "SCHEMES is out of order");
        i += 1;
    }
};

impl SourceKind {
    /// This kind's row of [`SCHEMES`].
    pub fn row(self) -> &'static Scheme {
        &SCHEMES[self as usize]
    }

    /// The scheme, as written in profiles and the audit log.
    pub fn scheme(self) -> &'static str {
        self.row().name
    }

    pub fn is_remote(self) -> bool {
        self.row().remote
    }

    /// The kind a scheme names, if any.
    pub fn from_scheme(scheme: &str) -> Option<SourceKind> {
        SCHEMES.iter().find(|s| s.name == scheme).map(|s| s.kind)
    }
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.scheme())
    }
}

/// As its scheme (`"aws-sm"`), as the audit log has always written it.
impl Serialize for SourceKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.scheme())
    }
}

/// The message for a source without a scheme: every scheme's syntax, from [`SCHEMES`].
fn no_scheme_message() -> String {
    let forms: Vec<String> = SCHEMES.iter().map(|s| format!("`{}`", s.syntax)).collect();
    let list = match forms.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => forms.concat(),
    };
    format!(
        "the source has no scheme (it is not shown, in case it is a credential pasted in the wrong place): write {list}"
    )
}

/// The message for an unknown scheme: every scheme's name, from [`SCHEMES`].
fn unknown_scheme_message() -> String {
    let names: Vec<&str> = SCHEMES.iter().map(|s| s.name).collect();
    format!(
        "the source's scheme is unknown (known: {}; the source is not shown, in case it is a credential)",
        names.join(", ")
    )
}

/// A parsed secret source. Paths are absolute (resolved at profile load).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Source {
    Env { name: String },
    Dotenv { path: PathBuf, key: String },
    File { path: PathBuf },
    Systemd { name: String },
    Vault(VaultRef),
    AwsSm(AwsRef),
    AwsSsm(SsmRef),
    GcpSm(GcpRef),
    AzureKv(AzureRef),
}

/// `vault:MOUNT/PATH#FIELD` with `?kv=1|2` and `?version=N`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VaultRef {
    pub mount: String,
    pub path: String,
    pub field: String,
    pub kv: u8,
    pub version: Option<u64>,
}

/// `aws-sm:SECRET_ID[#KEY]` with `?stage=`, `?version_id=`, `?region=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AwsRef {
    pub secret_id: String,
    pub key: Option<String>,
    pub stage: Option<String>,
    pub version_id: Option<String>,
    pub region: Option<String>,
}

/// `aws-ssm:NAME[#KEY]` with `?version=N` or `?label=L`, and `?region=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SsmRef {
    pub name: String,
    pub key: Option<String>,
    pub version: Option<u64>,
    pub label: Option<String>,
    pub region: Option<String>,
}

/// `gcp-sm:projects/P/secrets/S[/versions/V][#KEY]`, or `gcp-sm:S[/versions/V]` with the
/// project from `[gcp].project` (`project: None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GcpRef {
    pub project: Option<String>,
    pub secret: String,
    /// `latest` or a version number.
    pub version: String,
    pub key: Option<String>,
}

impl GcpRef {
    /// `projects/P/secrets/S/versions/V`, the resource name the API takes.
    pub fn resource(&self, default_project: &str) -> String {
        let project = self.project.as_deref().unwrap_or(default_project);
        format!(
            "projects/{project}/secrets/{}/versions/{}",
            self.secret, self.version
        )
    }
}

/// `azure-kv:VAULT/NAME[/VERSION][#KEY]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AzureRef {
    pub vault: String,
    pub name: String,
    /// `None`: the current version.
    pub version: Option<String>,
    pub key: Option<String>,
}

impl Source {
    /// The kind (its `Display` and `Serialize` are the scheme, as written in profiles and
    /// the audit log).
    pub fn kind(&self) -> SourceKind {
        match self {
            Source::Env { .. } => SourceKind::Env,
            Source::Dotenv { .. } => SourceKind::Dotenv,
            Source::File { .. } => SourceKind::File,
            Source::Systemd { .. } => SourceKind::Systemd,
            Source::Vault(_) => SourceKind::Vault,
            Source::AwsSm(_) => SourceKind::AwsSm,
            Source::AwsSsm(_) => SourceKind::AwsSsm,
            Source::GcpSm(_) => SourceKind::GcpSm,
            Source::AzureKv(_) => SourceKind::AzureKv,
        }
    }

    /// Where the value comes from, without the scheme (for messages and the audit log).
    pub fn location(&self) -> String {
        match self {
            Source::Env { name } | Source::Systemd { name } => name.clone(),
            Source::Dotenv { path, key } => format!("{}#{key}", path.display()),
            Source::File { path } => path.display().to_string(),
            Source::Vault(v) => format!("{}/{}#{}", v.mount, v.path, v.field),
            Source::AwsSm(a) => with_key(a.secret_id.clone(), &a.key),
            Source::AwsSsm(r) => {
                let at = match (r.version, &r.label) {
                    (Some(v), _) => format!(":{v}"),
                    (None, Some(l)) => format!(":{l}"),
                    (None, None) => String::new(),
                };
                with_key(format!("{}{at}", r.name), &r.key)
            }
            Source::GcpSm(r) => {
                let name = match &r.project {
                    Some(p) => format!("projects/{p}/secrets/{}", r.secret),
                    None => r.secret.clone(),
                };
                with_key(format!("{name}/versions/{}", r.version), &r.key)
            }
            Source::AzureKv(r) => {
                let version = r
                    .version
                    .as_deref()
                    .map(|v| format!("/{v}"))
                    .unwrap_or_default();
                with_key(format!("{}/{}{version}", r.vault, r.name), &r.key)
            }
        }
    }

    pub fn is_remote(&self) -> bool {
        self.kind().is_remote()
    }

    /// Parse a source string. `cwd` and `home` resolve relative paths and `~`.
    pub fn parse(text: &str, cwd: &Path, home: Option<&Path>) -> Result<Source, String> {
        let Some((scheme, rest)) = text.split_once(':') else {
            return Err(no_scheme_message());
        };
        // Before any message that quotes the text: an unknown scheme may be a credential.
        let Some(kind) = SourceKind::from_scheme(scheme) else {
            return Err(unknown_scheme_message());
        };
        let (rest, field) = match rest.split_once('#') {
            Some((r, f)) => (r, Some(f)),
            None => (rest, None),
        };
        if let Some(m) = url_form(kind, rest, field) {
            return Err(m);
        }
        let (location, query) = match rest.split_once('?') {
            Some((l, q)) => (l, Some(q)),
            None => (rest, None),
        };
        if location.is_empty() {
            return Err(format!("`{text}`: the location after `{scheme}:` is empty"));
        }
        let no_query = |what: &str| match query {
            Some(q) => Err(format!("`{text}`: {what} sources take no `?{q}` query")),
            None => Ok(()),
        };
        let no_field = |what: &str| match field {
            Some(f) => Err(format!("`{text}`: {what} sources take no `#{f}` field")),
            None => Ok(()),
        };
        let pairs = parse_query(query)?;
        match kind {
            SourceKind::Env => {
                no_query(scheme)?;
                no_field(scheme)?;
                Ok(Source::Env {
                    name: location.to_string(),
                })
            }
            SourceKind::File => {
                no_query(scheme)?;
                no_field(scheme)?;
                Ok(Source::File {
                    path: resolve_path(location, cwd, home),
                })
            }
            SourceKind::Systemd => {
                no_query(scheme)?;
                no_field(scheme)?;
                if location.contains('/') {
                    return Err(format!(
                        "`{text}`: a systemd credential name has no `/` (it is a file name in $CREDENTIALS_DIRECTORY)"
                    ));
                }
                Ok(Source::Systemd {
                    name: location.to_string(),
                })
            }
            SourceKind::Dotenv => {
                no_query(scheme)?;
                let Some(key) = field.filter(|k| !k.is_empty()) else {
                    return Err(format!(
                        "`{text}`: a dotenv source needs the key: `dotenv:{location}#KEY`"
                    ));
                };
                Ok(Source::Dotenv {
                    path: resolve_path(location, cwd, home),
                    key: key.to_string(),
                })
            }
            SourceKind::Vault => {
                let Some((mount, path)) = location
                    .split_once('/')
                    .filter(|(m, p)| !m.is_empty() && !p.is_empty())
                else {
                    return Err(format!(
                        "`{text}`: a vault source is `vault:MOUNT/PATH#FIELD`, e.g. `vault:secret/ai-agents/production#api_key`"
                    ));
                };
                let Some(field) = field.filter(|f| !f.is_empty()) else {
                    return Err(format!(
                        "`{text}`: a vault source needs the field: `vault:{location}#FIELD`"
                    ));
                };
                let mut kv = 2;
                let mut version = None;
                for (k, v) in pairs {
                    match k {
                        "kv" => {
                            kv = match v {
                                "1" => 1,
                                "2" => 2,
                                _ => return Err(format!("`{text}`: `kv` is 1 or 2, not `{v}`")),
                            }
                        }
                        "version" => {
                            version =
                                Some(v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                                    format!("`{text}`: `version` is a positive integer, not `{v}`")
                                })?)
                        }
                        _ => {
                            return Err(format!(
                                "`{text}`: unknown query key `{k}` for vault (known: kv, version)"
                            ));
                        }
                    }
                }
                if kv == 1 && version.is_some() {
                    return Err(format!(
                        "`{text}`: KV v1 has no versions: drop `version` or use kv=2"
                    ));
                }
                Ok(Source::Vault(VaultRef {
                    mount: mount.to_string(),
                    path: path.to_string(),
                    field: field.to_string(),
                    kv,
                    version,
                }))
            }
            SourceKind::AwsSm => {
                let mut r = AwsRef {
                    secret_id: location.to_string(),
                    key: field.filter(|f| !f.is_empty()).map(str::to_string),
                    stage: None,
                    version_id: None,
                    region: None,
                };
                for (k, v) in pairs {
                    let slot = match k {
                        "stage" => &mut r.stage,
                        "version_id" => &mut r.version_id,
                        "region" => &mut r.region,
                        _ => {
                            return Err(format!(
                                "`{text}`: unknown query key `{k}` for aws-sm (known: stage, version_id, region)"
                            ));
                        }
                    };
                    *slot = Some(v.to_string());
                }
                Ok(Source::AwsSm(r))
            }
            SourceKind::AwsSsm => {
                let mut r = SsmRef {
                    name: location.to_string(),
                    key: key_of(text, field)?,
                    version: None,
                    label: None,
                    region: None,
                };
                if !location
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b))
                {
                    return Err(format!(
                        "`{text}`: a parameter name has only letters, digits and `_.-/` (e.g. `aws-ssm:/agents/prod/api_key`)"
                    ));
                }
                for (k, v) in pairs {
                    match k {
                        "version" => {
                            r.version =
                                Some(v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                                    format!("`{text}`: `version` is a positive integer, not `{v}`")
                                })?)
                        }
                        "label" => r.label = Some(v.to_string()),
                        "region" => r.region = Some(v.to_string()),
                        _ => {
                            return Err(format!(
                                "`{text}`: unknown query key `{k}` for aws-ssm (known: version, label, region)"
                            ));
                        }
                    }
                }
                if r.version.is_some() && r.label.is_some() {
                    return Err(format!(
                        "`{text}`: give `version` or `label`, not both (Parameter Store selects one)"
                    ));
                }
                Ok(Source::AwsSsm(r))
            }
            SourceKind::GcpSm => {
                no_query(scheme)?;
                let parts: Vec<&str> = location.split('/').collect();
                let (project, secret, version) = match parts.as_slice() {
                    ["projects", p, "secrets", s] => (Some(*p), *s, "latest"),
                    ["projects", p, "secrets", s, "versions", v] => (Some(*p), *s, *v),
                    [s] => (None, *s, "latest"),
                    [s, "versions", v] => (None, *s, *v),
                    _ => {
                        return Err(format!(
                            "`{text}`: a gcp-sm source is `gcp-sm:projects/PROJECT/secrets/SECRET[/versions/VERSION]`, or `gcp-sm:SECRET` with [gcp].project set"
                        ));
                    }
                };
                let id_ok = |t: &str| {
                    !t.is_empty()
                        && t.len() <= 255
                        && t.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
                };
                if !id_ok(secret) {
                    return Err(format!(
                        "`{text}`: a secret id has only letters, digits, `_` and `-`"
                    ));
                }
                // A project id, a project number, or a domain-scoped `example.com:id`.
                let project_ok = |t: &str| {
                    !t.is_empty()
                        && t.len() <= 100
                        && t.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b))
                };
                if let Some(p) = project
                    && !project_ok(p)
                {
                    return Err(format!(
                        "`{text}`: the project is its id (letters, digits, `-`) or number"
                    ));
                }
                if version != "latest" && version.parse::<u64>().ok().filter(|n| *n > 0).is_none() {
                    return Err(format!(
                        "`{text}`: the version is `latest` or a positive number, not `{version}`"
                    ));
                }
                Ok(Source::GcpSm(GcpRef {
                    project: project.map(str::to_string),
                    secret: secret.to_string(),
                    version: version.to_string(),
                    key: key_of(text, field)?,
                }))
            }
            SourceKind::AzureKv => {
                no_query(scheme)?;
                let parts: Vec<&str> = location.split('/').collect();
                let (vault, name, version) = match parts.as_slice() {
                    [v, n] => (*v, *n, None),
                    [v, n, ver] => (*v, *n, Some(*ver)),
                    _ => {
                        return Err(format!(
                            "`{text}`: an azure-kv source is `azure-kv:VAULT/NAME[/VERSION]`, e.g. `azure-kv:agents-prod/openai-key`"
                        ));
                    }
                };
                let named = |t: &str, max: usize| {
                    !t.is_empty()
                        && t.len() <= max
                        && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                };
                if !named(vault, 24) {
                    return Err(format!(
                        "`{text}`: the vault name has 3 to 24 letters, digits and `-` (`https://VAULT.vault.azure.net`)"
                    ));
                }
                if !named(name, 127) {
                    return Err(format!(
                        "`{text}`: a Key Vault secret name has only letters, digits and `-`"
                    ));
                }
                if let Some(v) = version
                    && !(v.len() <= 64
                        && !v.is_empty()
                        && v.bytes().all(|b| b.is_ascii_alphanumeric()))
                {
                    return Err(format!(
                        "`{text}`: the version is the secret version's id (32 hex digits)"
                    ));
                }
                Ok(Source::AzureKv(AzureRef {
                    vault: vault.to_string(),
                    name: name.to_string(),
                    version: version.map(str::to_string),
                    key: key_of(text, field)?,
                }))
            }
        }
    }
}

/// A location with its `#KEY`, for messages.
fn with_key(location: String, key: &Option<String>) -> String {
    match key {
        Some(k) => format!("{location}#{k}"),
        None => location,
    }
}

/// The optional `#KEY` of a JSON-valued source: absent, or not empty.
fn key_of(text: &str, field: Option<&str>) -> Result<Option<String>, String> {
    match field {
        None => Ok(None),
        Some("") => Err(format!(
            "`{text}`: `#` is followed by nothing: name the JSON key, or drop the `#`"
        )),
        Some(k) => Ok(Some(k.to_string())),
    }
}

fn parse_query(query: Option<&str>) -> Result<Vec<(&str, &str)>, String> {
    let Some(q) = query else {
        return Ok(Vec::new());
    };
    q.split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k, v)),
            _ => Err("a query part of the source is not `key=value`".to_string()),
        })
        .collect()
}

/// For a message about a path that failed: when `written` was relative, that it was
/// resolved against the working directory `cwd` (a run started elsewhere reads another file).
pub fn relative_note(written: &str, cwd: &Path) -> Option<String> {
    (!written.starts_with('/') && !written.starts_with('~')).then(|| {
        format!(
            "`{written}` is relative: it was resolved against the working directory {}; \
             give an absolute path (or `~/...`), or start agentrun in the directory it is \
             relative to",
            cwd.display()
        )
    })
}

/// `scheme://rest` for a scheme whose location is a name or a path: the URL form a user
/// may write by habit, which the grammar would read as the location `//rest`. The message
/// suggests `scheme:rest`, built from the scheme, the location and a dotenv key only (names
/// and paths, not the value a pasted credential would be).
fn url_form(kind: SourceKind, rest: &str, field: Option<&str>) -> Option<String> {
    let after = rest.strip_prefix("//")?;
    if !matches!(
        kind,
        SourceKind::Env | SourceKind::Dotenv | SourceKind::File | SourceKind::Systemd
    ) {
        return None;
    }
    let location = after.split(['?', '#']).next().unwrap_or(after);
    // Echoed only when it reads as a name or a path: anything else may be a credential
    // pasted in the wrong place (review 13b, F2), and is shown as a placeholder.
    let name_like = |t: &str| {
        !t.is_empty()
            && t.len() <= 128
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-./~".contains(&b))
    };
    let scheme = kind.scheme();
    let location = if name_like(location) {
        location
    } else {
        "LOCATION"
    };
    let key = match (kind, field) {
        (SourceKind::Dotenv, Some(k)) if name_like(k) => format!("#{k}"),
        (SourceKind::Dotenv, _) => "#KEY".into(),
        _ => String::new(),
    };
    Some(format!(
        "did you mean `{scheme}:{location}{key}`? A source is `{scheme}:LOCATION`, not a URL: \
         the `//` after `{scheme}:` would be read as part of the location"
    ))
}

/// `~` and `~/x` expand to `$HOME`; relative paths resolve against `cwd`.
pub fn resolve_path(p: &str, cwd: &Path, home: Option<&Path>) -> PathBuf {
    if let Some(home) = home {
        if p == "~" {
            return home.to_path_buf();
        }
        if let Some(rest) = p.strip_prefix("~/") {
            return home.join(rest);
        }
    }
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        cwd.join(path)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Source, String> {
        Source::parse(s, Path::new("/w"), Some(Path::new("/h")))
    }

    #[test]
    fn a_url_form_is_refused_with_the_source_meant() {
        for (text, meant) in [
            ("dotenv://.env#K", "`dotenv:.env#K`"),
            ("dotenv://.env", "`dotenv:.env#KEY`"),
            ("file:///etc/key", "`file:/etc/key`"),
            ("env://OPENAI_API_KEY", "`env:OPENAI_API_KEY`"),
            ("systemd://tok", "`systemd:tok`"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(
                e.starts_with(&format!("did you mean {meant}?")),
                "{text}: {e}"
            );
        }
        assert!(parse("file:/etc/key").is_ok());
        // What does not read as a name or a path is not echoed.
        let e = parse("env://p@ss w0rd!").unwrap_err();
        assert!(e.starts_with("did you mean `env:LOCATION`?"), "{e}");
        assert!(!e.contains("w0rd"), "{e}");
    }

    #[test]
    fn local_sources() {
        assert_eq!(parse("env:A").unwrap(), Source::Env { name: "A".into() });
        assert_eq!(
            parse("dotenv:.env#K").unwrap(),
            Source::Dotenv {
                path: "/w/.env".into(),
                key: "K".into()
            }
        );
        assert_eq!(
            parse("file:~/k").unwrap(),
            Source::File {
                path: "/h/k".into()
            }
        );
        assert_eq!(
            parse("systemd:tok").unwrap(),
            Source::Systemd { name: "tok".into() }
        );
    }

    #[test]
    fn remote_sources() {
        let Source::Vault(v) = parse("vault:secret/a/b?kv=2&version=3#api_key").unwrap() else {
            panic!()
        };
        assert_eq!(
            (
                v.mount.as_str(),
                v.path.as_str(),
                v.field.as_str(),
                v.kv,
                v.version
            ),
            ("secret", "a/b", "api_key", 2, Some(3))
        );
        let Source::AwsSm(a) = parse("aws-sm:prod/x?stage=AWSPREVIOUS#json").unwrap() else {
            panic!()
        };
        assert_eq!(a.secret_id, "prod/x");
        assert_eq!(a.key.as_deref(), Some("json"));
        assert_eq!(a.stage.as_deref(), Some("AWSPREVIOUS"));
    }

    #[test]
    fn bad_sources_say_why() {
        assert!(parse("nothing").unwrap_err().contains("no scheme"));
        assert!(parse("dotenv:.env").unwrap_err().contains("needs the key"));
        assert!(parse("vault:secret#f").unwrap_err().contains("MOUNT/PATH"));
        assert!(
            parse("vault:secret/x")
                .unwrap_err()
                .contains("needs the field")
        );
        assert!(parse("vault:secret/x?kv=3#f").unwrap_err().contains("kv"));
        assert!(parse("ftp:x").unwrap_err().contains("scheme is unknown"));
        // A credential pasted where a source belongs is never echoed.
        for pasted in [
            "sk-proj-abcdefghijklmnop",
            "admin:hunter2hunter2",
            "user:pw?x#y",
            "user:#hunter2hunter2",
            "user:?pw",
        ] {
            let e = parse(pasted).unwrap_err();
            assert!(
                !e.contains("hunter2") && !e.contains("abcdefghijklmnop") && !e.contains("pw"),
                "{e}"
            );
        }
        assert!(parse("env:A?x=1").unwrap_err().contains("no `?x=1`"));
    }

    /// A source of each kind. The match names every kind, so a new one must get an example
    /// here (and then passes the round trips below).
    pub(crate) fn example(kind: SourceKind) -> &'static str {
        match kind {
            SourceKind::Env => "env:A",
            SourceKind::Dotenv => "dotenv:.env#K",
            SourceKind::File => "file:tok",
            SourceKind::Systemd => "systemd:sd",
            SourceKind::Vault => "vault:secret/a#f",
            SourceKind::AwsSm => "aws-sm:prod/x",
            SourceKind::AwsSsm => "aws-ssm:/agents/prod/key",
            SourceKind::GcpSm => "gcp-sm:projects/p-1/secrets/api-key",
            SourceKind::AzureKv => "azure-kv:agents-prod/api-key",
        }
    }

    #[test]
    fn the_scheme_table_round_trips() {
        for (i, row) in SCHEMES.iter().enumerate() {
            assert_eq!(row.kind as usize, i);
            assert_eq!(SourceKind::from_scheme(row.name), Some(row.kind));
            assert_eq!(row.kind.scheme(), row.name);
            assert_eq!(row.kind.to_string(), row.name);
            assert_eq!(
                serde_json::to_value(row.kind).unwrap(),
                serde_json::json!(row.name)
            );
            assert!(row.syntax.starts_with(&format!("{}:", row.name)), "{row:?}");
            let text = example(row.kind);
            let source = parse(text).unwrap();
            assert_eq!(source.kind(), row.kind, "{text}");
            assert_eq!(source.is_remote(), row.remote, "{text}");
            // `Serialize` of a source tags it with the same scheme.
            assert_eq!(
                serde_json::to_value(&source).unwrap()["kind"],
                serde_json::json!(row.name)
            );
        }
        assert_eq!(SourceKind::from_scheme("ftp"), None);
        assert_eq!(SourceKind::from_scheme(""), None);
    }

    #[test]
    fn messages_built_from_the_table_are_unchanged() {
        assert_eq!(
            parse("nothing").unwrap_err(),
            "the source has no scheme (it is not shown, in case it is a credential pasted in the wrong place): write `env:NAME`, `dotenv:PATH#KEY`, `file:PATH`, \
                 `systemd:NAME`, `vault:MOUNT/PATH#FIELD`, `aws-sm:SECRET_ID[#KEY]`, `aws-ssm:NAME[#KEY]`, \
                 `gcp-sm:projects/P/secrets/S[/versions/V][#KEY]` or `azure-kv:VAULT/NAME[/VERSION][#KEY]`"
        );
        assert_eq!(
            parse("ftp:x").unwrap_err(),
            "the source's scheme is unknown (known: env, dotenv, file, systemd, vault, aws-sm, aws-ssm, gcp-sm, azure-kv; the source is not shown, in case it is a credential)"
        );
    }

    /// The contract's table of sources lists every scheme of [`SCHEMES`], and no other; the
    /// README's list names every one.
    #[test]
    fn the_contract_lists_every_scheme() {
        let contract = include_str!("../../docs/contract.md");
        let (_, section) = contract.split_once("### 4.2 `[secrets]`").unwrap();
        let (section, _) = section.split_once("\n### ").unwrap();
        let rows: Vec<&str> = section
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split_once(':').map(|(scheme, _)| scheme))
            .filter(|s| s.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
            .collect();
        for row in &SCHEMES {
            assert!(
                rows.contains(&row.name),
                "docs/contract.md: no row for `{}:`",
                row.name
            );
        }
        for scheme in rows {
            assert!(
                SourceKind::from_scheme(scheme).is_some(),
                "docs/contract.md lists `{scheme}:`, which SCHEMES does not know"
            );
        }
        // The README's one-line list of sources.
        let readme = include_str!("../../README.md");
        let (_, list) = readme.split_once("- **Secrets** come from ").unwrap();
        let (list, _) = list.split_once(" sources,").unwrap();
        for row in &SCHEMES {
            assert!(
                list.contains(&format!("`{}:`", row.name)),
                "README.md: `{}:` missing from the list of sources",
                row.name
            );
        }
    }
}
