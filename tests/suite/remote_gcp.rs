//! `gcp-sm:` through the real binary, against drongo (`drongo server`, the Secret Manager
//! REST API over plain http, from `.venv`) with the client's endpoint override and anonymous
//! credentials (`[gcp].credentials = "none"`, tests only), and against small local servers for
//! what drongo does not model.
//!
//! What drongo models: secrets and numbered versions, `latest`, `AccessSecretVersion` with the
//! payload base64, 404 `NOT_FOUND` for a missing secret or version, 400 `FAILED_PRECONDITION`
//! for a disabled or destroyed version, Google's error envelope. What it does not: IAM (every
//! call is allowed, whatever the credentials: no 401, no 403), `data_crc32c` (it sends none),
//! 5xx and throttling, and `latest` on a disabled newest version (drongo skips to the newest
//! enabled one; Secret Manager answers FAILED_PRECONDITION). Those are tested against
//! [`FixedAnswer`], which answers exactly one status with Google's error JSON body.
#![allow(clippy::unwrap_used)]

use crate::harness::*;
use crate::servers::{Drongo, FixedAnswer, ProbeServer, Silent, free_port, gcp_add_version};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A profile reading `secrets` (TOML lines under `[secrets]`) from `endpoint`, anonymously.
fn profile(endpoint: &str, extra_gcp: &str, secrets: &str) -> String {
    format!(
        "version = 1\n[env]\npass = [\"PATH\"]\n[gcp]\nendpoint = \"{endpoint}\"\ncredentials = \"none\"\n{extra_gcp}\n[secrets]\n{secrets}\n"
    )
}

/// Run `profile` to start `touch MARKER`; the run must stop with 125 before the child.
fn refused(s: &Scratch, profile: &str) -> Out {
    let marker = s.path().join("started");
    let o = s
        .agentrun()
        .profile(profile)
        .args(["--", "touch", marker.to_str().unwrap()])
        .run();
    assert_eq!(o.code, 125, "{o:?}");
    assert!(!marker.exists(), "the child started: {o:?}");
    o
}

/// Latest and numbered versions, the long and the short form (`[gcp].project`), a JSON
/// field: the child gets each value; `check --json` reports each secret as `gcp-sm`.
/// drongo models all of it.
#[test]
fn gcp_versions_short_form_and_json_field() {
    let d = Drongo::start();
    d.create("p1", "api");
    d.add("p1", "api", b"gcp-old-value-1");
    d.add("p1", "api", b"gcp-new-value-2");
    d.create("p1", "cfg");
    d.add(
        "p1",
        "cfg",
        br#"{"token": "gcp-json-token-3", "other": "x"}"#,
    );
    let s = Scratch::new();
    let p = profile(
        &d.endpoint,
        "project = \"p1\"\ntimeout = \"5s\"",
        "LATEST = \"gcp-sm:projects/p1/secrets/api\"\n\
         V1 = \"gcp-sm:projects/p1/secrets/api/versions/1\"\n\
         SHORT = \"gcp-sm:api/versions/2\"\n\
         FIELD = \"gcp-sm:projects/p1/secrets/cfg#token\"\n",
    );
    let start = Instant::now();
    let o = s
        .agentrun()
        .profile(&p)
        .args([
            "--no-redact",
            "--",
            "sh",
            "-c",
            "printf '%s|%s|%s|%s' \"$LATEST\" \"$V1\" \"$SHORT\" \"$FIELD\"",
        ])
        .run();
    let took = start.elapsed();
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(
        o.stdout,
        "gcp-new-value-2|gcp-old-value-1|gcp-new-value-2|gcp-json-token-3"
    );
    eprintln!("four gcp-sm: reads from drongo, whole run: {took:?}");

    let o = s.agentrun().profile(&p).args(["check", "--json"]).run();
    assert_eq!(o.code, 0, "{o:?}");
    let doc: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let secrets = doc["secrets"].as_array().unwrap();
    assert_eq!(secrets.len(), 4, "{doc}");
    assert!(secrets.iter().all(|s| s["kind"] == "gcp-sm"), "{doc}");
    assert!(!o.stdout.contains("gcp-new-value-2"));
}

