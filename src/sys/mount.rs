//! The child's own network and mount namespaces (see `sandbox::isolate`): loopback up,
//! bind mounts, read-only mounts, masks. Run in the forked child: async-signal-safe.

use super::fd::close;
use super::{errno, raw};

/// Bring `lo` up in this process's network namespace (a new one has it down): one
/// `SIOCSIFFLAGS` on a throwaway datagram socket. 127.0.0.1 and ::1 come with it.
pub fn loopback_up() -> Result<(), i32> {
    // SAFETY: socket takes integers; the fd is ours and closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: an all-zero ifreq is a valid value (an empty name, a zero union).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: `req` is an ifreq on our stack with a NUL-terminated name that fits IFNAMSIZ;
    // SIOCSIFFLAGS reads it (and only the union's flags member, which we set).
    let r = unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) };
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
    .map_err(raw)
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
    .map_err(raw)
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
    nix::unistd::chdir(path).map_err(raw)
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
    .map_err(raw)
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
    .map_err(raw)
}
