//! The output pump: child stdout/stderr -> filter (the redactor) -> agentrun's own.
//!
//! No added buffering: whatever the filter releases is written at once. At end of stream
//! the filter's held bytes are flushed. If agentrun's own output goes away (EPIPE), the
//! read end is closed so the child sees EPIPE/SIGPIPE as it would writing to the pipe
//! directly.
//!
//! A run pumps its streams as [`Stream`]s from the supervisor's single event loop (no
//! thread per stream: on a busy machine each thread start is a wait for a CPU). A stream
//! whose sink cannot take more stops reading its source until it can, so the child feels
//! the back-pressure as before and the other stream and the signals keep flowing: the
//! sink is written without blocking (see [`Sink`]). [`pump`] is the blocking form for
//! `agentrun redact`. [`StdinForward`] is the one copy loop the other way: agentrun's stdin
//! to the child's terminal or stdin pipe, driven by the same event loop.
//!
//! Imports nothing of `launch`'s other modules: `supervise` and `tty` use it, one way.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// What the pump runs each chunk through. The redactor implements it.
pub trait StreamFilter: Send {
    /// Append to `out` every byte that can be released now.
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>);
    /// End of stream: release everything held.
    fn finish(&mut self, out: &mut Vec<u8>);
    /// Replacements made, per secret name or rule id.
    fn counts(&self) -> BTreeMap<String, u64>;
}

/// `--no-redact`: bytes pass as they are.
pub struct Passthrough;

impl StreamFilter for Passthrough {
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(input);
    }
    fn finish(&mut self, _out: &mut Vec<u8>) {}
    fn counts(&self) -> BTreeMap<String, u64> {
        BTreeMap::new()
    }
}

/// How a stream ended.
#[derive(Debug, Default)]
pub struct PumpStats {
    pub bytes_in: u64,
    pub counts: BTreeMap<String, u64>,
    pub error: Option<String>,
}

/// Pump `input` to `output` through `filter` until end of stream.
pub fn pump(
    mut input: File,
    mut output: File,
    mut filter: Box<dyn StreamFilter + '_>,
) -> PumpStats {
    let mut stats = PumpStats::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(64 * 1024);
    let mut sink_open = true;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // EIO on a pty master means the slave side closed: end of stream.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => {
                stats.error = Some(e.to_string());
                break;
            }
        };
        stats.bytes_in += n as u64;
        out.clear();
        filter.push(&buf[..n], &mut out);
        if sink_open
            && !out.is_empty()
            && let Err(e) = output.write_all(&out)
        {
            if e.kind() == io::ErrorKind::BrokenPipe {
                // The reader went away: stop reading so the child gets EPIPE too.
                sink_open = false;
                break;
            }
            stats.error = Some(e.to_string());
            sink_open = false;
        }
    }
    out.clear();
    filter.finish(&mut out);
    if sink_open && !out.is_empty() {
        let _ = output.write_all(&out);
    }
    stats.counts = filter.counts();
    stats
}

/// One of agentrun's own outputs, written without blocking where that can be arranged
/// without touching the description other processes share: a pipe or a terminal is
/// reopened through `/proc/self/fd` as a private non-blocking description; a socket is
/// written with `MSG_DONTWAIT`. Anything else (a regular file, `/dev/null`) is written as
/// it is: such writes do not wait for a reader.
pub struct Sink {
    file: File,
    socket: bool,
}

