//! The kernel's CAN frame layout (`struct can_frame` / `struct canfd_frame`) ⇄ [`CanFrame`].
//!
//! Sans-IO: plain functions over byte slices. The socket shell reads frames with its own
//! `recvmsg` (the `socketcan` crate's readers cannot hand back the `SO_RXQ_OVFL` control message),
//! so it gets raw kernel bytes; decoding them here keeps the unsafe-free shell small and lets the
//! decoder be property-tested and fuzzed.
//!
//! Layout (`linux/can.h`, native byte order): `can_id: u32` (identifier plus the EFF/RTR/ERR flag
//! bits), `len: u8`, then `__pad`/`flags: u8`, `__res0: u8`, `len8_dlc`/`__res1: u8`, then the
//! payload at offset 8: 8 bytes for a classic frame (16 bytes in all, `CAN_MTU`), 64 for an FD
//! frame (72 bytes, `CANFD_MTU`).

use crate::can::{CanFrame, FD_LENS, FrameError, MAX_CLASSIC_LEN, flags};
use nix::libc;

/// Size of a classic frame as the kernel hands it over (`CAN_MTU`).
pub const CAN_MTU: usize = libc::CAN_MTU;
/// Size of a CAN FD frame as the kernel hands it over (`CANFD_MTU`).
pub const CANFD_MTU: usize = libc::CANFD_MTU;

const EFF_FLAG: u32 = libc::CAN_EFF_FLAG;
const RTR_FLAG: u32 = libc::CAN_RTR_FLAG;
const ERR_FLAG: u32 = libc::CAN_ERR_FLAG;
const SFF_MASK: u32 = libc::CAN_SFF_MASK;
const EFF_MASK: u32 = libc::CAN_EFF_MASK;
const ERR_MASK: u32 = libc::CAN_ERR_MASK;
const FD_BRS: u8 = libc::CANFD_BRS as u8;
const FD_ESI: u8 = libc::CANFD_ESI as u8;
/// Offset of the payload in both layouts (`data` is 8-byte aligned).
const DATA_OFFSET: usize = 8;

/// Why bytes from a CAN socket are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("read {0} bytes from the CAN socket: a frame is 16 (classic) or 72 (CAN FD) bytes")]
    Size(usize),
    #[error("classic frame {id:#x} claims {len} payload bytes (at most 8)")]
    ClassicLen { id: u32, len: u8 },
    #[error(
        "CAN FD frame {id:#x} has length {len}, not a CAN FD length (0-8, 12, 16, 20, 24, 32, 48, 64)"
    )]
    FdLen { id: u32, len: u8 },
    #[error("CAN FD frame {id:#x} carries the {flag} flag, which only classic frames may carry")]
    FdFlag { id: u32, flag: &'static str },
    #[error("frame {id:#x}: {source}")]
    Frame {
        id: u32,
        #[source]
        source: FrameError,
    },
}

/// Decodes one frame as read from a CAN_RAW socket (16 or 72 bytes).
///
/// Identifier bits above 11 (standard) or 29 (extended) bits are dropped, as every CAN driver
/// does before a frame goes on the bus. An error frame (`CAN_ERR_FLAG`) becomes a frame with
/// [`flags::ERROR`] whose `id` is the error class mask and whose payload is the 8 detail bytes.
pub fn decode_frame(bytes: &[u8]) -> Result<CanFrame, DecodeError> {
    let (head, data) = match bytes.len() {
        CAN_MTU | CANFD_MTU => bytes.split_at(DATA_OFFSET),
        n => return Err(DecodeError::Size(n)),
    };
    let raw_id = u32::from_ne_bytes([head[0], head[1], head[2], head[3]]);
    let len = head[4];
    let fd_flags = head[5];
    let len8_dlc = head[7];
    let extended = raw_id & EFF_FLAG != 0;
    let id = raw_id & if extended { EFF_MASK } else { SFF_MASK };
    let wrap = |source| DecodeError::Frame { id, source };

    if bytes.len() == CANFD_MTU {
        for (bit, flag) in [(ERR_FLAG, "error"), (RTR_FLAG, "remote")] {
            if raw_id & bit != 0 {
                return Err(DecodeError::FdFlag { id, flag });
            }
        }
        if !FD_LENS.contains(&len) {
            return Err(DecodeError::FdLen { id, len });
        }
        let mut f = 0;
        if fd_flags & FD_BRS != 0 {
            f |= flags::BRS;
        }
        if fd_flags & FD_ESI != 0 {
            f |= flags::ESI;
        }
        return CanFrame::fd(id, extended, f, &data[..usize::from(len)]).map_err(wrap);
    }

    if usize::from(len) > MAX_CLASSIC_LEN {
        return Err(DecodeError::ClassicLen { id, len });
    }
    if raw_id & ERR_FLAG != 0 {
        let class = raw_id & ERR_MASK;
        return CanFrame::error(class, &data[..usize::from(len)])
            .map_err(|source| DecodeError::Frame { id: class, source });
    }
    if raw_id & RTR_FLAG != 0 {
        return CanFrame::remote(id, extended, len).map_err(wrap);
    }
    let frame = CanFrame::classic(id, extended, &data[..usize::from(len)]).map_err(wrap)?;
    if len == 8 && (9..=15).contains(&len8_dlc) {
        return frame.with_len8_dlc(len8_dlc).map_err(wrap);
    }
    Ok(frame)
}

