//! The raw syscalls the sandbox needs (capabilities, securebits, `no_new_privs`, Landlock,
//! seccomp), each wrapped as a safe function; nix has none of them but `no_new_privs`.
//!
//! The child-side functions run between `fork` and `exec` (inside `Command::pre_exec`), so
//! they allocate nothing, take no locks and report failure as a bare errno.

use std::os::fd::{AsRawFd, BorrowedFd};

use super::errno;

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAP_VERSION_3: u32 = 0x2008_0522;
/// `CAP_SETPCAP`, needed to shrink the bounding set and to lock securebits.
const CAP_SETPCAP: u32 = 8;
/// `LANDLOCK_CREATE_RULESET_VERSION`.
const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The kernel's Landlock ABI version: `Ok(n)` with n >= 1, or `Err(errno)`
/// (`ENOSYS`: not built in; `EOPNOTSUPP`: disabled at boot).
pub(crate) fn landlock_abi_version() -> Result<i32, i32> {
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag, the kernel reads no
    // user memory and only returns the ABI number; no fd is created.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if v < 0 {
        Err(errno())
    } else {
        Ok(i32::try_from(v).unwrap_or(i32::MAX))
    }
}

/// Whether this kernel supports seccomp filters (`PR_GET_SECCOMP` answers instead of `EINVAL`).
pub(crate) fn seccomp_available() -> bool {
    // SAFETY: PR_GET_SECCOMP takes no pointer arguments and only reads the caller's mode.
    let r = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    r >= 0
}

/// The highest capability number the running kernel knows.
///
/// `PR_CAPBSET_READ` fails with `EINVAL` exactly for the numbers above it (the kernel checks
/// `cap_valid`, a range), so a binary search finds it in six calls instead of one per
/// capability.
pub(crate) fn last_cap() -> u32 {
    last_of_prefix(capbset_known)
}

/// Whether the kernel knows capability `cap` (`PR_CAPBSET_READ` answers 0 or 1 for it).
fn capbset_known(cap: u32) -> bool {
    // SAFETY: PR_CAPBSET_READ takes an integer and reads no user memory.
    let r = unsafe { libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(cap), 0, 0, 0) };
    r >= 0
}

/// The last `n` in `0..64` such that `known` holds for all of `0..=n`, when `known` holds for
/// a prefix of `0..64`; 0 when it holds for none (as the one-by-one probe it replaces said).
fn last_of_prefix(known: impl Fn(u32) -> bool) -> u32 {
    // The first unknown number lies in lo..=hi.
    let (mut lo, mut hi) = (0u32, 64u32);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if known(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo.saturating_sub(1)
}

/// Whether the calling thread has `CAP_SETPCAP` in its effective set.
pub(crate) fn has_cap_setpcap() -> Result<bool, i32> {
    has_effective_cap(CAP_SETPCAP)
}

/// `CAP_SYS_ADMIN`, which `unshare(CLONE_NEWPID)` needs.
pub(crate) const CAP_SYS_ADMIN: u32 = 21;

/// Whether the calling thread has capability `cap` (< 32) in its effective set.
pub(crate) fn has_effective_cap(cap: u32) -> Result<bool, i32> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and data are valid, properly aligned repr(C) values on our stack; with
    // version 3 the kernel writes exactly two CapData elements.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(errno());
    }
    Ok(data[0].effective & (1 << cap) != 0)
}

/// Drops capabilities `0..=last` from the bounding set (needs `CAP_SETPCAP`).
pub(crate) fn drop_bounding_set(last: u32) -> Result<(), i32> {
    for cap in 0..=last {
        // SAFETY: PR_CAPBSET_DROP takes an integer and reads no user memory.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        if r < 0 {
            let e = errno();
            // A capability number the kernel does not know is not in the set.
            if e != libc::EINVAL {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Locks the securebits so that uid 0 means nothing special across `execve` (needs
/// `CAP_SETPCAP`): no root fix-ups, no ambient raise, no keep-caps, all locked.
pub(crate) fn lock_securebits() -> Result<(), i32> {
    let bits = libc::SECBIT_NOROOT
        | libc::SECBIT_NOROOT_LOCKED
        | libc::SECBIT_NO_SETUID_FIXUP
        | libc::SECBIT_NO_SETUID_FIXUP_LOCKED
        | libc::SECBIT_KEEP_CAPS_LOCKED
        | libc::SECBIT_NO_CAP_AMBIENT_RAISE
        | libc::SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
    // SAFETY: PR_SET_SECUREBITS takes an integer and reads no user memory.
    let r = unsafe { libc::prctl(libc::PR_SET_SECUREBITS, bits as libc::c_ulong, 0, 0, 0) };
    if r < 0 { Err(errno()) } else { Ok(()) }
}

/// Clears the ambient capability set.
pub(crate) fn clear_ambient() -> Result<(), i32> {
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes integers only and reads no user memory.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if r < 0 { Err(errno()) } else { Ok(()) }
}

/// Empties the effective, permitted and inheritable sets of the calling thread.
pub(crate) fn clear_capabilities() -> Result<(), i32> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: header and data are valid repr(C) values on our stack; with version 3 the kernel
    // reads exactly two CapData elements and may write the header's version field.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    if r < 0 { Err(errno()) } else { Ok(()) }
}

/// Sets `no_new_privs`: execve can never grant privileges again (setuid bits, file caps).
pub(crate) fn set_no_new_privs() -> Result<(), i32> {
    nix::sys::prctl::set_no_new_privs().map_err(super::raw)
}

/// Enforces a prepared Landlock ruleset on the calling thread (and what it executes).
pub(crate) fn landlock_restrict_self(ruleset: BorrowedFd<'_>) -> Result<(), i32> {
    // SAFETY: the fd is a live Landlock ruleset fd borrowed from its owner; flags 0; the
    // kernel reads no user memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_restrict_self,
            ruleset.as_raw_fd(),
            0 as libc::c_uint,
        )
    };
    if r < 0 { Err(errno()) } else { Ok(()) }
}

/// Installs a compiled seccomp BPF program on the calling thread. Needs `no_new_privs`.
pub(crate) fn seccomp_install(program: &[libc::sock_filter]) -> Result<(), i32> {
    let Ok(len) = u16::try_from(program.len()) else {
        return Err(libc::E2BIG);
    };
    let fprog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: fprog points at `program`, which outlives the call; the kernel copies the
    // instructions (copy_from_user) and never writes through the pointer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as libc::c_uint,
            &fprog as *const libc::sock_fprog,
        )
    };
    if r < 0 { Err(errno()) } else { Ok(()) }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn last_of_prefix_matches_the_one_by_one_probe() {
        for first_unknown in 0..=64u32 {
            let known = |cap: u32| cap < first_unknown;
            // What the probe this replaces computed.
            let mut linear = 0;
            for cap in 0..64u32 {
                if !known(cap) {
                    break;
                }
                linear = cap;
            }
            let calls = std::cell::Cell::new(0);
            let searched = last_of_prefix(|cap| {
                calls.set(calls.get() + 1);
                known(cap)
            });
            assert_eq!(searched, linear, "first unknown {first_unknown}");
            assert!(calls.get() <= 7, "{} calls", calls.get());
        }
    }

    #[test]
    fn last_cap_is_the_kernels() {
        let Ok(s) = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap") else {
            let why = "no /proc/sys/kernel/cap_last_cap";
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{why}, CI=true"
            );
            eprintln!("SKIP last_cap_is_the_kernels: {why}");
            return;
        };
        assert_eq!(last_cap(), s.trim().parse::<u32>().unwrap());
    }
}
