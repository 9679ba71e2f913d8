//! The few raw syscalls agentrun needs that no safe wrapper covers, each as a safe fn.
//!
//! Everything here that runs in the forked child (between fork and exec) is
//! async-signal-safe: plain syscalls, no allocation, no locks.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;
use std::process::Command;

/// Register `f` to run in the child after fork, before exec.
///
/// `f` must only make syscalls: it runs in a copy of a possibly multi-threaded process
/// where another thread may have held the allocator's lock at fork time.
pub fn set_pre_exec<F>(cmd: &mut Command, f: F)
where
    F: FnMut() -> io::Result<()> + Send + Sync + 'static,
{
    use std::os::unix::process::CommandExt;
    // SAFETY: callers pass closures that make only async-signal-safe syscalls (see the
    // launcher's `child_setup`), which is what `pre_exec` requires.
    unsafe {
        cmd.pre_exec(f);
    }
}

/// Errno of the last failed libc call.
fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Mark every fd from `first` up close-on-exec (Linux 5.11+ `close_range` with
/// `CLOSE_RANGE_CLOEXEC`). Async-signal-safe.
pub fn cloexec_from(first: u32) -> Result<(), i32> {
    // SAFETY: close_range takes plain integers and touches only this process's fd table.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 { Ok(()) } else { Err(errno()) }
}

/// Clear close-on-exec on `fd` so the child inherits it. Async-signal-safe.
pub fn inherit_fd(fd: RawFd) -> Result<(), i32> {
    // SAFETY: fcntl(F_SETFD) on an integer fd; an invalid fd yields EBADF, nothing else.
    let r = unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    if r == 0 { Ok(()) } else { Err(errno()) }
}

/// Ask for SIGKILL when the parent thread dies, then close the race where the parent
/// died before the request. Async-signal-safe.
pub fn die_with_parent(parent: libc::pid_t) -> Result<(), i32> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes integers only.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if r != 0 {
        return Err(errno());
    }
    // SAFETY: getppid cannot fail.
    if unsafe { libc::getppid() } != parent {
        return Err(libc::ESRCH);
    }
    Ok(())
}

/// A new session, so the child has no controlling terminal to inject input into and
/// leads its own process group. Async-signal-safe.
pub fn new_session() -> Result<(), i32> {
    // SAFETY: setsid takes no arguments.
    if unsafe { libc::setsid() } < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// Make `fd` (a pty slave) the controlling terminal of this new session. Async-signal-safe.
pub fn set_controlling_tty(fd: RawFd) -> Result<(), i32> {
    // SAFETY: TIOCSCTTY takes an integer argument; fd is a terminal we opened.
    let r = unsafe { libc::ioctl(fd, libc::TIOCSCTTY as _, 0) };
    if r < 0 { Err(errno()) } else { Ok(()) }
}

/// setrlimit with soft = hard = `value`. Async-signal-safe.
pub fn set_rlimit(resource: libc::__rlimit_resource_t, value: u64) -> Result<(), i32> {
    let lim = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: `lim` is a valid rlimit on our stack.
    let r = unsafe { libc::setrlimit(resource, &lim) };
    if r == 0 { Ok(()) } else { Err(errno()) }
}

/// Write all of `buf` to `fd`, ignoring failures (used to report a setup error from the
/// child, where nothing better can be done). Async-signal-safe.
pub fn write_best_effort(fd: RawFd, buf: &[u8]) {
    // SAFETY: buf is a valid slice for its length.
    let _ = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
}

/// Send `sig` to a process group (negative pid) or process.
pub fn kill(pid: libc::pid_t, sig: i32) -> io::Result<()> {
    // SAFETY: kill takes integers only.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// True when `path` is executable for us (`access(X_OK)`).
pub fn executable(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: c is a valid NUL-terminated string.
    unsafe { libc::access(c.as_ptr(), libc::X_OK) == 0 }
}

/// The window size of the terminal on `fd`, if it is one.
pub fn window_size(fd: RawFd) -> Option<libc::winsize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into the valid struct we pass.
    let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (r == 0).then_some(ws)
}

/// Set the window size of the terminal (pty master) on `fd`.
pub fn set_window_size(fd: RawFd, ws: &libc::winsize) {
    // SAFETY: TIOCSWINSZ reads the valid struct we pass.
    let _ = unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, ws) };
}

