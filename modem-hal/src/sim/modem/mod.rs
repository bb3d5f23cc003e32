//! The simulated Quectel modem: [`SimCore`] answers AT command lines from a
//! [`RadioEnv`](crate::sim::env::RadioEnv) (sans IO), and [`SimModem`] serves it on a real PTY
//! published at a stable symlink, so the real transport and driver talk to it unchanged.
//! What it answers, the quirks it reproduces and its knobs: docs/modem.md, "Simulated modem".

mod core;
mod pty;

pub use self::core::{LineSplitter, Profile, Reply, SimConfig, SimCore, SimCounters, SimStatus};
pub(crate) use self::pty::{Port, spawn_ticker};
pub use self::pty::{SimClock, SimHandle, SimModem};
