//! Sensor sources for pitlink.
//!
//! Every source is a sans-IO core: it is fed input (bytes from a device, or simply the current
//! time for the synthetic generator) and returns timestamped [`Sample`]s plus counters. The agent's
//! async tasks own the devices and the clock; nothing in this crate reads either.
//!
//! Today this crate holds the [`synthetic`] generator. CAN (SocketCAN, slcan, candump replay),
//! NMEA GPS, line-oriented serial sensors and DBC decoding arrive in later stages.

pub mod sample;
pub mod synthetic;

pub use sample::{Sample, SourceCounters};
