//! MQTT session options shared by the uplink links and the receiver.

use anyhow::{Context, Result};
use rumqttc::{MqttOptions, NetworkOptions, TlsConfiguration, Transport};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where the broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerAddr {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

impl std::fmt::Display for BrokerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BrokerAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
            BrokerAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl BrokerAddr {
    /// Parses `host:port`, `[v6]:port` or `unix:/path` (also a bare absolute path).
    pub fn parse(s: &str) -> Result<BrokerAddr, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            return Ok(BrokerAddr::Unix(PathBuf::from(p)));
        }
        if s.starts_with('/') {
            return Ok(BrokerAddr::Unix(PathBuf::from(s)));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("broker '{s}': expected HOST:PORT or unix:/PATH"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("broker '{s}': port '{port}' is not a number from 1 to 65535"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("broker '{s}': empty host"));
        }
        Ok(BrokerAddr::Tcp {
            host: host.to_string(),
            port,
        })
    }
}

/// TLS material (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub client: Option<(PathBuf, PathBuf)>,
}

/// Everything needed to open one MQTT session.
#[derive(Debug, Clone)]
pub struct Session {
    pub addr: BrokerAddr,
    pub client_id: String,
    pub keep_alive: Duration,
    pub clean_session: bool,
    pub credentials: Option<(String, String)>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Interface to bind the socket to (SO_BINDTODEVICE).
    pub bind_device: Option<String>,
    /// Largest packet in either direction.
    pub max_packet: usize,
    pub inflight: u16,
    pub manual_acks: bool,
}

impl Session {
    pub fn options(&self) -> (MqttOptions, NetworkOptions) {
        let mut o = match &self.addr {
            BrokerAddr::Tcp { host, port } => MqttOptions::new(&self.client_id, host, *port),
            BrokerAddr::Unix(p) => {
                let mut o = MqttOptions::new(&self.client_id, p.to_string_lossy(), 0);
                o.set_transport(Transport::unix());
                o
            }
        };
        o.set_keep_alive(self.keep_alive)
            .set_clean_session(self.clean_session)
            .set_max_packet_size(self.max_packet, self.max_packet)
            .set_inflight(self.inflight.max(1))
            .set_manual_acks(self.manual_acks);
        if let Some((u, p)) = &self.credentials {
            o.set_credentials(u, p);
        }
        if let Some(cfg) = &self.tls {
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                cfg.clone(),
            )));
        }
        let mut n = NetworkOptions::new();
        n.set_connection_timeout(5);
        if let Some(dev) = &self.bind_device {
            n.set_bind_device(dev);
        }
        (o, n)
    }
}

/// Builds a rustls client config on the `ring` provider from PEM files.
pub fn tls_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.ca)
        .with_context(|| format!("{}: cannot read CA certificates", files.ca.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: malformed PEM certificate", files.ca.display()))?;
    if cas.is_empty() {
        anyhow::bail!(
            "{}: no certificate found in the CA file",
            files.ca.display()
        );
    }
    for c in cas {
        roots
            .add(c)
            .with_context(|| format!("{}: unusable CA certificate", files.ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots);
    let cfg = match &files.client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("{}: cannot read client certificate", cert.display()))?
                .collect::<Result<_, _>>()
                .with_context(|| format!("{}: malformed PEM certificate", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("{}: cannot read client key", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .context("client certificate and key do not match")?
        }
    };
    Ok(Arc::new(cfg))
}

/// The broker address and TLS settings of a config's `[broker]` table.
pub fn from_config(
    b: &crate::config::BrokerConfig,
) -> Result<(BrokerAddr, Option<Arc<rustls::ClientConfig>>)> {
    let addr = match (&b.host, &b.socket) {
        (_, Some(p)) => BrokerAddr::Unix(p.clone()),
        (Some(h), None) => BrokerAddr::Tcp {
            host: h.clone(),
            port: b.port,
        },
        (None, None) => anyhow::bail!("[broker] needs 'host' or 'socket'"),
    };
    let tls = match &b.tls {
        None => None,
        Some(t) => Some(tls_config(&TlsFiles {
            ca: t.ca.clone(),
            client: t.cert.clone().zip(t.key.clone()),
        })?),
    };
    Ok((addr, tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_broker_addresses() {
        assert_eq!(
            BrokerAddr::parse("127.0.0.1:1883"),
            Ok(BrokerAddr::Tcp {
                host: "127.0.0.1".into(),
                port: 1883
            })
        );
        assert_eq!(
            BrokerAddr::parse("[::1]:8883"),
            Ok(BrokerAddr::Tcp {
                host: "::1".into(),
                port: 8883
            })
        );
        assert_eq!(
            BrokerAddr::parse("unix:/run/m.sock"),
            Ok(BrokerAddr::Unix("/run/m.sock".into()))
        );
        assert!(BrokerAddr::parse("host").is_err());
        assert!(BrokerAddr::parse("host:99999").is_err());
    }
}
