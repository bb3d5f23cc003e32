//! AT transport: a sans-IO core ([`AtCore`]) and a tokio shell on a serial port ([`AtPort`]).
//!
//! The core frames lines, drops the echo, matches information lines and final result codes
//! (`OK`, `ERROR`, `+CME ERROR`, `+CMS ERROR`) to the one command in flight, separates URCs
//! (rule in [`urc`]), times commands out and resynchronises after a timeout. The shell owns the
//! port, survives it disappearing (USB re-enumeration) and counts what happens.

pub mod command;
pub mod core;
pub mod lines;
pub mod shell;
pub mod urc;

pub use self::command::{CommandError, CommandLine, Form};
pub use self::core::{
    Action, AtCore, AtError, CommandId, CoreConfig, CoreCounters, Request, Response,
};
pub use self::shell::{AtHandle, AtPort, PortConfig, PortCounters};
pub use self::urc::{ErrorCode, Final, Urc, UrcKind};
