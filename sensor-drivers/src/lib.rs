//! Sensor sources for pitlink.
//!
//! Every source is a sans-IO core plus a thin async shell. The core is fed input (bytes from a
//! device, lines of a log, or simply the current time for the synthetic generator) and returns
//! timestamped [`Reading`]s; it reads no clock and owns no device. The shell opens the device by
//! path, feeds the core, stamps readings, hands them to an [`Outlet`], counts what goes wrong in
//! [`SourceStats`], and reopens a vanished device with [`Backoff`] instead of giving up.
//!
//! Sources: [`synthetic`] generator, [`candump`] log replay, [`slcan`] adapters, [`socketcan`]
//! interfaces, [`nmea`] GPS receivers and [`line`](mod@line) sensors on serial ports. [`dbc`] decodes CAN
//! frames into named physical signals.

pub mod can;
pub mod candump;
pub mod dbc;
pub mod line;
pub mod nmea;
pub mod sample;
pub mod serial;
pub mod slcan;
pub mod socketcan;
pub mod source;
pub mod synthetic;

pub use can::{CanFrame, ErrorClass, FrameError};
pub use sample::{Reading, Sample, SourceCounters, TimedFrame};
pub use source::{Backoff, Chunk, Outlet, SourceStats};
