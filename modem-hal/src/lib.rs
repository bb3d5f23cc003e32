//! Modem control for pitlink: AT transport and dialects, radio metrics, a simulated modem.
//!
//! Today: [`radio`] (the metrics types) and [`at::parse`] (sans-IO parsers from AT response
//! text to those types). The agent does not talk to modems yet; the `modem` key of a
//! `[[links]]` table is accepted and ignored.

pub mod at;
pub mod radio;
