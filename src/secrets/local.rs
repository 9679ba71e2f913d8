//! Local sources: agentrun's environment, dotenv files, whole files, systemd credentials.

use super::{Context, FetchError, Source};
use secrecy::SecretString;
use std::path::Path;

pub(super) fn fetch(source: &Source, ctx: &Context) -> Result<SecretString, FetchError> {
    let value = match source {
        Source::Env { name } => match ctx.var(name) {
            None => return Err(FetchError::EnvMissing(name.clone())),
            Some(v) => v
                .to_str()
                .ok_or_else(|| FetchError::EnvNotUtf8(name.clone()))?
                .to_string(),
        },
        Source::Dotenv { path, key } => dotenv(path, key)?,
        Source::File { path } => read_trimmed(path)?,
        Source::Systemd { name } => {
            let dir = ctx
                .var("CREDENTIALS_DIRECTORY")
                .ok_or_else(|| FetchError::NoCredentialsDirectory(name.clone()))?;
            read_trimmed(&Path::new(dir).join(name))?
        }
        Source::Vault(_) | Source::AwsSm(_) => {
            return Err(FetchError::Remote(format!(
                "{} is not a local source",
                source.kind()
            )));
        }
    };
    if value.is_empty() {
        return Err(FetchError::Empty);
    }
    Ok(SecretString::from(value))
}

/// The whole file, with one trailing newline (`\n` or `\r\n`) dropped.
fn read_trimmed(path: &Path) -> Result<String, FetchError> {
    let bytes = std::fs::read(path).map_err(|err| FetchError::Read {
        path: path.to_path_buf(),
        err,
    })?;
    let mut text = String::from_utf8(bytes).map_err(|_| FetchError::NotUtf8(path.to_path_buf()))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

fn dotenv(path: &Path, key: &str) -> Result<String, FetchError> {
    // dotenvy's own parse errors quote the offending line, which may hold a secret:
    // report only where it failed.
    let iter = dotenvy::from_path_iter(path).map_err(|e| match e {
        dotenvy::Error::Io(err) => FetchError::Read {
            path: path.to_path_buf(),
            err,
        },
        _ => FetchError::Dotenv {
            path: path.to_path_buf(),
            msg: "cannot be read as a dotenv file".into(),
        },
    })?;
    let mut found = None;
    for (n, item) in iter.enumerate() {
        match item {
            Ok((k, v)) => {
                if k == key {
                    found = Some(v);
                }
            }
            Err(dotenvy::Error::LineParse(_, index)) => {
                return Err(FetchError::Dotenv {
                    path: path.to_path_buf(),
                    msg: format!(
                        "syntax error in entry {} (at character {index} of its line): \
                         check quoting; a value with spaces or `#` needs quotes",
                        n + 1
                    ),
                });
            }
            Err(_) => {
                return Err(FetchError::Dotenv {
                    path: path.to_path_buf(),
                    msg: format!("entry {} cannot be parsed", n + 1),
                });
            }
        }
    }
    found.ok_or_else(|| FetchError::DotenvKeyMissing {
        path: path.to_path_buf(),
        key: key.to_string(),
    })
}
