//! `learn`'s observer: runs the command under ptrace and records what the sandbox would
//! have to allow: files opened, created, removed, renamed and executed, TCP ports connected
//! to and bound, UDP and unix sockets.
//!
//! Why ptrace with a seccomp `RET_TRACE` filter: it needs no privilege (a process may trace
//! its own child), it sees every process the command starts (fork, vfork and clone events),
//! and the filter stops only the few dozen syscalls that matter, so the command runs at
//! nearly full speed between them. Landlock's audit records need root and the audit
//! subsystem, and only report denials (one at a time, for a policy that already denies);
//! fanotify needs `CAP_SYS_ADMIN` and does not see connects or binds.
//!
//! Each traced syscall stops twice: before it runs (the filter's stop: the arguments, read
//! from the tracee's memory through `/proc/PID/mem`, and the path resolved against its
//! working directory or directory descriptor) and when it returns. Only what succeeded is
//! recorded: a path that was probed and not found needs no rule.
//!
//! Known limits: a syscall of a foreign ABI (32-bit) is counted, not decoded; `sendmsg`
//! with an address is not decoded; a path changed by another thread between the stop and the
//! syscall (the tracer reads it first) is recorded as read. This is an observer for the
//! operator, not a security boundary: the command runs with the operator's own access.

use crate::sandbox::{FsAccess, Usage};
use crate::sys::{self, SyscallStop};
use nix::sys::ptrace::{self, Options};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// What the command did, as far as the sandbox is concerned, and how it ended.
#[derive(Debug, Default)]
pub struct Observed {
    pub usage: Usage,
    /// Syscalls of a foreign ABI (a run's filter kills the process at the first).
    pub foreign_abi: u64,
    /// Processes observed (the command and its descendants).
    pub processes: u64,
    /// The command's exit code, or 128 + the signal that ended it.
    pub exit_code: i32,
}

/// One syscall between its two stops.
#[derive(Debug)]
enum Pending {
    /// `path` needs `want` if the call succeeds; `dir_read` when it turned out a directory.
    File {
        path: PathBuf,
        want: FsAccess,
    },
    /// Both a created entry's parent and, for renames, the source's parent.
    Files(Vec<(PathBuf, FsAccess)>),
    Connect {
        port: u16,
        addr: String,
        fd: u64,
    },
    Bind {
        port: u16,
    },
    UnixConnect(PathBuf),
    Socket {
        unix: bool,
        udp: bool,
    },
}

/// The traced syscalls, by native number (host `libc`), and how each is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `open(path, flags)`
    Open,
    /// `openat(dirfd, path, flags)`
    OpenAt,
    /// `openat2(dirfd, path, how)`
    OpenAt2,
    /// `creat(path)`
    Creat,
    /// `execve(path)`
    Exec,
    /// `execveat(dirfd, path)`
    ExecAt,
    /// `mkdir(path)`, `mknod(path)`, `rmdir(path)`, `unlink(path)`: the parent is written
    Entry,
    /// `mkdirat(dirfd, path)`, `mknodat`, `unlinkat`
    EntryAt,
    /// `rename(old, new)`, `link(old, new)`: both parents
    TwoEntries,
    /// `renameat(olddfd, old, newdfd, new)`, `renameat2`, `linkat`
    TwoEntriesAt,
    /// `symlink(target, new)`: the new entry's parent
    Symlink,
    /// `symlinkat(target, newdfd, new)`
    SymlinkAt,
    /// `truncate(path)`
    Truncate,
    Socket,
    Connect,
    Bind,
    /// `sendto(fd, buf, len, flags, addr)` (`MSG_FASTOPEN` connects)
    SendTo,
}