// --- PID namespace: the few syscalls the child's tiny init needs (all async-signal-safe) ---

/// `fork()` as the raw `clone` syscall: no `pthread_atfork` handlers, no allocator locks.
/// Returns 0 in the child, the child's pid in the parent.
///
/// The new process must make only syscalls until it execs or `_exit`s: it may be a copy of
/// one thread of a multi-threaded process, and glibc's cached thread id in it is stale.
pub fn fork_raw() -> Result<libc::pid_t, i32> {
    // SAFETY: clone with only SIGCHLD as flags and a null stack is fork(2): the child runs on
    // a copy-on-write copy of this stack and address space. Callers make only syscalls in the
    // child, so a lock another thread held at the time of the copy is never touched.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r as libc::pid_t)
    }
}

/// A stack for [`vfork_run`]: its own mapping, with an inaccessible guard page below it, so
/// an overflow faults instead of writing into the memory the new process shares.
pub struct CloneStack {
    base: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is owned by this value alone; moving it between threads moves ownership.
unsafe impl Send for CloneStack {}
// SAFETY: shared references give no access to the mapping.
unsafe impl Sync for CloneStack {}

impl CloneStack {
    /// `usable` bytes (rounded up to pages) above one guard page. Untouched pages cost nothing.
    pub fn new(usable: usize) -> io::Result<CloneStack> {
        let page = 4096;
        let len = usable.div_ceil(page) * page + page;
        // SAFETY: an anonymous private mapping at an address the kernel chooses; no memory of
        // ours is touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the first page of the mapping just made, which nothing else references.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            let e = io::Error::last_os_error();
            // SAFETY: unmapping the mapping made above, not yet shared.
            unsafe { libc::munmap(base, len) };
            return Err(e);
        }
        Ok(CloneStack { base, len })
    }

    fn top(&self) -> *mut libc::c_void {
        // Stacks grow down on every architecture agentrun builds for; the end of a
        // page-aligned mapping is 16-byte aligned.
        self.base.cast::<u8>().wrapping_add(self.len).cast()
    }
}

impl Drop for CloneStack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// Run `f` in a new process that shares this one's memory, on `stack`, with this process
/// stopped until the new one execs or exits (`clone(CLONE_VM | CLONE_VFORK)`, as
/// `posix_spawn` does). Returns the new process's pid. No page tables are copied, which a
/// `fork` of the launcher pays for and the command's `execve` then throws away. If `f`
/// returns, the new process exits with the returned code.
///
/// # Safety
/// `f` runs in the caller's memory and must only make syscalls (no allocation, no locks, no
/// panics) before it execs or returns; the caller must be single-threaded (a forked
/// launcher child) and `stack` used by nothing else meanwhile.
pub unsafe fn vfork_run(
    stack: &mut CloneStack,
    f: &mut dyn FnMut() -> i32,
) -> Result<libc::pid_t, i32> {
    extern "C" fn trampoline(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the `&mut &mut dyn FnMut` below, alive until `clone` returns,
        // which (CLONE_VFORK) is not before this process has exec'd or exited.
        let f = unsafe { &mut *arg.cast::<&mut dyn FnMut() -> i32>() };
        f()
    }
    let mut f = f;
    // SAFETY: `stack.top()` is the end of a live, writable mapping that nothing else uses
    // while the child runs (this process is suspended meanwhile); `trampoline` only calls
    // `f`, which makes syscalls (the caller's contract); SIGCHLD lets the parent wait for it.
    let r = unsafe {
        libc::clone(
            trampoline,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut f as *mut &mut dyn FnMut() -> i32).cast(),
        )
    };
    if r < 0 { Err(errno()) } else { Ok(r) }
}

