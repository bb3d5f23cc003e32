//! Modem control for pitlink: AT transport and dialects, radio metrics, a simulated modem.
//!
//! Not implemented yet: this crate is an empty member of the workspace so that the stage has
//! its place. The agent does not talk to modems today; the `modem` key of a `[[links]]` table is
//! accepted and ignored.