fn kinds() -> Vec<(i64, Kind)> {
    let mut v = vec![
        (libc::SYS_openat, Kind::OpenAt),
        (libc::SYS_openat2, Kind::OpenAt2),
        (libc::SYS_execve, Kind::Exec),
        (libc::SYS_execveat, Kind::ExecAt),
        (libc::SYS_mkdirat, Kind::EntryAt),
        (libc::SYS_mknodat, Kind::EntryAt),
        (libc::SYS_unlinkat, Kind::EntryAt),
        (libc::SYS_renameat2, Kind::TwoEntriesAt),
        (libc::SYS_linkat, Kind::TwoEntriesAt),
        (libc::SYS_symlinkat, Kind::SymlinkAt),
        (libc::SYS_truncate, Kind::Truncate),
        (libc::SYS_socket, Kind::Socket),
        (libc::SYS_connect, Kind::Connect),
        (libc::SYS_bind, Kind::Bind),
        (libc::SYS_sendto, Kind::SendTo),
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        (libc::SYS_open, Kind::Open),
        (libc::SYS_creat, Kind::Creat),
        (libc::SYS_mkdir, Kind::Entry),
        (libc::SYS_mknod, Kind::Entry),
        (libc::SYS_rmdir, Kind::Entry),
        (libc::SYS_unlink, Kind::Entry),
        (libc::SYS_rename, Kind::TwoEntries),
        (libc::SYS_renameat, Kind::TwoEntriesAt),
        (libc::SYS_link, Kind::TwoEntries),
        (libc::SYS_symlink, Kind::Symlink),
    ]);
    #[cfg(target_arch = "aarch64")]
    v.push((libc::SYS_renameat, Kind::TwoEntriesAt));
    v
}

/// The native numbers `learn`'s seccomp filter stops.
pub fn traced_syscalls() -> Vec<u32> {
    kinds()
        .into_iter()
        .filter_map(|(n, _)| u32::try_from(n).ok())
        .collect()
}