/// Each failure drongo models has its own message naming the resource, the endpoint and
/// the fix, and stops the run with 125 before the child: a disabled and a destroyed
/// version, a missing secret and a missing version, a JSON field that is not there, a
/// binary (non-UTF-8) payload. No value reaches stderr or the audit log, even when the
/// same run fetched other secrets fine.
#[test]
fn gcp_each_failure_has_its_own_message() {
    let d = Drongo::start();
    d.create("p1", "s");
    d.add("p1", "s", b"gcp-disabled-value-1");
    d.add("p1", "s", b"gcp-destroyed-value-2");
    d.add("p1", "s", b"{\"a\": \"gcp-enabled-value-3\"}");
    d.set_state("p1", "s", 1, "disable");
    d.set_state("p1", "s", 2, "destroy");
    d.create("p1", "bin");
    d.add("p1", "bin", &[0xff, 0xfe, 0x00, 0x80, 0x41]);
    let s = Scratch::new();
    let place = &d.endpoint;
    let cases = [
        (
            "gcp-sm:projects/p1/secrets/s/versions/1",
            "projects/p1/secrets/s/versions/1",
            "the version is disabled: enable it",
        ),
        (
            "gcp-sm:projects/p1/secrets/s/versions/2",
            "projects/p1/secrets/s/versions/2",
            "the version is destroyed: a destroyed version never comes back",
        ),
        (
            "gcp-sm:projects/p1/secrets/nope",
            "projects/p1/secrets/nope/versions/latest",
            "not found",
        ),
        (
            "gcp-sm:projects/p1/secrets/s/versions/9",
            "projects/p1/secrets/s/versions/9",
            "not found",
        ),
        (
            "gcp-sm:projects/p1/secrets/s/versions/3#missing",
            "projects/p1/secrets/s/versions/3",
            "missing",
        ),
        (
            "gcp-sm:projects/p1/secrets/bin",
            "projects/p1/secrets/bin/versions/latest",
            "binary, not UTF-8 text",
        ),
    ];
    for (source, resource, what) in cases {
        let p = profile(
            place,
            "",
            &format!("OK = \"gcp-sm:projects/p1/secrets/s/versions/3#a\"\nBAD = \"{source}\"\n"),
        );
        let o = refused(&s, &p);
        let head = format!("gcp-sm {resource} ({place}): ");
        assert!(o.stderr.contains("BAD"), "{source}: {o:?}");
        assert!(o.stderr.contains(&head), "{source}: no {head:?} in {o:?}");
        assert!(o.stderr.contains(what), "{source}: no {what:?} in {o:?}");
        let audit = std::fs::read_to_string(s.path().join("audit.jsonl")).unwrap_or_default();
        for value in [
            "gcp-disabled-value-1",
            "gcp-destroyed-value-2",
            "gcp-enabled-value-3",
        ] {
            assert!(!o.stderr.contains(value), "{value} in stderr: {o:?}");
            assert!(!audit.contains(value), "{value} in the audit log");
        }
    }
}

/// Rotation: the probe rejects the first value, and while it does, a new version is added
/// to the secret (as an operator rotating it would); the refetch reads `latest` again, gets
/// the new version, and the child starts with it.
#[test]
fn gcp_rotation_new_version_is_picked_up_by_the_refetch() {
    let d = Drongo::start();
    d.create("p1", "rot");
    d.add("p1", "rot", b"gcp-stale-key-000000");
    let endpoint = d.endpoint.clone();
    let probe = ProbeServer::start_with("gcp-fresh-key-111111", move || {
        gcp_add_version(&endpoint, "p1", "rot", b"gcp-fresh-key-111111");
    });
    let s = Scratch::new();
    let p = profile(
        &d.endpoint,
        "",
        &format!(
            "[secrets.KEY]\nfrom = \"gcp-sm:projects/p1/secrets/rot\"\nverify = {{ probe = \"http\", url = \"{}\" }}\n",
            probe.url
        ),
    )
    .replace("[secrets]\n[secrets.KEY]", "[secrets.KEY]");
    let o = s
        .agentrun()
        .profile(&p)
        .args(["--no-redact", "--", "sh", "-c", "printf %s \"$KEY\""])
        .run();
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.stdout, "gcp-fresh-key-111111");
    assert_eq!(probe.hits.load(Ordering::SeqCst), 2);
    let verify = o
        .audit_events()
        .into_iter()
        .find(|e| e["event"] == "verify")
        .unwrap();
    assert_eq!(verify["attempts"][0]["outcome"], "failed", "{verify}");
    assert_eq!(verify["attempts"][1]["outcome"], "ok", "{verify}");
    assert_eq!(
        verify["attempts"][1]["refetch"]["same_value"], false,
        "{verify}"
    );
}

