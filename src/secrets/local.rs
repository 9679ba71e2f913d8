//! Local sources: agentrun's environment, dotenv files, whole files, systemd credentials.
//!
//! Every file is opened the same careful way ([`read_source`]): never through a symbolic link
//! in its last component, only a regular file, owned by the user or root, at most
//! [`MAX_SOURCE_BYTES`], and never resolving into a credential store the profile did not name.
//! An earlier run's child may have replaced a source in the working directory; this is what
//! keeps such a swap from handing over `~/.ssh/id_rsa`.

use super::{FetchError, dotenv};
use crate::context::Context;
use crate::profile::Source;
use secrecy::SecretString;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The most a local source (`env:`, `file:`, `dotenv:`, `systemd:`, a `[vault]` login file)
/// may hold.
/// A credential is a few hundred bytes; a certificate chain or a service-account key a few
/// KiB. Anything larger is not a secret the redactor can follow at a reasonable cost.
pub(super) const MAX_SOURCE_BYTES: u64 = 64 * 1024;

/// Directories whose files are symbolic links by design: Kubernetes projects a service
/// account's token as `token -> ..data/token`, swapped atomically. A link there is followed,
/// but only to a file inside that directory.
const LINKED_DIRS: &[&str] = &[
    "/var/run/secrets/kubernetes.io/serviceaccount",
    "/run/secrets/kubernetes.io/serviceaccount",
    "/var/run/secrets/eks.amazonaws.com/serviceaccount",
    "/run/secrets/eks.amazonaws.com/serviceaccount",
];

