//! Landlock + seccomp confinement (issue 3). Owned by the sandbox work.