/// Traces the command started by [`sys::spawn_traced`] (`first`, stopped by its own
/// `SIGSTOP`) and every process it starts, to the command's end. Must run on the thread
/// that spawned it. When the command ends, what it left running is killed.
pub fn observe(first: Pid) -> std::io::Result<Observed> {
    let io = |e: nix::Error| std::io::Error::from(e);
    let table: HashMap<u64, Kind> = kinds()
        .into_iter()
        .filter_map(|(n, k)| Some((u64::try_from(n).ok()?, k)))
        .collect();
    // The child's own SIGSTOP, before its filter and exec.
    match waitpid(first, Some(WaitPidFlag::__WALL)).map_err(io)? {
        WaitStatus::Stopped(_, Signal::SIGSTOP) => {}
        other => {
            return Err(std::io::Error::other(format!(
                "the command did not stop for its tracer ({other:?}): is ptrace forbidden here (kernel.yama.ptrace_scope = 3)?"
            )));
        }
    }
    let opts = Options::PTRACE_O_TRACESECCOMP
        | Options::PTRACE_O_TRACESYSGOOD
        | Options::PTRACE_O_TRACEFORK
        | Options::PTRACE_O_TRACEVFORK
        | Options::PTRACE_O_TRACECLONE
        | Options::PTRACE_O_TRACEEXEC
        | Options::PTRACE_O_EXITKILL;
    ptrace::setoptions(first, opts).map_err(io)?;
    ptrace::cont(first, None).map_err(io)?;

    let mut seen = Observed {
        processes: 1,
        ..Observed::default()
    };
    let mut pending: HashMap<Pid, Pending> = HashMap::new();
    let mut live: BTreeSet<Pid> = BTreeSet::from([first]);
    let mut first_done = false;
    loop {
        let status = match waitpid(None, Some(WaitPidFlag::__WALL)) {
            Ok(s) => s,
            Err(nix::errno::Errno::ECHILD) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io(e)),
        };
        match status {
            WaitStatus::Exited(pid, code) => {
                live.remove(&pid);
                pending.remove(&pid);
                if pid == first {
                    seen.exit_code = code;
                    first_done = true;
                }
            }
            WaitStatus::Signaled(pid, sig, _) => {
                live.remove(&pid);
                pending.remove(&pid);
                if pid == first {
                    seen.exit_code = 128 + sig as i32;
                    first_done = true;
                }
            }
            WaitStatus::PtraceEvent(pid, _, event) => {
                match event {
                    libc::PTRACE_EVENT_SECCOMP => {
                        if let Ok(SyscallStop::Seccomp { nr, args, arch }) = sys::syscall_stop(pid)
                        {
                            if arch != native_arch() {
                                seen.foreign_abi += 1;
                            } else if let Some(&k) = table.get(&nr)
                                && let Some(p) = entry(pid, k, &args)
                            {
                                pending.insert(pid, p);
                                // The syscall's return: stop there too.
                                let _ = ptrace::syscall(pid, None);
                                continue;
                            }
                        }
                    }
                    libc::PTRACE_EVENT_FORK
                    | libc::PTRACE_EVENT_VFORK
                    | libc::PTRACE_EVENT_CLONE => {
                        if let Ok(child) = ptrace::getevent(pid) {
                            let child = Pid::from_raw(child as i32);
                            if live.insert(child) {
                                seen.processes += 1;
                            }
                        }
                    }
                    libc::PTRACE_EVENT_EXEC => {
                        // A successful exec: the syscall-exit stop that follows may not come
                        // for a thread that was replaced, so record it here.
                        if let Some(p) = pending.remove(&pid) {
                            commit(&mut seen, pid, p);
                        }
                        if let Ok(former) = ptrace::getevent(pid) {
                            let former = Pid::from_raw(former as i32);
                            if former != pid
                                && let Some(p) = pending.remove(&former)
                            {
                                commit(&mut seen, pid, p);
                            }
                        }
                        if let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) {
                            add(&mut seen, exe, FsAccess::READ_EXEC);
                        }
                    }
                    _ => {}
                }
                let _ = ptrace::cont(pid, None);
            }
            WaitStatus::PtraceSyscall(pid) => {
                if let (Some(p), Ok(SyscallStop::Exit { value, error })) =
                    (pending.remove(&pid), sys::syscall_stop(pid))
                {
                    let in_progress = error && value == -i64::from(libc::EINPROGRESS);
                    if !error || in_progress {
                        commit(&mut seen, pid, p);
                    }
                }
                let _ = ptrace::cont(pid, None);
            }
            WaitStatus::Stopped(pid, sig) => {
                // A new tracee's first stop, or a signal for it: pass the signal on.
                // Every SIGSTOP is swallowed: a new tracee's first stop is one, and may come
                // before its parent's fork event says who it is. (A SIGSTOP someone else
                // sends is lost, which `learn` accepts: it would only stop the command.)
                let pass = (sig != Signal::SIGSTOP).then_some(sig);
                live.insert(pid);
                let _ = ptrace::cont(pid, pass);
            }
            _ => {}
        }
        if first_done {
            // What the command left behind ends with it, as in a run.
            for &p in &live {
                let _ = nix::sys::signal::kill(p, Signal::SIGKILL);
            }
            first_done = false;
        }
    }
    Ok(seen)
}

#[cfg(target_arch = "x86_64")]
fn native_arch() -> u32 {
    0xc000_003e // AUDIT_ARCH_X86_64
}
#[cfg(target_arch = "aarch64")]
fn native_arch() -> u32 {
    0xc000_00b7 // AUDIT_ARCH_AARCH64
}

