//! Tower intelligence: radio-driven cell switching per modem ([`policy`]) with a learned,
//! per-location cell map ([`map`]). Both are sans-IO; the daemon feeds them modem reports,
//! link figures and GPS fixes, and carries out their commands through modem-hal.

pub mod map;
pub mod policy;
