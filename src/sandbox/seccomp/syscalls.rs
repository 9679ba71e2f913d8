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
    /// Sorted by name (a test checks), for a binary search.
    numbers: &'static [(&'static str, u32)],
    /// Names the tables use that this architecture does not have (they are simply absent).
    absent: &'static [&'static str],
}

impl Arch {
    /// The number of `name`, `None` if this architecture does not have it; an error for a
    /// name it does not know (a typo in the tables).
    pub(crate) fn nr(&self, name: &str) -> Result<Option<u32>, SandboxError> {
        if let Ok(i) = self.numbers.binary_search_by_key(&name, |&(n, _)| n) {
            return Ok(Some(self.numbers[i].1));
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
        ("acct", 163),
        ("add_key", 248),
        ("bpf", 321),
        ("chroot", 161),
        ("clone", 56),
        ("clone3", 435),
        ("delete_module", 176),
        ("finit_module", 313),
        ("fsconfig", 431),
        ("fsmount", 432),
        ("fsopen", 430),
        ("fspick", 433),
        ("init_module", 175),
        ("io_uring_enter", 426),
        ("io_uring_register", 427),
        ("io_uring_setup", 425),
        ("ioctl", 16),
        ("ioperm", 173),
        ("iopl", 172),
        ("kcmp", 312),
        ("kexec_file_load", 320),
        ("kexec_load", 246),
        ("keyctl", 250),
        ("listen", 50),
        ("lookup_dcookie", 212),
        ("modify_ldt", 154),
        ("mount", 165),
        ("mount_setattr", 442),
        ("move_mount", 429),
        ("name_to_handle_at", 303),
        ("open_by_handle_at", 304),
        ("open_tree", 428),
        ("open_tree_attr", OPEN_TREE_ATTR),
        ("perf_event_open", 298),
        ("personality", 135),
        ("pidfd_getfd", 438),
        ("pivot_root", 155),
        ("process_madvise", 440),
        ("process_vm_readv", 310),
        ("process_vm_writev", 311),
        ("ptrace", 101),
        ("quotactl", 179),
        ("quotactl_fd", 443),
        ("reboot", 169),
        ("request_key", 249),
        ("sendmmsg", 307),
        ("sendmsg", 46),
        ("sendto", 44),
        ("setns", 308),
        ("setsockopt", 54),
        ("socket", 41),
        ("swapoff", 168),
        ("swapon", 167),
        ("syslog", 103),
        ("umount2", 166),
        ("unshare", 272),
        ("uselib", 134),
        ("userfaultfd", 323),
        ("vhangup", 153),
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
        ("acct", 89),
        ("add_key", 217),
        ("bpf", 280),
        ("chroot", 51),
        ("clone", 220),
        ("clone3", 435),
        ("delete_module", 106),
        ("finit_module", 273),
        ("fsconfig", 431),
        ("fsmount", 432),
        ("fsopen", 430),
        ("fspick", 433),
        ("init_module", 105),
        ("io_uring_enter", 426),
        ("io_uring_register", 427),
        ("io_uring_setup", 425),
        ("ioctl", 29),
        ("kcmp", 272),
        ("kexec_file_load", 294),
        ("kexec_load", 104),
        ("keyctl", 219),
        ("listen", 201),
        ("lookup_dcookie", 18),
        ("mount", 40),
        ("mount_setattr", 442),
        ("move_mount", 429),
        ("name_to_handle_at", 264),
        ("open_by_handle_at", 265),
        ("open_tree", 428),
        ("open_tree_attr", OPEN_TREE_ATTR),
        ("perf_event_open", 241),
        ("personality", 92),
        ("pidfd_getfd", 438),
        ("pivot_root", 41),
        ("process_madvise", 440),
        ("process_vm_readv", 270),
        ("process_vm_writev", 271),
        ("ptrace", 117),
        ("quotactl", 60),
        ("quotactl_fd", 443),
        ("reboot", 142),
        ("request_key", 218),
        ("sendmmsg", 269),
        ("sendmsg", 211),
        ("sendto", 206),
        ("setns", 268),
        ("setsockopt", 208),
        ("socket", 198),
        ("swapoff", 225),
        ("swapon", 224),
        ("syslog", 116),
        ("umount2", 39),
        ("unshare", 97),
        ("userfaultfd", 282),
        ("vhangup", 58),
    ],
    absent: &["iopl", "ioperm", "uselib", "modify_ldt"],
};

/// Both architectures, for tests that build every filter.
#[cfg(test)]
pub(crate) const ALL: [&Arch; 2] = [&X86_64, &AARCH64];

#[cfg(test)]
mod tests {
    /// [`super::Arch::nr`] searches the tables by name.
    #[test]
    fn tables_are_sorted_by_name() {
        for arch in super::ALL {
            let names: Vec<&str> = arch.numbers.iter().map(|&(n, _)| n).collect();
            assert!(names.is_sorted_by(|a, b| a < b), "{}", arch.name);
            for &(name, nr) in arch.numbers {
                assert_eq!(arch.nr(name).unwrap(), Some(nr));
            }
        }
    }
}
