//! AT command control of cellular modems.

pub mod transport;
