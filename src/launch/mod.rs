//! Launch: build the child (env, secret files, fds), spawn it, pump its output through
//! the redactor, supervise it, and report how it ended.
//!
//! Only this module and the redactor see secret values: they go from `SecretString`
//! straight into the child's environment block or a sealed memfd.
//!
//! Inside, the arrows run one way: `tty` -> `supervise` -> `pump` (all copy loops, the
//! stdin one too); `redactor` (the background build, the pump's filter) -> `pump`;
//! `spawn` -> `pidns` -> `supervise`. Never imports `commands`, `audit` or `secrets`.

pub mod env;
pub mod pidns;
pub mod pump;
pub mod redactor;
pub mod spawn;
pub mod supervise;
pub mod trace;
pub mod tty;

use crate::profile::{Inject, Limits};
use pump::{PumpStats, StreamFilter};
use secrecy::{ExposeSecret, SecretString};
use spawn::{ChildSpec, Confine, SecretFile, SpawnError};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use supervise::{Outcome, Signals};

/// A secret ready for the child.
pub struct Injected<'a> {
    pub name: &'a str,
    pub value: &'a SecretString,
    pub inject: Inject,
}

/// Everything a launch needs, decided before it.
pub struct Launch<'a> {
    pub argv: &'a [OsString],
    pub base_env: BTreeMap<OsString, OsString>,
    pub secrets: Vec<Injected<'a>>,
    pub cwd: &'a Path,
    pub limits: &'a Limits,
    pub timeout: Option<std::time::Duration>,
    /// The child's pseudo-terminal, when it gets one.
    pub tty: Option<tty::Pty>,
    pub confine: Option<Confine>,
}

/// The result of a run whose child started.
pub struct Ran {
    pub outcome: Outcome,
    pub stdout: PumpStats,
    pub stderr: PumpStats,
    pub pid: i32,
}

/// Resolve the program with the child's PATH (127/126 before anything starts).
pub fn resolve(launch: &Launch) -> Result<std::path::PathBuf, SpawnError> {
    let path = launch
        .base_env
        .get(std::ffi::OsStr::new("PATH"))
        .map(|p| p.as_os_str());
    spawn::resolve_program(&launch.argv[0], path, launch.cwd)
}