impl Sink {
    /// A sink writing to what `fd` refers to (agentrun's stdout or stderr).
    pub fn new(fd: BorrowedFd) -> io::Result<Sink> {
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
        let own = File::from(fd.try_clone_to_owned()?);
        let kind = own.metadata()?.file_type();
        if kind.is_socket() {
            return Ok(Sink {
                file: own,
                socket: true,
            });
        }
        let tty = kind.is_char_device() && nix::unistd::isatty(fd).unwrap_or(false);
        if kind.is_fifo() || tty {
            let reopened = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
                .open(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            if let Ok(f) = reopened {
                return Ok(Sink {
                    file: f,
                    socket: false,
                });
            }
        }
        Ok(Sink {
            file: own,
            socket: false,
        })
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.socket {
            return crate::sys::send_nonblocking(self.file.as_raw_fd(), buf);
        }
        self.file.write(buf)
    }

    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// One stream of the child's output, pumped by the event loop: readable source ->
/// filter -> sink, holding only what the sink could not take yet.
pub struct Stream<'f> {
    source: Option<File>,
    sink: Sink,
    sink_open: bool,
    filter: Box<dyn StreamFilter + 'f>,
    /// The read buffer: empty until the source first has data.
    buf: Vec<u8>,
    /// Released by the filter, not yet written; `written` bytes of it are.
    out: Vec<u8>,
    written: usize,
    stats: PumpStats,
    /// The sink's reader went away (EPIPE).
    reader_gone: bool,
    /// Stop at the source's first "nothing to read" instead of waiting for its end, or once
    /// `budget` more bytes were read (a writer that never pauses).
    closing: bool,
    budget: usize,
}

/// What a closing stream still reads: a full pipe at the largest size an unprivileged
/// process can give it (`/proc/sys/fs/pipe-max-size`).
const CLOSING_BUDGET: usize = 1 << 20;

impl<'f> Stream<'f> {
    /// `source` is made non-blocking (it is agentrun's own read end).
    pub fn new(
        source: OwnedFd,
        sink: Sink,
        filter: Box<dyn StreamFilter + 'f>,
    ) -> io::Result<Stream<'f>> {
        set_nonblocking(source.as_fd())?;
        Ok(Stream {
            source: Some(File::from(source)),
            sink,
            sink_open: true,
            filter,
            buf: Vec::new(),
            out: Vec::new(),
            written: 0,
            stats: PumpStats::default(),
            reader_gone: false,
            closing: false,
            budget: CLOSING_BUDGET,
        })
    }

    fn pending(&self) -> bool {
        self.sink_open && self.written < self.out.len()
    }

    /// The source to poll for input: only while nothing waits for the sink.
    pub fn read_fd(&self) -> Option<RawFd> {
        match &self.source {
            Some(f) if !self.pending() => Some(f.as_raw_fd()),
            _ => None,
        }
    }

    /// The sink to poll for room, while output waits for it.
    pub fn write_fd(&self) -> Option<RawFd> {
        self.pending().then(|| self.sink.fd())
    }

    /// Source and sink are done with.
    pub fn done(&self) -> bool {
        self.source.is_none() && !self.pending()
    }

    /// The source is readable (`data`: poll said POLLIN) or hung up: one read, filtered and
    /// written at once.
    pub fn on_readable(&mut self, data: bool) {
        let Some(src) = self.source.as_mut() else {
            return;
        };
        // The 64 KiB buffer (a pipe's capacity) only once there is data: a child that
        // prints nothing costs no zeroed pages, its hang-up is read into `small`.
        let mut small = [0u8; 256];
        let use_small = self.buf.is_empty() && !data;
        if self.buf.is_empty() && !use_small {
            self.buf = vec![0u8; 64 * 1024];
        }
        let read = if use_small {
            src.read(&mut small)
        } else {
            src.read(&mut self.buf)
        };
        let n = match read {
            Ok(0) => return self.end_of_input(),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if self.closing {
                    self.end_of_input();
                }
                return;
            }
            // EIO on a pty master means the slave side closed: end of stream.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => return self.end_of_input(),
            Err(e) => {
                self.stats.error = Some(e.to_string());
                return self.end_of_input();
            }
        };
        self.stats.bytes_in += n as u64;
        self.out.clear();
        self.written = 0;
        let input = if use_small {
            &small[..n]
        } else {
            &self.buf[..n]
        };
        self.filter.push(input, &mut self.out);
        self.flush();
        if self.closing {
            self.budget = self.budget.saturating_sub(n);
            if self.budget == 0 {
                self.end_of_input();
            }
        }
    }

    /// The sink has room again.
    pub fn on_writable(&mut self) {
        self.flush();
        if self.closing {
            self.read_while_ready();
        }
    }

    /// Whether the sink's reader went away (EPIPE): the source is closed then.
    pub fn reader_gone(&self) -> bool {
        self.reader_gone
    }

    /// While a writer still holds the source: read what it holds now, and end it at the
    /// first read that would wait, or after [`CLOSING_BUDGET`] more bytes (see
    /// `supervise::DRAIN_AFTER_EXIT`). Output still waiting for the sink keeps waiting: only
    /// the source stops. Without writers nothing changes: the rest is read to the end.
    pub fn close_when_idle(&mut self) {
        if let Some(src) = &self.source {
            let mut p = [libc::pollfd {
                fd: src.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            if crate::sys::poll(&mut p, 0).is_ok() && p[0].revents & libc::POLLHUP != 0 {
                // No writer is left: the source reaches its end by itself, with every byte.
                return;
            }
        }
        self.closing = true;
        self.read_while_ready();
    }

    fn read_while_ready(&mut self) {
        while self.read_fd().is_some() {
            self.on_readable(true);
        }
    }

    /// Stop reading: what the filter holds is released, the read end closed.
    fn end_of_input(&mut self) {
        self.source = None;
        if self.pending() {
            // Cannot happen (no read while output waits), but keep every byte.
            self.out.drain(..self.written);
        } else {
            self.out.clear();
        }
        self.written = 0;
        self.filter.finish(&mut self.out);
        self.flush();
    }

    /// Write what is pending until done or the sink is full.
    fn flush(&mut self) {
        while self.pending() {
            match self.sink.write(&self.out[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    // The reader went away: stop reading so the child gets EPIPE too.
                    self.sink_open = false;
                    self.reader_gone = true;
                    if self.source.take().is_some() {
                        self.out.clear();
                        self.filter.finish(&mut self.out);
                    }
                }
                Err(e) => {
                    // Keep draining the source so the child does not block on a full pipe.
                    self.stats.error = Some(e.to_string());
                    self.sink_open = false;
                }
            }
        }
    }

    /// How the stream ended.
    pub fn into_stats(mut self) -> PumpStats {
        self.stats.counts = self.filter.counts();
        self.stats
    }
}

/// `O_NONBLOCK` on a description agentrun alone uses.
pub fn set_nonblocking(fd: BorrowedFd) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// What agentrun's stdin's end becomes for the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtEnd {
    /// A pty: the terminal's EOF character.
    EofChar,
    /// A pipe: closed.
    Close,
}

