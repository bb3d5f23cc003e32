//! Modem control for pitlink: AT transport and dialects, radio metrics, a simulated modem.
//!
//! Today: [`radio`] (the metrics types), [`at::parse`] (sans-IO parsers from AT response text
//! to those types), [`at::transport`] (a sans-IO core that frames lines, matches responses
//! to commands and separates URCs, and a tokio shell that owns a serial port) and [`modem`] (the
//! [`modem::Modem`] trait and [`modem::AtModem`], its implementation over AT commands). The agent does
//! not talk to modems yet; the `modem` key of a `[[links]]` table is accepted and ignored.

pub mod at;
#[cfg(feature = "modemmanager")]
pub mod mm;
pub mod modem;
pub mod radio;
pub mod sim;
