//! The secrets stage, as the orchestrator runs it: fetch every declared secret at once,
//! verify those with checks, refetch each failure once (it may have been rotated) and check
//! it again, then sort the values into accepted and withheld. `secrets` only fetches and
//! `verify` only checks one value; the loop over both is policy, and lives here.

use super::{Fail, progress};
use crate::audit::{Audit, events};
use crate::context::Context;
use crate::profile::{Inject, Profile, SecretSpec, SourceKind};
use crate::redact::Redactor;
use crate::secrets::{Fetched, Fetcher};
use crate::verify::{self, Attempt, Outcome, RefetchReport, SecretsCheck, Verification};
use secrecy::{ExposeSecret, SecretString};
use std::time::{Duration, Instant};

/// One secret after fetch and verification.
pub struct Got {
    pub name: String,
    pub inject: Inject,
    pub value: SecretString,
}

/// The secrets stage: everything fetched at once, verified (a failed check refetches once),
/// reported per secret; only accepted values come out.
pub struct Secrets {
    pub got: Vec<Got>,
    /// Optional secrets fetched but left out (they failed their check): never handed over,
    /// but the child may still come across the value, so the redactor knows it.
    pub withheld: Vec<Got>,
    pub report: verify::SecretsCheck,
    pub errors: Vec<String>,
}

/// Fetch every declared secret at once, verify them (a failed check refetches once), and
/// report per secret (to the audit log too, when given one); only accepted values come out.
pub fn fetch_and_verify(profile: &Profile, ctx: &Context, audit: Option<&mut Audit>) -> Secrets {
    let fetcher = Fetcher::new(profile, ctx);
    let mut fetched = fetch_all(&fetcher, &profile.secrets);
    let verifications = verify_all(&fetcher, &profile.secrets, &mut fetched);
    let report = verify::summarize(&profile.secrets, &fetched, &verifications);
    let mut errors = Vec::new();
    let mut got = Vec::new();
    let mut withheld = Vec::new();
    for ((spec, f), r) in profile.secrets.iter().zip(fetched).zip(&report.secrets) {
        match f.value {
            Err(e) if spec.required => errors.push(format!(
                "secret {}: {} ({}): {e}{}",
                spec.name,
                spec.source_text,
                spec.source.kind(),
                relative_path_note(spec, ctx)
            )),
            Ok(value) if r.verify.as_ref().is_none_or(verify::Verification::passed) => {
                got.push(Got {
                    name: spec.name.clone(),
                    inject: spec.inject,
                    value,
                })
            }
            // Optional and invalid: left out (the audit log says so), but redacted.
            Ok(value) => withheld.push(Got {
                name: spec.name.clone(),
                inject: spec.inject,
                value,
            }),
            // Optional and missing: left out.
            _ => {}
        }
    }
    if let Some(e) = verify::refusal(&verifications) {
        errors.push(e.to_string());
    }
    if let Some(audit) = audit {
        for r in &report.secrets {
            let accepted =
                r.fetch.is_ok() && r.verify.as_ref().is_none_or(verify::Verification::passed);
            audit.record(&events::Secret {
                name: &r.name,
                source: r.kind,
                location: &r.source,
                required: r.required,
                fetch: events::Fetch {
                    outcome: &r.fetch,
                    left_out: (!r.required && !accepted).then_some("optional"),
                },
                duration_ms: events::ms(r.fetch_time),
            });
        }
        for v in &verifications {
            audit.record(&events::Verify(v));
        }
    }
    Secrets {
        got,
        withheld,
        report,
        errors,
    }
}

/// Every secret at once, with a note on the terminal while it takes long (see `progress`).
fn fetch_all(fetcher: &Fetcher, specs: &[SecretSpec]) -> Vec<Fetched> {
    let _note = progress::show(format!("fetching {}", described(specs.iter())));
    fetcher.fetch_all(specs)
}

/// `A from vault, B from aws-sm` for a progress note.
fn described<'a>(specs: impl Iterator<Item = &'a SecretSpec>) -> String {
    progress::sources(specs.map(|s| {
        (
            s.name.as_str(),
            s.source.kind().scheme(),
            s.source.is_remote(),
        )
    }))
}

/// For a `file:` or `dotenv:` source written with a relative path: ` (... resolved against
/// the working directory ...)`, else nothing.
fn relative_path_note(spec: &SecretSpec, ctx: &Context) -> String {
    if !matches!(spec.source.kind(), SourceKind::File | SourceKind::Dotenv) {
        return String::new();
    }
    spec.source_text
        .split_once(':')
        .map(|(_, rest)| rest.split(['#', '?']).next().unwrap_or(rest))
        .and_then(|written| crate::profile::source::relative_note(written, &ctx.cwd))
        .map(|n| format!(" ({n})"))
        .unwrap_or_default()
}