/// Every signal with a handler back to its default action (as `posix_spawn` does), before a
/// process that shares its parent's memory unblocks signals: a handler must not run there.
/// Async-signal-safe.
pub fn reset_signal_handlers() {
    for sig in 1..libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: `old` is a valid sigaction on our stack; a null new action only queries.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction != libc::SIG_DFL
                && old.sa_sigaction != libc::SIG_IGN
            {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
}

/// A command line and environment as `execvpe` takes them, built before any fork. The
/// environment holds the secrets: its bytes are zeroed when this is dropped.
pub struct ExecArgs {
    program: std::ffi::CString,
    /// Each NUL-terminated: the arguments, then `NAME=value` for the environment.
    strings: Vec<Vec<u8>>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

// SAFETY: the pointers point into `strings` (heap buffers owned by this struct, never
// mutated until the drop), so the struct may move between threads like its buffers.
unsafe impl Send for ExecArgs {}
// SAFETY: as above; shared access only reads.
unsafe impl Sync for ExecArgs {}

impl ExecArgs {
    /// Fails on a NUL byte inside an argument, name or value.
    pub fn new<'a>(
        program: &std::ffi::OsStr,
        argv: impl IntoIterator<Item = &'a std::ffi::OsStr>,
        env: impl IntoIterator<Item = (&'a std::ffi::OsStr, &'a std::ffi::OsStr)>,
    ) -> io::Result<ExecArgs> {
        use std::os::unix::ffi::OsStrExt;
        let nul = || io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte inside a string");
        let program = std::ffi::CString::new(program.as_bytes()).map_err(|_| nul())?;
        let mut strings = Vec::new();
        let mut n_args = 0;
        for a in argv {
            strings.push(a.as_bytes().to_vec());
            n_args += 1;
        }
        for (k, v) in env {
            let mut kv = Vec::with_capacity(k.len() + v.len() + 2);
            kv.extend_from_slice(k.as_bytes());
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            strings.push(kv);
        }
        let mut args = ExecArgs {
            program,
            strings,
            argv: Vec::new(),
            envp: Vec::new(),
        };
        // Checked after moving into `args`, so its drop zeroes them on this error too.
        for s in &mut args.strings {
            if s.contains(&0) {
                return Err(nul());
            }
            s.push(0);
        }
        let ptrs = args
            .strings
            .iter()
            .map(|s| s.as_ptr().cast::<libc::c_char>());
        args.argv = ptrs
            .clone()
            .take(n_args)
            .chain([std::ptr::null()])
            .collect();
        args.envp = ptrs.skip(n_args).chain([std::ptr::null()]).collect();
        Ok(args)
    }

    /// `execvpe`: like std's `execvp` with `environ` set (a file without a `#!` line runs
    /// under /bin/sh). Returns the errno only if the exec failed. Async-signal-safe enough
    /// for a vfork child: glibc builds the /bin/sh argument list on the stack.
    pub fn exec(&self) -> i32 {
        // SAFETY: program, argv and envp are NUL-terminated strings and null-terminated
        // arrays owned by `self`, alive for the call.
        unsafe {
            libc::execvpe(
                self.program.as_ptr(),
                self.argv.as_ptr(),
                self.envp.as_ptr(),
            )
        };
        errno()
    }
}

impl Drop for ExecArgs {
    fn drop(&mut self) {
        use secrecy::zeroize::Zeroize;
        for s in &mut self.strings {
            s.zeroize();
        }
    }
}

/// Open /dev/null on each of fds 0, 1, 2 that is closed (as std's runtime does).
pub fn open_std_fds() -> io::Result<()> {
    for fd in 0..3 {
        // SAFETY: F_GETFD on an integer fd reads no memory.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 && errno() == libc::EBADF {
            // SAFETY: a NUL-terminated literal path; the fd returned is the lowest free one,
            // which is `fd` since the lower ones are open.
            let got = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
            if got != fd {
                return Err(io::Error::other(format!(
                    "fd {fd} was closed and /dev/null could not take its place"
                )));
            }
        }
    }
    Ok(())
}

