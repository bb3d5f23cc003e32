//! The uplink: MQTT links (one per modem) fed by a sans-IO scheduler.
//!
//! [`scheduler::Scheduler`] decides which batch goes on which link, when a batch must move and
//! when an idle link needs a heartbeat: earliest completion from each link's RTT and goodput,
//! live first with backfill, failover within an RTO (link suspect or down), drain of links in
//! an unusable radio band, duplication of critical batches while the best link is poor.
//! [`link`] runs one rumqttc session per link and reports "up", "down", "batch X acked" and
//! "heartbeat N acked".

pub mod link;
pub mod scheduler;

#[cfg(test)]
mod sim_tests;
