//! Receive filters by identifier, as configured and as the kernel applies them (`CAN_RAW_FILTER`).
//!
//! Sans-IO: [`IdFilter::to_kernel`] builds the `(can_id, can_mask)` pair the socket gets, and
//! [`IdFilter::matches`] states the rule the kernel then applies, so the two can be checked
//! against each other on a real interface.

use crate::can::CanFrame;
use nix::libc;
use serde::{Deserialize, Serialize};

const EFF_FLAG: u32 = libc::CAN_EFF_FLAG;
const RTR_FLAG: u32 = libc::CAN_RTR_FLAG;
const INV_FILTER: u32 = libc::CAN_INV_FILTER;
const SFF_MASK: u32 = libc::CAN_SFF_MASK;
const EFF_MASK: u32 = libc::CAN_EFF_MASK;

/// One receive filter: a frame of the filter's format (standard or extended) passes when
/// `frame.id & mask == id & mask`. An inverted filter passes exactly the frames the plain filter
/// would not (including every frame of the other format). With several filters a frame passes
/// when any one of them lets it through; with none, every frame passes. Error frames are governed
/// by the error mask, never by these filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdFilter {
    pub id: u32,
    pub mask: u32,
    /// 29-bit identifiers (otherwise 11-bit).
    #[serde(default)]
    pub extended: bool,
    /// Pass what does not match.
    #[serde(default)]
    pub invert: bool,
}

/// Why a filter cannot be installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("filter {field} {value:#x} does not fit in {bits} bits ({kind} identifiers)")]
    Range {
        field: &'static str,
        value: u32,
        bits: u8,
        kind: &'static str,
    },
}

impl IdFilter {
    /// A filter on 11-bit identifiers.
    pub fn standard(id: u32, mask: u32) -> Self {
        IdFilter {
            id,
            mask,
            extended: false,
            invert: false,
        }
    }

    /// A filter on 29-bit identifiers.
    pub fn extended(id: u32, mask: u32) -> Self {
        IdFilter {
            extended: true,
            ..IdFilter::standard(id, mask)
        }
    }

    /// The same filter, inverted.
    pub fn inverted(self) -> Self {
        IdFilter {
            invert: true,
            ..self
        }
    }

    fn id_mask(&self) -> (u32, u8, &'static str) {
        if self.extended {
            (EFF_MASK, 29, "extended")
        } else {
            (SFF_MASK, 11, "standard")
        }
    }

    /// The `struct can_filter` for `CAN_RAW_FILTER`: `(can_id, can_mask)`. The mask always
    /// includes the EFF flag so that the filter only takes frames of its own format; the RTR flag
    /// is left out, so data and remote frames both pass.
    pub fn to_kernel(&self) -> Result<(u32, u32), FilterError> {
        let (range, bits, kind) = self.id_mask();
        for (field, value) in [("id", self.id), ("mask", self.mask)] {
            if value & !range != 0 {
                return Err(FilterError::Range {
                    field,
                    value,
                    bits,
                    kind,
                });
            }
        }
        let mut can_id = self.id;
        if self.extended {
            can_id |= EFF_FLAG;
        }
        if self.invert {
            can_id |= INV_FILTER;
        }
        Ok((can_id, self.mask | EFF_FLAG))
    }

    /// Whether the kernel lets `frame` through this filter (the rule of `linux/can/raw.c`:
    /// `(can_id & mask) == (frame_id & mask)`, negated for an inverted filter, where `frame_id`
    /// carries the EFF and RTR flags). Error frames never match.
    pub fn matches(&self, frame: &CanFrame) -> bool {
        if frame.is_error() {
            return false;
        }
        let Ok((can_id, can_mask)) = self.to_kernel() else {
            return false;
        };
        let mut frame_id = frame.id;
        if frame.is_extended() {
            frame_id |= EFF_FLAG;
        }
        if frame.is_remote() {
            frame_id |= RTR_FLAG;
        }
        let equal = (can_id & !INV_FILTER & can_mask) == (frame_id & can_mask);
        equal != self.invert
    }
}

/// Whether any of `filters` lets `frame` through (all frames pass an empty list).
pub fn passes(filters: &[IdFilter], frame: &CanFrame) -> bool {
    !frame.is_error() && (filters.is_empty() || filters.iter().any(|f| f.matches(frame)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kernel_pairs_pin_the_format() {
        assert_eq!(
            IdFilter::standard(0x123, 0x7ff).to_kernel(),
            Ok((0x123, 0x7ff | EFF_FLAG))
        );
        assert_eq!(
            IdFilter::extended(0x18db_33f1, 0x1fff_ff00).to_kernel(),
            Ok((0x18db_33f1 | EFF_FLAG, 0x1fff_ff00 | EFF_FLAG))
        );
        assert_eq!(
            IdFilter::standard(0x100, 0x700).inverted().to_kernel(),
            Ok((0x100 | INV_FILTER, 0x700 | EFF_FLAG))
        );
        let e = IdFilter::standard(0x800, 0x7ff).to_kernel().unwrap_err();
        assert_eq!(
            e.to_string(),
            "filter id 0x800 does not fit in 11 bits (standard identifiers)"
        );
        assert!(IdFilter::extended(1, 0x2000_0000).to_kernel().is_err());
    }

    #[test]
    fn matches_by_masked_id_and_format() {
        let f = IdFilter::standard(0x120, 0x7f0);
        let hit = CanFrame::classic(0x12a, false, &[1]).unwrap();
        let miss = CanFrame::classic(0x13a, false, &[1]).unwrap();
        let ext = CanFrame::classic(0x12a, true, &[1]).unwrap();
        let rtr = CanFrame::remote(0x125, false, 2).unwrap();
        let fd = CanFrame::fd(0x121, false, 0, &[0; 12]).unwrap();
        let err = CanFrame::error(0x40, &[0; 8]).unwrap();
        assert!(f.matches(&hit) && f.matches(&rtr) && f.matches(&fd));
        assert!(!f.matches(&miss) && !f.matches(&ext) && !f.matches(&err));
        let inv = f.inverted();
        assert!(!inv.matches(&hit) && inv.matches(&miss) && inv.matches(&ext));
        assert!(!inv.matches(&err));
        assert!(passes(&[], &hit) && !passes(&[], &err));
        assert!(passes(&[f, IdFilter::extended(0x12a, 0xfff)], &ext));
    }

    proptest! {
        /// The kernel rule agrees with the plain statement of what a filter means.
        #[test]
        fn kernel_rule_is_the_documented_meaning(
            ext_f in any::<bool>(), inv in any::<bool>(), id in any::<u32>(), mask in any::<u32>(),
            ext_fr in any::<bool>(), rtr in any::<bool>(), fid in any::<u32>(),
        ) {
            let range = if ext_f { EFF_MASK } else { SFF_MASK };
            let mut f = if ext_f { IdFilter::extended(id & range, mask & range) }
                        else { IdFilter::standard(id & range, mask & range) };
            if inv { f = f.inverted() }
            let fid = fid & if ext_fr { EFF_MASK } else { SFF_MASK };
            let frame = if rtr { CanFrame::remote(fid, ext_fr, 0).unwrap() }
                        else { CanFrame::classic(fid, ext_fr, &[]).unwrap() };
            let plain = ext_f == ext_fr && (fid & f.mask) == (f.id & f.mask);
            prop_assert_eq!(f.matches(&frame), plain != inv);
        }
    }
}