/// SIGPIPE ignored: writes to a closed pipe fail with EPIPE.
pub fn ignore_sigpipe() -> io::Result<()> {
    // SAFETY: SIG_IGN installs no handler code.
    if unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `unshare(flags)`.
pub fn unshare(flags: libc::c_int) -> Result<(), i32> {
    // SAFETY: unshare takes an integer flag set and reads no user memory.
    if unsafe { libc::unshare(flags) } == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// Block every signal on the calling thread (SIGKILL and SIGSTOP stay deliverable).
pub fn block_all_signals() -> Result<(), i32> {
    // SAFETY: `set` is a valid sigset_t on our stack, filled by sigfillset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        if libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
            return Err(libc::EINVAL);
        }
    }
    Ok(())
}

/// A pipe, both ends close-on-exec: `(read, write)`.
pub fn pipe_cloexec() -> Result<(RawFd, RawFd), i32> {
    let mut fds = [-1 as libc::c_int; 2];
    // SAFETY: pipe2 writes two ints into the valid array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == 0 {
        Ok((fds[0], fds[1]))
    } else {
        Err(errno())
    }
}

/// Close `fd`, ignoring errors.
pub fn close(fd: RawFd) {
    // SAFETY: closing an integer fd we own; a bad fd yields EBADF, nothing else.
    let _ = unsafe { libc::close(fd) };
}

/// Close every fd except `keep` (0, 1 and 2 included).
pub fn close_all_except(keep: RawFd) {
    let keep = keep.max(0) as u32;
    // SAFETY: close_range takes plain integers and touches only this process's fd table.
    unsafe {
        if keep > 0 {
            libc::syscall(libc::SYS_close_range, 0u32, keep - 1, 0u32);
        }
        libc::syscall(libc::SYS_close_range, keep + 1, u32::MAX, 0u32);
    }
}

/// Read up to `buf.len()` bytes (one `read`), retrying on EINTR; 0 at EOF or on error.
pub fn read_some(fd: RawFd, buf: &mut [u8]) -> usize {
    loop {
        // SAFETY: buf is a valid, writable slice for its length.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            return r as usize;
        }
        if errno() != libc::EINTR {
            return 0;
        }
    }
}

/// `waitpid(pid, 0 | __WALL)`, retrying on EINTR: `(pid, raw wait status)`.
pub fn wait_for(pid: libc::pid_t) -> Result<(libc::pid_t, libc::c_int), i32> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: waitpid writes the status into the valid int we pass.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if r > 0 {
            return Ok((r, status));
        }
        let e = errno();
        if e != libc::EINTR {
            return Err(e);
        }
    }
}

/// True when the read end of the pipe whose write end is `fd` has been closed everywhere
/// (`poll` reports `POLLERR` on a pipe's write end without readers).
pub fn readers_gone(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: poll reads and writes the one valid pollfd we pass; timeout 0 never blocks.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r > 0 && p.revents & libc::POLLERR != 0
}

/// Write `data` to the file at `path` (for `/proc/self/{uid_map,gid_map,setgroups}`).
pub fn write_file(path: &std::ffi::CStr, data: &[u8]) -> Result<(), i32> {
    // SAFETY: path is a valid NUL-terminated string; the fd is ours and closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: data is a valid slice for its length.
    let r = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    let e = errno();
    close(fd);
    if r == data.len() as isize {
        Ok(())
    } else {
        Err(if r < 0 { e } else { libc::EIO })
    }
}

/// End this process now, without running destructors or atexit handlers.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and is async-signal-safe.
    unsafe { libc::_exit(code) }
}

/// End this process by signal `sig` (so whoever waits for it sees the same death as the
/// process it reports for); `_exit(128 + sig)` if the signal does not kill.
pub fn die_by_signal(sig: libc::c_int) -> ! {
    // SAFETY: sigaction with a zeroed struct (SIG_DFL, no flags) on our stack, a sigset on our
    // stack for unblocking exactly `sig`, and kill on our own pid: plain syscalls.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(sig, &act, std::ptr::null_mut());
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::kill(libc::getpid(), sig);
    }
    exit_now(128 + sig)
}

