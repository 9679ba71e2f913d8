//! The child's environment: exactly `pass` (globs included), `set` and the secrets.

use crate::profile::{Profile, withheld_from_globs};
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};

/// agentrun's own credentials: never copied, whatever `pass` says.
pub const OWN_CREDENTIALS: &[&str] = &[
    "VAULT_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_CLIENT_SECRET",
    "AZURE_FEDERATED_TOKEN_FILE",
    "GOOGLE_APPLICATION_CREDENTIALS",
    // The managed-identity endpoint's guard on App Service and Functions (review 15, F5).
    "IDENTITY_HEADER",
    "MSI_SECRET",
    "CREDENTIALS_DIRECTORY",
];

/// The non-secret part of the child's environment, and the names a glob would have
/// copied but dropped because they look like credentials.
pub struct BaseEnv {
    pub vars: BTreeMap<OsString, OsString>,
    pub dropped: Vec<String>,
}

/// Apply `pass` and `set` to agentrun's environment. `withheld` names variables agentrun
/// read credentials from (`env:` sources): never copied under their own name.
pub fn base(
    profile: &Profile,
    parent: &BTreeMap<OsString, OsString>,
    withheld: &[String],
) -> BaseEnv {
    let mut vars = BTreeMap::new();
    let mut dropped = Vec::new();
    let declared =
        |n: &str| profile.secrets.iter().any(|s| s.name == n) || profile.set.contains_key(n);
    for pattern in &profile.pass {
        if let Some(prefix) = pattern.strip_suffix('*') {
            for (k, v) in parent {
                let Some(name) = k.to_str() else { continue };
                if !name.starts_with(prefix) || declared(name) {
                    continue;
                }
                if withheld_from_globs(name)
                    || OWN_CREDENTIALS.contains(&name)
                    || withheld.iter().any(|w| w == name)
                {
                    dropped.push(name.to_string());
                    continue;
                }
                vars.insert(k.clone(), v.clone());
            }
        } else if let Some(v) = parent.get(OsStr::new(pattern)) {
            if withheld.contains(pattern) {
                dropped.push(pattern.clone());
            } else if !OWN_CREDENTIALS.contains(&pattern.as_str()) && !declared(pattern) {
                vars.insert(OsString::from(pattern), v.clone());
            }
        }
    }
    for (k, v) in &profile.set {
        vars.insert(OsString::from(k), OsString::from(v));
    }
    dropped.sort();
    dropped.dedup();
    // A name a glob skipped but `pass` names exactly is copied, not dropped.
    dropped.retain(|d| !vars.contains_key(OsStr::new(d)));
    BaseEnv { vars, dropped }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Resolve;
    use std::path::Path;

    fn profile(text: &str) -> Profile {
        Profile::parse(
            Path::new("/p.toml"),
            text,
            &Resolve {
                cwd: Path::new("/"),
                home: None,
                xdg_state_home: None,
            },
        )
        .unwrap()
    }

    #[test]
    fn globs_skip_credentials_and_set_wins() {
        let p = profile(
            "version = 1\n[env]\npass = [\"PATH\", \"LC_*\", \"AWS_*\"]\nset = { X = \"1\" }\n",
        );
        let parent: BTreeMap<OsString, OsString> = [
            ("PATH", "/bin"),
            ("LC_ALL", "C"),
            ("AWS_REGION", "eu"),
            ("AWS_SECRET_ACCESS_KEY", "k"),
            ("AWS_SESSION_TOKEN", "t"),
            ("HOME", "/root"),
        ]
        .into_iter()
        .map(|(a, b)| (a.into(), b.into()))
        .collect();
        let env = base(&p, &parent, &["LC_ALL".to_string()]);
        let names: Vec<_> = env
            .vars
            .keys()
            .map(|k| k.to_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["AWS_REGION", "PATH", "X"]);
        assert_eq!(
            env.dropped,
            ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "LC_ALL"]
        );
    }

    #[test]
    fn star_withholds_backend_cloud_and_own_variables() {
        let p = profile("version = 1\n[env]\npass = [\"*\", \"VAULT_NAMESPACE\"]\n");
        let parent: BTreeMap<OsString, OsString> = [
            ("PATH", "/bin"),
            ("VAULT_ADDR", "https://u:p@vault"),
            ("VAULT_ROLE_ID", "r"),
            ("VAULT_NAMESPACE", "ns"),
            ("AWS_REGION", "eu"),
            ("AWS_DEFAULT_REGION", "eu"),
            ("AWS_PROFILE", "dev"),
            ("AWS_ENDPOINT_URL", "http://u:p@x"),
            ("GOOGLE_APPLICATION_CREDENTIALS", "/k.json"),
            ("AZURE_CLIENT_ID", "c"),
            ("AGENTRUN_AUDIT_LOG", "/l"),
            // Review 15, F5: the managed-identity guard and Google's other variables.
            ("IDENTITY_HEADER", "h"),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi"),
            ("MSI_ENDPOINT", "m"),
            ("IMDS_ENDPOINT", "i"),
            ("GCE_METADATA_HOST", "g"),
            ("CLOUDSDK_CONFIG", "/c"),
            ("GOOGLE_GHA_CREDS_PATH", "/p"),
        ]
        .into_iter()
        .map(|(a, b)| (a.into(), b.into()))
        .collect();
        let env = base(&p, &parent, &[]);
        let names: Vec<_> = env
            .vars
            .keys()
            .map(|k| k.to_str().unwrap().to_string())
            .collect();
        // Named exactly, VAULT_NAMESPACE is copied; through `*` the others are not.
        assert_eq!(
            names,
            [
                "AWS_DEFAULT_REGION",
                "AWS_PROFILE",
                "AWS_REGION",
                "PATH",
                "VAULT_NAMESPACE"
            ]
        );
        assert_eq!(
            env.dropped,
            [
                "AGENTRUN_AUDIT_LOG",
                "AWS_ENDPOINT_URL",
                "AZURE_CLIENT_ID",
                "CLOUDSDK_CONFIG",
                "GCE_METADATA_HOST",
                "GOOGLE_APPLICATION_CREDENTIALS",
                "GOOGLE_GHA_CREDS_PATH",
                "IDENTITY_ENDPOINT",
                "IDENTITY_HEADER",
                "IMDS_ENDPOINT",
                "MSI_ENDPOINT",
                "VAULT_ADDR",
                "VAULT_ROLE_ID"
            ]
        );
    }
}
