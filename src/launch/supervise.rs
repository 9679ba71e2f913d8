//! Supervision: forward signals, enforce the time limit, pump the output, reap, and leave
//! no survivors.
//!
//! agentrun blocks the signals it forwards before any thread starts and reads them from
//! a signalfd, so there are no async handlers. It sends them to the child's whole tree (see
//! [`Tree`]): with a PID namespace to its init, which passes them to every process in it.
//! It is a child subreaper: orphans of the child's tree are re-parented to it, and when the
//! child exits every remaining descendant is killed and reaped; the output is then read for
//! at most [`DRAIN_AFTER_EXIT`] more.
//!
//! One thread does it all: a `poll` over the signalfd, the child's output streams, their
//! sinks when full, and (with a pty) agentrun's stdin. Nothing in the loop blocks, so a
//! stalled reader of one stream holds up neither the other stream nor the signals and
//! the time limit.

use super::pump::{StdinForward, Stream};
use crate::sys;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Signals agentrun forwards to the child, plus SIGCHLD.
pub const FORWARDED: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

fn signal_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// Block the supervised signals on this thread (call before any thread starts, so all
/// threads inherit the mask) and become a subreaper.
pub fn prepare() -> std::io::Result<Signals> {
    let set = signal_set();
    set.thread_block()?;
    nix::sys::prctl::set_child_subreaper(true)?;
    let fd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
    Ok(Signals { fd })
}

/// The signalfd, made by [`prepare`].
pub struct Signals {
    fd: SignalFd,
}

/// How the child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Exited(i32),
    Signaled(i32),
}

impl Ending {
    /// From a raw `waitpid` status (as a PID namespace's init reports the command's).
    pub fn from_wait_status(status: i32) -> Ending {
        if libc::WIFSIGNALED(status) {
            Ending::Signaled(libc::WTERMSIG(status))
        } else {
            Ending::Exited(libc::WEXITSTATUS(status))
        }
    }

    pub fn exit_code(self) -> u8 {
        match self {
            Ending::Exited(c) => (c & 0xff) as u8,
            Ending::Signaled(s) => (128 + s).clamp(0, 255) as u8,
        }
    }
}

/// What supervision saw.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub ending: Ending,
    pub timed_out: bool,
    pub forwarded: Vec<String>,
    pub killed_descendants: usize,
}

/// Hooks for the terminal: a window-size change to pass on.
pub trait OnSignal {
    /// The window changed. Returns true when that reached the child already (a pty's
    /// kernel sends SIGWINCH itself on a size change), false to forward the signal.
    fn winch(&mut self) -> bool {
        false
    }

    /// The reader of agentrun's stdout went away. With a pty, closes agentrun's side of it
    /// (EIO on the child's terminal) and returns true: the child's tree then gets SIGHUP, as
    /// a child on a pipe gets EPIPE.
    fn stdout_gone(&mut self) -> bool {
        false
    }
}

pub struct NoHooks;
impl OnSignal for NoHooks {}

/// agentrun's child (its pid), and where the signals for its tree go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tree {
    /// The child is a PID namespace's init, or the watcher above one (see `pidns`): it
    /// passes each forwarded signal to every process of the namespace, and its SIGKILL ends
    /// them all at once, however they grouped themselves.
    Namespace(i32),
    /// No PID namespace: the child's process group. A process that leaves it (`setpgid`,
    /// `setsid`) gets no forwarded signal, only the SIGKILL when the child ends.
    Group(i32),
}

impl Tree {
    fn pid(self) -> i32 {
        match self {
            Tree::Namespace(pid) | Tree::Group(pid) => pid,
        }
    }
}

/// Send `sig` to the child's tree (see [`Tree`]).
fn signal_child(tree: Tree, sig: Signal) {
    let pid = tree.pid();
    if matches!(tree, Tree::Namespace(_)) || sys::kill(-pid, sig as i32).is_err() {
        let _ = sys::kill(pid, sig as i32);
    }
}

/// How long the output pipes are still read once the child's tree is gone and killed.
///
/// Every process that could hold them is dead by then (a PID namespace's init is reaped only
/// after everything in it; without one, every descendant is killed and reaped first), so what
/// still holds a pipe got it from outside the tree (a descriptor passed over a socket).
/// Whatever is already in a pipe is read in full; only waiting for more is bounded.
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);

/// What the event loop polls a descriptor for.
#[derive(Clone, Copy)]
enum Role {
    Signals,
    Read(usize),
    Write(usize),
    StdinRead,
    StdinWrite,
}