/// Which `unshare` flags give this process a PID namespace, tried in a throwaway child:
/// `CLONE_NEWPID` alone (root), else with `CLONE_NEWUSER` (unprivileged user namespaces).
/// `Err` carries the errno of the last attempt.
pub fn probe_pid_namespace() -> Result<libc::c_int, i32> {
    // Above every errno, so the exit code says which attempt worked or why the last failed.
    const ALONE: i32 = 200;
    const WITH_USER: i32 = 201;
    let pid = fork_raw()?;
    if pid == 0 {
        // The throwaway child: only syscalls, then _exit.
        if unshare(libc::CLONE_NEWPID).is_ok() {
            exit_now(ALONE);
        }
        match unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWPID) {
            Ok(()) => exit_now(WITH_USER),
            Err(e) => exit_now(e.clamp(1, 199)),
        }
    }
    let (_, status) = wait_for(pid)?;
    if !libc::WIFEXITED(status) {
        return Err(libc::ECHILD);
    }
    match libc::WEXITSTATUS(status) {
        ALONE => Ok(libc::CLONE_NEWPID),
        WITH_USER => Ok(libc::CLONE_NEWUSER | libc::CLONE_NEWPID),
        e => Err(e),
    }
}

/// `PR_SET_DUMPABLE`: whether same-user processes may ptrace us and own our `/proc` files.
pub fn set_dumpable(on: bool) -> Result<(), i32> {
    // SAFETY: prctl(PR_SET_DUMPABLE) takes integers only.
    let r = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, libc::c_ulong::from(on), 0, 0, 0) };
    if r == 0 { Ok(()) } else { Err(errno()) }
}

/// Ask for SIGKILL when the parent dies (no race check: see the caller).
pub fn set_pdeathsig_kill() -> Result<(), i32> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes integers only.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if r == 0 { Ok(()) } else { Err(errno()) }
}

// --- Start-up scheduling: hand the CPU from parent to child (see `launch::spawn`) ---

/// A CPU affinity mask (`cpu_set_t`), copied by value so the forked child can use it.
#[derive(Clone, Copy)]
pub struct CpuSet(libc::cpu_set_t);

/// This thread's affinity mask; `None` if the kernel's mask does not fit a `cpu_set_t`.
pub fn affinity() -> Option<CpuSet> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set; sched_getaffinity writes at most
    // size_of::<cpu_set_t>() bytes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let r = libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        (r == 0).then_some(CpuSet(set))
    }
}

/// The CPU this thread runs on, as a one-CPU mask, if it is one of `allowed`'s.
pub fn current_cpu_within(allowed: &CpuSet) -> Option<CpuSet> {
    // SAFETY: sched_getcpu takes no arguments.
    let cpu = usize::try_from(unsafe { libc::sched_getcpu() }).ok()?;
    if cpu >= libc::CPU_SETSIZE as usize {
        return None;
    }
    // SAFETY: cpu is below CPU_SETSIZE, the number of bits in a cpu_set_t.
    if !unsafe { libc::CPU_ISSET(cpu, &allowed.0) } {
        return None;
    }
    // SAFETY: an all-zero cpu_set_t is a valid empty set; cpu is below CPU_SETSIZE.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    };
    Some(CpuSet(set))
}

/// Restrict this thread to `set`. Async-signal-safe.
pub fn set_affinity(set: &CpuSet) -> Result<(), i32> {
    // SAFETY: sched_setaffinity reads size_of::<cpu_set_t>() bytes from the valid set we pass.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set.0) };
    if r == 0 { Ok(()) } else { Err(errno()) }
}

/// True when the read end of the pipe whose write end is `fd` is closed everywhere, which
/// for a pipe whose only other reader is the parent means: the parent is gone.
/// `PR_SET_PDEATHSIG` first, then this check: the race check for a child that cannot use
/// `getppid()` (PID 1 of a new PID namespace sees 0). Async-signal-safe.
pub fn die_with_reader(fd: RawFd) -> Result<(), i32> {
    set_pdeathsig_kill()?;
    if readers_gone(fd) {
        return Err(libc::ESRCH);
    }
    Ok(())
}

/// A pidfd for this process (to return to its own namespaces with [`setns`]).
pub fn pidfd_self() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes integers; on success it returns a new fd that we own.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0 as libc::c_uint) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: r is a fresh fd from pidfd_open, owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(r as RawFd) })
}