/// Reads what a traced syscall is about, before it runs.
fn entry(pid: Pid, k: Kind, a: &[u64; 6]) -> Option<Pending> {
    let path = |dirfd: Option<u64>, addr: u64| -> Option<PathBuf> {
        let raw = read_string(pid, addr)?;
        resolve(pid, dirfd, &raw)
    };
    let open = |p: PathBuf, flags: u64| -> Option<Pending> {
        let flags = flags as i32;
        if flags & libc::O_PATH != 0 {
            return None; // no access right is checked for O_PATH
        }
        let writes = flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
        let creates = flags & libc::O_CREAT != 0 && std::fs::symlink_metadata(&p).is_err();
        Some(if creates {
            Pending::File {
                path: parent(&p),
                want: FsAccess::READ_WRITE,
            }
        } else if writes {
            Pending::File {
                path: p,
                want: FsAccess::READ_WRITE,
            }
        } else {
            Pending::File {
                path: p,
                want: FsAccess::READ,
            }
        })
    };
    let entry_of = |p: PathBuf| Pending::File {
        path: parent(&p),
        want: FsAccess::READ_WRITE,
    };
    match k {
        Kind::Open => open(path(None, a[0])?, a[1]),
        Kind::OpenAt => open(path(Some(a[0]), a[1])?, a[2]),
        Kind::OpenAt2 => {
            let how = read_bytes(pid, a[2], 8)?;
            open(
                path(Some(a[0]), a[1])?,
                u64::from_ne_bytes(how.try_into().ok()?),
            )
        }
        Kind::Creat => open(
            path(None, a[0])?,
            (libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u64,
        ),
        Kind::Exec => Some(Pending::File {
            path: path(None, a[0])?,
            want: FsAccess::READ_EXEC,
        }),
        Kind::ExecAt => Some(Pending::File {
            path: path(Some(a[0]), a[1])?,
            want: FsAccess::READ_EXEC,
        }),
        Kind::Entry => Some(entry_of(path(None, a[0])?)),
        Kind::EntryAt => Some(entry_of(path(Some(a[0]), a[1])?)),
        Kind::TwoEntries => Some(Pending::Files(vec![
            (parent(&path(None, a[0])?), FsAccess::READ_WRITE),
            (parent(&path(None, a[1])?), FsAccess::READ_WRITE),
        ])),
        Kind::TwoEntriesAt => Some(Pending::Files(vec![
            (parent(&path(Some(a[0]), a[1])?), FsAccess::READ_WRITE),
            (parent(&path(Some(a[2]), a[3])?), FsAccess::READ_WRITE),
        ])),
        Kind::Symlink => Some(entry_of(path(None, a[1])?)),
        Kind::SymlinkAt => Some(entry_of(path(Some(a[1]), a[2])?)),
        Kind::Truncate => Some(Pending::File {
            path: path(None, a[0])?,
            want: FsAccess::READ_WRITE,
        }),
        Kind::Socket => {
            let (domain, ty) = (a[0] as i32, a[1] as i32 & 0xf);
            Some(Pending::Socket {
                unix: domain == libc::AF_UNIX,
                udp: (domain == libc::AF_INET || domain == libc::AF_INET6)
                    && ty == libc::SOCK_DGRAM,
            })
        }
        Kind::Connect | Kind::Bind | Kind::SendTo => {
            let (addr, len) = if k == Kind::SendTo {
                if a[3] as i32 & libc::MSG_FASTOPEN == 0 || a[4] == 0 {
                    return None;
                }
                (a[4], a[5])
            } else {
                (a[1], a[2])
            };
            let sa = read_bytes(pid, addr, (len as usize).min(128))?;
            let family = u16::from_ne_bytes(sa.get(..2)?.try_into().ok()?);
            match i32::from(family) {
                libc::AF_INET | libc::AF_INET6 => {
                    let port = u16::from_be_bytes(sa.get(2..4)?.try_into().ok()?);
                    let shown = if i32::from(family) == libc::AF_INET {
                        let o = sa.get(4..8)?;
                        format!("{}.{}.{}.{}:{port}", o[0], o[1], o[2], o[3])
                    } else {
                        let o: [u8; 16] = sa.get(8..24)?.try_into().ok()?;
                        format!("[{}]:{port}", std::net::Ipv6Addr::from(o))
                    };
                    if k == Kind::Bind {
                        Some(Pending::Bind { port })
                    } else {
                        Some(Pending::Connect {
                            port,
                            addr: shown,
                            fd: a[0],
                        })
                    }
                }
                libc::AF_UNIX if k == Kind::Connect => {
                    let name = sa.get(2..)?;
                    if name.first() == Some(&0) || name.is_empty() {
                        return None; // abstract: scoped in a run, no path rule
                    }
                    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                    let p = resolve(pid, None, &name[..end])?;
                    Some(Pending::UnixConnect(p))
                }
                _ => None,
            }
        }
    }
}

/// Records a syscall that succeeded.
fn commit(seen: &mut Observed, pid: Pid, p: Pending) {
    match p {
        Pending::File { path, want } => {
            // A directory opened for reading is listed: that is a read of the directory.
            add(seen, path, want);
        }
        Pending::Files(v) => {
            for (path, want) in v {
                add(seen, path, want);
            }
        }
        Pending::Connect { port, addr, fd } => {
            if is_udp(pid, fd) {
                seen.usage.udp = true;
            } else {
                seen.usage.connect.entry(port).or_insert(addr);
            }
        }
        Pending::Bind { port } => {
            if port != 0 {
                seen.usage.bind.insert(port);
            }
        }
        Pending::UnixConnect(path) => {
            seen.usage.unix_paths.insert(path);
        }
        Pending::Socket { unix, udp } => {
            seen.usage.unix_sockets |= unix;
            seen.usage.udp |= udp;
        }
    }
}

/// Adds a file use, leaving out what every run gets whatever its policy: the terminal,
/// `/dev/null` and the entropy devices, another process's `/proc` entries as `/proc`.
fn add(seen: &mut Observed, path: PathBuf, want: FsAccess) {
    let path = normal_proc(path);
    let always = [
        "/dev/null",
        "/dev/zero",
        "/dev/urandom",
        "/dev/random",
        "/dev/tty",
    ];
    if always.iter().any(|a| path == Path::new(a)) || path.starts_with("/dev/pts") {
        return;
    }
    let e = seen.usage.files.entry(path).or_default();
    *e = FsAccess {
        read: e.read || want.read,
        write: e.write || want.write,
        exec: e.exec || want.exec,
        ioctl: e.ioctl || want.ioctl,
    };
}

/// `/proc/PID/...` and `/proc/self/...` are `/proc` for a rule: the PIDs differ each run.
fn normal_proc(path: PathBuf) -> PathBuf {
    if path.starts_with("/proc") {
        PathBuf::from("/proc")
    } else {
        path
    }
}

/// Whether `fd` of `pid` is a UDP socket: its inode is in the UDP tables of its namespace.
fn is_udp(pid: Pid, fd: u64) -> bool {
    let Ok(link) = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")) else {
        return false;
    };
    let link = link.to_string_lossy().into_owned();
    let Some(inode) = link
        .strip_prefix("socket:[")
        .and_then(|s| s.strip_suffix(']'))
    else {
        return false;
    };
    ["udp", "udp6"].iter().any(|t| {
        std::fs::read_to_string(format!("/proc/{pid}/net/{t}")).is_ok_and(|text| {
            text.lines()
                .skip(1)
                .any(|l| l.split_whitespace().nth(9) == Some(inode))
        })
    })
}