/// Encodes a frame in the kernel layout for writing to a CAN_RAW socket; returns the buffer and
/// how many of its bytes to write (16 for classic, remote and error frames, 72 for CAN FD).
pub fn encode_frame(frame: &CanFrame) -> ([u8; CANFD_MTU], usize) {
    let mut buf = [0u8; CANFD_MTU];
    let mut raw_id = frame.id;
    if frame.is_error() {
        raw_id = (frame.id & ERR_MASK) | ERR_FLAG;
    } else {
        if frame.is_extended() {
            raw_id |= EFF_FLAG;
        }
        if frame.is_remote() && !frame.is_fd() {
            raw_id |= RTR_FLAG;
        }
    }
    buf[..4].copy_from_slice(&raw_id.to_ne_bytes());
    buf[4] = frame.len;
    let n = if frame.is_fd() {
        let mut f = 0;
        if frame.flags & flags::BRS != 0 {
            f |= FD_BRS;
        }
        if frame.flags & flags::ESI != 0 {
            f |= FD_ESI;
        }
        buf[5] = f;
        CANFD_MTU
    } else {
        buf[7] = frame.len8_dlc;
        CAN_MTU
    };
    let payload = frame.payload();
    let end = (DATA_OFFSET + payload.len()).min(n);
    buf[DATA_OFFSET..end].copy_from_slice(&payload[..end - DATA_OFFSET]);
    (buf, n)
}

/// Turns the kernel's cumulative drop counter of a socket (`SO_RXQ_OVFL`) into increments.
///
/// The kernel attaches to each received frame the number of frames the socket had dropped (receive
/// queue full) when that frame was queued, counted since the socket was created. A fresh socket
/// starts at zero, so a new `DropCounter` goes with every new socket. The counter is a 32-bit
/// value that wraps.
#[derive(Debug, Default, Clone)]
pub struct DropCounter {
    last: u32,
}

impl DropCounter {
    /// Feeds the counter attached to a frame; returns how many frames were lost since the last one.
    pub fn observe(&mut self, cumulative: u32) -> u64 {
        let lost = cumulative.wrapping_sub(self.last);
        self.last = cumulative;
        u64::from(lost)
    }
}

/// Controller status bits of an error frame (`data[1]` with `CAN_ERR_CRTL`).
const CONTROLLER_BITS: [(u8, &str); 7] = [
    (libc::CAN_ERR_CRTL_RX_OVERFLOW as u8, "rx_overflow"),
    (libc::CAN_ERR_CRTL_TX_OVERFLOW as u8, "tx_overflow"),
    (libc::CAN_ERR_CRTL_RX_WARNING as u8, "rx_warning"),
    (libc::CAN_ERR_CRTL_TX_WARNING as u8, "tx_warning"),
    (libc::CAN_ERR_CRTL_RX_PASSIVE as u8, "rx_passive"),
    (libc::CAN_ERR_CRTL_TX_PASSIVE as u8, "tx_passive"),
    (libc::CAN_ERR_CRTL_ACTIVE as u8, "back_to_active"),
];

/// Protocol violation types of an error frame (`data[2]` with `CAN_ERR_PROT`).
const PROTOCOL_BITS: [(u8, &str); 8] = [
    (libc::CAN_ERR_PROT_BIT as u8, "bit"),
    (libc::CAN_ERR_PROT_FORM as u8, "form"),
    (libc::CAN_ERR_PROT_STUFF as u8, "stuff"),
    (libc::CAN_ERR_PROT_BIT0 as u8, "bit0"),
    (libc::CAN_ERR_PROT_BIT1 as u8, "bit1"),
    (libc::CAN_ERR_PROT_OVERLOAD as u8, "overload"),
    (libc::CAN_ERR_PROT_ACTIVE as u8, "active_error"),
    (libc::CAN_ERR_PROT_TX as u8, "on_tx"),
];

