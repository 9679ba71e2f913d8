//! Starting processes: `pre_exec`, a raw fork, and the command's `clone(CLONE_VM |
//! CLONE_VFORK)` start with its own stack and its exec arguments built before any fork.
//!
//! # Why the command still starts with `CLONE_VM | CLONE_VFORK`, and what enforces its rules
//!
//! Inside a PID namespace the command is started from the namespace's init (a forked,
//! single-threaded copy of the launcher) by [`vfork_run`], as glibc's `posix_spawn` does:
//! no page tables are copied, where a plain `fork` would copy the launcher's whole address
//! space only for the command's `execve` to throw it away. That second fork cost about 0.3 ms
//! of every confined start when it was replaced (README, "Where start-up goes"): more than
//! the 0.2 ms a refactor may add, so it was not brought back. `posix_spawn` itself cannot be
//! used: the command must apply the sandbox (capabilities, `no_new_privs`, Landlock,
//! seccomp) and report a failed step on a pipe before its exec, which `posix_spawn`'s fixed
//! attributes and file actions cannot express.
//!
//! The process it starts shares the caller's memory until it execs, so it must not allocate,
//! take a lock, unwind or drop anything of its parent. That is kept by the shape of the API,
//! not by comments alone:
//!
//! - it runs a plain `fn(&T) -> i32` on borrowed data (no closure that could own and drop
//!   a value, nothing moved into it); everything it needs (argv and envp as C arrays, the
//!   sandbox's BPF program and ruleset fd, the report fd) is built before the first fork;
//! - it runs on a [`CloneStack`] of its own, a separate mapping with an inaccessible guard
//!   page below it, so an overflow faults instead of writing into the caller's memory; its
//!   size comes from a bound that a unit test measures on the real child path
//!   (`launch::spawn`'s tests: the stack's high-water mark, with the sandbox applied, must
//!   stay under half of `COMMAND_STACK` plus 8 bytes per argument; a debug build used about
//!   1.3 KiB without arguments and 16 KiB with 2000, glibc's `/bin/sh` fallback copying
//!   them; and an overflow must die on the guard page);
//! - a unit test counts allocations (a counting global allocator in the test build) across
//!   the real child path and requires none;
//! - the caller is an `unsafe fn`'s caller: [`vfork_run`] states the contract that is left
//!   (single-threaded caller, all signals blocked).
//!
//! May import nothing of the crate.

use super::errno;
use std::io;
use std::process::Command;

/// Register `f` to run in the child after fork, before exec.
///
/// # Safety
/// `f` runs in a copy of a possibly multi-threaded process, where another thread may have
/// held the allocator's lock (or any lock) at fork time: it must make only
/// async-signal-safe syscalls (no allocation, no locks, no panics), and return an
/// `io::Error` built from a raw OS code only.
pub unsafe fn set_pre_exec<F>(cmd: &mut Command, f: F)
where
    F: FnMut() -> io::Result<()> + Send + Sync + 'static,
{
    use std::os::unix::process::CommandExt;
    // SAFETY: the caller keeps `pre_exec`'s contract (this function's own).
    unsafe {
        cmd.pre_exec(f);
    }
}

/// `fork()` as the raw `clone` syscall: no `pthread_atfork` handlers, no allocator locks.
/// Returns 0 in the child, the child's pid in the parent.
///
/// # Safety
/// The new process must make only syscalls until it execs or `_exit`s: it may be a copy of
/// one thread of a multi-threaded process (any lock may be held by a thread that does not
/// exist in it), and glibc's cached thread id in it is stale.
pub unsafe fn fork_raw() -> Result<libc::pid_t, i32> {
    // SAFETY: clone with only SIGCHLD as flags and a null stack is fork(2): the child runs on
    // a copy-on-write copy of this stack and address space; the caller keeps the contract
    // above for the child.
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
    base: std::ptr::NonNull<libc::c_void>,
    len: usize,
}

// SAFETY: the mapping is owned by this value alone; moving it between threads moves ownership.
unsafe impl Send for CloneStack {}
// SAFETY: shared references give no access to the mapping.
unsafe impl Sync for CloneStack {}

/// The guard page (and page) size assumed; a larger real page only makes the guard larger.
const PAGE: usize = 4096;

