//! Syscall numbers and audit arch values per architecture: plain data, compiled on every host,
//! so that the filter for each architecture is built and tested everywhere.
//!
//! Only the names the policy tables use are listed. The numbers are copied from the kernel's
//! headers, not from `libc::SYS_*` (which holds the host's numbers only); a test compares each
//! table with seccompiler's tables on every host (`oracle`).
//!
//! Imports nothing of the crate but the error type.

use super::super::SandboxError;

/// One architecture: its audit arch value, its x32-style alias bit if any, and its numbers.
#[derive(Debug)]
pub(crate) struct Arch {
    pub(crate) name: &'static str,
    /// `AUDIT_ARCH_*`: `EM_*` | `__AUDIT_ARCH_64BIT` | `__AUDIT_ARCH_LE`.
    pub(crate) audit: u32,
    /// `__X32_SYSCALL_BIT`: numbers of the x32 ABI, which runs under the x86_64 audit arch.
    pub(crate) x32_bit: Option<u32>,
    numbers: &'static [(&'static str, u32)],
    /// Names the tables use that this architecture does not have (they are simply absent).
    absent: &'static [&'static str],
}

impl Arch {
    /// The number of `name`, `None` if this architecture does not have it; an error for a
    /// name it does not know (a typo in the tables).
    pub(crate) fn nr(&self, name: &str) -> Result<Option<u32>, SandboxError> {
        if let Some(&(_, nr)) = self.numbers.iter().find(|(n, _)| *n == name) {
            return Ok(Some(nr));
        }
        if self.absent.contains(&name) {
            return Ok(None);
        }
        Err(SandboxError::Seccomp(format!(
            "no {} syscall number for {name}",
            self.name
        )))
    }

    /// Every `(name, number)` of this architecture.
    #[cfg(test)]
    pub(crate) fn numbers(&self) -> &'static [(&'static str, u32)] {
        self.numbers
    }
}

/// The architecture agentrun runs on: the only `cfg` on architecture in the seccomp module.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("seccomp: agentrun has syscall tables for x86_64 and aarch64 only");
#[cfg(target_arch = "x86_64")]
pub(crate) const NATIVE: &Arch = &X86_64;
#[cfg(target_arch = "aarch64")]
pub(crate) const NATIVE: &Arch = &AARCH64;

/// `open_tree_attr` (Linux 6.15), the same number on every architecture.
const OPEN_TREE_ATTR: u32 = 467;

/// x86_64: `arch/x86/entry/syscalls/syscall_64.tbl` (as installed in `asm/unistd_64.h`).
#[cfg_attr(
    not(test),
    allow(dead_code, reason = "built on every host; used where native")
)]
pub(crate) const X86_64: Arch = Arch {
    name: "x86_64",
    audit: 62 | 0x8000_0000 | 0x4000_0000,
    x32_bit: Some(0x4000_0000),
    numbers: &[
        ("ioctl", 16),
        ("socket", 41),
        ("sendto", 44),
        ("sendmsg", 46),
        ("listen", 50),
        ("setsockopt", 54),
        ("clone", 56),
        ("ptrace", 101),
        ("syslog", 103),
        ("uselib", 134),
        ("personality", 135),
        ("vhangup", 153),
        ("modify_ldt", 154),
        ("pivot_root", 155),
        ("chroot", 161),
        ("acct", 163),
        ("mount", 165),
        ("umount2", 166),
        ("swapon", 167),
        ("swapoff", 168),
        ("reboot", 169),
        ("iopl", 172),
        ("ioperm", 173),
        ("init_module", 175),
        ("delete_module", 176),
        ("quotactl", 179),
        ("lookup_dcookie", 212),
        ("kexec_load", 246),
        ("add_key", 248),
        ("request_key", 249),
        ("keyctl", 250),
        ("unshare", 272),
        ("perf_event_open", 298),
        ("name_to_handle_at", 303),
        ("open_by_handle_at", 304),
        ("sendmmsg", 307),
        ("setns", 308),
        ("process_vm_readv", 310),
        ("process_vm_writev", 311),
        ("kcmp", 312),
        ("finit_module", 313),
        ("kexec_file_load", 320),
        ("bpf", 321),
        ("userfaultfd", 323),
        ("io_uring_setup", 425),
        ("io_uring_enter", 426),
        ("io_uring_register", 427),
        ("open_tree", 428),
        ("move_mount", 429),
        ("fsopen", 430),
        ("fsconfig", 431),
        ("fsmount", 432),
        ("fspick", 433),
        ("clone3", 435),
        ("pidfd_getfd", 438),
        ("process_madvise", 440),
        ("mount_setattr", 442),
        ("quotactl_fd", 443),
        ("open_tree_attr", OPEN_TREE_ATTR),
    ],
    absent: &[],
};

/// aarch64: the kernel's generic table, `include/uapi/asm-generic/unistd.h` (Linux 6.1 and
/// later). It has no `iopl`, `ioperm`, `uselib` or `modify_ldt`, and no 32-bit alias bit:
/// the arch check refuses AArch32 (`AUDIT_ARCH_ARM`) processes.
#[cfg_attr(
    not(test),
    allow(dead_code, reason = "built on every host; used where native")
)]
pub(crate) const AARCH64: Arch = Arch {
    name: "aarch64",
    audit: 183 | 0x8000_0000 | 0x4000_0000,
    x32_bit: None,
    numbers: &[
        ("lookup_dcookie", 18),
        ("ioctl", 29),
        ("umount2", 39),
        ("mount", 40),
        ("pivot_root", 41),
        ("chroot", 51),
        ("vhangup", 58),
        ("quotactl", 60),
        ("acct", 89),
        ("personality", 92),
        ("unshare", 97),
        ("kexec_load", 104),
        ("init_module", 105),
        ("delete_module", 106),
        ("syslog", 116),
        ("ptrace", 117),
        ("reboot", 142),
        ("socket", 198),
        ("listen", 201),
        ("sendto", 206),
        ("setsockopt", 208),
        ("sendmsg", 211),
        ("add_key", 217),
        ("request_key", 218),
        ("keyctl", 219),
        ("clone", 220),
        ("swapon", 224),
        ("swapoff", 225),
        ("perf_event_open", 241),
        ("name_to_handle_at", 264),
        ("open_by_handle_at", 265),
        ("setns", 268),
        ("sendmmsg", 269),
        ("process_vm_readv", 270),
        ("process_vm_writev", 271),
        ("kcmp", 272),
        ("finit_module", 273),
        ("bpf", 280),
        ("userfaultfd", 282),
        ("kexec_file_load", 294),
        ("io_uring_setup", 425),
        ("io_uring_enter", 426),
        ("io_uring_register", 427),
        ("open_tree", 428),
        ("move_mount", 429),
        ("fsopen", 430),
        ("fsconfig", 431),
        ("fsmount", 432),
        ("fspick", 433),
        ("clone3", 435),
        ("pidfd_getfd", 438),
        ("process_madvise", 440),
        ("mount_setattr", 442),
        ("quotactl_fd", 443),
        ("open_tree_attr", OPEN_TREE_ATTR),
    ],
    absent: &["iopl", "ioperm", "uselib", "modify_ldt"],
};

/// Both architectures, for tests that build every filter.
#[cfg(test)]
pub(crate) const ALL: [&Arch; 2] = [&X86_64, &AARCH64];
