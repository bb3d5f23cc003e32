//! The agent's wire codec (envelope and bodies), compiled from its own sources without the rest
//! of the agent (tokio, rustls, MQTT), so the fuzz build stays small.
#![allow(dead_code)]

#[path = "../../agent/src/codec/varint.rs"]
pub mod varint;
#[path = "../../agent/src/codec/columnar.rs"]
pub mod columnar;
#[path = "../../agent/src/codec/envelope.rs"]
pub mod envelope;
