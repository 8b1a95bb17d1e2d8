//! rustls on both sides of the proxy: the client config for an https upstream (the system's
//! roots plus an optional CA file) and the acceptor of a TLS listener. aws-lc-rs, the crypto
//! provider the rest of the crate already builds.

use std::{path::Path, sync::Arc};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use crate::{
    config::env::{ENV_TLS_CERT_FILE, ENV_TLS_KEY_FILE, ENV_UPSTREAM_CA_FILE},
    error::ConfigError,
};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn invalid(var: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { var, reason }
}

/// The TLS client config for the upstream: the system's roots (only for an https upstream)
/// and the certificates of `ca_file`.
pub(crate) fn client_config(
    https: bool,
    ca_file: Option<&Path>,
) -> Result<rustls::ClientConfig, ConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    if https {
        let native = rustls_native_certs::load_native_certs();
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        tracing::debug!(added, "system CA certificates for the upstream");
    }
    if let Some(path) = ca_file {
        let certs = read_certs(path, ENV_UPSTREAM_CA_FILE)?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| invalid(ENV_UPSTREAM_CA_FILE, format!("{}: {e}", path.display())))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(ENV_UPSTREAM_CA_FILE, e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// The acceptor of a TLS listener (HTTP/2 and HTTP/1.1 offered by ALPN).
pub(crate) fn acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, ConfigError> {
    let chain = read_certs(cert, ENV_TLS_CERT_FILE)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        invalid(
            ENV_TLS_KEY_FILE,
            format!("{}: no PEM private key ({e})", key.display()),
        )
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(ENV_TLS_CERT_FILE, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            invalid(
                ENV_TLS_KEY_FILE,
                format!("does not match the certificate: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn read_certs(path: &Path, var: &'static str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| invalid(var, format!("cannot read {}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(var, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(invalid(
            var,
            format!("{} holds no certificate", path.display()),
        ));
    }
    Ok(certs)
}
