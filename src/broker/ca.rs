//! The run's certificate authority: ECDSA P-256, made fresh by [`Ca::new`], its private key
//! in this process's memory only. Leaves are made on demand per host (the CONNECT target)
//! and cached for the run. [`write_bundle`] writes the trust bundle the child reads: the
//! system roots plus this CA (`SSL_CERT_FILE` replaces a client's roots, so the system roots
//! must be in it or every tunnelled host breaks).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::Error;

/// How long the CA and its leaves are valid (from an hour before the start, against clock
/// skew): longer than any run is expected to last.
const VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);

/// The run's CA and its leaf cache.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    leaves: Mutex<HashMap<String, Arc<ServerConfig>>>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca { .. }")
    }
}

fn validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + VALIDITY;
}

impl Ca {
    /// A fresh CA for this run.
    pub fn new() -> Result<Ca, Error> {
        super::install_crypto_provider();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(Error::cert)?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "agentrun broker CA (this run only)");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "agentrun");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params);
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(Error::cert)?;
        Ok(Ca {
            issuer,
            leaves: Mutex::new(HashMap::new()),
        })
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA certificate, DER.
    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// The TLS server configuration presenting a leaf for `host` (a DNS name, or an IP
    /// literal without brackets), made on first use and cached for the run.
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, Error> {
        let host = super::rules::normalize_host(host);
        let mut cache = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.get(&host) {
            return Ok(c.clone());
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(Error::cert)?;
        let mut params = CertificateParams::new(vec![host.clone()]).map_err(Error::cert)?;
        params
            .distinguished_name
            .push(DnType::CommonName, host.as_str());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        // Python 3.13+ rejects certificates without key identifiers.
        params.use_authority_key_identifier_extension = true;
        validity(&mut params);
        let leaf = params.signed_by(&key, &self.issuer).map_err(Error::cert)?;
        let chain = vec![leaf.der().clone(), self.der()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(Error::tls)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        cache.insert(host, config.clone());
        Ok(config)
    }
}

/// The distributions' single-file bundles of the system roots (Debian/Ubuntu, Fedora/RHEL,
/// openSUSE, Alpine/Arch), tried after `$SSL_CERT_FILE`.
const BUNDLE_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The system's roots as one PEM file's bytes, when the system has such a file. Reading it
/// whole takes well under a millisecond; `rustls-native-certs` also opens every file of
/// `/etc/ssl/certs` (hundreds), which cost a run about 30 ms.
fn system_bundle_file() -> Option<Vec<u8>> {
    let env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    env.into_iter()
        .chain(BUNDLE_FILES.iter().map(std::path::PathBuf::from))
        .find_map(|p| std::fs::read(p).ok())
        .filter(|b| parse_pem_certs(b).is_ok())
}

/// The system's roots: the distribution's bundle file, or what `rustls-native-certs` finds
/// (`SSL_CERT_FILE`/`SSL_CERT_DIR`, the platform's store) where there is none.
pub fn system_roots() -> Vec<CertificateDer<'static>> {
    match system_bundle_file().and_then(|b| parse_pem_certs(&b).ok()) {
        Some(certs) => certs,
        None => rustls_native_certs::load_native_certs().certs,
    }
}

/// The bundle the child trusts: the system roots plus `ca`, as PEM text.
pub fn bundle_pem(ca: &Ca) -> String {
    let mut out = match system_bundle_file() {
        Some(b) => String::from_utf8_lossy(&b).into_owned(),
        None => system_roots()
            .iter()
            .map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.to_vec())))
            .collect(),
    };
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&ca.pem());
    out
}

/// Write [`bundle_pem`] to `path` (created new, mode 0644: the child must read it; it holds
/// no secret). The caller decides where, and removes it at exit.
pub fn write_bundle(ca: &Ca, path: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)?;
    // No fsync: the file lives only as long as the run, and is removed at its end.
    f.write_all(bundle_pem(ca).as_bytes())
}

/// Parse PEM bytes (for `[broker].ca_cert`) into certificates.
pub fn parse_pem_certs(pem_bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let items = pem::parse_many(pem_bytes).map_err(|e| Error::Roots(e.to_string()))?;
    let certs: Vec<_> = items
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| CertificateDer::from(p.into_contents()))
        .collect();
    if certs.is_empty() {
        return Err(Error::Roots("no CERTIFICATE block in it".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_makes_cached_leaves_per_host() {
        let ca = Ca::new().expect("ca");
        assert!(ca.pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let a = ca.server_config("API.example.com").expect("leaf");
        let b = ca.server_config("api.example.com").expect("leaf");
        assert!(Arc::ptr_eq(&a, &b));
        let ip = ca.server_config("::1").expect("ip leaf");
        assert!(!Arc::ptr_eq(&a, &ip));
        // Two runs never share a CA.
        assert_ne!(Ca::new().expect("ca").pem(), ca.pem());
    }

    #[test]
    fn bundle_has_system_roots_and_the_ca() {
        let ca = Ca::new().expect("ca");
        let b = bundle_pem(&ca);
        assert!(b.ends_with(&ca.pem()));
        let n = parse_pem_certs(b.as_bytes()).expect("parses").len();
        assert_eq!(n, system_roots().len() + 1);
        assert!(parse_pem_certs(b"nothing").is_err());
    }
}
