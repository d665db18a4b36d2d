//! Secured test clusters: TLS on the client port, mutual TLS on the peer
//! port and (optionally) tokens, with certificates made at test time
//! (`ringkv_server::certs`) for the names the harness gives its nodes.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use ringkv_client::Security;
use ringkv_server::certs;

/// A root token long enough for `auth.root_token_file`.
const ROOT_TOKEN: &str = "root-token-of-a-test-cluster-0123456789abcdef";

/// The name the harness gives the node serving clients at `grpc`
/// (`test-<port>`), which its peer certificate must carry.
pub fn node_name(grpc: &str) -> String {
    format!("test-{}", grpc.rsplit(':').next().unwrap_or("node"))
}

/// What a secured cluster turns on beyond TLS and mutual TLS.
#[derive(Clone, Copy, Debug, Default)]
pub struct Secure {
    /// `auth.enabled` on every node (which excludes the fault switch).
    pub auth: bool,
    /// `tls.client_ca`: clients must present a certificate.
    pub client_certs: bool,
}

impl Secure {
    /// TLS and mutual TLS only.
    pub const TLS: Secure = Secure {
        auth: false,
        client_certs: false,
    };
    /// TLS, mutual TLS and tokens.
    pub const AUTH: Secure = Secure {
        auth: true,
        client_certs: false,
    };
}

/// A secured cluster's files.
#[derive(Clone, Debug)]
pub struct Secured {
    /// Where the certificates and the root token live.
    pub dir: PathBuf,
    pub auth: bool,
    pub client_certs: bool,
}

impl Secured {
    /// Makes the CAs (if absent) and the certificates of `names`, and the
    /// root token file.
    pub fn make(dir: &Path, names: &[String], secure: Secure) -> Result<Secured> {
        certs::make_local(dir, names, &[], &["tester".to_string()])
            .context("making test certificates")?;
        std::fs::write(dir.join("root.token"), ROOT_TOKEN)?;
        Ok(Secured {
            dir: dir.to_path_buf(),
            auth: secure.auth,
            client_certs: secure.client_certs,
        })
    }

    /// Certificates for one more node.
    pub fn add_node(&self, name: &str) -> Result<()> {
        certs::make_local(&self.dir, &[name.to_string()], &[], &[])
            .context("making test certificates")?;
        Ok(())
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The environment that secures the node called `name`.
    pub fn env_for(&self, name: &str) -> Vec<(String, String)> {
        let path = |f: String| self.file(&f).display().to_string();
        let mut env = vec![
            ("RINGKV__TLS__CERT".into(), path(format!("{name}.crt"))),
            ("RINGKV__TLS__KEY".into(), path(format!("{name}.key"))),
            ("RINGKV__TLS__PEER_CA".into(), path("peer-ca.crt".into())),
            (
                "RINGKV__TLS__PEER_CERT".into(),
                path(format!("{name}-peer.crt")),
            ),
            (
                "RINGKV__TLS__PEER_KEY".into(),
                path(format!("{name}-peer.key")),
            ),
        ];
        if self.client_certs {
            env.push((
                "RINGKV__TLS__CLIENT_CA".into(),
                path("client-ca.crt".into()),
            ));
        }
        if self.auth {
            env.push(("RINGKV__AUTH__ENABLED".into(), "true".into()));
            env.push((
                "RINGKV__AUTH__ROOT_TOKEN_FILE".into(),
                path("root.token".into()),
            ));
        }
        env
    }

    /// What a client needs: the CA of the client ports and, with auth,
    /// the root token.
    /// It carries a client certificate too, for nodes that require one
    /// (`tls.client_ca`); nodes that do not ask for one ignore it.
    pub fn security(&self) -> Security {
        Security {
            ca_pem: std::fs::read(self.file("ca.crt")).ok(),
            cert_pem: std::fs::read(self.file("client-tester.crt")).ok(),
            key_pem: std::fs::read(self.file("client-tester.key")).ok(),
            token: self.auth.then(|| ROOT_TOKEN.to_string()),
            ..Security::default()
        }
    }

    /// The CA called `stem` (`ca`, `peer-ca`, `client-ca`), to issue more.
    pub fn authority(&self, stem: &str) -> Result<certs::Authority> {
        let read = |ext: &str| std::fs::read_to_string(self.file(&format!("{stem}.{ext}")));
        Ok(certs::Authority::load(&read("crt")?, &read("key")?)?)
    }

    /// The CLI's flags for the same.
    pub fn cli_args(&self) -> Vec<String> {
        let mut args = vec![
            "--cacert".to_string(),
            self.file("ca.crt").display().to_string(),
        ];
        if self.auth {
            args.push("--token".into());
            args.push(ROOT_TOKEN.into());
        }
        args
    }

    pub fn root_token(&self) -> &'static str {
        ROOT_TOKEN
    }
}
