//! The leak corpus, end to end: real child programs try to print their credentials in the
//! ways real programs do, through the real binary, and none of it reaches agentrun's output.
#![allow(clippy::unwrap_used)]

use crate::harness::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const KEY: &str = "sk-live-9fQ2xW7rT1yU8iO3pL6kJ5hG0fD9sAzz";
const PASSWORD: &str = "correct-horse-battery-staple-42";
/// A GitHub-format token that is not declared anywhere: only the built-in rules can catch it.
const UNDECLARED: &str = "ghp_R4nd0mT0k3nV4lu3ThatIsNotDeclared123";

fn scratch(extra_sandbox: &str) -> Scratch {
    let s = Scratch::new();
    s.file(".env", &format!("API_KEY={KEY}\nDB_PASSWORD={PASSWORD}\n"));
    s.profile(
        "leak",
        &format!(
            "version = 1\n[env]\npass = [\"PATH\", \"HOME\", \"LANG\"]\nset = {{ UNDECLARED = \"{UNDECLARED}\" }}\n\
             [secrets]\nAPI_KEY = \"dotenv:.env#API_KEY\"\nDB_PASSWORD = \"dotenv:.env#DB_PASSWORD\"\n{extra_sandbox}"
        ),
    );
    s
}

fn assert_clean(o: &Out) {
    for v in [KEY, PASSWORD, UNDECLARED] {
        assert!(
            !o.stdout.contains(v) && !o.stderr.contains(v),
            "{v} leaked: {o:?}"
        );
    }
}

/// A real HTTP server (Python's http.server) on a free loopback port.
struct Http(Child, u16);