/// Supervise the child (`tree`) until it exits, pumping `streams` (and `stdin` to the pty) meanwhile;
/// then kill and reap every remaining descendant and drain the streams to their end.
pub fn supervise(
    signals: &Signals,
    tree: Tree,
    timeout: Option<Duration>,
    kill_after: Duration,
    hooks: &mut dyn OnSignal,
    streams: &mut [Stream],
    mut stdin: Option<&mut StdinForward>,
) -> Outcome {
    let pid = tree.pid();
    let start = Instant::now();
    let deadline = timeout.map(|t| start + t);
    let mut kill_at: Option<Instant> = None;
    let mut timed_out = false;
    let mut terms = 0;
    let mut forwarded = Vec::new();
    let mut ending = None;
    let mut killed_descendants = 0;
    let mut hung_up = false;
    let mut drain_until: Option<Instant> = None;
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(8);
    let mut roles: Vec<Role> = Vec::with_capacity(8);

    loop {
        if ending.is_some() && streams.iter().all(Stream::done) {
            break;
        }
        fds.clear();
        roles.clear();
        let mut add = |fd: i32, events: libc::c_short, role: Role| {
            fds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            });
            roles.push(role);
        };
        if ending.is_none() {
            add(signals.fd.as_raw_fd(), libc::POLLIN, Role::Signals);
            if let Some(i) = stdin.as_deref() {
                if let Some(fd) = i.read_fd() {
                    add(fd, libc::POLLIN, Role::StdinRead);
                }
                if let Some(fd) = i.write_fd() {
                    add(fd, libc::POLLOUT, Role::StdinWrite);
                }
            }
        }
        for (i, st) in streams.iter().enumerate() {
            if let Some(fd) = st.read_fd() {
                add(fd, libc::POLLIN, Role::Read(i));
            }
            if let Some(fd) = st.write_fd() {
                add(fd, libc::POLLOUT, Role::Write(i));
            }
        }
        let now = Instant::now();
        let next = match ending {
            Some(_) => drain_until,
            None => [deadline.filter(|_| !timed_out), kill_at]
                .into_iter()
                .flatten()
                .min(),
        };
        let wait_ms = match next {
            None => -1,
            Some(t) => {
                let ms = t.saturating_duration_since(now).as_millis().min(60_000) as i32;
                ms.max(if t > now { 1 } else { 0 })
            }
        };
        let ready = sys::poll(&mut fds, wait_ms).unwrap_or(0);

        let mut check_children = ready == 0;
        for (p, role) in fds.iter().zip(&roles) {
            if p.revents == 0 {
                continue;
            }
            match *role {
                Role::Signals => check_children = true,
                Role::Read(i) => streams[i].on_readable(p.revents & libc::POLLIN != 0),
                Role::Write(i) => streams[i].on_writable(),
                Role::StdinRead => {
                    if let Some(i) = stdin.as_deref_mut() {
                        i.on_readable();
                    }
                }
                Role::StdinWrite => {
                    if let Some(i) = stdin.as_deref_mut() {
                        i.on_writable();
                    }
                }
            }
        }
        if !hung_up && streams.first().is_some_and(Stream::reader_gone) {
            hung_up = true;
            if hooks.stdout_gone() {
                if let Some(i) = stdin.as_deref_mut() {
                    i.hang_up();
                }
                if ending.is_none() {
                    signal_child(tree, Signal::SIGHUP);
                }
            }
        }
        if let Some(d) = drain_until {
            if Instant::now() >= d {
                drain_until = None;
                for st in streams.iter_mut() {
                    st.close_when_idle();
                }
            }
            continue;
        }
        if ending.is_some() {
            continue;
        }

        let now = Instant::now();
        if let Some(d) = deadline
            && !timed_out
            && now >= d
        {
            timed_out = true;
            signal_child(tree, Signal::SIGTERM);
            kill_at = Some(now + kill_after);
        }
        if let Some(k) = kill_at
            && now >= k
        {
            signal_child(tree, Signal::SIGKILL);
            kill_at = None;
        }
        if !check_children {
            continue;
        }
        while let Ok(Some(info)) = signals.fd.read_signal() {
            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            match sig {
                Signal::SIGCHLD => {}
                Signal::SIGTERM => {
                    terms += 1;
                    forwarded.push(sig.as_str().to_string());
                    if terms >= 2 {
                        signal_child(tree, Signal::SIGKILL);
                    } else {
                        signal_child(tree, Signal::SIGTERM);
                        kill_at.get_or_insert(Instant::now() + kill_after);
                    }
                }
                Signal::SIGWINCH => {
                    if !hooks.winch() {
                        signal_child(tree, sig);
                    }
                }
                other => {
                    forwarded.push(other.as_str().to_string());
                    signal_child(tree, other);
                }
            }
        }
        // Reap whatever has exited: the child, and orphans re-parented to us.
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid => {
                    ending = Some(Ending::Exited(code))
                }
                Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == pid => {
                    ending = Some(Ending::Signaled(sig as i32))
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        if ending.is_some() {
            // Whatever still holds the output pipes goes now, so the streams reach their end.
            killed_descendants = kill_descendants(pid);
            drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
        }
    }
    Outcome {
        ending: ending.unwrap_or(Ending::Exited(0)),
        timed_out,
        forwarded,
        killed_descendants,
    }
}

/// Kill the child's process group and every process re-parented to us, until none is
/// left. Returns how many were killed.
///
/// With the child gone, any live descendant has an ancestor chain that ends in a process
/// re-parented to us (we are its subreaper), so "we have no children" (ECHILD) means
/// "nothing is left"; /proc is scanned only while something is.
fn kill_descendants(pgid: i32) -> usize {
    let _ = sys::kill(-pgid, libc::SIGKILL);
    let me = std::process::id() as i32;
    let mut killed = 0;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Err(_) => return killed,
            Ok(WaitStatus::StillAlive) => {}
            Ok(_) => continue,
        }
        let kids = children_of(me);
        if kids.is_empty() {
            // A child is between exit and its zombie showing up in /proc.
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        for k in &kids {
            if sys::kill(*k, libc::SIGKILL).is_ok() {
                killed += 1;
            }
        }
        for k in kids {
            let _ = waitpid(Pid::from_raw(k), None);
        }
    }
}

/// Live processes whose parent is `ppid`, from /proc.
fn children_of(ppid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The comm field may hold spaces and parentheses: parse after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let parent = fields.next().and_then(|p| p.parse::<i32>().ok());
        if parent == Some(ppid) && state != Some("Z") {
            out.push(pid);
        }
    }
    out
}