/// agentrun's stdin -> the child's terminal or stdin pipe, one chunk at a time: stdin is read
/// only when the previous chunk is in, so a child that does not read its input holds nothing
/// up but that.
pub struct StdinForward {
    target: Option<std::fs::File>,
    at_end: AtEnd,
    buf: Vec<u8>,
    len: usize,
    written: usize,
    open: bool,
}

impl StdinForward {
    /// `target` is non-blocking and agentrun's own.
    pub fn new(target: OwnedFd, at_end: AtEnd) -> StdinForward {
        // A terminal's input comes a line or a key at a time; a pipe's may be a stream.
        let chunk = match at_end {
            AtEnd::EofChar => 4096,
            AtEnd::Close => 64 * 1024,
        };
        StdinForward {
            target: Some(std::fs::File::from(target)),
            at_end,
            buf: vec![0u8; chunk],
            len: 0,
            written: 0,
            open: true,
        }
    }

    /// Poll stdin while the last chunk is delivered and input has not ended.
    pub fn read_fd(&self) -> Option<RawFd> {
        (self.open && self.target.is_some() && self.written == self.len)
            .then_some(libc::STDIN_FILENO)
    }

    /// Poll the target while a chunk waits for room.
    pub fn write_fd(&self) -> Option<RawFd> {
        match &self.target {
            Some(t) if self.written < self.len => Some(t.as_raw_fd()),
            _ => None,
        }
    }

    /// Stop forwarding and close the target (the pty is being hung up).
    pub fn hang_up(&mut self) {
        self.open = false;
        self.target = None;
        self.written = self.len;
    }

    pub fn on_readable(&mut self) {
        // A raw read: std's buffered stdin could hold bytes that poll no longer sees.
        match nix::unistd::read(std::io::stdin().as_fd(), &mut self.buf) {
            Ok(0) => {
                self.open = false;
                if self.at_end == AtEnd::Close {
                    self.target = None;
                    return;
                }
                // End of input: the terminal's EOF character.
                self.buf[0] = 4;
                self.len = 1;
            }
            Ok(n) => self.len = n,
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => return,
            Err(_) => {
                self.open = false;
                if self.at_end == AtEnd::Close {
                    self.target = None;
                }
                return;
            }
        }
        self.written = 0;
        self.on_writable();
    }

    pub fn on_writable(&mut self) {
        while self.written < self.len {
            let Some(target) = self.target.as_mut() else {
                return;
            };
            match target.write(&self.buf[self.written..self.len]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    // The child closed its end (EPIPE), or the pty is gone.
                    self.open = false;
                    self.written = self.len;
                    if self.at_end == AtEnd::Close {
                        self.target = None;
                    }
                }
            }
        }
        if !self.open && self.at_end == AtEnd::Close {
            // Input ended while the last chunk waited for room: it is in, close the pipe.
            self.target = None;
        }
    }
}
