//! Reading certificate files, with refusals that say which file and why.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use ringkv_core::error::{Error, Result};

fn refused(what: &str, path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Config(format!("{what} = {}: {why}", path.display()))
}

/// A certificate chain (leaf first) whose leaf is valid now.
pub fn certificate_chain(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| refused(what, path, e))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| refused(what, path, e))?;
    let Some(leaf) = chain.first() else {
        return Err(refused(what, path, "no PEM certificate in the file"));
    };
    check_validity(leaf, SystemTime::now()).map_err(|why| refused(what, path, why))?;
    Ok(chain)
}

/// A PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(path: &Path, what: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| refused(what, path, e))
}

/// A CA bundle as trust roots. A CA outside its validity window is left
/// out with a warning (a bundle keeps the old CA beside the new one during
/// a CA rotation, and the old one may expire first); a bundle with no
/// valid CA is refused.
pub fn roots(path: &Path, what: &str) -> Result<Arc<RootCertStore>> {
    let mut store = RootCertStore::empty();
    let mut left_out = Vec::new();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| refused(what, path, e))? {
        let cert = cert.map_err(|e| refused(what, path, e))?;
        if let Err(why) = check_validity(&cert, SystemTime::now()) {
            left_out.push(why);
            continue;
        }
        store.add(cert).map_err(|e| refused(what, path, e))?;
    }
    if store.is_empty() {
        let why = if left_out.is_empty() {
            "no PEM certificate in the file".to_string()
        } else {
            format!("no CA in the file is valid now: {}", left_out.join("; "))
        };
        return Err(refused(what, path, why));
    }
    for why in left_out {
        tracing::warn!(
            "{what} = {}: a CA is left out of the bundle: {why}",
            path.display()
        );
    }
    Ok(Arc::new(store))
}

fn parse<'a>(cert: &'a CertificateDer<'_>) -> std::result::Result<X509Certificate<'a>, String> {
    X509Certificate::from_der(cert.as_ref())
        .map(|(_, parsed)| parsed)
        .map_err(|e| format!("not a valid X.509 certificate: {e}"))
}

/// Refuses a certificate outside its validity window at `now`.
pub fn check_validity(
    cert: &CertificateDer<'_>,
    now: SystemTime,
) -> std::result::Result<(), String> {
    let parsed = parse(cert)?;
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let validity = parsed.validity();
    if now < validity.not_before.timestamp() {
        return Err(format!(
            "the certificate is not valid before {} (the clock says it is earlier): use one valid now, or check this machine's clock",
            validity.not_before
        ));
    }
    if now > validity.not_after.timestamp() {
        return Err(format!(
            "the certificate expired at {}: replace it and reload (SIGHUP)",
            validity.not_after
        ));
    }
    Ok(())
}

/// The DNS names of a certificate's subject alternative names.
pub fn dns_names(cert: &CertificateDer<'_>) -> std::result::Result<Vec<String>, String> {
    let parsed = parse(cert)?;
    let names = parsed
        .subject_alternative_name()
        .map_err(|e| format!("malformed subject alternative names: {e}"))?
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(names)
}

/// Refuses this node's peer certificate unless it names `node_name`.
pub fn check_names(cert: &CertificateDer<'_>, node_name: &str, what: &str) -> Result<()> {
    let names = dns_names(cert).map_err(|e| Error::Config(format!("{what}: {e}")))?;
    if names.iter().any(|n| n.eq_ignore_ascii_case(node_name)) {
        return Ok(());
    }
    Err(Error::Config(format!(
        "{what}: the certificate names {names:?}, not this node's node.name {node_name:?}; peers would refuse it"
    )))
}

/// What a set of files looked like (modification time and length), to
/// notice a change without SIGHUP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watched(Vec<(PathBuf, Option<(SystemTime, u64)>)>);

impl Watched {
    pub fn of(paths: &[PathBuf]) -> Watched {
        Watched(
            paths
                .iter()
                .map(|p| {
                    let seen = std::fs::metadata(p)
                        .ok()
                        .and_then(|m| Some((m.modified().ok()?, m.len())));
                    (p.clone(), seen)
                })
                .collect(),
        )
    }
}