/// `setns(fd, nstype)`: with a pidfd and `CLONE_NEWPID`, later children of this thread are
/// created in that process's PID namespace again.
pub fn setns(fd: std::os::fd::BorrowedFd, nstype: libc::c_int) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: setns takes an fd we borrow for the call and an integer flag set.
    if unsafe { libc::setns(fd.as_raw_fd(), nstype) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `poll(2)` on raw descriptors, retrying on EINTR; `timeout_ms` < 0 waits for ever.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    loop {
        // SAFETY: fds is a valid, writable slice of pollfd for its length.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `send(fd, buf, MSG_DONTWAIT | MSG_NOSIGNAL)`: a non-blocking write to a socket whose
/// description other processes share.
pub fn send_nonblocking(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid slice for its length.
    let r = unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if r >= 0 {
        Ok(r as usize)
    } else {
        Err(io::Error::last_os_error())
    }
}

// --- The child's own network and mount namespaces (see `sandbox::isolate`) ---

/// Bring `lo` up in this process's network namespace (a new one has it down): one
/// `SIOCSIFFLAGS` on a throwaway datagram socket. 127.0.0.1 and ::1 come with it.
pub fn loopback_up() -> Result<(), i32> {
    // SAFETY: socket takes integers; the fd is ours and closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: `req` is a zeroed ifreq on our stack with a NUL-terminated name that fits
    // IFNAMSIZ; SIOCSIFFLAGS reads it (and only the union's flags member, which we set).
    let r = unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        libc::ioctl(fd, libc::SIOCSIFFLAGS, &req)
    };
    let e = errno();
    close(fd);
    if r == 0 { Ok(()) } else { Err(e) }
}

/// `mount --make-rslave /`: mounts made in this (new) namespace never propagate back to the
/// one it was copied from, while the host's later mounts still show up here.
pub fn mounts_slave_recursive() -> Result<(), i32> {
    use nix::mount::{MsFlags, mount};
    mount(
        None::<&std::ffi::CStr>,
        c"/",
        None::<&std::ffi::CStr>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&std::ffi::CStr>,
    )
    .map_err(|e| e as i32)
}

/// `mount --rbind path path`: `path` becomes a mount point (it cannot be unlinked, renamed or
/// renamed over in this namespace: `EBUSY`).
pub fn bind_onto_itself(path: &std::ffi::CStr) -> Result<(), i32> {
    use nix::mount::{MsFlags, mount};
    mount(
        Some(path),
        path,
        None::<&std::ffi::CStr>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&std::ffi::CStr>,
    )
    .map_err(|e| e as i32)
}

/// Make the mount at `path`, and every mount beneath it, read-only with `mount_setattr`
/// (Linux 5.12): it only adds the flag, so the flags a user namespace may not clear
/// (nosuid, nodev, ...) stay as they are.
pub fn make_read_only(path: &std::ffi::CStr) -> Result<(), i32> {
    /// `struct mount_attr` (linux/mount.h), not in `libc`.
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: path is NUL-terminated; attr is a valid mount_attr on our stack and its size
    // is passed with it; the kernel only reads both.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            AT_RECURSIVE | libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r == 0 { Ok(()) } else { Err(errno()) }
}

/// `chdir(path)`.
pub fn chdir(path: &std::ffi::CStr) -> Result<(), i32> {
    nix::unistd::chdir(path).map_err(|e| e as i32)
}

/// Bind `/dev/null` over the file at `path`: it reads as empty.
pub fn bind_dev_null_over(path: &std::ffi::CStr) -> Result<(), i32> {
    use nix::mount::{MsFlags, mount};
    mount(
        Some(c"/dev/null"),
        path,
        None::<&std::ffi::CStr>,
        MsFlags::MS_BIND,
        None::<&std::ffi::CStr>,
    )
    .map_err(|e| e as i32)
}

/// Mount an empty, read-only tmpfs over the directory at `path`.
pub fn mount_empty_read_only_dir(path: &std::ffi::CStr) -> Result<(), i32> {
    use nix::mount::{MsFlags, mount};
    mount(
        Some(c"tmpfs"),
        path,
        Some(c"tmpfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(c"size=4k,mode=0555"),
    )
    .map_err(|e| e as i32)
}
