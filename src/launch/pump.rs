//! The output pump: child stdout/stderr -> filter (the redactor) -> agentrun's own.
//!
//! One thread per stream, blocking reads, no added buffering: whatever the filter
//! releases is written at once. At end of stream the filter's held bytes are flushed.
//! If agentrun's own output goes away (EPIPE), the read end is closed so the child sees
//! EPIPE/SIGPIPE as it would writing to the pipe directly.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};

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
