//! Progress during slow work (issue 13, item 6): on a terminal, a fetch from a hung Vault
//! shows what is being fetched and for how long, redrawn in place and erased at the end;
//! through a pipe, nothing extra is printed. The hung server is a real OpenBao dev server
//! stopped with SIGSTOP after it was set up: it accepts connections (the kernel does) and
//! never answers.
#![allow(clippy::unwrap_used)]

use crate::harness::*;
use crate::servers::Bao;
use std::process::Stdio;
use std::time::Duration;

/// A Vault that hangs: an OpenBao dev server with the secret in it, then stopped.
fn hung_vault(s: &Scratch) -> Bao {
    let bao = Bao::start();
    bao.cli(&[
        "kv",
        "put",
        "secret/agent",
        "api_key=vault-value-0123456789",
    ]);
    s.profile(
        "slow",
        &format!(
            "version = 1\n[vault]\naddress = \"{}\"\ntimeout = \"2s\"\nretries = 0\n\
             [secrets]\nOPENAI_API_KEY = \"vault:secret/agent#api_key\"\n",
            bao.addr
        ),
    );
    let pid = nix::unistd::Pid::from_raw(bao.proc.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    bao
}

/// Run `agentrun -p slow -- true` with stdin, stdout and stderr on a fresh pty, as in a
/// user's terminal; `(exit code, what the terminal received)`.
fn on_a_terminal(s: &Scratch, bao: &Bao, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let ws = nix::pty::Winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&ws), None).unwrap();
    let mut run = s
        .agentrun()
        .args(["-p", "slow", "--", "true"])
        .env("VAULT_TOKEN", &bao.token);
    for (k, v) in env {
        run = run.env(k, v);
    }
    let mut child = run
        .command()
        .stdin(Stdio::from(pty.slave.try_clone().unwrap()))
        .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
        .stderr(Stdio::from(pty.slave))
        .spawn()
        .unwrap();
    let mut master = std::fs::File::from(pty.master);
    let out = read_until(&mut master, Duration::from_secs(30), |t| {
        t.contains("secret OPENAI_API_KEY:") && t.ends_with('\n')
    });
    (child.wait().unwrap().code(), out)
}

#[test]
fn a_hung_vault_shows_what_is_fetched_and_for_how_long_on_a_terminal() {
    let s = Scratch::new();
    let bao = hung_vault(&s);
    let (code, out) = on_a_terminal(&s, &bao, &[]);
    assert_eq!(code, Some(125), "{out:?}");
    let note = "\r\x1b[2Kagentrun: fetching OPENAI_API_KEY from vault (";
    let notes = out.matches(note).count();
    assert!(notes >= 5, "the note is redrawn as time passes: {out:?}");
    // The elapsed time grows: a note past one second was drawn.
    assert!(
        out.contains(&format!("{note}1.")) || out.contains(&format!("{note}2.")),
        "{out:?}"
    );
    // Nothing in the first 300 ms, and the note is erased before the error is printed.
    assert!(!out.contains(&format!("{note}0.0s)")), "{out:?}");
    let last = out.rfind(note).unwrap();
    let error = out.find("agentrun: secret OPENAI_API_KEY:").unwrap();
    assert!(
        out[last..error].ends_with("s)\r\x1b[2K"),
        "the note is erased at the end: {out:?}"
    );
    assert!(!out.contains("vault-value-0123456789"), "{out:?}");
}

#[test]
fn through_a_pipe_or_in_ci_nothing_extra_is_printed() {
    let s = Scratch::new();
    let bao = hung_vault(&s);
    let o = s
        .agentrun()
        .args(["-p", "slow", "--", "true"])
        .env("VAULT_TOKEN", &bao.token)
        .run();
    assert_eq!(o.code, 125, "{o:?}");
    assert!(o.stderr.contains("secret OPENAI_API_KEY:"), "{o:?}");
    assert!(!o.stderr.contains("fetching"), "{o:?}");
    assert!(
        !o.stderr.contains('\r') && !o.stderr.contains('\x1b'),
        "{o:?}"
    );
    // On a terminal, but in CI: nothing either.
    let (code, out) = on_a_terminal(&s, &bao, &[("CI", "true")]);
    assert_eq!(code, Some(125), "{out:?}");
    assert!(
        !out.contains("fetching") && !out.contains('\x1b'),
        "{out:?}"
    );
}
