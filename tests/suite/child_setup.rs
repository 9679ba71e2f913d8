//! End-to-end checks of the child's set-up reporting (issue 10, item 3): a failed step and a
//! failed exec reach the operator with the same text and exit code, with and without the
//! sandbox (the confined command starts inside a PID namespace and reports its own steps).

use crate::harness::*;
use std::os::unix::fs::PermissionsExt;

/// A resource limit the kernel refuses (above `fs.nr_open`, refused even to root) is the
/// step "resource limits", exit 125, in every mode.
#[test]
fn a_failed_step_is_named() {
    let s = Scratch::new();
    s.profile("lim", "version = 1\n[limits]\nnofile = 1073741824\n");
    for mode in [&[][..], &["--unconfined"][..]] {
        let mut args = mode.to_vec();
        args.extend(["-p", "lim", "--", "true"]);
        let o = s.run(&args);
        assert_eq!(o.code, 125, "{mode:?}: {o:?}");
        assert!(
            o.stderr.contains(
                "setting up the child failed at resource limits: Operation not permitted (os error 1)"
            ),
            "{mode:?}: {o:?}"
        );
    }
}

/// A command whose `#!` interpreter does not exist fails at its own exec: 126 and the hint,
/// whether std's exec (unconfined) or the command inside the PID namespace reports it.
#[test]
fn a_failed_exec_is_an_exec_error() {
    let s = Scratch::new();
    s.profile("p", "version = 1\n");
    let script = s.path().join("no-interp");
    std::fs::write(&script, "#!/nonexistent/interpreter\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    for mode in [&[][..], &["--unconfined"][..]] {
        let mut args = mode.to_vec();
        args.extend(["-p", "p", "--", "./no-interp"]);
        let o = s.run(&args);
        assert_eq!(o.code, 126, "{mode:?}: {o:?}");
        assert!(
            o.stderr.contains(
                "./no-interp: cannot execute: its interpreter or loader was not found (check the #! line)"
            ),
            "{mode:?}: {o:?}"
        );
    }
}
