//! The simulated world: what a modem on a car would hear ([`env`]), a track scenario that
//! derives it from the car's position ([`scenario`], [`world`]), and a simulated Quectel modem
//! that answers AT commands on a PTY from it ([`modem`]).

pub mod drive;
pub mod env;
pub mod gps;
pub mod line;
pub mod link;
pub mod modem;
pub mod scenario;
pub mod world;