/// Verify every fetched secret that has checks; on failure refetch it once and check again.
///
/// `fetched` is `fetcher.fetch_all(specs)` (same order). A value that passes after the refetch
/// replaces the first one in `fetched`, so the child gets the rotated credential. Secrets whose
/// fetch failed, or without checks, get no [`Verification`]. Probes run concurrently.
pub fn verify_all(
    fetcher: &Fetcher,
    specs: &[SecretSpec],
    fetched: &mut [Fetched],
) -> Vec<Verification> {
    let todo: Vec<usize> = specs
        .iter()
        .zip(fetched.iter())
        .enumerate()
        .filter(|(_, (spec, f))| !spec.verify.is_empty() && f.value.is_ok())
        .map(|(i, _)| i)
        .collect();
    if todo.is_empty() {
        return Vec::new();
    }
    let checks: Vec<(usize, SecretString)> = todo
        .iter()
        .filter_map(|&i| fetched[i].value.as_ref().ok().map(|v| (i, v.clone())))
        .collect();
    let first = run_checks(fetcher, specs, &checks);
    let mut verifications: Vec<Verification> = first
        .iter()
        .map(|(i, outcome, duration)| Verification {
            name: specs[*i].name.clone(),
            required: specs[*i].required,
            attempts: vec![Attempt {
                attempt: 1,
                refetch: None,
                outcome: outcome.clone(),
                duration: *duration,
            }],
        })
        .collect();

    // Refetch every failure at once, then check the new values at once.
    let failed: Vec<(usize, usize)> = first
        .iter()
        .enumerate()
        .filter(|(_, (_, o, _))| !o.is_ok())
        .map(|(k, (i, _, _))| (k, *i))
        .collect();
    if failed.is_empty() {
        return verifications;
    }
    let refetch_specs: Vec<&SecretSpec> = failed.iter().map(|(_, i)| &specs[*i]).collect();
    let refetched = {
        let _note = progress::show(format!(
            "refetching {}",
            described(refetch_specs.iter().copied())
        ));
        fetcher.fetch_many(&refetch_specs)
    };
    let mut second_checks = Vec::new();
    for ((k, i), f) in failed.iter().zip(refetched) {
        match f.value {
            Err(e) => verifications[*k].attempts.push(Attempt {
                attempt: 2,
                refetch: Some(RefetchReport {
                    outcome: Outcome::Failed(e.to_string()),
                    duration: f.duration,
                    same_value: false,
                }),
                outcome: Outcome::Failed(format!("refetch failed: {e}")),
                duration: Duration::ZERO,
            }),
            Ok(v) => {
                let same = fetched[*i]
                    .value
                    .as_ref()
                    .is_ok_and(|old| old.expose_secret() == v.expose_secret());
                second_checks.push((*k, *i, v, f.duration, same));
            }
        }
    }
    let pairs: Vec<(usize, SecretString)> = second_checks
        .iter()
        .map(|(_, i, v, _, _)| (*i, v.clone()))
        .collect();
    let second = run_checks(fetcher, specs, &pairs);
    for ((k, i, value, refetch_time, same), (_, outcome, duration)) in
        second_checks.into_iter().zip(second)
    {
        if outcome.is_ok() {
            fetched[i].value = Ok(value);
        }
        verifications[k].attempts.push(Attempt {
            attempt: 2,
            refetch: Some(RefetchReport {
                outcome: Outcome::Ok,
                duration: refetch_time,
                same_value: same,
            }),
            outcome,
            duration,
        });
    }
    verifications
}

/// Format checks and probes for `(index into specs, value)`, all probes at once.
fn run_checks(
    fetcher: &Fetcher,
    specs: &[SecretSpec],
    checks: &[(usize, SecretString)],
) -> Vec<(usize, Outcome, Duration)> {
    let needs_runtime = checks.iter().any(|(i, _)| specs[*i].verify.probe.is_some());
    if !needs_runtime {
        return checks
            .iter()
            .map(|(i, v)| {
                let start = Instant::now();
                let r = verify::check_format(&specs[*i].verify, v);
                (*i, Outcome::from_result(r), start.elapsed())
            })
            .collect();
    }
    let probed: Vec<&str> = checks
        .iter()
        .filter(|(i, _)| specs[*i].verify.probe.is_some())
        .map(|(i, _)| specs[*i].name.as_str())
        .collect();
    let _note = progress::show(format!("probing {}", probed.join(", ")));
    let rt = match fetcher.runtime() {
        Ok(rt) => rt,
        Err(msg) => {
            return checks
                .iter()
                .map(|(i, _)| (*i, Outcome::Failed(msg.clone()), Duration::ZERO))
                .collect();
        }
    };
    rt.block_on(futures_util::future::join_all(checks.iter().map(
        |(i, v)| async move {
            let start = Instant::now();
            let r = verify::check_value(&specs[*i].verify, v).await;
            (*i, Outcome::from_result(r), start.elapsed())
        },
    )))
}

/// What `check` reports about the secrets: fetch everything, verify it, keep no value.
pub fn check(fetcher: &Fetcher, specs: &[SecretSpec]) -> SecretsCheck {
    let mut fetched = fetch_all(fetcher, specs);
    let verifications = verify_all(fetcher, specs, &mut fetched);
    verify::summarize(specs, &fetched, &verifications)
}

