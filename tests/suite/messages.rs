//! Messages that name the file, the key and the fix (issue 13, item 5): a mistyped
//! subcommand, an option agentrun does not know, a directory given as a profile, a source
//! written as a URL, a relative path that failed, a wrong type in a profile.

use crate::harness::*;

#[test]
fn a_mistyped_subcommand_is_named_with_the_one_meant() {
    let s = Scratch::new();
    s.profile("x", "version = 1\n");
    let o = s.run(&["chek", "--profile", "x"]);
    assert_eq!(o.code, 125, "{o:?}");
    assert!(
        o.stderr
            .contains("unknown command `chek`, did you mean `check`?"),
        "{o:?}"
    );
    assert!(!o.stderr.contains("no profile"), "{o:?}");
    // After `--`, a subcommand's name or a program's is the command to run.
    let o = s.run(&["-p", "x", "--", "check"]);
    assert_eq!(o.code, 127, "{o:?}");
    assert!(o.stderr.contains("check: command not found"), "{o:?}");
    let o = s.run(&["-p", "x", "mytool"]);
    assert_eq!(o.code, 127, "{o:?}");
    assert!(o.stderr.contains("mytool: command not found"), "{o:?}");
}

#[test]
fn an_unknown_option_is_an_error_and_an_attached_profile_is_read() {
    let s = Scratch::new();
    s.profile("t", "version = 1\n");
    let o = s
        .agentrun()
        .args(["--no-such-flag"])
        .env("AGENTRUN_PROFILE", "t")
        .run();
    assert_eq!(o.code, 125, "{o:?}");
    assert!(
        o.stderr.contains("unknown option `--no-such-flag`"),
        "{o:?}"
    );
    for attached in ["-pt", "-p=t"] {
        let o = s.run(&[attached, "--", "sh", "-c", "exit 7"]);
        assert_eq!(o.code, 7, "{attached}: {o:?}");
    }
    // The command's own flags after its name, and everything after `--`, stay its own.
    let o = s.run(&["-p", "t", "sh", "-c", "echo \"$0\" ok", "--zz"]);
    assert_eq!((o.code, o.stdout.as_str()), (0, "--zz ok\n"), "{o:?}");
}
