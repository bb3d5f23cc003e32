//! Track scenario file (in progress).
