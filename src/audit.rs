//! The audit log: one JSON object per line, hash-chained, appended to a 0600 file in a
//! 0700 directory (or written to stderr).
//!
//! It never sees a secret value: callers pass names, sources, outcomes and counts.
//! Each line's `prev` is the hex SHA-256 of the previous line's bytes (64 zeros for a
//! file's first line), so truncation or editing shows. Appends take an exclusive `flock`
//! so concurrent runs keep one chain.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::profile::AuditSink;

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {err}; fix the path or its permissions, or pass --audit-log PATH")]
pub struct AuditError {
    pub path: PathBuf,
    pub err: io::Error,
}

/// An open audit sink for one run.
pub struct Audit {
    target: Target,
    run_id: String,
    /// Chain state for the stderr sink (a file re-reads its last line under the lock).
    last: String,
    /// Events recorded but not yet written: [`Audit::flush`] appends them in one locked
    /// write, so a run costs a few appends, not one per event.
    pending: Vec<Map<String, Value>>,
}

enum Target {
    Stderr,
    File { path: PathBuf, file: File },
}

impl Audit {
    /// Open (creating with safe permissions) the sink. Fails closed: a run without its
    /// audit log does not start.
    pub fn open(sink: &AuditSink) -> Result<Audit, AuditError> {
        let run_id = format!(
            "{:x}-{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
            std::process::id()
        );
        let target = match sink {
            AuditSink::Stderr => Target::Stderr,
            AuditSink::File(path) => {
                let err = |err| AuditError {
                    path: path.clone(),
                    err,
                };
                if let Some(dir) = path.parent()
                    && !dir.exists()
                {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(dir)
                        .map_err(err)?;
                }
                let not_a_file = || {
                    io::Error::other(
                        "not a regular file; the audit log must be a file (or `-` for stderr)",
                    )
                };
                // Not even opened when it is something else: opening a device can do things.
                if let Ok(m) = std::fs::symlink_metadata(path)
                    && !m.file_type().is_file()
                {
                    return Err(err(not_a_file()));
                }
                let file = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
                    .open(path)
                    .map_err(err)?;
                let meta = file.metadata().map_err(err)?;
                // Only ever tighten a file of our own: `--audit-log /dev/null` once made
                // /dev/null 0600 for everyone (the audit log is a record, not a sink).
                if !meta.file_type().is_file() {
                    return Err(err(not_a_file()));
                }
                if meta.permissions().mode() & 0o077 != 0 {
                    file.set_permissions(std::fs::Permissions::from_mode(0o600))
                        .map_err(err)?;
                }
                Target::File {
                    path: path.clone(),
                    file,
                }
            }
        };
        Ok(Audit {
            target,
            run_id,
            last: GENESIS.to_string(),
            pending: Vec::new(),
        })
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Append one event now (after any recorded ones).
    pub fn event(&mut self, event: &str, fields: Value) -> Result<(), AuditError> {
        self.record(event, fields);
        self.flush()
    }

    /// Record one event for the next [`Audit::flush`]. `fields` must be a JSON object of
    /// names, outcomes and counts.
    pub fn record(&mut self, event: &str, fields: Value) {
        let mut obj = Map::new();
        obj.insert(
            "ts".into(),
            Value::String(
                humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            ),
        );
        obj.insert("run".into(), Value::String(self.run_id.clone()));
        obj.insert("event".into(), Value::String(event.into()));
        if let Value::Object(m) = fields {
            obj.extend(m);
        }
        self.pending.push(obj);
    }

    /// Write every recorded event, chained, in one append under an exclusive lock.
    pub fn flush(&mut self) -> Result<(), AuditError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        match &mut self.target {
            Target::Stderr => {
                let mut out = Vec::new();
                for mut obj in std::mem::take(&mut self.pending) {
                    obj.insert("prev".into(), Value::String(self.last.clone()));
                    let line = Value::Object(obj).to_string();
                    self.last = hex::encode(Sha256::digest(line.as_bytes()));
                    out.extend_from_slice(line.as_bytes());
                    out.push(b'\n');
                }
                let _ = io::stderr().lock().write_all(&out);
                Ok(())
            }
            Target::File { path, file } => {
                let e = |err| AuditError {
                    path: path.clone(),
                    err,
                };
                let mut f: &File = file;
                let _lock = Flock::exclusive(f).map_err(e)?;
                let mut prev = match last_line(f).map_err(e)? {
                    Some(l) => hex::encode(Sha256::digest(&l)),
                    None => GENESIS.to_string(),
                };
                let mut out = Vec::new();
                for obj in &self.pending {
                    let mut obj = obj.clone();
                    obj.insert("prev".into(), Value::String(prev));
                    let line = Value::Object(obj).to_string();
                    prev = hex::encode(Sha256::digest(line.as_bytes()));
                    out.extend_from_slice(line.as_bytes());
                    out.push(b'\n');
                }
                // Kept for the next flush (or the drop) if the write fails.
                f.write_all(&out).map_err(e)?;
                self.pending.clear();
                Ok(())
            }
        }
    }
}

impl Drop for Audit {
    /// A safety net: events recorded on an early return are still written.
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// The last complete line of the file (without its newline), if any.
fn last_line(mut file: &File) -> io::Result<Option<Vec<u8>>> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(None);
    }
    let mut window = 4096u64;
    loop {
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::with_capacity((len - start) as usize);
        file.take(len - start).read_to_end(&mut buf)?;
        let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if let Some(i) = body.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(body[i + 1..].to_vec()));
        }
        if start == 0 {
            return Ok(Some(body.to_vec()));
        }
        window *= 4;
    }
}

struct Flock<'a>(&'a File);

impl<'a> Flock<'a> {
    fn exclusive(file: &'a File) -> io::Result<Self> {
        file.lock()?;
        Ok(Flock(file))
    }
}

impl Drop for Flock<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Verify a log's chain; returns the number of lines, or the 1-based line that breaks it.
pub fn verify_chain(path: &Path) -> Result<usize, usize> {
    let Ok(text) = std::fs::read(path) else {
        return Err(0);
    };
    let mut prev = GENESIS.to_string();
    let mut n = 0;
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        n += 1;
        let v: Value = serde_json::from_slice(line).map_err(|_| n)?;
        if v.get("prev").and_then(Value::as_str) != Some(prev.as_str()) {
            return Err(n);
        }
        prev = hex::encode(Sha256::digest(line));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chain_spans_runs_and_detects_edits() {
        let dir = std::env::temp_dir().join(format!("agentrun-audit-test-{}", std::process::id()));
        let path = dir.join("sub/audit.jsonl");
        let _ = std::fs::remove_dir_all(&dir);
        for _ in 0..2 {
            let mut a = Audit::open(&AuditSink::File(path.clone())).unwrap();
            a.event("start", json!({"x": 1})).unwrap();
            a.event("exit", json!({"code": 0})).unwrap();
        }
        assert_eq!(verify_chain(&path), Ok(4));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("\"code\":0", "\"code\":1", 1)).unwrap();
        // Editing line 2 breaks the link stored in line 3.
        assert_eq!(verify_chain(&path), Err(3));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
