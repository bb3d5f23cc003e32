//! The world derived from a scenario (in progress).
