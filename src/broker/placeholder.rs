//! Placeholders: what the child holds instead of a brokered value.
//!
//! Random for each run and never derived from the value: only the value's length and its
//! vendor prefix (so that SDKs checking the shape accept it) are kept. The rest is
//! alphanumeric, so a placeholder needs no escaping in a header, a path, a query or JSON.

use rand::Rng;
use secrecy::{ExposeSecret, SecretString};

/// Vendor prefixes kept in the placeholder, longest first so that `sk-proj-` wins over `sk-`.
/// The same vendors as the redactor's `tokens` rules (`redact::rules`), written as the exact
/// prefixes an SDK checks rather than the redactor's shorter search anchors.
pub const VENDOR_PREFIXES: &[&str] = &[
    "sk-ant-admin01-",
    "sk-ant-api03-",
    "github_pat_",
    "sk-svcacct-",
    "sk-proj-",
    "sk-admin-",
    "sk_live_",
    "sk_test_",
    "rk_live_",
    "rk_test_",
    "sk-ant-",
    "GOCSPX-",
    "glpat-",
    "gldt-",
    "whsec_",
    "xoxb-",
    "xoxp-",
    "xoxa-",
    "xoxe-",
    "xapp-",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "npm_",
    "hvs.",
    "hvb.",
    "hvr.",
    "ya29.",
    "AIza",
    "sk-",
];

/// The shortest placeholder.
pub const MIN_LEN: usize = 24;

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A fresh placeholder for `value`: its length (at least [`MIN_LEN`]), its vendor prefix,
/// random alphanumerics after it. Never equal to the value.
pub fn placeholder(value: &SecretString, rng: &mut impl Rng) -> String {
    let v = value.expose_secret();
    let prefix = VENDOR_PREFIXES
        .iter()
        .find(|p| v.starts_with(**p))
        .copied()
        .unwrap_or("");
    let len = v.len().max(MIN_LEN);
    loop {
        let mut out = String::with_capacity(len);
        out.push_str(prefix);
        while out.len() < len {
            out.push(char::from(ALNUM[rng.random_range(0..ALNUM.len())]));
        }
        // Astronomically unlikely, but a placeholder equal to (or inside) the value would
        // make substitution ambiguous.
        if out != v && !v.contains(&out) {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ph(v: &str) -> String {
        placeholder(&SecretString::from(v.to_string()), &mut rand::rng())
    }

    #[test]
    fn keeps_length_and_prefix() {
        let v = format!("sk-proj-{}", "A1b2".repeat(40));
        let p = ph(&v);
        assert_eq!(p.len(), v.len());
        assert!(p.starts_with("sk-proj-"));
        assert!(
            p["sk-proj-".len()..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric())
        );
        assert_ne!(p, v);

        let gh = format!("ghp_{}", "0123456789".repeat(4));
        let p = ph(&gh);
        assert!(p.starts_with("ghp_") && p.len() == gh.len());
        assert!(ph("sk-ant-api03-abcdefghijklmnopqrstuvwxyz").starts_with("sk-ant-api03-"));
        assert!(ph("xoxb-1234-abcdefghijklmnopqrstuvwxyz").starts_with("xoxb-"));
    }

    #[test]
    fn short_values_get_24_and_unknown_prefixes_none() {
        let p = ph("hunter2");
        assert_eq!(p.len(), MIN_LEN);
        assert!(p.bytes().all(|b| b.is_ascii_alphanumeric()));
        let p = ph("sk-x");
        assert!(p.starts_with("sk-") && p.len() == MIN_LEN);
    }

    #[test]
    fn random_per_call_and_not_derived_from_the_value() {
        let v = "the-same-value-for-every-call-0123456789";
        let a = ph(v);
        let b = ph(v);
        assert_ne!(a, b);
        // No 4-byte window of the value survives in the placeholder (beyond chance).
        let common = (0..v.len() - 8)
            .filter(|&i| a.contains(&v[i..i + 8]))
            .count();
        assert_eq!(common, 0);
    }
}
