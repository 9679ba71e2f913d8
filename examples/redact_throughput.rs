//! Throughput of the redactor alone, on a generated realistic log, with 10 secrets and the
//! default rules, pushed in 64 KiB chunks (what the pump reads from a pipe).
//!
//! `cargo run --release --example redact_throughput [MiB]` prints MiB/s, a plain-copy
//! baseline in the same run, and the process's peak RSS.

use std::time::Instant;

use agentrun::redact::{RedactSection, Redactor};
use secrecy::SecretString;

fn log_corpus(target: usize) -> Vec<u8> {
    let lines = [
        "2025-03-04T10:22:01.123Z INFO  request_id=7c9e6679-7425-40de-944b-e07fc1f90ae7 method=GET path=/api/v1/users/{n} status=200 duration_ms={n}",
        "2025-03-04T10:22:01.456Z WARN  cache key=users:{n} miss; fetching from upstream https://api.example.com:8443/v1/users/{n}?page=2&per_page=50",
        "{\"level\":\"info\",\"ts\":1709547721.{n},\"caller\":\"server/main.go:87\",\"msg\":\"listening\",\"addr\":\"0.0.0.0:8080\",\"tokens_used\":{n}}",
        "commit 3f786850e387550fdab836ed7e6dc881de2{n}",
        "Author: Jane Developer <jane@example.com>",
        "   Compiling serde v1.0.{n}",
        "test auth::tests::refresh_token_before_expiry_{n} ... ok",
        " checksum = \"8e60d3430d3a69478ad0993f19238d2df97c507009a52b3c10addcd7f6b{n}\"",
        "    at Object.<anonymous> (/srv/app/node_modules/express/lib/router/index.js:{n}:15)",
        "Traceback (most recent call last): File \"/usr/lib/python3.11/site-packages/requests/sessions.py\", line {n}, in request",
        "> GET /v1/models HTTP/1.1",
        "> Host: localhost:8080",
        "< HTTP/1.1 200 OK",
        "\u{1b}[32m   Finished\u{1b}[0m `release` profile [optimized] target(s) in {n}.17s",
    ];
    let mut out = Vec::with_capacity(target + 256);
    let mut n: u64 = 1;
    while out.len() < target {
        for l in &lines {
            n = n
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            out.extend_from_slice(
                l.replace("{n}", &((n >> 40) % 100_000).to_string())
                    .as_bytes(),
            );
            out.push(b'\n');
        }
    }
    out
}

/// CPU time of this thread: the machine may be shared, so wall time alone misleads.
fn cpu_secs() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_THREAD).map_or(0.0, |u| {
        let t = u.user_time() + u.system_time();
        t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6
    })
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(128);
    let data = log_corpus(mib << 20);
    let names: Vec<String> = (0..10).map(|i| format!("SECRET_{i}")).collect();
    let values: Vec<SecretString> = (0..10)
        .map(|i| {
            let v: String = (0..40)
                .map(|k| {
                    let c = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
                        [(i * 31 + k * 17 + k * k) % 57];
                    c as char
                })
                .collect();
            SecretString::from(format!("sk-test-{v}"))
        })
        .collect();
    let secrets: Vec<(&str, &SecretString)> = names
        .iter()
        .map(String::as_str)
        .zip(values.iter())
        .collect();
    let t = Instant::now();
    let mut section = RedactSection::default();
    if std::env::var_os("NO_RULES").is_some() {
        section.rules.clear();
    }
    let secrets = if std::env::var_os("NO_SECRETS").is_some() {
        &secrets[..0]
    } else {
        &secrets[..]
    };
    let r = Redactor::new(&section, secrets)?;
    let build = t.elapsed();

    let mut sink: Vec<u8> = Vec::with_capacity(1 << 20);
    let t = Instant::now();
    let mut copied = 0usize;
    for chunk in data.chunks(64 * 1024) {
        sink.clear();
        sink.extend_from_slice(chunk);
        copied += sink.len();
    }
    let base = t.elapsed();

    let mut s = r.stream();
    let t = Instant::now();
    let c0 = cpu_secs();
    let mut emitted = 0usize;
    for chunk in data.chunks(64 * 1024) {
        sink.clear();
        s.push(chunk, &mut sink);
        emitted += sink.len();
    }
    sink.clear();
    s.finish(&mut sink);
    emitted += sink.len();
    let took = t.elapsed();
    let cpu = cpu_secs() - c0;

    let rate =
        |bytes: usize, d: std::time::Duration| bytes as f64 / (1 << 20) as f64 / d.as_secs_f64();
    println!(
        "input {} MiB, redactor built in {:.1} ms ({} KiB of automata)",
        data.len() >> 20,
        build.as_secs_f64() * 1e3,
        r.memory_usage() / 1024
    );
    println!("copy baseline: {:.0} MiB/s", rate(copied, base));
    println!(
        "redact:        {:.0} MiB/s wall, {:.0} MiB/s per CPU second  (emitted {} bytes, replacements {:?})",
        rate(data.len(), took),
        data.len() as f64 / (1 << 20) as f64 / cpu,
        emitted,
        s.counts()
    );
    println!("peak RSS (incl. the corpus): {} MiB", peak_rss_kib() / 1024);
    Ok(())
}
