//! The simulated Quectel modem (in progress).
