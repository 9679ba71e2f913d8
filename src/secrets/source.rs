//! The source grammar: `scheme:location[?query][#field]`, in that order (as in a URL).

use serde::Serialize;
use std::path::{Path, PathBuf};

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

impl Source {
    /// The scheme, as written in profiles and the audit log.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Env { .. } => "env",
            Source::Dotenv { .. } => "dotenv",
            Source::File { .. } => "file",
            Source::Systemd { .. } => "systemd",
            Source::Vault(_) => "vault",
            Source::AwsSm(_) => "aws-sm",
        }
    }

    /// Where the value comes from, without the scheme (for messages and the audit log).
    pub fn location(&self) -> String {
        match self {
            Source::Env { name } | Source::Systemd { name } => name.clone(),
            Source::Dotenv { path, key } => format!("{}#{key}", path.display()),
            Source::File { path } => path.display().to_string(),
            Source::Vault(v) => format!("{}/{}#{}", v.mount, v.path, v.field),
            Source::AwsSm(a) => match &a.key {
                Some(k) => format!("{}#{k}", a.secret_id),
                None => a.secret_id.clone(),
            },
        }
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, Source::Vault(_) | Source::AwsSm(_))
    }

    /// Parse a source string. `cwd` and `home` resolve relative paths and `~`.
    pub fn parse(text: &str, cwd: &Path, home: Option<&Path>) -> Result<Source, String> {
        let Some((scheme, rest)) = text.split_once(':') else {
            return Err("the source has no scheme (it is not shown, in case it is a credential pasted in the wrong place): write `env:NAME`, `dotenv:PATH#KEY`, `file:PATH`, \
                 `systemd:NAME`, `vault:MOUNT/PATH#FIELD` or `aws-sm:SECRET_ID[#KEY]`".to_string());
        };
        let (rest, field) = match rest.split_once('#') {
            Some((r, f)) => (r, Some(f)),
            None => (rest, None),
        };
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
        match scheme {
            "env" => {
                no_query("env")?;
                no_field("env")?;
                Ok(Source::Env {
                    name: location.to_string(),
                })
            }
            "file" => {
                no_query("file")?;
                no_field("file")?;
                Ok(Source::File {
                    path: resolve_path(location, cwd, home),
                })
            }
            "systemd" => {
                no_query("systemd")?;
                no_field("systemd")?;
                if location.contains('/') {
                    return Err(format!(
                        "`{text}`: a systemd credential name has no `/` (it is a file name in $CREDENTIALS_DIRECTORY)"
                    ));
                }
                Ok(Source::Systemd {
                    name: location.to_string(),
                })
            }
            "dotenv" => {
                no_query("dotenv")?;
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
            "vault" => {
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
            "aws-sm" => {
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
            _ => Err("the source's scheme is unknown (known: env, dotenv, file, systemd, vault, aws-sm; the source is not shown, in case it is a credential)".to_string()),
        }
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
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Source, String> {
        Source::parse(s, Path::new("/w"), Some(Path::new("/h")))
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
        ] {
            let e = parse(pasted).unwrap_err();
            assert!(
                !e.contains("hunter2") && !e.contains("abcdefghijklmnop") && !e.contains("pw"),
                "{e}"
            );
        }
        assert!(parse("env:A?x=1").unwrap_err().contains("no `?x=1`"));
    }
}