impl CloneStack {
    /// `usable` bytes (rounded up to pages) above one guard page. Untouched pages cost nothing.
    pub fn new(usable: usize) -> io::Result<CloneStack> {
        use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, mprotect, munmap};
        let len = usable.div_ceil(PAGE) * PAGE + PAGE;
        let nz = std::num::NonZeroUsize::new(len).ok_or(io::ErrorKind::InvalidInput)?;
        // SAFETY: an anonymous private mapping at an address the kernel chooses; no memory of
        // ours is touched.
        let base = unsafe {
            mmap_anonymous(
                None,
                nz,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE | MapFlags::MAP_STACK,
            )
        }?;
        // SAFETY: the first page of the mapping just made, which nothing else references.
        if let Err(e) = unsafe { mprotect(base, PAGE, ProtFlags::PROT_NONE) } {
            // SAFETY: unmapping the mapping made above, not yet shared.
            let _ = unsafe { munmap(base, len) };
            return Err(e.into());
        }
        Ok(CloneStack { base, len })
    }

    /// Bytes usable above the guard page.
    pub fn usable(&self) -> usize {
        self.len - PAGE
    }

    fn top(&self) -> *mut libc::c_void {
        // Stacks grow down on every architecture agentrun builds for; the end of a
        // page-aligned mapping is 16-byte aligned.
        self.base
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(self.len)
            .cast()
    }

    /// Fill the usable part with a pattern, for [`CloneStack::high_water`].
    pub fn paint(&mut self) {
        // SAFETY: the usable part of our own mapping, readable and writable, and (`&mut self`)
        // used by no process now.
        let bytes = unsafe { std::slice::from_raw_parts_mut(self.bottom(), self.usable()) };
        bytes.fill(PAINT);
    }

    /// How many bytes from the top down were written since [`CloneStack::paint`]: the
    /// high-water mark, once the process that ran on it has exec'd or exited.
    pub fn high_water(&mut self) -> usize {
        // SAFETY: as in `paint`: the process that ran on it has exec'd or exited.
        let bytes = unsafe { std::slice::from_raw_parts(self.bottom(), self.usable()) };
        let untouched = bytes.iter().take_while(|b| **b == PAINT).count();
        self.usable() - untouched
    }

    fn bottom(&self) -> *mut u8 {
        self.base.as_ptr().cast::<u8>().wrapping_add(PAGE)
    }
}

/// What [`CloneStack::paint`] writes.
const PAINT: u8 = 0xa5;

impl Drop for CloneStack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        let _ = unsafe { nix::sys::mman::munmap(self.base, self.len) };
    }
}

/// Run `f(arg)` in a new process that shares this one's memory, on `stack`, with this
/// process stopped until the new one execs or exits (`clone(CLONE_VM | CLONE_VFORK)`, as
/// `posix_spawn` does). Returns the new process's pid. If `f` returns, the new process exits
/// with the returned code. `f` is a plain function on borrowed data: nothing is moved into
/// the new process, so nothing of the caller's is dropped there (see the module header).
///
/// # Safety
/// `f` runs in the caller's memory and must only make syscalls (no allocation, no locks, no
/// panics) before it execs or returns; the caller must be single-threaded (a forked
/// launcher child), with every signal blocked (`f` resets the handlers before unblocking
/// any), and `stack` large enough for `f` (the guard page turns an overflow into SIGSEGV of
/// the new process, never a write into the caller's memory).
pub unsafe fn vfork_run<T>(
    stack: &mut CloneStack,
    f: fn(&T) -> i32,
    arg: &T,
) -> Result<libc::pid_t, i32> {
    struct Call<'a, T> {
        f: fn(&T) -> i32,
        arg: &'a T,
    }
    extern "C" fn trampoline<T>(p: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `p` is the `Call` below, alive until `clone` returns, which (CLONE_VFORK)
        // is not before this process has exec'd or exited.
        let call = unsafe { &*p.cast::<Call<'_, T>>() };
        (call.f)(call.arg)
    }
    let call = Call { f, arg };
    // SAFETY: `stack.top()` is the end of a live, writable mapping that nothing else uses
    // while the child runs (this process is suspended meanwhile); `trampoline` only calls
    // `f`, which makes syscalls (the caller's contract); SIGCHLD lets the parent wait for it.
    let r = unsafe {
        libc::clone(
            trampoline::<T>,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::from_ref(&call).cast_mut().cast(),
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
        // SAFETY: an all-zero sigaction is a valid value (SIG_DFL, no flags, empty mask).
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: `old` is a valid sigaction on our stack; a null new action only queries.
        let queried = unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } == 0;
        if queried && old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN {
            // SAFETY: SIG_DFL installs no handler code.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
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
