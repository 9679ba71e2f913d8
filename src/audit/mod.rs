//! The audit log: one JSON object per line, hash-chained, appended to a 0600 file in a
//! 0700 directory (or written to stderr, or to the system journal), optionally copied line
//! by line to the journal (journald's native socket, or syslog's `/dev/log`).
//!
//! The events and their fields are typed, in [`events`]: the log's schema in one place.
//!
//! It never sees a secret value: callers pass names, sources, outcomes and counts (and any
//! `user:pass@` in a URL is cut out of every string it is given).
//! Each line's `prev` is the hex SHA-256 of the previous line's bytes (64 zeros for a
//! file's first line), so editing shows. Appends take an exclusive `flock`, with a time
//! limit, so concurrent runs keep one chain and a process holding the lock cannot stall a
//! run.
//!
//! agentrun writes only to its own logs: a file it did not create must be a regular file
//! owned by the user (or root), not writable by anyone else, empty or starting with one of
//! agentrun's events; its directory must be owned by the user (or root) and not writable
//! by anyone else. agentrun never changes the mode of a file it did not create.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::profile::AuditSink;

pub mod events;

pub use events::Event;

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How long a run waits for the log's lock before it gives up (exit 125). Another run
/// holds it for one append (milliseconds); only a stuck or hostile process holds it longer.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// journald's native protocol socket, and syslog's, tried in that order.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
pub const SYSLOG_SOCKET: &str = "/dev/log";

#[derive(Debug)]
pub struct AuditError {
    pub path: PathBuf,
    pub err: io::Error,
}