/// The directory an entry is created in, removed from or renamed in.
fn parent(p: &Path) -> PathBuf {
    p.parent()
        .map_or_else(|| p.to_path_buf(), Path::to_path_buf)
}

/// `raw` made absolute as the tracee would resolve it: against `dirfd` (or the working
/// directory for `AT_FDCWD` and `None`).
fn resolve(pid: Pid, dirfd: Option<u64>, raw: &[u8]) -> Option<PathBuf> {
    let p = Path::new(OsStr::from_bytes(raw));
    if p.is_absolute() {
        return Some(normalize(p));
    }
    let base = match dirfd.map(|d| d as i32) {
        None | Some(libc::AT_FDCWD) => std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?,
        Some(fd) => std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?,
    };
    if !base.is_absolute() {
        return None; // a pipe or socket as dirfd
    }
    Some(normalize(&base.join(p)))
}

/// `.` and `..` taken out lexically (the kernel follows symlinks first; the rule check
/// canonicalizes later, this only keeps the report readable).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// A NUL-terminated string of the tracee at `addr` (at most `PATH_MAX`).
fn read_string(pid: Pid, addr: u64) -> Option<Vec<u8>> {
    if addr == 0 {
        return None;
    }
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < libc::PATH_MAX as usize {
        // Up to the end of the page, so a string near unmapped memory still reads.
        let room = 4096 - (at % 4096) as usize;
        let mut buf = vec![0u8; room];
        let n = mem.read_at(&mut buf, at).ok()?;
        if n == 0 {
            return None;
        }
        if let Some(end) = buf[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..end]);
            return Some(out);
        }
        out.extend_from_slice(&buf[..n]);
        at += n as u64;
    }
    None
}