/// A one-line description of an error frame for logs and `last_error`, e.g.
/// `"error frame: controller (rx_passive, tx_warning), counters (tx 128, rx 0)"`.
/// Names follow [`crate::ErrorClass::name`]; detail bytes follow `linux/can/error.h`.
pub fn describe_error(frame: &CanFrame) -> String {
    use crate::can::ErrorClass;
    use std::fmt::Write as _;
    let d = |i: usize| frame.payload().get(i).copied().unwrap_or(0);
    fn bits(byte: u8, table: &[(u8, &'static str)]) -> Vec<&'static str> {
        table
            .iter()
            .filter(|(b, _)| byte & b != 0)
            .map(|(_, n)| *n)
            .collect()
    }
    let mut parts = Vec::new();
    for c in frame.error_classes() {
        let mut s = c.name().to_string();
        let detail = match c {
            ErrorClass::Controller => bits(d(1), &CONTROLLER_BITS).join(", "),
            ErrorClass::Protocol => {
                let mut v = bits(d(2), &PROTOCOL_BITS).join(", ");
                if d(3) != 0 {
                    if !v.is_empty() {
                        v.push_str(", ");
                    }
                    let _ = write!(v, "location {:#04x}", d(3));
                }
                v
            }
            ErrorClass::LostArbitration if d(0) != 0 => format!("bit {}", d(0)),
            ErrorClass::Transceiver if d(4) != 0 => format!("status {:#04x}", d(4)),
            ErrorClass::Counters => format!("tx {}, rx {}", d(6), d(7)),
            _ => String::new(),
        };
        if !detail.is_empty() {
            let _ = write!(s, " ({detail})");
        }
        parts.push(s);
    }
    let unknown = frame.id & !ErrorClass::ALL.iter().fold(0, |m, c| m | c.mask());
    if unknown != 0 {
        parts.push(format!("unknown class bits {unknown:#x}"));
    }
    if parts.is_empty() {
        parts.push("no class bits".to_string());
    }
    format!("error frame: {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::can::{ErrorClass, MAX_FD_LEN};
    use proptest::prelude::*;

    fn raw(id: u32, len: u8, b5: u8, b7: u8, data: &[u8], size: usize) -> Vec<u8> {
        let mut v = vec![0u8; size];
        v[..4].copy_from_slice(&id.to_ne_bytes());
        v[4] = len;
        v[5] = b5;
        v[7] = b7;
        v[8..8 + data.len()].copy_from_slice(data);
        v
    }

    #[test]
    fn decodes_every_kind_of_frame() {
        let c = decode_frame(&raw(0x123, 3, 0, 0, &[1, 2, 3], CAN_MTU)).unwrap();
        assert_eq!(c, CanFrame::classic(0x123, false, &[1, 2, 3]).unwrap());

        let e = decode_frame(&raw(0x1234_5678 | EFF_FLAG, 0, 0, 0, &[], CAN_MTU)).unwrap();
        assert_eq!(e, CanFrame::classic(0x1234_5678, true, &[]).unwrap());

        let r = decode_frame(&raw(0x10 | RTR_FLAG, 4, 0, 0, &[], CAN_MTU)).unwrap();
        assert_eq!(r, CanFrame::remote(0x10, false, 4).unwrap());

        let fd = decode_frame(&raw(0x7ff, 12, 0x01 | 0x04, 0, &[9; 12], CANFD_MTU)).unwrap();
        assert_eq!(
            fd,
            CanFrame::fd(0x7ff, false, flags::BRS, &[9; 12]).unwrap()
        );
        let fd = decode_frame(&raw(5 | EFF_FLAG, 64, 0x02, 0, &[7; 64], CANFD_MTU)).unwrap();
        assert_eq!(fd, CanFrame::fd(5, true, flags::ESI, &[7; 64]).unwrap());

        let err = decode_frame(&raw(
            ERR_FLAG | 0x40 | 0x04,
            8,
            0,
            0,
            &[0, 0x10, 0, 0, 0, 0, 0, 0],
            CAN_MTU,
        ))
        .unwrap();
        assert!(err.is_error());
        assert_eq!(
            err.error_classes().collect::<Vec<_>>(),
            vec![ErrorClass::Controller, ErrorClass::BusOff]
        );

        let l8 = decode_frame(&raw(0x1, 8, 0, 13, &[1; 8], CAN_MTU)).unwrap();
        assert_eq!(l8.len8_dlc, 13);
    }

    #[test]
    fn masks_stray_identifier_bits_like_a_driver() {
        let f = decode_frame(&raw(0x0000_1abc, 0, 0, 0, &[], CAN_MTU)).unwrap();
        assert_eq!(f.id, 0x2bc);
        assert!(!f.is_extended());
    }

    #[test]
    fn rejects_what_is_not_a_frame() {
        assert_eq!(decode_frame(&[0; 15]), Err(DecodeError::Size(15)));
        assert_eq!(decode_frame(&[]), Err(DecodeError::Size(0)));
        assert_eq!(
            decode_frame(&raw(0x1, 9, 0, 0, &[], CAN_MTU)),
            Err(DecodeError::ClassicLen { id: 1, len: 9 })
        );
        assert_eq!(
            decode_frame(&raw(0x1, 13, 0, 0, &[], CANFD_MTU)),
            Err(DecodeError::FdLen { id: 1, len: 13 })
        );
        assert!(matches!(
            decode_frame(&raw(0x1 | RTR_FLAG, 8, 0, 0, &[], CANFD_MTU)),
            Err(DecodeError::FdFlag { flag: "remote", .. })
        ));
        let msg = decode_frame(&raw(0x1, 65, 0, 0, &[], CANFD_MTU))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("length 65"), "{msg}");
    }

    #[test]
    fn drop_counter_counts_increases_across_wrap() {
        let mut d = DropCounter::default();
        assert_eq!(d.observe(0), 0);
        assert_eq!(d.observe(5), 5);
        assert_eq!(d.observe(5), 0);
        assert_eq!(d.observe(12), 7);
        let mut w = DropCounter { last: u32::MAX - 1 };
        assert_eq!(w.observe(3), 5, "wraps like the kernel's counter");
    }

    #[test]
    fn describes_error_frames() {
        let f = CanFrame::error(0x04 | 0x200, &[0, 0x30, 0, 0, 0, 0, 128, 3]).unwrap();
        assert_eq!(
            describe_error(&f),
            "error frame: controller (rx_passive, tx_passive), counters (tx 128, rx 3)"
        );
        let f = CanFrame::error(0x08 | 0x40, &[0, 0, 0x04 | 0x80, 0x0a, 0, 0, 0, 0]).unwrap();
        assert_eq!(
            describe_error(&f),
            "error frame: protocol (stuff, on_tx, location 0x0a), bus_off"
        );
        let f = CanFrame::error(0x1000, &[]).unwrap();
        assert_eq!(describe_error(&f), "error frame: unknown class bits 0x1000");
    }

    fn any_frame() -> impl Strategy<Value = CanFrame> {
        let id = (any::<bool>(), any::<u32>())
            .prop_map(|(ext, id)| (ext, if ext { id & EFF_MASK } else { id & SFF_MASK }));
        prop_oneof![
            (id.clone(), proptest::collection::vec(any::<u8>(), 0..=8))
                .prop_map(|((e, id), d)| CanFrame::classic(id, e, &d).unwrap()),
            (id.clone(), 0u8..=8).prop_map(|((e, id), l)| CanFrame::remote(id, e, l).unwrap()),
            (
                id.clone(),
                0usize..16,
                0u8..4,
                proptest::collection::vec(any::<u8>(), 64)
            )
                .prop_map(|((e, id), li, fl, d)| {
                    let len = usize::from(FD_LENS[li]);
                    let f = (if fl & 1 != 0 { flags::BRS } else { 0 })
                        | (if fl & 2 != 0 { flags::ESI } else { 0 });
                    CanFrame::fd(id, e, f, &d[..len]).unwrap()
                }),
            (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..=8))
                .prop_map(|(c, d)| CanFrame::error(c & ERR_MASK, &d).unwrap()),
            (id, any::<[u8; 8]>(), 9u8..=15).prop_map(|((e, id), d, dlc)| {
                CanFrame::classic(id, e, &d)
                    .unwrap()
                    .with_len8_dlc(dlc)
                    .unwrap()
            }),
        ]
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(f in any_frame()) {
            let (buf, n) = encode_frame(&f);
            prop_assert_eq!(decode_frame(&buf[..n]), Ok(f));
        }

        #[test]
        fn decode_never_panics_and_what_it_accepts_round_trips(
            bytes in proptest::collection::vec(any::<u8>(), 0..80),
            fd in any::<bool>(),
        ) {
            let mut bytes = bytes;
            if fd { bytes.resize(CANFD_MTU, 0) } else if bytes.len() > 20 { bytes.truncate(CAN_MTU) }
            if let Ok(f) = decode_frame(&bytes) {
                prop_assert!(f.len as usize <= MAX_FD_LEN);
                let (buf, n) = encode_frame(&f);
                prop_assert_eq!(decode_frame(&buf[..n]), Ok(f));
            }
        }
    }
}