impl std::fmt::Display for AuditError {
    /// agentrun's own refusals say their fix; an error from the system gets a general one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "audit log {}: {}", self.path.display(), self.err)?;
        if !matches!(
            self.err.kind(),
            io::ErrorKind::Other | io::ErrorKind::TimedOut
        ) {
            write!(
                f,
                "; fix the path or its permissions, or pass --audit-log PATH"
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for AuditError {}

/// Where one run's audit events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sinks {
    /// The log itself (a file, stderr, or the journal alone).
    pub log: AuditSink,
    /// Copy every line to the journal as well (`[audit] journald = true`).
    pub journald: bool,
    /// A native-protocol socket to use instead of [`JOURNAL_SOCKET`] and [`SYSLOG_SOCKET`]
    /// (the operator's `AGENTRUN_JOURNAL_SOCKET`).
    pub journal_socket: Option<PathBuf>,
}

/// An open audit sink for one run.
pub struct Audit {
    target: Target,
    /// The journal copy, when asked for (and the journal itself for `log = "journald"`).
    journal: Option<Journal>,
    run_id: String,
    /// Chain state for the stderr and journal sinks (a file re-reads its last line under
    /// the lock).
    last: String,
    /// Events recorded but not yet written: [`Audit::flush`] appends them in one locked
    /// write, so a run costs a few appends, not one per event.
    pending: Vec<Map<String, Value>>,
    /// The lock was not free within [`LOCK_TIMEOUT`] once: later flushes (the `refused`
    /// event, the drop) do not wait for it again.
    gave_up: bool,
}

enum Target {
    Stderr,
    Journal,
    File { path: PathBuf, file: File },
}

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

impl Audit {
    /// Open (creating with safe permissions) the sinks. Fails closed: a run without its
    /// audit log does not start.
    pub fn open(sinks: &Sinks) -> Result<Audit, AuditError> {
        let run_id = format!(
            "{:x}-{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
            std::process::id()
        );
        let target = match &sinks.log {
            AuditSink::Stderr => Target::Stderr,
            AuditSink::Journald => Target::Journal,
            AuditSink::File(path) => Target::File {
                path: path.clone(),
                file: open_log(path).map_err(|err| AuditError {
                    path: path.clone(),
                    err,
                })?,
            },
        };
        let journal = if sinks.journald || sinks.log == AuditSink::Journald {
            Some(Journal::open(sinks)?)
        } else {
            None
        };
        Ok(Audit {
            target,
            journal,
            run_id,
            last: GENESIS.to_string(),
            pending: Vec::new(),
            gave_up: false,
        })
    }

    /// What [`Audit::open`] would refuse, without creating, opening for writing or
    /// changing anything (for `check`, which starts nothing and so writes nothing).
    pub fn inspect(sinks: &Sinks) -> Result<(), AuditError> {
        if let AuditSink::File(path) = &sinks.log {
            inspect_log(path).map_err(|err| AuditError {
                path: path.clone(),
                err,
            })?;
        }
        if sinks.journald || sinks.log == AuditSink::Journald {
            journal_destination(sinks)?;
        }
        Ok(())
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Append one event now (after any recorded ones).
    pub fn event<E: Event>(&mut self, e: &E) -> Result<(), AuditError> {
        self.record(e);
        self.flush()
    }

    /// Record one event for the next [`Audit::flush`] (its kinds: see [`events`]).
    pub fn record<E: Event>(&mut self, e: &E) {
        self.record_fields(E::NAME, events::fields(e));
    }

    /// Record one event of kind `event` whose fields are a JSON object of names, outcomes
    /// and counts.
    fn record_fields(&mut self, event: &str, mut fields: Value) {
        // Error messages can quote an address: never its `user:pass@`.
        crate::scrub::strip_userinfo_json(&mut fields);
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

    /// Write every recorded event, chained, in one append under an exclusive lock (then
    /// copy the lines to the journal, when asked for).
    pub fn flush(&mut self) -> Result<(), AuditError> {
        self.flush_waiting(if self.gave_up {
            Duration::ZERO
        } else {
            LOCK_TIMEOUT
        })
    }

    /// [`Audit::flush`] without waiting for the lock: when another process holds it, the
    /// events stay recorded for the next flush. For the child's supervision loop, which a
    /// process holding the lock must not delay.
    pub fn flush_if_free(&mut self) -> Result<(), AuditError> {
        self.flush_waiting(Duration::ZERO)
    }

    fn flush_waiting(&mut self, wait: Duration) -> Result<(), AuditError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let lines = match &mut self.target {
            Target::Stderr | Target::Journal => {
                let lines = chain(&self.pending, self.last.clone());
                if let Some((_, hash)) = lines.last() {
                    self.last = hash.clone();
                }
                if matches!(self.target, Target::Stderr) {
                    let mut out = Vec::new();
                    for (line, _) in &lines {
                        out.extend_from_slice(line.as_bytes());
                        out.push(b'\n');
                    }
                    let _ = io::stderr().lock().write_all(&out);
                }
                lines
            }
            Target::File { path, file } => {
                let e = |err| AuditError {
                    path: path.clone(),
                    err,
                };
                let mut f: &File = file;
                let _lock = match Flock::exclusive(f, path, wait) {
                    Ok(l) => l,
                    // Not waiting: kept for the next flush.
                    Err(err) if wait.is_zero() && err.kind() == io::ErrorKind::TimedOut => {
                        return Ok(());
                    }
                    Err(err) => {
                        self.gave_up |= err.kind() == io::ErrorKind::TimedOut;
                        return Err(e(err));
                    }
                };
                let prev = match last_line(f).map_err(e)? {
                    Some(l) => hex::encode(Sha256::digest(&l)),
                    None => GENESIS.to_string(),
                };
                let lines = chain(&self.pending, prev);
                let mut out = Vec::new();
                for (line, _) in &lines {
                    out.extend_from_slice(line.as_bytes());
                    out.push(b'\n');
                }
                // Kept for the next flush (or the drop) if the write fails; a write cut short
                // (a full disk) is taken back, so that the next one starts a clean line and
                // the chain holds (review 11c, F4).
                let before = f.metadata().map_err(e)?.len();
                if let Err(err) = f.write_all(&out) {
                    let _ = f.set_len(before);
                    return Err(e(err));
                }
                lines
            }
        };
        let events: Vec<String> = self
            .pending
            .drain(..)
            .map(|o| {
                o.get("event")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        if let Some(j) = &self.journal {
            let log = match &self.target {
                Target::File { path, .. } => path.display().to_string(),
                Target::Stderr => "-".into(),
                Target::Journal => "journald".into(),
            };
            for ((line, hash), event) in lines.iter().zip(&events) {
                j.send(&log, &self.run_id, event, line, hash)
                    .map_err(|err| AuditError {
                        path: j.path.clone(),
                        err,
                    })?;
            }
        }
        Ok(())
    }
}

/// The pending events as chained lines, each with its own hash, the first linked to `prev`.
fn chain(pending: &[Map<String, Value>], mut prev: String) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(pending.len());
    for obj in pending {
        let mut obj = obj.clone();
        obj.insert("prev".into(), Value::String(prev));
        let line = Value::Object(obj).to_string();
        prev = hex::encode(Sha256::digest(line.as_bytes()));
        out.push((line, prev.clone()));
    }
    out
}

impl Drop for Audit {
    /// A safety net: events recorded on an early return are still written.
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

fn not_a_file() -> io::Error {
    other("not a regular file; the audit log must be a file (or `-` for stderr)".into())
}

/// The log's directory: created 0700 when missing; else owned by the user (or root) and
/// writable by nobody else, so no one else can swap the log for something of theirs.
fn check_dir(dir: &Path, me: u32) -> io::Result<()> {
    let m = std::fs::metadata(dir)?;
    if !m.is_dir() {
        return Err(other(format!("{} is not a directory", dir.display())));
    }
    if m.uid() != me && m.uid() != 0 {
        return Err(other(format!(
            "its directory {} belongs to uid {}, not to you (uid {me}) or root: another user \
             could swap the log; use a directory of your own (`mkdir -m 700`)",
            dir.display(),
            m.uid()
        )));
    }
    if m.mode() & 0o022 != 0 {
        return Err(other(format!(
            "its directory {} is writable by others (mode {:o}): they could swap the log; \
             run `chmod go-w {}` or use a directory of your own (0700)",
            dir.display(),
            m.mode() & 0o7777,
            dir.display()
        )));
    }
    Ok(())
}

/// An existing log: a regular file of the user's (or root's), writable by nobody else, and
/// either empty or starting with one of agentrun's events. Nothing is changed.
fn check_existing(f: &File, me: u32) -> io::Result<()> {
    let m = f.metadata()?;
    if !m.file_type().is_file() {
        return Err(not_a_file());
    }
    if m.uid() != me && m.uid() != 0 {
        return Err(other(format!(
            "belongs to uid {}, not to you (uid {me}) or root: agentrun writes only to its own \
             log; remove the file or name another one",
            m.uid()
        )));
    }
    if m.mode() & 0o022 != 0 {
        return Err(other(format!(
            "is writable by others (mode {:o}): they could rewrite the history; if it is \
             agentrun's log run `chmod 600` on it, or name another file",
            m.mode() & 0o7777
        )));
    }
    if m.len() > 0 && !starts_with_our_event(f)? {
        return Err(other(
            "is not an agentrun audit log (its first line is not one of agentrun's events): \
             agentrun appends only to its own logs; name a new file under agentrun's state \
             directory"
                .into(),
        ));
    }
    Ok(())
}

/// True when the file's first line is a JSON object with agentrun's event fields.
fn starts_with_our_event(f: &File) -> io::Result<bool> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let Some(end) = buf[..n].iter().position(|&b| b == b'\n') else {
        return Ok(false);
    };
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&buf[..end]) else {
        return Ok(false);
    };
    let hex64 = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    Ok(["ts", "run", "event"]
        .iter()
        .all(|k| m.get(*k).is_some_and(Value::is_string))
        && hex64(m.get("prev")))
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn open_flags() -> i32 {
    libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK
}

/// Open the log for appending: an existing one only if it passes [`check_existing`], a
/// missing one created 0600 (and its directory 0700).
fn open_log(path: &Path) -> io::Result<File> {
    let me = euid();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    check_dir(dir, me)?;
    for _ in 0..2 {
        // Not even opened when it is something else: opening a device can do things.
        match std::fs::symlink_metadata(path) {
            Ok(m) if !m.file_type().is_file() => return Err(not_a_file()),
            Ok(_) => {
                let file = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .custom_flags(open_flags())
                    .open(path)?;
                check_existing(&file, me)?;
                return Ok(file);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match OpenOptions::new()
                    .read(true)
                    .append(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(open_flags())
                    .open(path)
                {
                    Ok(file) => return Ok(file),
                    // Created by someone else in between: check it as an existing file.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(other(
        "appeared and vanished while it was opened; try again".into(),
    ))
}

/// [`open_log`]'s checks, read-only, creating nothing.
fn inspect_log(path: &Path) -> io::Result<()> {
    let me = euid();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // The nearest directory that exists is where a run would create (or find) the rest.
    let mut probe = dir;
    while !probe.exists() {
        match probe.parent() {
            Some(p) => probe = p,
            None => break,
        }
    }
    if probe == dir {
        check_dir(dir, me)?;
    } else if std::fs::metadata(probe).is_ok_and(|m| !m.is_dir()) {
        return Err(other(format!("{} is not a directory", probe.display())));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_file() => Err(not_a_file()),
        Ok(_) => {
            let file = OpenOptions::new()
                .read(true)
                .custom_flags(open_flags())
                .open(path)?;
            check_existing(&file, me)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The journal copy: one datagram per line, to journald's native socket or to syslog.
struct Journal {
    sock: UnixDatagram,
    path: PathBuf,
    native: bool,
}

/// Which socket the journal copy goes to, and whether it speaks journald's native protocol.
fn journal_destination(sinks: &Sinks) -> Result<(PathBuf, bool), AuditError> {
    if let Some(p) = &sinks.journal_socket {
        return Ok((p.clone(), true));
    }
    for (p, native) in [(JOURNAL_SOCKET, true), (SYSLOG_SOCKET, false)] {
        if Path::new(p).exists() {
            return Ok((PathBuf::from(p), native));
        }
    }
    Err(AuditError {
        path: PathBuf::from(JOURNAL_SOCKET),
        err: other(format!(
            "[audit] asks for the journal, but neither {JOURNAL_SOCKET} nor {SYSLOG_SOCKET} \
             exists: run under systemd-journald or a syslog daemon, or set \
             AGENTRUN_JOURNAL_SOCKET to journald's socket, or remove `journald` from [audit]"
        )),
    })
}

impl Journal {
    fn open(sinks: &Sinks) -> Result<Journal, AuditError> {
        let (path, native) = journal_destination(sinks)?;
        let e = |err| AuditError {
            path: path.clone(),
            err,
        };
        let sock = UnixDatagram::unbound().map_err(e)?;
        sock.connect(&path).map_err(e)?;
        sock.set_write_timeout(Some(Duration::from_secs(2)))
            .map_err(e)?;
        Ok(Journal { sock, path, native })
    }

    fn send(&self, log: &str, run: &str, event: &str, line: &str, hash: &str) -> io::Result<()> {
        let msg = if self.native {
            native_entry(&[
                ("MESSAGE", line),
                ("SYSLOG_IDENTIFIER", "agentrun"),
                ("PRIORITY", "6"),
                ("SYSLOG_FACILITY", "10"),
                ("AGENTRUN_LOG", log),
                ("AGENTRUN_RUN", run),
                ("AGENTRUN_EVENT", event),
                ("AGENTRUN_HASH", hash),
            ])
        } else {
            syslog_entry(line)
        };
        self.sock.send(&msg).map(|_| ())
    }
}

/// journald's native protocol, every field in its length-prefixed form (safe for any byte).
fn native_entry(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in fields {
        out.extend_from_slice(k.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&(v.len() as u64).to_le_bytes());
        out.extend_from_slice(v.as_bytes());
        out.push(b'\n');
    }
    out
}

/// An RFC 3164 line for `/dev/log`: facility authpriv (10), severity info (6).
fn syslog_entry(line: &str) -> Vec<u8> {
    format!("<86>agentrun[{}]: {line}", std::process::id()).into_bytes()
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
    /// The exclusive lock, waiting at most `wait`.
    fn exclusive(file: &'a File, path: &Path, wait: Duration) -> io::Result<Self> {
        let start = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Flock(file)),
                Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < wait => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "another process has held its lock for {}s, longer than any run \
                             needs: agentrun does not wait for it; find the holder with \
                             `fuser -v {}` (a process that can read the log can lock it)",
                            wait.as_secs(),
                            path.display()
                        ),
                    ));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
        }
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
    use std::os::unix::fs::PermissionsExt;

    fn file_sink(path: &Path) -> Sinks {
        Sinks {
            log: AuditSink::File(path.to_path_buf()),
            journald: false,
            journal_socket: None,
        }
    }

    #[test]
    fn chain_spans_runs_and_detects_edits() {
        let dir = std::env::temp_dir().join(format!("agentrun-audit-test-{}", std::process::id()));
        let path = dir.join("sub/audit.jsonl");
        let _ = std::fs::remove_dir_all(&dir);
        for _ in 0..2 {
            let mut a = Audit::open(&file_sink(&path)).unwrap();
            a.record_fields("start", json!({"x": 1}));
            a.flush().unwrap();
            a.record_fields("exit", json!({"code": 0}));
            a.flush().unwrap();
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

    #[test]
    fn only_our_own_logs_are_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let rc = dir.path().join("bashrc");
        std::fs::write(&rc, "alias ls='ls --color'\n").unwrap();
        std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Audit::open(&file_sink(&rc)).err().unwrap().to_string();
        assert!(e.contains("not an agentrun audit log"), "{e}");
        assert_eq!(
            std::fs::read_to_string(&rc).unwrap(),
            "alias ls='ls --color'\n"
        );
        assert_eq!(
            std::fs::metadata(&rc).unwrap().permissions().mode() & 0o777,
            0o644
        );
        // Empty, and ours: accepted, mode left alone.
        let ours = dir.path().join("ours.jsonl");
        std::fs::write(&ours, "").unwrap();
        std::fs::set_permissions(&ours, std::fs::Permissions::from_mode(0o640)).unwrap();
        for _ in 0..2 {
            let mut a = Audit::open(&file_sink(&ours)).unwrap();
            a.record_fields("start", json!({}));
            a.flush().unwrap();
        }
        assert_eq!(verify_chain(&ours), Ok(2));
        assert_eq!(
            std::fs::metadata(&ours).unwrap().permissions().mode() & 0o777,
            0o640
        );
        // Writable by others: refused, not tightened.
        std::fs::set_permissions(&ours, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = Audit::open(&file_sink(&ours)).err().unwrap().to_string();
        assert!(e.contains("writable by others"), "{e}");
        assert_eq!(
            std::fs::metadata(&ours).unwrap().permissions().mode() & 0o777,
            0o666
        );
    }

    #[test]
    fn inspect_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/agentrun/audit.jsonl");
        Audit::inspect(&file_sink(&path)).unwrap();
        assert!(!dir.path().join("state").exists());
    }

    #[test]
    fn journal_entries_are_length_prefixed() {
        let e = native_entry(&[("MESSAGE", "a\nb")]);
        assert_eq!(e, b"MESSAGE\n\x03\0\0\0\0\0\0\0a\nb\n");
        let s = String::from_utf8(syslog_entry("{}")).unwrap();
        assert!(
            s.starts_with("<86>agentrun[") && s.ends_with("]: {}"),
            "{s}"
        );
    }
}