/// The run's redactor: every accepted secret value plus the profile's rules and patterns.
/// A secret too short to redact without mangling all output stops the run.
pub fn build_redactor(profile: &Profile, got: &[Got], withheld: &[Got]) -> Result<Redactor, Fail> {
    refuse_too_short(got)?;
    let pairs: Vec<(&str, &SecretString)> = got
        .iter()
        .chain(redactable(withheld))
        .map(|g| (g.name.as_str(), &g.value))
        .collect();
    crate::launch::redactor::build(&profile.redact, &profile.path, &pairs).map_err(Fail::setup)
}

/// A secret too short to redact without mangling all output stops the run.
pub fn refuse_too_short(got: &[Got]) -> Result<(), Fail> {
    match got
        .iter()
        .find(|g| g.value.expose_secret().len() < crate::redact::MIN_SECRET_LEN)
    {
        Some(g) => Err(Fail::setup(format!(
            "secret {} is shorter than {} characters: it cannot be redacted without mangling \
             all output; use a real credential, or pass --no-redact (operator only)",
            g.name,
            crate::redact::MIN_SECRET_LEN
        ))),
        None => Ok(()),
    }
}

/// The left-out values long enough to redact (a short one cannot be, and is not handed over).
pub fn redactable(withheld: &[Got]) -> impl Iterator<Item = &Got> {
    withheld
        .iter()
        .filter(|g| g.value.expose_secret().len() >= crate::redact::MIN_SECRET_LEN)
}

/// The accepted secrets as the launch injects them.
pub fn injected(got: &[Got]) -> Vec<crate::launch::Injected<'_>> {
    got.iter()
        .map(|g| crate::launch::Injected {
            name: &g.name,
            value: &g.value,
            inject: g.inject,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! The loop with local sources (the servers' cases are in the remote tests): a failed
    //! check refetches once, a rotated value that passes replaces the first, and a value
    //! that fails twice refuses a required secret and leaves out an optional one.
    use super::*;
    use crate::profile::Resolve;
    use std::path::Path;

    fn setup(dir: &Path, text: &str) -> (Profile, Context) {
        let profile = Profile::parse(
            &dir.join("p.toml"),
            text,
            &Resolve {
                cwd: dir,
                home: Some(dir),
                xdg_state_home: None,
            },
        )
        .unwrap();
        let ctx = Context {
            env: Default::default(),
            cwd: dir.to_path_buf(),
            home: Some(dir.to_path_buf()),
        };
        (profile, ctx)
    }

    const PROFILE: &str = "version = 1\n\
        [secrets.A]\nfrom = \"file:a\"\nverify = { pattern = 'good-[a-z]+' }\n\
        [secrets.B]\nfrom = \"file:b\"\nrequired = false\nverify = { min_length = 30 }\n\
        [secrets.C]\nfrom = \"file:c\"\n";

    #[test]
    fn a_failed_check_refetches_once_and_reports_each_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a"), "good-abcdefghijkl").unwrap();
        std::fs::write(d.join("b"), "too-short-value-xyz").unwrap();
        std::fs::write(d.join("c"), "unchecked-value-123").unwrap();
        let (profile, ctx) = setup(d, PROFILE);
        let fetcher = Fetcher::new(&profile, &ctx);
        let mut fetched = fetcher.fetch_all(&profile.secrets);
        let v = verify_all(&fetcher, &profile.secrets, &mut fetched);
        // C has no checks: no verification.
        assert_eq!(v.len(), 2);
        assert!(v[0].passed() && v[0].attempts.len() == 1);
        assert!(!v[1].passed());
        assert_eq!(v[1].attempts.len(), 2);
        let r = v[1].attempts[1].refetch.as_ref().unwrap();
        assert!(r.same_value && r.outcome.is_ok());
        // B is optional: no refusal, and it is withheld (redacted, never handed over).
        assert!(verify::refusal(&v).is_none());
        let s = fetch_and_verify(&profile, &ctx, None);
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        let names = |g: &[Got]| g.iter().map(|g| g.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&s.got), ["A", "C"]);
        assert_eq!(names(&s.withheld), ["B"]);
        assert!(s.report.ok);
    }

    #[test]
    fn a_required_secret_failing_twice_refuses_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a"), "bad-value-abcdef").unwrap();
        std::fs::write(d.join("b"), "a-long-enough-optional-value-0123456789").unwrap();
        std::fs::write(d.join("c"), "unchecked-value-123").unwrap();
        let (profile, ctx) = setup(d, PROFILE);
        let s = fetch_and_verify(&profile, &ctx, None);
        assert_eq!(
            s.errors,
            [
                "all credentials invalid, refusing to start: secret A: the value does not match \
                 pattern 'good-[a-z]+'; after refetch (the source returned the same value): the \
                 value does not match pattern 'good-[a-z]+'"
            ]
        );
        assert!(!s.report.ok);
    }
}
