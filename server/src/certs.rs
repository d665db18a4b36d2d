//! Certificates for test and local clusters (`ringkv-server cert`, the
//! security tests): three CAs and what they sign.
//!
//! * `ca`: signs each node's client-port certificate; clients trust it
//!   (`ringkv --cacert ca.crt`).
//! * `peer-ca`: the cluster CA (`tls.peer_ca`); signs each node's peer
//!   certificate, whose DNS name is the node's `node.name`.
//! * `client-ca`: signs client certificates (`tls.client_ca`).
//!
//! Keeping the three apart is what makes a client certificate useless on
//! the peer port. Production clusters should use their own PKI; this is
//! for getting a secured cluster running in a minute.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use ringkv_core::error::{Error, Result};

/// Lifetime of the CAs made here.
const CA_DAYS: i64 = 3650;

/// Lifetime of the leaf certificates made here.
const LEAF_DAYS: i64 = 365;

fn failed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Config(format!("{what}: {e}"))
}

/// What a leaf certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// A client port: server authentication.
    Server,
    /// A client of the client port.
    Client,
    /// A node on the peer port: serves its peers and dials them.
    Peer,
}

/// A leaf certificate to issue.
#[derive(Clone, Debug)]
pub struct Leaf {
    /// The common name.
    pub name: String,
    /// Subject alternative names: DNS names, or IP addresses.
    pub sans: Vec<String>,
    pub usage: Usage,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Leaf {
    /// Valid from an hour ago (clock skew) for [`LEAF_DAYS`].
    pub fn new(name: &str, sans: &[String], usage: Usage) -> Leaf {
        let now = OffsetDateTime::now_utc();
        Leaf {
            name: name.to_string(),
            sans: sans.to_vec(),
            usage,
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(LEAF_DAYS),
        }
    }

    /// The same certificate, valid over another window.
    pub fn valid(mut self, not_before: OffsetDateTime, not_after: OffsetDateTime) -> Leaf {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }
}

/// A certificate and its private key, PEM-encoded.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    /// Writes `<stem>.crt` and `<stem>.key` (readable by the owner only)
    /// into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf)> {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        write_file(&cert, &self.cert_pem, 0o644)?;
        write_file(&key, &self.key_pem, 0o600)?;
        Ok((cert, key))
    }
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // Written beside and renamed, so a node reloading on a file change
    // never reads half a file.
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| failed(&path.display().to_string(), e))
}

/// A certificate authority that can issue leaves.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl Authority {
    /// A new self-signed CA called `name`.
    pub fn new(name: &str) -> Result<Authority> {
        let now = OffsetDateTime::now_utc();
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| failed("CA parameters", e))?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(CA_DAYS);
        let key = KeyPair::generate().map_err(|e| failed("CA key", e))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| failed("CA certificate", e))?;
        let key_pem = key.serialize_pem();
        Ok(Authority {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA written earlier by [`Authority::write`].
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Authority> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| failed("CA key", e))?;
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| failed("CA certificate", e))?;
        Ok(Authority {
            issuer,
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
        })
    }

    /// The CA at `<dir>/<stem>.crt` and `.key`, made and written if absent.
    pub fn open_or_create(dir: &Path, stem: &str) -> Result<Authority> {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        if cert.exists() && key.exists() {
            let read = |p: &Path| {
                std::fs::read_to_string(p).map_err(|e| failed(&p.display().to_string(), e))
            };
            return Authority::load(&read(&cert)?, &read(&key)?);
        }
        let ca = Authority::new(&format!("ringkv {stem}"))?;
        ca.issued().write(dir, stem)?;
        Ok(ca)
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's own certificate and key.
    pub fn issued(&self) -> Issued {
        Issued {
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
        }
    }

    /// Issues `leaf`.
    pub fn issue(&self, leaf: &Leaf) -> Result<Issued> {
        let mut params = CertificateParams::new(leaf.sans.clone())
            .map_err(|e| failed("certificate names", e))?;
        params
            .distinguished_name
            .push(DnType::CommonName, &leaf.name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match leaf.usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::Peer => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        params.not_before = leaf.not_before;
        params.not_after = leaf.not_after;
        let key = KeyPair::generate().map_err(|e| failed("key", e))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| failed("certificate", e))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// What [`make_local`] wrote, for the caller to print.
#[derive(Debug, Default)]
pub struct Written {
    pub files: Vec<PathBuf>,
}

/// Makes (or extends) a local cluster's certificates in `dir`: the three
/// CAs if absent, for each node `<node>.crt` (client port; names the node,
/// `localhost`, `127.0.0.1` and `hosts`) and `<node>-peer.crt` (peer port;
/// names the node), and `client-<name>.crt` for each client.
pub fn make_local(
    dir: &Path,
    nodes: &[String],
    hosts: &[String],
    clients: &[String],
) -> Result<Written> {
    std::fs::create_dir_all(dir).map_err(|e| failed(&dir.display().to_string(), e))?;
    let mut written = Written::default();
    let ca = Authority::open_or_create(dir, "ca")?;
    let peer_ca = Authority::open_or_create(dir, "peer-ca")?;
    let client_ca = Authority::open_or_create(dir, "client-ca")?;
    for stem in ["ca", "peer-ca", "client-ca"] {
        written.files.push(dir.join(format!("{stem}.crt")));
    }
    for node in nodes {
        let mut sans = vec![
            node.clone(),
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ];
        sans.extend(hosts.iter().cloned());
        let (cert, _) = ca
            .issue(&Leaf::new(node, &sans, Usage::Server))?
            .write(dir, node)?;
        written.files.push(cert);
        let (cert, _) = peer_ca
            .issue(&Leaf::new(node, std::slice::from_ref(node), Usage::Peer))?
            .write(dir, &format!("{node}-peer"))?;
        written.files.push(cert);
    }
    for client in clients {
        let (cert, _) = client_ca
            .issue(&Leaf::new(client, &[], Usage::Client))?
            .write(dir, &format!("client-{client}"))?;
        written.files.push(cert);
    }
    Ok(written)
}
