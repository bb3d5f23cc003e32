//! Modem control for pitlink: AT transport and dialects, radio metrics, a simulated modem.
//!
//! Today the crate holds the AT transport ([`at::transport`]): a sans-IO core that frames lines,
//! matches responses to commands and separates URCs, and a tokio shell that owns a serial port.

pub mod at;
