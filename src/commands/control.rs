//! `agentrun revoke` and `agentrun runs`: the clients of the control sockets that running
//! brokers listen on (docs/contract.md, "Broker control"). One JSON line out, one back, per
//! run, all runs asked at once under one deadline.
//!
//! What answers at a path is not trusted for being there (review 11d, B and C): a socket
//! counts only when its directory and the socket itself belong to one uid (not through a
//! symbolic link), and the process serving it is the PID its name says, of that uid. A
//! socket whose process is gone is removed only from this user's own directory. Whatever
//! a run reports is printed with control characters escaped.

use super::Fail;
use super::broker::control_dir;
use crate::broker::socket::{Reply, Request, Status};
use crate::cli::{RevokeArgs, RunsArgs};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long all runs together get to answer.
const ANSWER_WAIT: Duration = Duration::from_secs(3);
/// The longest answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// `revoke` and `runs` exit 1 when nothing matched or a socket refused.
fn failed(msg: String) -> Fail {
    Fail { code: 1, msg }
}

/// One run's control socket: its PID (from the name), path, and the uid that owns it.
#[derive(Debug, Clone)]
struct Socket {
    pid: u32,
    path: PathBuf,
    uid: u32,
    /// In this user's own directory (a stale one may be removed).
    own: bool,
}

/// The directories to look in: this user's; for root, every user's too
/// (`/run/user/<uid>/agentrun`, `/tmp/agentrun-<uid>`), each only when that uid owns it, it
/// is no symbolic link, and no one else may enter it.
fn dirs() -> Vec<(PathBuf, u32, bool)> {
    let me = nix::unistd::geteuid().as_raw();
    let mut out = vec![(control_dir(), me, true)];
    if me == 0 {
        let mut add = |dir: PathBuf, uid: u32| {
            if !out.iter().any(|(d, _, _)| *d == dir) {
                out.push((dir, uid, false));
            }
        };
        for e in std::fs::read_dir("/run/user")
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Some(uid) = e.file_name().to_str().and_then(|n| n.parse().ok()) {
                add(e.path().join("agentrun"), uid);
            }
        }
        for e in std::fs::read_dir("/tmp").into_iter().flatten().flatten() {
            let name = e.file_name();
            if let Some(uid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("agentrun-"))
                .and_then(|n| n.parse().ok())
            {
                add(e.path(), uid);
            }
        }
    }
    out.retain(|(dir, uid, _)| {
        std::fs::symlink_metadata(dir)
            .is_ok_and(|m| m.is_dir() && m.uid() == *uid && m.mode() & 0o077 == 0)
    });
    out
}

/// The sockets of the runs (`--run PID`: that one only), by PID.
fn sockets(only: Option<u32>) -> Result<Vec<Socket>, Fail> {
    let mut out = Vec::new();
    for (dir, uid, own) in dirs() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Some(pid) = e
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".sock"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let path = e.path();
            let ok = std::fs::symlink_metadata(&path)
                .is_ok_and(|m| m.file_type().is_socket() && m.uid() == uid);
            if ok {
                out.push(Socket {
                    pid,
                    path,
                    uid,
                    own,
                });
            }
        }
    }
    out.sort_by_key(|s| s.pid);
    if let Some(pid) = only {
        out.retain(|s| s.pid == pid);
        if out.is_empty() {
            return Err(failed(format!(
                "no run of agentrun with pid {pid} has a broker (no {pid}.sock in {}); `agentrun runs` lists them",
                control_dir().display()
            )));
        }
    }
    Ok(out)
}

/// Ask one run, by `deadline`; `Ok(None)` for a stale socket (its run is gone).
fn ask(s: &Socket, req: &Request, deadline: Instant) -> Result<Option<Reply>, String> {
    let pid = s.pid;
    let mut stream = match UnixStream::connect(&s.path) {
        Ok(st) => st,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNREFUSED | libc::ENOENT)) => {
            let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None)
                == Err(nix::errno::Errno::ESRCH);
            if gone {
                if s.own {
                    let _ = std::fs::remove_file(&s.path);
                }
                return Ok(None);
            }
            return Err(format!(
                "run {pid}: {} refuses connections ({e}) though the process lives; ignored",
                s.path.display()
            ));
        }
        Err(e) => return Err(format!("run {pid}: {}: {e}", s.path.display())),
    };
    // The server must be the process the name says, of the directory's uid: a child in its
    // PID namespace, or another user, cannot be.
    let cred = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| format!("run {pid}: {e}"))?;
    if cred.pid() != pid as i32 || cred.uid() != s.uid {
        return Err(format!(
            "{} is served by pid {} (uid {}), not by run {pid}: ignored",
            s.path.display(),
            cred.pid(),
            cred.uid()
        ));
    }
    let io = |e: std::io::Error| format!("run {pid}: {e}");
    let left = |d: Instant| {
        d.saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    stream.set_write_timeout(Some(left(deadline))).map_err(io)?;
    let mut line = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.contains(&b'\n') {
        if Instant::now() >= deadline || answer.len() > MAX_ANSWER {
            return Err(format!("run {pid}: no answer in time; ignored"));
        }
        stream.set_read_timeout(Some(left(deadline))).map_err(io)?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(e) => return Err(io(e)),
        }
    }
    let reply: Reply =
        serde_json::from_slice(&answer).map_err(|e| format!("run {pid}: a bad answer: {e}"))?;
    match reply.error {
        Some(e) => Err(format!("run {pid}: {}", printable(&e))),
        None => Ok(Some(reply)),
    }
}

