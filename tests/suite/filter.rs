//! `agentrun redact` as a CI log filter (issue 13, item 4): it never loses the log. A
//! missing secret or no profile at all: every line of
//! stdin still comes out, redacted with what agentrun has, and the exit code says whether
//! anything was left out.

use crate::harness::*;
use std::os::unix::fs::PermissionsExt;

const PRESENT: &str = "present-Zx9Qw8Er7Ty6Ui5Op4As3Df2";
const GITHUB: &str = "ghp_abcdefghijklmnopqrstuvwxyz0123456789";

/// A log with the present secret, a token the built-in rules know, a profile pattern's match,
/// and plain lines; 2000 lines so that nothing is held back at the end.
fn log() -> String {
    let mut s = String::new();
    for i in 0..2000 {
        s.push_str(&format!("step {i} ok\n"));
    }
    s.push_str(&format!(
        "key={PRESENT}\ngh={GITHUB}\ninternal=ACME-777-SECRET\nlast line\n"
    ));
    s
}

fn assert_passed_through(o: &Out) {
    let text = &o.stdout;
    assert!(text.starts_with("step 0 ok\nstep 1 ok\n"), "{o:?}");
    assert!(
        text.contains("step 1999 ok\n") && text.ends_with("last line\n"),
        "{o:?}"
    );
    assert!(!text.contains(GITHUB), "the built-in rules apply: {o:?}");
}

#[test]
fn a_missing_secret_is_warned_about_and_the_log_still_passes() {
    let s = Scratch::new();
    s.profile(
        "ci",
        "version = 1\n[secrets]\nPRESENT_KEY = \"env:PRESENT_KEY\"\nMISSING_KEY = \"env:MISSING_KEY\"\n\
         [redact]\npatterns = ['ACME-[0-9]+-SECRET']\n",
    );
    let o = s
        .agentrun()
        .args(["redact", "-p", "ci"])
        .env("PRESENT_KEY", PRESENT)
        .stdin(log())
        .run();
    assert_eq!(o.code, 1, "{o:?}");
    assert_passed_through(&o);
    assert!(
        !o.stdout.contains(PRESENT),
        "a fetched secret is redacted: {o:?}"
    );
    assert!(
        !o.stdout.contains("ACME-777-SECRET"),
        "the profile's patterns apply: {o:?}"
    );
    assert_eq!(
        o.stderr
            .lines()
            .filter(|l| l.contains("secret MISSING_KEY"))
            .count(),
        1,
        "one warning per missing secret: {o:?}"
    );
    assert!(!o.stderr.contains("PRESENT_KEY"), "{o:?}");
    assert!(!o.stderr.contains(PRESENT), "{o:?}");
}

/// A profile that cannot be used fails closed: agentrun cannot know its secrets, so the log
/// is withheld (review 13b, F1: a child that could write the profile's directory made it
/// "insecure" with one `chmod`, and the next filter passed the log with no values).
#[test]
fn a_profile_that_cannot_be_used_withholds_the_log() {
    let s = Scratch::new();
    s.profile("broken", "version = 1\n[secrets\n");
    for p in ["broken", "no-such-profile"] {
        let o = s.agentrun().args(["redact", "-p", p]).stdin(log()).run();
        assert_eq!(o.code, 125, "{p}: {o:?}");
        assert_eq!(o.stdout, "", "{p}: {o:?}");
        assert!(
            o.stderr.contains(p) && o.stderr.contains("the log is withheld"),
            "{o:?}"
        );
    }
    // The child's trick: the profile's directory made writable by others.
    let p = s.profile(
        "good",
        "version = 1\n[secrets]\nPRESENT_KEY = \"env:PRESENT_KEY\"\n",
    );
    let dir = p.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = s
        .agentrun()
        .args(["redact", "-p", "good"])
        .env("PRESENT_KEY", PRESENT)
        .stdin(log())
        .run();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(o.code, 125, "{o:?}");
    assert!(!o.stdout.contains(PRESENT), "{o:?}");
}

#[test]
fn without_a_profile_the_built_in_rules_apply_and_it_exits_0() {
    let s = Scratch::new();
    let o = s
        .agentrun()
        .args(["redact"])
        .env_remove("AGENTRUN_PROFILE")
        .stdin(log())
        .run();
    assert_eq!(o.code, 0, "{o:?}");
    assert_passed_through(&o);
    assert!(o.stdout.contains(PRESENT), "no profile, no values: {o:?}");
    assert_eq!(o.stderr, "", "{o:?}");
}
