//! The leak corpus, end to end: real child programs try to print their credentials in the
//! ways real programs do, through the real binary, and none of it reaches agentrun's output.
#![allow(clippy::unwrap_used)]

mod harness;

use harness::*;
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
