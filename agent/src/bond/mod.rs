//! The uplink: MQTT links (one per modem) fed by a sans-IO scheduler.
//!
//! [`scheduler::Scheduler`] decides which batch goes on which link and when a batch must move;
//! [`link`] runs one rumqttc session per link and reports "up", "down" and "batch X acked".
//! Today the scheduler stripes by free in-flight capacity with live-first ordering and a fixed
//! ack timeout; link scoring from RTT, goodput and radio metrics comes with the bonding stage.

pub mod link;
pub mod scheduler;

#[cfg(test)]
mod sim_tests;