pub(super) fn fetch(source: &Source, ctx: &Context) -> Result<SecretString, FetchError> {
    let value = match source {
        Source::Env { name } => match ctx.var(name) {
            None => return Err(FetchError::EnvMissing(name.clone())),
            Some(v) if v.len() as u64 > MAX_SOURCE_BYTES => {
                return Err(FetchError::EnvTooLarge(name.clone()));
            }
            Some(v) => v
                .to_str()
                .ok_or_else(|| FetchError::EnvNotUtf8(name.clone()))?
                .to_string(),
        },
        Source::Dotenv { path, key } => dotenv_value(path, key, ctx)?,
        Source::File { path } => read_trimmed(path, ctx)?,
        Source::Systemd { name } => {
            let dir = ctx
                .var("CREDENTIALS_DIRECTORY")
                .ok_or_else(|| FetchError::NoCredentialsDirectory(name.clone()))?;
            read_trimmed(&Path::new(dir).join(name), ctx)?
        }
        Source::Vault(_)
        | Source::AwsSm(_)
        | Source::AwsSsm(_)
        | Source::GcpSm(_)
        | Source::AzureKv(_) => {
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
fn read_trimmed(path: &Path, ctx: &Context) -> Result<String, FetchError> {
    let bytes = read_source(path, ctx)?;
    let mut text = String::from_utf8(bytes).map_err(|_| FetchError::NotUtf8(path.to_path_buf()))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

fn dotenv_value(path: &Path, key: &str, ctx: &Context) -> Result<String, FetchError> {
    let bytes = read_source(path, ctx)?;
    let text = String::from_utf8(bytes).map_err(|_| FetchError::NotUtf8(path.to_path_buf()))?;
    let parsed = dotenv::parse(&text).map_err(|e| FetchError::Dotenv {
        path: path.to_path_buf(),
        msg: format!(
            "{e} (values are taken literally: `$` is never expanded; quote a value with blanks or ` #`)"
        ),
    })?;
    // The last assignment wins, as in a shell.
    parsed
        .entries
        .into_iter()
        .rev()
        .find(|e| e.key == key)
        .map(|e| e.value)
        .ok_or_else(|| FetchError::DotenvKeyMissing {
            path: path.to_path_buf(),
            key: key.to_string(),
        })
}

/// Opens and reads a local source file with every check in the module header.
pub(super) fn read_source(path: &Path, ctx: &Context) -> Result<Vec<u8>, FetchError> {
    read_source_with(path, ctx, LINKED_DIRS)
}

fn read_source_with(
    path: &Path,
    ctx: &Context,
    linked_dirs: &[&str],
) -> Result<Vec<u8>, FetchError> {
    let follow = linked_dirs
        .iter()
        .any(|d| path.parent() == Some(Path::new(d)));
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|err| {
            if err.raw_os_error() == Some(libc::ELOOP) {
                FetchError::Symlink(path.to_path_buf())
            } else {
                FetchError::Read {
                    path: path.to_path_buf(),
                    err,
                }
            }
        })?;
    let meta = file.metadata().map_err(|err| FetchError::Read {
        path: path.to_path_buf(),
        err,
    })?;
    if !meta.is_file() {
        return Err(FetchError::NotRegular(path.to_path_buf()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(FetchError::Owner {
            path: path.to_path_buf(),
            uid: meta.uid(),
        });
    }
    if meta.len() > MAX_SOURCE_BYTES {
        return Err(FetchError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
        });
    }
    let resolved = std::fs::read_link(format!("/proc/self/fd/{}", {
        use std::os::fd::AsRawFd;
        file.as_raw_fd()
    }))
    .or_else(|_| std::fs::canonicalize(path))
    .map_err(|err| FetchError::Read {
        path: path.to_path_buf(),
        err,
    })?;
    // In a Kubernetes service-account directory the link (`token -> ..data/token`, with
    // `..data` a link to a timestamped directory) must stay inside that directory.
    if follow
        && !path
            .parent()
            .and_then(|d| std::fs::canonicalize(d).ok())
            .is_some_and(|d| resolved.starts_with(d))
    {
        return Err(FetchError::Symlink(path.to_path_buf()));
    }
    if let Some(store) = unnamed_store(path, &resolved, ctx) {
        return Err(FetchError::IntoStore {
            path: path.to_path_buf(),
            store,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    (&file)
        .take(MAX_SOURCE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| FetchError::Read {
            path: path.to_path_buf(),
            err,
        })?;
    if bytes.len() as u64 > MAX_SOURCE_BYTES {
        return Err(FetchError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

/// The credential store `resolved` lies in when the source's own path (as the profile wrote
/// it) does not name that store: the file was reached through a link.
fn unnamed_store(path: &Path, resolved: &Path, ctx: &Context) -> Option<PathBuf> {
    let written = crate::sandbox::normalize_path(path);
    for store in super::protected_stores(ctx) {
        let real = std::fs::canonicalize(&store).unwrap_or_else(|_| store.clone());
        let inside = |p: &Path| p.starts_with(&store) || p.starts_with(&real);
        if inside(resolved) && !inside(&written) {
            return Some(store);
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn ctx(home: &Path) -> Context {
        Context {
            env: Default::default(),
            cwd: home.to_path_buf(),
            home: Some(home.to_path_buf()),
        }
    }

    #[test]
    fn links_only_inside_a_service_account_directory() {
        let t = tempfile::tempdir().unwrap();
        let sa = t.path().join("serviceaccount");
        std::fs::create_dir_all(sa.join("..2026_12_03")).unwrap();
        std::fs::write(sa.join("..2026_12_03/token"), "jwt-value").unwrap();
        symlink("..2026_12_03", sa.join("..data")).unwrap();
        symlink("..data/token", sa.join("token")).unwrap();
        std::fs::write(t.path().join("outside"), "other").unwrap();
        symlink("../outside", sa.join("escape")).unwrap();
        let c = ctx(&t.path().join("home"));
        let dirs = [sa.to_str().unwrap()];
        assert_eq!(
            read_source_with(&sa.join("token"), &c, &dirs).unwrap(),
            b"jwt-value"
        );
        assert!(matches!(
            read_source_with(&sa.join("escape"), &c, &dirs),
            Err(FetchError::Symlink(_))
        ));
        // Anywhere else a link is refused.
        assert!(matches!(
            read_source_with(&sa.join("token"), &c, &[]),
            Err(FetchError::Symlink(_))
        ));
    }

    #[test]
    fn size_limit_and_file_type() {
        let t = tempfile::tempdir().unwrap();
        let c = ctx(t.path());
        let p = t.path().join("big");
        std::fs::write(&p, vec![b'x'; MAX_SOURCE_BYTES as usize + 1]).unwrap();
        assert!(matches!(
            read_source(&p, &c),
            Err(FetchError::TooLarge { .. })
        ));
        std::fs::write(&p, vec![b'x'; MAX_SOURCE_BYTES as usize]).unwrap();
        assert_eq!(
            read_source(&p, &c).unwrap().len(),
            MAX_SOURCE_BYTES as usize
        );
        assert!(matches!(
            read_source(t.path(), &c),
            Err(FetchError::NotRegular(_))
        ));
    }
}
