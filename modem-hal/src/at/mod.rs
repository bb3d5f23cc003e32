//! AT command control of cellular modems: the transport (framing, responses, URCs, timeouts)
//! and the parsers of the responses that carry radio metrics.

pub mod parse;
pub mod transport;