/// drongo does not model IAM: it never answers 401 or 403. A local server answers exactly
/// Secret Manager's status and error body for each; neither is retried (one request). It
/// also answers what drongo cannot: a 503 (retried: `retries` + 1 requests), a payload whose
/// `dataCrc32c` does not match (refused), and an empty payload (refused).
#[test]
fn gcp_permission_denied_unauthenticated_5xx_and_checksum() {
    let s = Scratch::new();
    let secret = "gcp-sm:projects/p1/secrets/api";
    let resource = "projects/p1/secrets/api/versions/latest";
    let cases = [
        (
            FixedAnswer::google_error(
                403,
                "Forbidden",
                "PERMISSION_DENIED",
                "Permission 'secretmanager.versions.access' denied for resource (or it may not exist).",
            ),
            "permission denied",
            "roles/secretmanager.secretAccessor",
            1,
        ),
        (
            FixedAnswer::google_error(
                401,
                "Unauthorized",
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials.",
            ),
            "credentials were rejected",
            "gcloud auth application-default login",
            1,
        ),
        (
            FixedAnswer::google_error(
                503,
                "Service Unavailable",
                "UNAVAILABLE",
                "The service is currently unavailable.",
            ),
            "UNAVAILABLE (HTTP 503)",
            "after 2 tries",
            2,
        ),
        (
            FixedAnswer::start(
                "200 OK",
                r#"{"name":"projects/p1/secrets/api/versions/1","payload":{"data":"Z2NwLWNvcnJ1cHRlZA==","dataCrc32c":"12345"}}"#,
            ),
            "does not match its data_crc32c checksum",
            "try again",
            1,
        ),
        (
            FixedAnswer::start(
                "200 OK",
                r#"{"name":"projects/p1/secrets/api/versions/1","payload":{}}"#,
            ),
            "the value is empty",
            "never valid",
            1,
        ),
    ];
    for (server, what, fix, requests) in cases {
        let p = profile(
            &server.endpoint,
            "retries = 1",
            &format!("K = \"{secret}\"\n"),
        );
        let o = refused(&s, &p);
        let head = format!("gcp-sm {resource} ({}): ", server.endpoint);
        assert!(o.stderr.contains(&head), "no {head:?} in {o:?}");
        assert!(o.stderr.contains(what), "no {what:?} in {o:?}");
        assert!(o.stderr.contains(fix), "no {fix:?} in {o:?}");
        assert!(!o.stderr.contains("gcp-corrupted"), "{o:?}");
        assert_eq!(
            server.hits.load(Ordering::SeqCst),
            requests,
            "{what}: {o:?}"
        );
    }
}

/// A listening socket that never answers: the run stops after `[gcp].timeout` (the limit
/// of the whole call, retries included), within a second of it, naming the limit. A closed
/// port: "cannot connect", at once.
#[test]
fn gcp_hung_and_unreachable_endpoints() {
    let s = Scratch::new();
    let silent = Silent::start();
    let p = profile(
        &silent.addr,
        "timeout = \"1s\"\nretries = 2",
        "K = \"gcp-sm:projects/p1/secrets/api\"\n",
    );
    let start = Instant::now();
    let o = refused(&s, &p);
    let took = start.elapsed();
    assert!(
        o.stderr.contains(&format!(
            "gcp-sm projects/p1/secrets/api/versions/latest ({}): no answer within 1s",
            silent.addr
        )),
        "{o:?}"
    );
    assert!(o.stderr.contains("raise [gcp].timeout"), "{o:?}");
    assert!(
        took < Duration::from_millis(2500),
        "a 1s timeout took {took:?}"
    );

    let closed = format!("http://127.0.0.1:{}", free_port());
    let p = profile(
        &closed,
        "timeout = \"5s\"",
        "K = \"gcp-sm:projects/p1/secrets/api\"\n",
    );
    let start = Instant::now();
    let o = refused(&s, &p);
    assert!(
        o.stderr.contains(&format!(
            "gcp-sm projects/p1/secrets/api/versions/latest ({closed}): cannot connect"
        )),
        "{o:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(4), "{o:?}");
}

/// The short form without `[gcp].project` is one message before anything is fetched: the
/// endpoint never sees a request, and the child never starts.
#[test]
fn gcp_short_form_without_project_is_refused_before_any_fetch() {
    let server = FixedAnswer::start("200 OK", "{}");
    let s = Scratch::new();
    let p = profile(
        &server.endpoint,
        "",
        "A = \"gcp-sm:api-key\"\nB = \"gcp-sm:other/versions/2\"\n",
    );
    let o = refused(&s, &p);
    assert!(
        o.stderr.contains(
            "`gcp-sm:api-key` names no project: set [gcp].project, or write `gcp-sm:projects/PROJECT/secrets/api-key`"
        ),
        "{o:?}"
    );
    assert_eq!(o.stderr.matches("names no project").count(), 1, "{o:?}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);
}
