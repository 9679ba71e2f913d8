//! `agentrun revoke` and `agentrun runs`: the clients of the control sockets that running
//! brokers listen on (docs/contract.md, "Broker control"). One JSON line out, one back, per
//! run. A socket whose run is gone is removed; one that refuses is reported.

use super::Fail;
use super::broker::control_dir;
use crate::broker::socket::{Reply, Request, Status};
use crate::cli::{RevokeArgs, RunsArgs};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a run gets to answer.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// `revoke` and `runs` exit 1 when nothing matched or a socket refused.
fn failed(msg: String) -> Fail {
    Fail { code: 1, msg }
}

/// Where control sockets are: this user's directory; for root, every user's too
/// (`/run/user/*/agentrun`, `/tmp/agentrun-*`).
fn dirs() -> Vec<PathBuf> {
    let mut out = vec![control_dir()];
    if nix::unistd::geteuid().is_root() {
        for (parent, pick) in [("/run/user", None), ("/tmp", Some("agentrun-"))] {
            for e in std::fs::read_dir(parent).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let dir = match pick {
                    None => e.path().join("agentrun"),
                    Some(prefix) if name.starts_with(prefix) => e.path(),
                    Some(_) => continue,
                };
                if dir.is_dir() && !out.contains(&dir) {
                    out.push(dir);
                }
            }
        }
    }
    out
}

/// The control sockets of this user's runs (root: everyone's; `--run PID`: that one
/// only), by PID.
fn sockets(only: Option<u32>) -> Result<Vec<(u32, PathBuf)>, Fail> {
    let mut out = Vec::new();
    for dir in dirs() {
        out.extend(sockets_in(&dir)?);
    }
    out.sort();
    if let Some(pid) = only {
        out.retain(|(p, _)| *p == pid);
        if out.is_empty() {
            return Err(failed(format!(
                "no run of agentrun with pid {pid} has a broker (no {pid}.sock in {}); `agentrun runs` lists them",
                control_dir().display()
            )));
        }
    }
    Ok(out)
}

fn sockets_in(dir: &Path) -> Result<Vec<(u32, PathBuf)>, Fail> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(failed(format!("{}: {e}", dir.display()))),
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".sock"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        out.push((pid, e.path()));
    }
    Ok(out)
}

/// Ask one run; `Ok(None)` for a stale socket (its run is gone: the file is removed).
fn ask(pid: u32, path: &Path, req: &Request) -> Result<Option<Reply>, String> {
    let mut s = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNREFUSED | libc::ENOENT)) => {
            let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None)
                == Err(nix::errno::Errno::ESRCH);
            if gone {
                let _ = std::fs::remove_file(path);
                return Ok(None);
            }
            return Err(format!(
                "run {pid}: {} refuses connections ({e}) though the process lives; ignored",
                path.display()
            ));
        }
        Err(e) => return Err(format!("run {pid}: {}: {e}", path.display())),
    };
    let io = |e: std::io::Error| format!("run {pid}: {e}");
    s.set_read_timeout(Some(ANSWER_WAIT)).map_err(io)?;
    s.set_write_timeout(Some(ANSWER_WAIT)).map_err(io)?;
    let mut line = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    s.write_all(&line).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer).map_err(io)?;
    let reply: Reply =
        serde_json::from_str(&answer).map_err(|e| format!("run {pid}: a bad answer: {e}"))?;
    match reply.error {
        Some(e) => Err(format!("run {pid}: {e}")),
        None => Ok(Some(reply)),
    }
}

pub fn revoke(a: &RevokeArgs) -> Result<u8, Fail> {
    let req = Request::Revoke {
        names: (!a.all).then(|| a.names.clone()),
    };
    let mut matched_any = false;
    let mut errors = Vec::new();
    let mut seen_names: Vec<&String> = Vec::new();
    let mut runs = 0;
    for (pid, path) in sockets(a.run)? {
        match ask(pid, &path, &req) {
            Ok(None) => {}
            Ok(Some(r)) => {
                runs += 1;
                if r.matched.is_empty() {
                    continue;
                }
                matched_any = true;
                seen_names.extend(a.names.iter().filter(|n| r.matched.contains(n)));
                let already: Vec<&String> = r
                    .matched
                    .iter()
                    .filter(|n| !r.revoked.contains(n))
                    .collect();
                let mut line = format!("run {pid}: revoked {}", list(&r.revoked));
                if !already.is_empty() {
                    line.push_str(&format!(
                        " (already revoked: {})",
                        already
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
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
            format!("no running broker brokers {}", a.names.join(", "))
        };
        let scope = match a.run {
            Some(pid) => format!(" in run {pid}"),
            None => format!(" of uid {} ({} runs asked)", nix::unistd::geteuid(), runs),
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
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(if errors.is_empty() { 0 } else { 1 })
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "nothing new".into()
    } else {
        v.join(", ")
    }
}

pub fn runs(a: &RunsArgs) -> Result<u8, Fail> {
    let mut all: Vec<Status> = Vec::new();
    let mut errors = Vec::new();
    for (pid, path) in sockets(None)? {
        match ask(pid, &path, &Request::Status) {
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
                s.profile,
                s.names.join(","),
                s.requests,
                s.denied,
                if s.revoked.is_empty() {
                    "-".to_string()
                } else {
                    s.revoked.join(",")
                }
            );
        }
    }
    Ok(if errors.is_empty() { 0 } else { 1 })
}
