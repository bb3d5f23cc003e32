//! Mutual TLS between a link and a real Mosquitto TLS listener, with certificates made here.

use anyhow::Result;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use sensor_drivers::synthetic::Waveform;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;
use system_tests::*;

/// CA, server certificate for 127.0.0.1, client certificate; PEM files in `dir`.
fn make_pki(dir: &Path) -> Result<()> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: a certificate whose subject equals its issuer's looks self-signed.
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "pitlink test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;

    let mut server = CertificateParams::new(Vec::<String>::new())?;
    server.subject_alt_names = vec![SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST))];
    server
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let server_key = KeyPair::generate()?;
    std::fs::write(
        dir.join("server.pem"),
        server.signed_by(&server_key, &ca)?.pem(),
    )?;
    std::fs::write(dir.join("server.key"), server_key.serialize_pem())?;

    let mut client = CertificateParams::new(vec!["car-tls".to_string()])?;
    client
        .distinguished_name
        .push(DnType::CommonName, "car-tls");
    let client_key = KeyPair::generate()?;
    std::fs::write(
        dir.join("client.pem"),
        client.signed_by(&client_key, &ca)?.pem(),
    )?;
    std::fs::write(dir.join("client.key"), client_key.serialize_pem())?;
    Ok(())
}

/// A config whose broker is the TLS port, with `tls` as the [broker.tls] table.
fn tls_config(dir: &Path, broker: &Mosquitto, tls: &str) -> Result<std::path::PathBuf> {
    let s = Synth {
        name: "engine",
        channels: 8,
        rate_hz: 1000,
        waveform: "square",
    };
    let cfg = write_config(dir, "car-tls", broker.socket(), &["wwan0"], &[s])?;
    let Some(pitlink::mqtt::BrokerAddr::Tcp { port, .. }) = broker.tcp_addr() else {
        anyhow::bail!("broker has no TCP port");
    };
    let text = std::fs::read_to_string(&cfg)?;
    let sock_line = text
        .lines()
        .find(|l| l.starts_with("socket = "))
        .expect("socket line")
        .to_string();
    let text = text
        .replace(&sock_line, &format!("host = \"127.0.0.1\"\nport = {port}"))
        .replace("\n[diag]", &format!("{tls}\n\n[diag]"));
    std::fs::write(&cfg, text)?;
    Ok(cfg)
}

#[test]
fn mutual_tls_link_delivers_and_a_client_without_certificate_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki)?;
    make_pki(&pki)?;
    let broker = Mosquitto::start(
        &dir.path().join("broker"),
        BrokerOptions {
            tcp: true,
            persistence: false,
            tls: Some(BrokerTls {
                ca: pki.join("ca.pem"),
                cert: pki.join("server.pem"),
                key: pki.join("server.key"),
                require_client_cert: true,
            }),
        },
    )?;

    // Without a client certificate the broker refuses the link; data stays queued.
    let no_cert = dir.path().join("no-cert");
    std::fs::create_dir_all(&no_cert)?;
    let cfg = tls_config(
        &no_cert,
        &broker,
        &format!("\n[broker.tls]\nca = \"{}\"", pki.join("ca.pem").display()),
    )?;
    let mut d = Proc::spawn(
        &["--config", cfg.to_str().expect("utf-8"), "run"],
        &no_cert.join("daemon.log"),
    )?;
    d.wait_log("link down", Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_secs(1));
    let end = stop_daemon(&mut d, Duration::from_secs(10))?;
    assert!(!d.log_text().contains("link up"), "{}", d.log_text());
    assert!(
        end.undelivered > 0,
        "nothing was delivered, so it stays queued: {end:?}"
    );

    // With the client certificate everything arrives, exactly once: at a receiver on the unix
    // socket, and at one on MQTT 5 over mutual TLS.
    let out = dir.path().join("received.jsonl");
    let mut rx = start_receiver(dir.path(), broker.socket(), &out, "3s")?;
    let Some(pitlink::mqtt::BrokerAddr::Tcp { port, .. }) = broker.tcp_addr() else {
        anyhow::bail!("broker has no TCP port");
    };
    let out5 = dir.path().join("received-v5-tls.jsonl");
    let path = |p: &Path| p.to_str().expect("utf-8").to_string();
    let mut rx5 = Proc::spawn(
        &[
            "receive",
            "--mqtt-version",
            "5",
            "--broker",
            &format!("127.0.0.1:{port}"),
            "--ca",
            &path(&pki.join("ca.pem")),
            "--cert",
            &path(&pki.join("client.pem")),
            "--key",
            &path(&pki.join("client.key")),
            "--client-id",
            "rx-v5-tls",
            "--out",
            &path(&out5),
            "--idle-exit",
            "60s",
            "--json",
        ],
        &dir.path().join("receiver-v5-tls.log"),
    )?;
    rx5.wait_log("subscribed", Duration::from_secs(10))?;
    let with_cert = dir.path().join("with-cert");
    std::fs::create_dir_all(&with_cert)?;
    let tls = format!(
        "\n[broker.tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"",
        pki.join("ca.pem").display(),
        pki.join("client.pem").display(),
        pki.join("client.key").display()
    );
    let cfg = tls_config(&with_cert, &broker, &tls)?;
    let mut d = start_daemon(&with_cert, &cfg)?;
    std::thread::sleep(Duration::from_secs(2));
    let end = stop_daemon(&mut d, Duration::from_secs(10))?;
    assert_eq!(end.undelivered, 0, "{end:?}");
    let lines = finish_receiver(&mut rx, &out)?;
    assert_eq!(lines.len() as u64, end.generated, "every sample over TLS");
    let per = by_channel(&lines);
    assert_eq!(per.len(), 8);
    for l in &lines {
        assert_eq!(l.v, Waveform::Square.value(l.ch, l.t_us));
    }
    stop_receiver_when_quiet(&mut rx5, &out5, Duration::from_secs(2))?;
    let mut v5 = read_samples(&out5)?;
    let key = |l: &SampleLine| (l.ch, l.t_us);
    let mut v3 = lines.clone();
    v5.sort_by_key(key);
    v3.sort_by_key(key);
    assert_eq!(v5.len(), v3.len(), "MQTT 5 over mutual TLS: every sample");
    assert!(
        v5.iter()
            .zip(&v3)
            .all(|(a, b)| key(a) == key(b) && a.v == b.v),
        "the same samples on both receivers"
    );
    Ok(())
}
