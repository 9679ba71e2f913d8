//! The child's own network and mount namespaces (see `sandbox::isolate`): loopback up,
//! bind mounts, read-only mounts, masks. Run in the forked child: async-signal-safe.

use super::fd::close;
use super::{errno, raw};
use std::os::fd::{AsRawFd, RawFd};

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

/// A TCP socket listening on `127.0.0.1:port` in this (new) network namespace, close-on-exec,
/// for the broker: agentrun serves it from outside the namespace. Syscalls only.
pub fn listen_loopback(port: u16, backlog: i32) -> Result<RawFd, i32> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, listen, socket,
    };
    use std::os::fd::IntoRawFd;
    let sock = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(raw)?;
    bind(sock.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, port)).map_err(raw)?;
    listen(&sock, Backlog::new(backlog).map_err(raw)?).map_err(raw)?;
    Ok(sock.into_raw_fd())
}

/// Send descriptor `fd` over the unix socket `sock` (`SCM_RIGHTS`, one byte of data), with a
/// control buffer on the stack: this runs between fork and exec, where nothing may allocate
/// (nix's `sendmsg` builds its control buffer in a `Vec`).
pub fn send_fd(sock: RawFd, fd: RawFd) -> Result<(), i32> {
    // Room for one cmsghdr carrying one int, aligned as the kernel wants (CMSG_SPACE of 4
    // bytes is 24 on 64-bit Linux).
    #[repr(C, align(8))]
    struct Control([u8; 32]);
    let mut control = Control([0; 32]);
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: an all-zero msghdr is a valid value (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) };
    if space as usize > control.0.len() {
        return Err(libc::EINVAL);
    }
    msg.msg_controllen = space as usize;
    // SAFETY: `msg` points at `control`, which holds at least one cmsghdr (checked above).
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    if cmsg.is_null() {
        return Err(libc::EINVAL);
    }
    // SAFETY: CMSG_LEN is a pure size computation.
    let len = unsafe { libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) };
    // SAFETY: `cmsg` is the first header inside `control`, aligned and large enough.
    let hdr = unsafe { &mut *cmsg };
    hdr.cmsg_level = libc::SOL_SOCKET;
    hdr.cmsg_type = libc::SCM_RIGHTS;
    hdr.cmsg_len = len as usize;
    // SAFETY: CMSG_DATA of that header lies inside `control`, with room for one int.
    let data = unsafe { libc::CMSG_DATA(cmsg) };
    // SAFETY: `data` is valid for an (unaligned) write of one int, inside `control`.
    unsafe { std::ptr::write_unaligned(data.cast::<RawFd>(), fd) };
    // SAFETY: `msg` and everything it points to live on this stack for the call.
    let r = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
    if r == 1 { Ok(()) } else { Err(errno()) }
}

/// Receive the descriptor [`send_fd`] sent on `sock` (in the parent, after the child is set
/// up), waiting at most `timeout`.
pub fn recv_fd(
    sock: std::os::fd::BorrowedFd<'_>,
    timeout: std::time::Duration,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::FromRawFd;
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(sock, PollFlags::POLLIN)];
    if poll(&mut fds, PollTimeout::from(ms))? == 0 {
        return Err(std::io::Error::from(std::io::ErrorKind::TimedOut));
    }
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!(RawFd);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c
            && let Some(&fd) = fds.first()
        {
            // SAFETY: the kernel just installed `fd` in this process for us; nothing else
            // owns it.
            return Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
        }
    }
    Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof))
}