impl Http {
    fn start() -> Http {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("/usr/bin/python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert!(eventually(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        }));
        Http(child, port)
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn curl_verbose_bearer_and_basic_auth() {
    let http = Http::start();
    let s = scratch(&format!("[sandbox]\nconnect = [{}]\n", http.1));
    let url = format!("http://127.0.0.1:{}/", http.1);
    let script = format!(
        "curl -sv -o /dev/null -H \"Authorization: Bearer $API_KEY\" {url}; \
         curl -sv -o /dev/null -u \"agent:$DB_PASSWORD\" {url}; \
         curl -sv -o /dev/null -H \"Authorization: token $UNDECLARED\" {url}"
    );
    let o = s.run(&["-p", "leak", "--", "sh", "-c", &script]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_clean(&o);
    let basic = base64(&format!("agent:{PASSWORD}"));
    assert!(
        !o.stderr.contains(&basic),
        "base64 of user:password leaked: {o:?}"
    );
    assert!(
        o.stderr.contains("> Authorization: Bearer [REDACTED"),
        "{o:?}"
    );
    assert!(
        o.stderr.contains("> GET / HTTP/1.1"),
        "ordinary curl output must stay: {o:?}"
    );
}

#[test]
fn python_http_client_debug_output() {
    let http = Http::start();
    let s = scratch(&format!("[sandbox]\nconnect = [{}]\n", http.1));
    let code = format!(
        "import http.client, os\n\
         c = http.client.HTTPConnection('127.0.0.1', {})\n\
         c.set_debuglevel(1)\n\
         c.request('GET', '/', headers={{'Authorization': 'Bearer ' + os.environ['API_KEY'], 'X-Api-Key': os.environ['UNDECLARED']}})\n\
         c.getresponse().read()\n",
        http.1
    );
    let o = s.run(&["-p", "leak", "--", "/usr/bin/python3", "-c", &code]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_clean(&o);
    assert!(o.stdout.contains("send: b'GET / HTTP/1.1\\r\\n"), "{o:?}");
}

#[test]
fn printing_the_whole_environment() {
    let s = scratch("");
    let o = s.run(&[
        "-p",
        "leak",
        "--",
        "/usr/bin/python3",
        "-c",
        "import os; print(os.environ); print(dict(os.environ))",
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_clean(&o);
    let o = s.run(&["-p", "leak", "--", "env"]);
    assert_clean(&o);
    assert!(o.stdout.contains("LANG=C.UTF-8"), "{o:?}");
}

#[test]
fn one_byte_per_write_with_pauses() {
    let s = scratch("");
    let code = "import os, sys, time\nfor stream in (1, 2):\n    for ch in os.environ['API_KEY'] + '\\n':\n        os.write(stream, ch.encode()); time.sleep(0.002)\n";
    let o = s.run(&["-p", "leak", "--", "/usr/bin/python3", "-c", code]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_clean(&o);
    assert_eq!(o.stdout, "[REDACTED:API_KEY]\n");
    assert_eq!(o.stderr, "[REDACTED:API_KEY]\n");
}

#[test]
fn split_across_writes_at_every_offset() {
    let s = scratch("");
    let code = "import os, time\nk = os.environ['API_KEY']\nfor i in range(len(k) + 1):\n    os.write(1, (f'{i}:' + k[:i]).encode()); time.sleep(0.001)\n    os.write(1, (k[i:] + '\\n').encode())\n";
    let o = s.run(&["-p", "leak", "--", "/usr/bin/python3", "-c", code]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_clean(&o);
    let want: String = (0..=KEY.len())
        .map(|i| format!("{i}:[REDACTED:API_KEY]\n"))
        .collect();
    assert_eq!(o.stdout, want);
}

#[test]
fn encodings_fragments_and_colours() {
    let s = scratch("");
    let code = "import os, base64, json, urllib.parse\n\
                k = os.environ['API_KEY']\n\
                print('b64', base64.b64encode(k.encode()).decode())\n\
                print('b64url', base64.urlsafe_b64encode(('x' + k).encode()).decode().rstrip('='))\n\
                print('hex', k.encode().hex().upper())\n\
                print('url', urllib.parse.quote(k, safe=''))\n\
                print('json', json.dumps({'k': k}))\n\
                print('half', k[3:23])\n\
                print('colour', k[:10] + '\\x1b[31m' + k[10:] + '\\x1b[0m')\n";
    let o = s.run(&["-p", "leak", "--", "/usr/bin/python3", "-c", code]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_clean(&o);
    for (tag, leak) in [
        ("b64", base64(KEY)),
        ("hex", hex::encode_upper(KEY)),
        ("half", KEY[3..23].to_string()),
    ] {
        assert!(!o.stdout.contains(&leak), "{tag} form leaked: {o:?}");
    }
    assert!(
        !o.stdout.contains(&KEY[12..24]),
        "a 12-character fragment leaked: {o:?}"
    );
    for tag in ["b64", "b64url", "hex", "url", "json", "half", "colour"] {
        let line = o.stdout.lines().find(|l| l.starts_with(tag)).unwrap();
        assert!(line.contains("[REDACTED"), "{tag}: {line}");
    }
}

#[test]
fn binary_output_passes_byte_for_byte() {
    let s = scratch("");
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(s.path().join("blob"), &data).unwrap();
    let out = s
        .cmd(&["-p", "leak", "--", "cat", "blob"])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        out.stdout == data,
        "binary output changed ({} vs {} bytes)",
        out.stdout.len(),
        data.len()
    );
}

#[test]
fn ordinary_logs_are_left_alone() {
    let s = scratch("");
    let log = "commit 3f2a9c1e8b7d6f5a4c3b2a1908f7e6d5c4b3a291\n\
               Author: Ada Lovelace <ada@example.com>\n\
               request id 123e4567-e89b-12d3-a456-426614174000 took 12ms\n\
               sha512-QmF0Y2ggdGhlIGxvY2tmaWxlIGhhc2ggaXMganVzdCBhIGhhc2g= integrity\n\
               GET /api/v1/items?page=2 200\n";
    s.file("log.txt", log);
    let o = s.run(&["-p", "leak", "--", "cat", "log.txt"]);
    assert_eq!(o.stdout, log);
}

fn base64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ------------------------------------------------------------------ issue 9: the red team's leaks

const BOTH: [As; 2] = [As::Root, As::Nobody];

fn hand_over(s: &Scratch, who: As) {
    use std::os::unix::fs::PermissionsExt;
    if who == As::Root {
        return;
    }
    fn walk(p: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        out.push(p.to_path_buf());
        if p.is_dir() && !p.is_symlink() {
            for e in std::fs::read_dir(p).unwrap().flatten() {
                walk(&e.path(), out);
            }
        }
    }
    let mut all = Vec::new();
    walk(s.path(), &mut all);
    walk(s.home_dir.path(), &mut all);
    for e in all {
        std::os::unix::fs::lchown(&e, Some(65534), Some(65534)).unwrap();
        if !e.is_symlink() {
            let mode = if e.is_dir() { 0o755 } else { 0o600 };
            std::fs::set_permissions(&e, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
}

/// Run agentrun as `who` in the scratch directory, stdout and stderr captured (as bytes).
fn run_as(s: &Scratch, who: As, args: &[&str]) -> std::process::Output {
    hand_over(s, who);
    s.agentrun()
        .user(who)
        .args(args)
        .command()
        .output()
        .unwrap()
}

/// A child script (Python, from a file in the scratch directory) run through agentrun.
fn child(s: &Scratch, who: As, code: &str, args: &[&str]) -> std::process::Output {
    s.file("child.py", code);
    let mut argv = vec!["-p", "leak", "--", "/usr/bin/python3", "child.py"];
    argv.extend_from_slice(args);
    let o = run_as(s, who, &argv);
    assert!(
        o.status.success(),
        "{who:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Item 9: a 512 KiB `Cookie:` header in 64 KiB writes, each ending with the start of a
/// declared value (so bytes are held at every window end): no byte of it gets out.
#[test]
fn long_cookie_header_in_64k_writes_never_leaks_its_tail() {
    for who in BOTH {
        let s = scratch("");
        let code = "import os, time\n\
                    k = os.environ['API_KEY'].encode()\n\
                    os.write(1, b'> Cookie: session=')\n\
                    for i in range(8):\n    os.write(1, b'Z' * (65536 - 10) + k[:10]); time.sleep(0.01)\n\
                    os.write(1, b'\\nnext line\\n')\n";
        let o = child(&s, who, code, &[]);
        let n = o.stdout.iter().filter(|&&b| b == b'Z').count();
        assert_eq!(n, 0, "{who:?}: {n} bytes of the cookie leaked");
        assert!(
            o.stdout.starts_with(b"> [REDACTED:cookie-header]"),
            "{who:?}"
        );
        assert!(o.stdout.ends_with(b"\nnext line\n"), "{who:?}");
    }
}

/// Item 10: `head -3 key`: a private key without its END line.
#[test]
fn truncated_private_key_body_is_redacted_to_the_end() {
    for who in BOTH {
        let s = scratch("");
        let body1 = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun";
        let body2 = "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK";
        s.file(
            "key",
            &format!("-----BEGIN RSA PRIVATE KEY-----\n{body1}\n{body2}\n{body2}\n-----END RSA PRIVATE KEY-----\n"),
        );
        let o = run_as(&s, who, &["-p", "leak", "--", "head", "-3", "key"]);
        assert!(o.status.success(), "{who:?}: {o:?}");
        for b in [body1, body2] {
            assert!(
                !contains(&o.stdout, b.as_bytes()),
                "{who:?}: key body leaked: {o:?}"
            );
            assert!(
                !contains(&o.stdout, &b.as_bytes()[20..40]),
                "{who:?}: part of the body leaked"
            );
        }
        assert!(
            contains(&o.stdout, b"-----BEGIN RSA PRIVATE KEY-----"),
            "{who:?}"
        );
    }
}

/// Item 11: `base64` wraps at 76 columns and `xxd -p` at 60; a long secret split over lines
/// must not come out, wherever the lines break it.
#[test]
fn wrapped_base64_and_xxd_p_do_not_leak_a_long_secret() {
    let long = "lk3JdP9vQz2XwT7nB4mR8sY1cF6hK0aE5uG3iO9pL2jN7bV4xC1zM8qW6eR0tY5u";
    for who in BOTH {
        let s = scratch("");
        s.file(".env", &format!("API_KEY={KEY}\nDB_PASSWORD={long}\n"));
        let script = "for n in 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do \
                        echo \"== b64 $n\"; { printf '%*s' $n '' | tr ' ' x; printf '%s' \"$DB_PASSWORD\"; } | base64; \
                        echo \"== xxd $n\"; { printf '%*s' $n '' | tr ' ' x; printf '%s' \"$DB_PASSWORD\"; } | xxd -p; \
                      done";
        let o = run_as(&s, who, &["-p", "leak", "--", "sh", "-c", script]);
        assert!(o.status.success(), "{who:?}: {o:?}");
        let text = String::from_utf8_lossy(&o.stdout);
        // The encoded secret, at every alignment, joined as the reader would join the lines.
        for n in 0..=20usize {
            let data = format!("{}{long}", "x".repeat(n));
            let b64 = base64(&data);
            let hexed = hex::encode(&data);
            let section = |tag: &str| -> String {
                let start = text.find(&format!("== {tag} {n}\n")).unwrap();
                let rest = &text[start..];
                let body = rest.split("== ").nth(1).unwrap();
                body.lines().skip(1).collect::<String>()
            };
            for (tag, enc, got) in [
                ("b64", &b64, section("b64")),
                ("xxd", &hexed, section("xxd")),
            ] {
                // Past the first few characters (which mix in the x's), no 8 characters of
                // the encoded secret come out.
                let skip = if tag == "b64" { 4 * n / 3 + 4 } else { 2 * n };
                let secret_part = &enc[skip.min(enc.len())..enc.len().saturating_sub(4)];
                for w in secret_part.as_bytes().windows(8) {
                    assert!(
                        !got.as_bytes().windows(8).any(|g| g == w),
                        "{who:?}: {tag} with {n} leading bytes leaked {:?}: {got}",
                        String::from_utf8_lossy(w)
                    );
                }
            }
        }
    }
}

/// Item 11: entities, a doubled single quote, Go quoting: the escapes other tools apply.
#[test]
fn entity_and_quote_escaped_forms_are_redacted() {
    let pw = "p&ss<w>rd'quote\"dq-9f7Qx2";
    for who in BOTH {
        let s = scratch("");
        s.file(
            ".env",
            &format!(
                "API_KEY={KEY}\nDB_PASSWORD=\"{}\"\n",
                pw.replace('"', "\\\"")
            ),
        );
        let code = "import os, html\nfrom xml.sax.saxutils import escape, quoteattr\n\
                    p = os.environ['DB_PASSWORD']\n\
                    print('py', html.escape(p))\n\
                    print('apos', p.replace('&','&amp;').replace('<','&lt;').replace('>','&gt;').replace('\"','&quot;').replace(\"'\",'&apos;'))\n\
                    print('dec', p.replace('&','&amp;').replace('<','&lt;').replace('>','&gt;').replace('\"','&#34;').replace(\"'\",'&#39;'))\n\
                    print('php', p.replace('&','&amp;').replace('<','&lt;').replace('>','&gt;').replace('\"','&quot;').replace(\"'\",'&#039;'))\n\
                    print('sql', \"'\" + p.replace(\"'\", \"''\") + \"'\")\n";
        let o = child(&s, who, code, &[]);
        let text = String::from_utf8_lossy(&o.stdout);
        if !text.contains("py ") {
            // The dotenv quoting did not give the value we meant: say so, do not pass.
            panic!("{who:?}: unexpected output {text}");
        }
        for tag in ["py", "apos", "dec", "php", "sql"] {
            let line = text.lines().find(|l| l.starts_with(tag)).unwrap();
            assert!(line.contains("[REDACTED"), "{who:?}: {tag}: {line}");
            assert!(
                !line.contains("rd&") && !line.contains("dq-9f7Qx2"),
                "{who:?}: {tag}: {line}"
            );
        }
    }
}

/// Items 11 and 24: bytes that print nothing inside a value (NUL, DEL, zero-width space and
/// its kin, soft hyphen, `\e[K`, an OSC, backspace and cursor-left overwrites) still match.
#[test]
fn invisible_characters_and_escapes_inside_a_value_still_match() {
    for who in BOTH {
        let s = scratch("");
        let code = "import os, sys\n\
                    k = os.environ['DB_PASSWORD']\n\
                    a, b, c = k[:10], k[10:20], k[20:]\n\
                    for sep in ['\\x00', '\\x7f', '\\u200b', '\\u200c', '\\u200d', '\\u2060', '\\ufeff', '\\u00ad', '\\x1b[K', '\\x1b]0;t\\x07', '\\x1b[1C', 'X\\x08', 'XY\\x1b[2D', '\\U000e0041']:\n    \
                    sys.stdout.buffer.write((repr(sep) + ' ' + a + sep + b + sep + c + '\\n').encode())\n";
        let o = child(&s, who, code, &[]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert_eq!(text.lines().count(), 14, "{who:?}: {text}");
        for line in text.lines() {
            assert!(line.contains("[REDACTED:DB_PASSWORD]"), "{who:?}: {line:?}");
            for part in [&PASSWORD[..10], &PASSWORD[10..20], &PASSWORD[20..]] {
                assert!(!line.contains(part), "{who:?}: {line:?}");
            }
        }
    }
}

/// The suspected terminal answer-back: the sequences that make a terminal type into its input
/// (window title report, clipboard query, DECRQSS) or set the clipboard never get out; colours
/// and a title do.
#[test]
fn terminal_query_and_clipboard_sequences_are_dropped() {
    for who in BOTH {
        let s = scratch("");
        let code = "import sys\n\
                    w = sys.stdout.buffer.write\n\
                    w(b'a\\x1b[21tb\\x1b]52;c;?\\x07c\\x1b]52;c;ZWNobyBoaQ==\\x1b\\\\d\\x1bP$qm\\x1b\\\\e\\x1b[14tf\\n')\n\
                    w(b'\\x1b[31mred\\x1b[0m \\x1b]0;my title\\x07ok\\n')\n";
        let o = child(&s, who, code, &[]);
        assert_eq!(
            o.stdout,
            b"abcdef\n\x1b[31mred\x1b[0m \x1b]0;my title\x07ok\n",
            "{who:?}: {:?}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
}

/// Item 13: a large `file:` secret (60 KiB, under the size limit for sources) starts quickly
/// and small, and printing it whole or in part leaks none of it.
#[test]
fn a_large_file_secret_builds_quickly_and_is_redacted() {
    for who in BOTH {
        let s = Scratch::new();
        let mut v = String::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        while v.len() < 60 * 1024 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.push(ALPHA[(x % 64) as usize] as char);
        }
        s.file("big.secret", &v);
        s.file("small.secret", &v[..15 * 1024]);
        s.profile(
            "leak",
            "version = 1\n[env]\npass = [\"PATH\"]\n[secrets]\nBIG = \"file:big.secret\"\n",
        );
        s.profile(
            "small",
            "version = 1\n[env]\npass = [\"PATH\"]\n[secrets]\nBIG = \"file:small.secret\"\n",
        );
        let cmd = "printf '%s\\n' \"$BIG\"; printf '%s\\n' \"$BIG\" | cut -c 20000-30000";
        // Timed against the same run with a 15 KiB secret, interleaved, so that a loaded
        // machine slows both alike: the build once grew faster than the secret (60 KiB 1.2 s,
        // 200 KiB 9.4 s in a release build); now its cost is bounded.
        let (mut big, mut small, mut o) = (Vec::new(), Vec::new(), None);
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let _ = run_as(&s, who, &["-p", "small", "--", "sh", "-c", cmd]);
            small.push(t.elapsed());
            let t = std::time::Instant::now();
            o = Some(run_as(&s, who, &["-p", "leak", "--", "sh", "-c", cmd]));
            big.push(t.elapsed());
        }
        let o = o.unwrap();
        big.sort();
        small.sort();
        let (took, base) = (big[1], small[1]);
        assert!(
            o.status.success(),
            "{who:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            took < base * 3 + Duration::from_millis(300),
            "{who:?}: a 60 KiB secret took {took:?} against {base:?} for a 15 KiB one"
        );
        for w in v.as_bytes().chunks(24) {
            assert!(
                !contains(&o.stdout, w),
                "{who:?}: part of the secret leaked"
            );
        }
    }
}

/// The red team's C1 introducers encoded in UTF-8 (U+009D OSC, U+009B CSI): the answer-back
/// and clipboard sequences are dropped like their 7-bit forms; combining marks after each
/// character of a value (which still reads whole on screen) do not hide it.
#[test]
fn utf8_c1_introducers_and_combining_marks_are_handled() {
    for who in BOTH {
        let s = scratch("");
        let code = "import os, sys\n\
                    w = sys.stdout.buffer.write\n\
                    w(b'a\\xc2\\x9d52;c;?\\x07b\\xc2\\x9b21tc\\xc2\\x9d52;c;ZWNobw==\\xc2\\x9cd\\xc2\\x90$qm\\x1b\\\\e\\n')\n\
                    k = os.environ['DB_PASSWORD']\n\
                    w(('x ' + ''.join(ch + '\\u0301\\u036f' for ch in k) + '\\n').encode())\n";
        let o = child(&s, who, code, &[]);
        let text = String::from_utf8_lossy(&o.stdout);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("abcde"), "{who:?}: {text:?}");
        let line = lines.next().unwrap();
        assert!(line.contains("[REDACTED:DB_PASSWORD]"), "{who:?}: {line:?}");
        let bare: String = line
            .chars()
            .filter(|c| !('\u{300}'..='\u{36f}').contains(c))
            .collect();
        for part in [&PASSWORD[..10], &PASSWORD[10..20], &PASSWORD[20..]] {
            assert!(!bare.contains(part), "{who:?}: {line:?}");
        }
    }
}

/// What a terminal shows for `out`, line by line: a cell row with a cursor (printable
/// characters overwrite and advance; BS, `CSI n D/C/G`, `\r`, `ESC 7/8`, `CSI s/u`, `CSI K`).
fn render(out: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(out);
    let mut lines = Vec::new();
    let (mut row, mut cur, mut saved) = (Vec::<char>::new(), 0usize, 0usize);
    let mut it = text.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\n' => {
                lines.push(row.iter().collect::<String>().trim_end().to_string());
                row.clear();
                cur = 0;
            }
            '\r' => cur = 0,
            '\x08' => cur = cur.saturating_sub(1),
            '\x1b' => match it.next() {
                Some('7') => saved = cur,
                Some('8') => cur = saved,
                Some('[') => {
                    let mut p = String::new();
                    let f = loop {
                        match it.next() {
                            Some(d) if d.is_ascii_digit() || d == ';' => p.push(d),
                            other => break other,
                        }
                    };
                    let n: usize = p.split(';').next().unwrap_or("").parse().unwrap_or(1);
                    match f {
                        Some('D') => cur = cur.saturating_sub(n.max(1)),
                        Some('C') => cur += n.max(1),
                        Some('G') => cur = n.max(1) - 1,
                        Some('s') => saved = cur,
                        Some('u') => cur = saved,
                        Some('K') => row.truncate(cur),
                        _ => {}
                    }
                }
                _ => {}
            },
            c if c.is_control() => {}
            c => {
                while row.len() <= cur {
                    row.push(' ');
                }
                row[cur] = c;
                cur += 1;
            }
        }
    }
    lines
}

/// Red team (issue 9): cursor moves inside one write draw a value out of order, so the screen
/// shows it whole; the rendered view's line model puts the pieces where a terminal does.
#[test]
fn cursor_moves_inside_one_write_do_not_render_a_value() {
    let (a, b, c) = (
        &PASSWORD[..PASSWORD.len() / 3],
        &PASSWORD[PASSWORD.len() / 3..2 * PASSWORD.len() / 3],
        &PASSWORD[2 * PASSWORD.len() / 3..],
    );
    let (la, lab) = (a.len(), a.len() + b.len());
    let sp = |n: usize| " ".repeat(n);
    let cases = [
        format!(
            "{}{c}{}{b}{}{a}\n",
            sp(lab),
            "\x08".repeat(c.len() + b.len()),
            "\x08".repeat(lab)
        ),
        format!("{a}\x1b[{}C{c}\x1b[{}D{b}\n", b.len(), c.len() + b.len()),
        format!("{a}\x1b7{}{c}\x1b8{b}\n", sp(b.len())),
        format!("{}{c}\r{}{b}\r{a}\n", sp(lab), sp(la)),
        format!("{}{c}\x1b[1G{a}\x1b[{}G{b}\n", sp(lab), la + 1),
    ];
    let mut leaks = Vec::new();
    for who in BOTH {
        for case in &cases {
            let s = scratch("");
            let hex: String = case.bytes().map(|b| format!("{b:02x}")).collect();
            let code = format!("import os\nos.write(1, bytes.fromhex('{hex}'))\n");
            let o = child(&s, who, &code, &[]);
            if render(&o.stdout).iter().any(|l| l.contains(PASSWORD)) {
                leaks.push(format!("{who:?}: {case:?}"));
            }
        }
    }
    assert!(leaks.is_empty(), "rendered whole: {leaks:#?}");
}

/// Issue 9 (DoS): 256 KiB of `Authorization: ` repeated and 256 KiB of `Cookie: a=b; `
/// repeated, in 64 KiB writes, then a real secret: agentrun ends within seconds (it took
/// ~150 s in a debug build when every anchor re-ran its rule to the line's end) and still
/// redacts it.
#[test]
fn repeated_rule_anchors_are_redacted_in_linear_time() {
    let s = scratch("");
    let code = "import os\n\
                k = os.environ['API_KEY'].encode()\n\
                for pat in (b'Authorization: ', b'Cookie: a=b; '):\n    \
                    data = (pat * (262144 // len(pat) + 1))[:262144]\n    \
                    for i in range(0, len(data), 65536):\n        os.write(1, data[i:i+65536])\n    \
                    os.write(1, b'\\n')\n\
                os.write(1, b'key=' + k + b'\\n')\n";
    let t = std::time::Instant::now();
    let o = child(&s, As::Root, code, &[]);
    let took = t.elapsed();
    assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
    assert!(!contains(&o.stdout, KEY.as_bytes()), "the secret leaked");
    assert!(
        contains(&o.stdout, b"key=[REDACTED:API_KEY]"),
        "not redacted"
    );
    assert!(contains(&o.stdout, b"key="), "the last line is missing");
}

include!("../fixtures/term_model.rs");

/// Red team (review 10, F2-F4): a value drawn with wide characters, with sequences that move
/// the cursor or print but were stripped as printing nothing (tab stops, REP, CHT/CBT, HPB,
/// DECBI), or with zero-width marks between its characters, in one write: the terminal does
/// not show it whole (checked with `term`, which draws what tmux does).
#[test]
fn wide_characters_unmodelled_moves_and_marks_do_not_render_a_value() {
    let s = PASSWORD;
    let (a, b, c, d) = (&s[..8], &s[8..16], &s[16..24], &s[24..]);
    let w = "\u{6f22}".repeat(4);
    let e = "\x1b";
    let marks = |m: &str| s.chars().map(|ch| format!("{ch}{m}")).collect::<String>() + "\n";
    let hts = format!(
        "{e}[3g{}\r{}\t{}\t{}\t{}\r\t{}\t{}\t{}\n",
        format!("{}{e}H", " ".repeat(5)).repeat(6),
        &s[..5],
        &s[10..15],
        &s[20..25],
        &s[30..],
        &s[5..10],
        &s[15..20],
        &s[25..30]
    );
    let cases = [
        format!("{w}{b}{w}{d}\r{a}{e}[8C{c}\n"),
        format!("\u{1f600}\u{1f600}\u{1f600}\u{1f600}{b}\r{a}{e}[17G{c}{d}\n"),
        hts,
        format!(
            "{e}[10G{}{e}[b{e}[21G{}{e}[b{e}[1G{}{e}[C{}{e}[C{}\n",
            &s[10..11],
            &s[21..22],
            &s[..10],
            &s[11..21],
            &s[22..]
        ),
        format!("{e}[1I{b}{e}[1I{d}\r{a}{e}[I{c}\n"),
        format!("\t{b}\t{d}{e}[4Z{a}\t{c}\n"),
        format!("{a}        {c}{e}[16j{b}{e}[8a{d}\n"),
        format!("{a}X{e}6{b}{c}{d}\n"),
        marks("\u{483}"),
        marks("\u{591}"),
        marks("\u{1160}"),
        marks("\u{e31}"),
        marks("\u{64b}"),
        marks("\u{3099}"),
    ];
    let mut leaks = Vec::new();
    for who in BOTH {
        for case in &cases {
            assert!(
                term(case.as_bytes()).iter().any(|l| l.contains(s)),
                "the case draws nothing: {case:?}"
            );
            let sc = scratch("");
            let hex: String = case.bytes().map(|b| format!("{b:02x}")).collect();
            let code = format!("import os\nos.write(1, bytes.fromhex('{hex}'))\n");
            let o = child(&sc, who, &code, &[]);
            if term(&o.stdout).iter().any(|l| l.contains(s)) || contains(&o.stdout, s.as_bytes()) {
                leaks.push(format!("{who:?}: {case:?}"));
            }
        }
    }
    assert!(leaks.is_empty(), "rendered whole: {leaks:#?}");
}

/// Review 10, F6: a profile rule with a period (base64 quads, no literal prefix) on one 64 KiB
/// line of `A` cost quadratic time in the redactor, and the run outlived `--timeout 3s` by a
/// minute. Now the redactor's work per window is bounded: the run ends in seconds and the line
/// is redacted.
#[test]
fn periodic_profile_rule_on_a_long_line_ends_in_time() {
    let s = scratch(
        "[redact]\npatterns = ['(?:[A-Za-z0-9+/]{4}){10,}(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?']\n",
    );
    s.file(
        "child.py",
        "import os\nos.write(1, b'A' * 65536 + b'\\n')\nos.write(1, b'done\\n')\n",
    );
    let t = std::time::Instant::now();
    let o = run_as(
        &s,
        As::Root,
        &[
            "--timeout",
            "3s",
            "-p",
            "leak",
            "--",
            "/usr/bin/python3",
            "child.py",
        ],
    );
    let took = t.elapsed();
    assert!(took < Duration::from_secs(6), "took {took:?}");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!contains(&o.stdout, b"AAAA"), "the line leaked");
    assert!(
        contains(&o.stdout, b"[REDACTED:patterns[0]]"),
        "not redacted"
    );
    // Out of budget, the rule's later candidates in the window cover their lines: `done`
    // may be replaced too, but both lines are there.
    let lines = o.stdout.iter().filter(|&&b| b == b'\n').count();
    assert_eq!(lines, 2, "{:?}", String::from_utf8_lossy(&o.stdout));
}