/// Every socket asked at once, under one deadline; answers in PID order.
fn ask_all(socks: Vec<Socket>, req: &Request) -> Vec<(u32, Result<Option<Reply>, String>)> {
    let deadline = Instant::now() + ANSWER_WAIT;
    std::thread::scope(|scope| {
        let handles: Vec<_> = socks
            .iter()
            .map(|s| (s.pid, scope.spawn(move || ask(s, req, deadline))))
            .collect();
        handles
            .into_iter()
            .map(|(pid, h)| {
                (
                    pid,
                    h.join()
                        .unwrap_or_else(|_| Err(format!("run {pid}: the query failed"))),
                )
            })
            .collect()
    })
}

/// `text` with control characters escaped: a run's answer never drives the terminal.
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

fn list(v: &[String]) -> String {
    v.iter()
        .map(|s| printable(s))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn revoke(a: &RevokeArgs) -> Result<u8, Fail> {
    let req = Request::Revoke {
        names: (!a.all).then(|| a.names.clone()),
    };
    let mut matched_any = false;
    let mut errors = Vec::new();
    let mut seen_names: Vec<&String> = Vec::new();
    let mut runs = 0;
    for (pid, answer) in ask_all(sockets(a.run)?, &req) {
        match answer {
            Ok(None) => {}
            Ok(Some(r)) => {
                runs += 1;
                if r.matched.is_empty() {
                    continue;
                }
                matched_any = true;
                seen_names.extend(a.names.iter().filter(|n| r.matched.contains(n)));
                let already: Vec<String> = r
                    .matched
                    .iter()
                    .filter(|n| !r.revoked.contains(n))
                    .cloned()
                    .collect();
                let mut line = if r.revoked.is_empty() {
                    format!("run {pid}: nothing new revoked")
                } else {
                    format!("run {pid}: revoked {}", list(&r.revoked))
                };
                if !already.is_empty() {
                    line.push_str(&format!(" (already revoked: {})", list(&already)));
                }
                if a.all {
                    line.push_str("; tunnels closed");
                }
                println!("{line}");
            }
            Err(e) => errors.push(e),
        }
    }
    for e in &errors {
        eprintln!("agentrun: {e}");
    }
    let missing: Vec<&String> = a.names.iter().filter(|n| !seen_names.contains(n)).collect();
    if !matched_any {
        let what = if a.all {
            "no running broker".to_string()
        } else {
            format!("no running broker brokers {}", list(&a.names))
        };
        let scope = match a.run {
            Some(pid) => format!(" in run {pid}"),
            None => format!(" of uid {} ({runs} runs asked)", nix::unistd::geteuid()),
        };
        return Err(failed(format!(
            "{what}{scope}: nothing revoked; `agentrun runs` lists the runs and their names"
        )));
    }
    if !missing.is_empty() {
        eprintln!(
            "agentrun: no run brokers {}",
            missing
                .iter()
                .map(|s| printable(s))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(if errors.is_empty() { 0 } else { 1 })
}

pub fn runs(a: &RunsArgs) -> Result<u8, Fail> {
    let mut all: Vec<Status> = Vec::new();
    let mut errors = Vec::new();
    for (_, answer) in ask_all(sockets(None)?, &Request::Status) {
        match answer {
            Ok(Some(Reply {
                status: Some(s), ..
            })) => all.push(s),
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
    }
    for e in &errors {
        eprintln!("agentrun: {e}");
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&all).map_err(|e| failed(e.to_string()))?
        );
    } else if all.is_empty() {
        println!("no running broker of uid {}", nix::unistd::geteuid());
    } else {
        println!("PID\tPROFILE\tNAMES\tREQUESTS\tDENIED\tREVOKED");
        for s in &all {
            println!(
                "{}\t{}\t{}\t{}\t{}\t{}",
                s.pid,
                printable(&s.profile),
                list(&s.names),
                s.requests,
                s.denied,
                if s.revoked.is_empty() {
                    "-".to_string()
                } else {
                    list(&s.revoked)
                }
            );
        }
    }
    Ok(if errors.is_empty() { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_fields_cannot_drive_the_terminal() {
        assert_eq!(printable("a\u{1b}]0;x\u{7}\nb"), "a\\u{1b}]0;x\\u{7}\\nb");
        assert_eq!(printable("API_KEY"), "API_KEY");
    }

    /// A socket whose server is not the PID in its name is ignored; so is one that trickles
    /// its answer past the deadline.
    #[test]
    fn an_impostor_or_a_slow_socket_is_ignored_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let fake = dir.path().join("1.sock");
        let l = std::os::unix::net::UnixListener::bind(&fake).unwrap();
        let s = Socket {
            pid: 1,
            path: fake,
            uid: me,
            own: false,
        };
        let t = Instant::now();
        let r = ask(
            &s,
            &Request::Status,
            Instant::now() + Duration::from_secs(2),
        );
        assert!(r.unwrap_err().contains("not by run 1"));
        // Our own pid, serving one byte a second: cut at the deadline.
        let slow = dir.path().join(format!("{}.sock", std::process::id()));
        let l2 = std::os::unix::net::UnixListener::bind(&slow).unwrap();
        std::thread::spawn(move || {
            let (mut c, _) = l2.accept().unwrap();
            for _ in 0..10 {
                let _ = c.write_all(b" ");
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        let s2 = Socket {
            pid: std::process::id(),
            path: slow,
            uid: me,
            own: false,
        };
        let r = ask(
            &s2,
            &Request::Status,
            Instant::now() + Duration::from_secs(1),
        );
        assert!(r.unwrap_err().contains("no answer in time"));
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        drop(l);
    }
}