/// Start the child and supervise it to the end. `make_filter` gives one filter per
/// stream; `started` runs once the child is running (e.g. to write the audit event).
pub fn run<'f>(
    launch: Launch,
    program: std::path::PathBuf,
    signals: &Signals,
    make_filter: &(dyn Fn() -> Box<dyn StreamFilter + 'f> + Sync),
    started: &mut dyn FnMut(i32),
) -> Result<Ran, SpawnError> {
    let io = |e: std::io::Error| SpawnError::Io(e);
    let io_err = |what: &str, e: std::io::Error| {
        SpawnError::Io(std::io::Error::new(e.kind(), format!("{what}: {e}")))
    };
    let (env, files) = child_env(launch.base_env, &launch.secrets).map_err(io)?;
    let inherit = files.iter().map(|f| f.fd.as_raw_fd()).collect();

    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io(e.into()))?;
    let (term, slave) = match launch.tty {
        Some(mut t) => {
            let slave = t.take_slave();
            (Some(t), slave)
        }
        None => (None, None),
    };
    let mut feed = None;
    let (stdin, stdout, out_r, ctty) = match (&term, slave) {
        (Some(t), Some(slave)) => {
            let slave_out: OwnedFd = slave.try_clone().map_err(io)?;
            let ctty = Some(slave.as_raw_fd());
            (
                Stdio::from(slave),
                Stdio::from(slave_out),
                t.master.try_clone().map_err(io)?,
                ctty,
            )
        }
        _ => {
            let (r, w) =
                nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io(e.into()))?;
            // Never agentrun's stdin as it is: a terminal on fd 0 is open for writing.
            let stdin = tty::child_stdin().map_err(|e| io_err("stdin", e))?;
            feed = stdin.feed;
            (Stdio::from(stdin.fd), Stdio::from(w), r, None)
        }
    };
    let mut streams = [
        pump::Stream::new(
            out_r,
            pump::Sink::new(std::io::stdout().as_fd()).map_err(|e| io_err("stdout", e))?,
            make_filter(),
        )
        .map_err(|e| io_err("the child's stdout", e))?,
        pump::Stream::new(
            err_r,
            pump::Sink::new(std::io::stderr().as_fd()).map_err(|e| io_err("stderr", e))?,
            make_filter(),
        )
        .map_err(|e| io_err("the child's stderr", e))?,
    ];
    let mut input = match &term {
        Some(t) => Some(t.stdin_forward().map_err(|e| io_err("the terminal", e))?),
        None => feed,
    };
    let mut hooks: Box<dyn supervise::OnSignal> = match &term {
        Some(t) => Box::new(t.winch_hook().map_err(|e| io_err("the terminal", e))?),
        None => Box::new(supervise::NoHooks),
    };
    // Raw mode before the child exists: a key typed as soon as it starts (Ctrl-C included)
    // must reach its terminal, not be eaten by ours.
    let raw = term.as_ref().and_then(|t| t.enter_raw_mode());
    // From here the pty's master is held only by the output stream, the input forwarder and
    // the hooks, which all let it go when agentrun's stdout loses its reader: then the
    // child's terminal hangs up, as a pipe would break.
    drop(term);
    // Whether `spawn` puts a PID namespace's init (or the watcher above one) between us and
    // the command: then signals go to it, and it passes them to the whole namespace.
    let in_namespace = launch
        .confine
        .as_ref()
        .is_some_and(|c| c.pid_namespace_flags().is_some());
    let spawn::Spawned { child, status } = spawn::spawn(ChildSpec {
        program,
        argv: launch.argv,
        env,
        cwd: launch.cwd,
        limits: launch.limits,
        inherit,
        stdin,
        stdout,
        stderr: Stdio::from(err_w),
        ctty,
        confine: launch.confine,
    })?;
    // The child holds its own copies now.
    drop(files);
    let pid = child.id() as i32;
    started(pid);

    let mut outcome = supervise::supervise(
        signals,
        if in_namespace {
            supervise::Tree::Namespace(pid)
        } else {
            supervise::Tree::Group(pid)
        },
        launch.timeout,
        launch.limits.kill_after,
        hooks.as_mut(),
        &mut streams,
        input.as_mut(),
    );
    // With a PID namespace init as our child, the command's own ending comes from it.
    if let Some(ending) = status.and_then(command_ending) {
        outcome.ending = ending;
    }
    let [out, err] = streams;
    let (out_stats, err_stats) = (out.into_stats(), err.into_stats());
    drop(raw);
    drop(child);
    Ok(Ran {
        outcome,
        stdout: out_stats,
        stderr: err_stats,
        pid,
    })
}

/// A child's environment, in order.
pub(crate) type EnvBlock = Vec<(OsString, OsString)>;

/// The child's environment (`base` plus the secrets) and the secret files it inherits.
/// Secret files first: their fd numbers are part of the environment.
pub(crate) fn child_env(
    base: BTreeMap<OsString, OsString>,
    secrets: &[Injected],
) -> std::io::Result<(EnvBlock, Vec<SecretFile>)> {
    let mut files = Vec::new();
    let mut env: Vec<(OsString, OsString)> = base.into_iter().collect();
    for s in secrets {
        match s.inject {
            Inject::Env => env.push((s.name.into(), s.value.expose_secret().into())),
            Inject::File => {
                let f = SecretFile::new(s.name, s.value.expose_secret().as_bytes())?;
                env.push((s.name.into(), f.child_path().into()));
                files.push(f);
            }
        }
    }
    Ok((env, files))
}

/// The command's wait status as its PID namespace's init reported it, if it did (not when
/// the init was killed, or the command never started).
fn command_ending(status: OwnedFd) -> Option<supervise::Ending> {
    let mut buf = [0u8; 4];
    // The init is reaped: every writer is gone, so this read cannot block.
    let n = std::io::Read::read(&mut File::from(status), &mut buf).ok()?;
    (n == 4).then(|| supervise::Ending::from_wait_status(i32::from_ne_bytes(buf)))
}