/// `len` bytes of the tracee at `addr`.
fn read_bytes(pid: Pid, addr: u64, len: usize) -> Option<Vec<u8>> {
    if addr == 0 {
        return None;
    }
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut buf = vec![0u8; len];
    mem.read_exact_at(&mut buf, addr).ok()?;
    Some(buf)
}

/// Runs the command of `launch` once, observed (see [`observe`]): its environment and
/// secret files as a run gives them, no sandbox, its stdout and stderr through the filters
/// `make_filter` gives (the redactor). The limits, time limit and terminal of `launch` are
/// not applied: `learn` watches one ordinary run of the command.
pub fn run_traced<'f>(
    launch: super::Launch,
    program: PathBuf,
    make_filter: &(dyn Fn() -> Box<dyn super::pump::StreamFilter + 'f> + Sync),
) -> Result<Observed, super::spawn::SpawnError> {
    use std::os::fd::AsRawFd;
    let io = super::spawn::SpawnError::Io;
    let (env, files) = super::child_env(launch.base_env, &launch.secrets).map_err(io)?;
    let exec = sys::ExecArgs::new(
        program.as_os_str(),
        launch.argv.iter().map(|a| a.as_os_str()),
        env.iter().map(|(k, v)| (k.as_os_str(), v.as_os_str())),
    )
    .map_err(io)?;
    let cwd = std::ffi::CString::new(launch.cwd.as_os_str().as_bytes())
        .map_err(|e| io(std::io::Error::other(e)))?;
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io(e.into()));
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let filter = crate::sandbox::learn_filter(&traced_syscalls())
        .map_err(|e| io(std::io::Error::other(e.to_string())))?;
    let inherit: Vec<i32> = files.iter().map(|f| f.fd.as_raw_fd()).collect();
    let pid = sys::spawn_traced(&sys::TracedStart {
        exec: &exec,
        cwd: &cwd,
        stdout: out_w.as_raw_fd(),
        stderr: err_w.as_raw_fd(),
        inherit: &inherit,
        filter: &filter,
        last_cap: sys::last_cap(),
    })
    .map_err(io)?;
    // The child holds its own copies now.
    drop((out_w, err_w, files, exec));
    // The first exec's path cannot be read (the child is not dumpable before it): the
    // program is known.
    let mut first = Usage::default();
    first.files.insert(program, FsAccess::READ_EXEC);
    std::thread::scope(|scope| {
        for (from, to) in [(out_r, 1), (err_r, 2)] {
            let mut f = make_filter();
            scope.spawn(move || copy_through(from, to, f.as_mut()));
        }
        let mut seen = observe(pid).map_err(io)?;
        for (path, want) in first.files {
            add(&mut seen, path, want);
        }
        Ok(seen)
    })
}

/// Copies `from` to agentrun's fd `to` through `filter`, to the end of `from`.
fn copy_through(from: std::os::fd::OwnedFd, to: i32, filter: &mut dyn super::pump::StreamFilter) {
    use std::io::{Read, Write};
    let mut src = std::fs::File::from(from);
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    let write = |b: &[u8]| {
        if to == 1 {
            let _ = std::io::stdout().lock().write_all(b);
            let _ = std::io::stdout().lock().flush();
        } else {
            let _ = std::io::stderr().lock().write_all(b);
        }
    };
    loop {
        match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.clear();
                filter.push(&buf[..n], &mut out);
                write(&out);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    out.clear();
    filter.finish(&mut out);
    write(&out);
}
