//! `pitlink modem sim`: the simulated world's modems on PTYs (and, with a broker, its emulated
//! links), for trying `pitlink modem <link> ...` and the agent without hardware.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use modem_hal::sim::drive::{SimWorld, WorldOptions};
use modem_hal::sim::modem::{Profile, SimConfig};
use modem_hal::sim::scenario::Scenario;
use modem_hal::sim::world::World;
use serde::Serialize;

/// Options of `pitlink modem sim`.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Scenario file (the shipped ring when absent).
    pub scenario: Option<PathBuf>,
    /// Where the modem links (`modem0`, ...) go.
    pub dir: PathBuf,
    /// World speed.
    pub speed: f64,
    /// Module simulated.
    pub profile: Profile,
    /// Re-attach outage after lock, release, reselection.
    pub reattach: Duration,
    /// Factor on command latencies.
    pub latency_scale: f64,
    /// Start link emulators in front of this broker.
    pub broker: Option<SocketAddr>,
    /// Stop after this long (default: at SIGINT/SIGTERM).
    pub duration: Option<Duration>,
    /// One JSON line instead of text.
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Started {
    scenario: String,
    lap_s: f64,
    modems: Vec<StartedModem>,
    gps: PathBuf,
}

#[derive(Debug, Serialize)]
struct StartedModem {
    name: String,
    carrier: String,
    path: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    link: Option<SocketAddr>,
}

/// Runs the simulated modems until `stop` resolves.
pub async fn run(opts: SimOptions, stop: impl std::future::Future<Output = ()>) -> Result<()> {
    let scenario = match &opts.scenario {
        Some(p) => Scenario::load(p)?,
        None => Scenario::builtin(),
    };
    std::fs::create_dir_all(&opts.dir)
        .with_context(|| format!("cannot create {}", opts.dir.display()))?;
    let world = World::new(scenario);
    let sim = SimWorld::start(
        world,
        &opts.dir,
        WorldOptions {
            speed: opts.speed,
            modem: SimConfig {
                reattach_outage: opts.reattach,
                latency_scale: opts.latency_scale,
                ..SimConfig::new(opts.profile)
            },
            broker: opts.broker,
            seed: 0,
        },
    )
    .await
    .context("cannot start the simulated modems")?;
    let sc = sim.world().scenario();
    let started = Started {
        scenario: sc.name.clone(),
        lap_s: sim.world().lap_time().as_secs_f64(),
        modems: sc
            .modems
            .iter()
            .enumerate()
            .map(|(i, m)| StartedModem {
                name: m.name.clone(),
                carrier: m.carrier.get_ref().clone(),
                path: sim.modems()[i].path().to_path_buf(),
                link: sim.links().get(i).map(|l| l.addr()),
            })
            .collect(),
        gps: sim.gps_path().to_path_buf(),
    };
    let mut out = std::io::stdout().lock();
    if opts.json {
        writeln!(out, "{}", serde_json::to_string(&started)?)?;
    } else {
        writeln!(
            out,
            "{}: {} simulated {:?} modems, lap {:.0} s, world speed {}",
            started.scenario,
            started.modems.len(),
            opts.profile,
            started.lap_s,
            opts.speed
        )?;
        for m in &started.modems {
            write!(out, "  {} ({}): {}", m.name, m.carrier, m.path.display())?;
            if let Some(l) = m.link {
                write!(out, ", link {l}")?;
            }
            writeln!(out)?;
        }
        writeln!(out, "  GPS (NMEA, 5 Hz): {}", started.gps.display())?;
        writeln!(out, "\nFor pitlink.toml:")?;
        for m in &started.modems {
            writeln!(
                out,
                "[[links]]\nname = \"{}\"\nmodem = \"{}\"",
                m.name,
                m.path.display()
            )?;
        }
        writeln!(
            out,
            "[[sources]]\nname = \"gps\"\nkind = \"nmea\"\ndevice = \"{}\"",
            started.gps.display()
        )?;
        writeln!(out, "\nStop with Ctrl-C.")?;
    }
    out.flush()?;
    drop(out);
    match opts.duration {
        Some(d) => {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = stop => {}
            }
        }
        None => stop.await,
    }
    sim.shutdown();
    // Let the modem tasks remove their links.
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}
