//! CAN frames as every CAN source produces them (SocketCAN, slcan, candump replay).

use serde::{Deserialize, Serialize};

/// Largest payload of any CAN frame (CAN FD).
pub const MAX_FD_LEN: usize = 64;
/// Largest payload of a classic CAN frame.
pub const MAX_CLASSIC_LEN: usize = 8;
/// Payload lengths a CAN FD frame can have (its DLC maps to these).
pub const FD_LENS: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64];

/// Flag bits of [`CanFrame::flags`].
pub mod flags {
    /// 29-bit identifier.
    pub const EXTENDED: u8 = 0x01;
    /// Remote transmission request (classic only; `len` is the requested length, no data).
    pub const RTR: u8 = 0x02;
    /// Error frame: `id` holds the error class bits (`CAN_ERR_*`), `data` the details (8 bytes).
    pub const ERROR: u8 = 0x04;
    /// CAN FD frame.
    pub const FD: u8 = 0x08;
    /// CAN FD bit rate switch.
    pub const BRS: u8 = 0x10;
    /// CAN FD error state indicator.
    pub const ESI: u8 = 0x20;
    /// All bits that have a meaning.
    pub const ALL: u8 = EXTENDED | RTR | ERROR | FD | BRS | ESI;
}

/// One CAN frame: classic, FD, remote or error.
///
/// `id` carries no flag bits: 11 bits for a standard frame, 29 bits for an extended one, and the
/// error class bits for an error frame. `len` is the payload length in bytes (0..=8 classic,
/// one of [`FD_LENS`] for FD); for a remote frame it is the requested length and `data` is unused.
/// `len8_dlc` keeps a classic 8-byte frame's raw DLC when it was 9..=15 (Linux `len8_dlc`),
/// otherwise 0. Bytes of `data` past `len` are always zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CanFrame {
    pub id: u32,
    pub flags: u8,
    pub len: u8,
    pub len8_dlc: u8,
    #[serde(with = "payload")]
    pub data: [u8; MAX_FD_LEN],
}

impl std::fmt::Debug for CanFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CanFrame")
            .field("id", &format_args!("{:#x}", self.id))
            .field("flags", &format_args!("{:#04x}", self.flags))
            .field("len", &self.len)
            .field("len8_dlc", &self.len8_dlc)
            .field("data", &self.payload())
            .finish()
    }
}

/// Why a frame could not be built from the given parts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("identifier {id:#x} does not fit in {bits} bits")]
    IdRange { id: u32, bits: u8 },
    #[error("payload of {len} bytes is too long for a {kind} frame (at most {max})")]
    TooLong {
        len: usize,
        kind: &'static str,
        max: usize,
    },
    #[error("{len} bytes is not a valid CAN FD length (0-8, 12, 16, 20, 24, 32, 48, 64)")]
    FdLen { len: usize },
    #[error("len8_dlc {0} is invalid: it must be 9 to 15 and only on an 8-byte classic frame")]
    Len8Dlc(u8),
    #[error(
        "flags {0:#04x} are not a valid combination (bits: 0x01 extended, 0x02 remote, 0x04 error, 0x08 FD, 0x10 BRS, 0x20 ESI)"
    )]
    Flags(u8),
}

impl CanFrame {
    /// A classic data frame.
    pub fn classic(id: u32, extended: bool, payload: &[u8]) -> Result<CanFrame, FrameError> {
        check_id(id, extended)?;
        if payload.len() > MAX_CLASSIC_LEN {
            return Err(FrameError::TooLong {
                len: payload.len(),
                kind: "classic",
                max: MAX_CLASSIC_LEN,
            });
        }
        Ok(Self::raw(id, ext(extended), payload))
    }

    /// A CAN FD data frame; `fd_flags` may hold [`flags::BRS`] and [`flags::ESI`].
    pub fn fd(
        id: u32,
        extended: bool,
        fd_flags: u8,
        payload: &[u8],
    ) -> Result<CanFrame, FrameError> {
        check_id(id, extended)?;
        if payload.len() > MAX_FD_LEN {
            return Err(FrameError::TooLong {
                len: payload.len(),
                kind: "CAN FD",
                max: MAX_FD_LEN,
            });
        }
        if !FD_LENS.contains(&(payload.len() as u8)) {
            return Err(FrameError::FdLen { len: payload.len() });
        }
        let f = ext(extended) | flags::FD | (fd_flags & (flags::BRS | flags::ESI));
        Ok(Self::raw(id, f, payload))
    }

    /// A remote frame requesting `len` bytes (0..=8).
    pub fn remote(id: u32, extended: bool, len: u8) -> Result<CanFrame, FrameError> {
        check_id(id, extended)?;
        if usize::from(len) > MAX_CLASSIC_LEN {
            return Err(FrameError::TooLong {
                len: usize::from(len),
                kind: "remote",
                max: MAX_CLASSIC_LEN,
            });
        }
        let mut f = Self::raw(id, ext(extended) | flags::RTR, &[]);
        f.len = len;
        Ok(f)
    }

    /// An error frame: `class` is the `CAN_ERR_*` class mask (29 bits), `detail` up to 8 bytes.
    pub fn error(class: u32, detail: &[u8]) -> Result<CanFrame, FrameError> {
        check_id(class, true)?;
        if detail.len() > MAX_CLASSIC_LEN {
            return Err(FrameError::TooLong {
                len: detail.len(),
                kind: "error",
                max: MAX_CLASSIC_LEN,
            });
        }
        Ok(Self::raw(class, flags::ERROR, detail))
    }

    /// Rebuilds a frame from its fields as stored (`flags` decides the kind; `payload` is
    /// ignored for a remote frame), checking every field the constructors check, so that
    /// any frame read from outside is one the constructors could have built.
    pub fn from_parts(
        id: u32,
        flags: u8,
        len: u8,
        len8_dlc: u8,
        payload: &[u8],
    ) -> Result<CanFrame, FrameError> {
        let extended = flags & flags::EXTENDED != 0;
        let f = if flags & flags::ERROR != 0 {
            CanFrame::error(id, payload)?
        } else if flags & flags::RTR != 0 {
            CanFrame::remote(id, extended, len)?
        } else if flags & flags::FD != 0 {
            CanFrame::fd(id, extended, flags, payload)?
        } else {
            CanFrame::classic(id, extended, payload)?
        };
        if f.flags != flags || f.len != len {
            return Err(FrameError::Flags(flags));
        }
        if len8_dlc != 0 {
            return f.with_len8_dlc(len8_dlc);
        }
        Ok(f)
    }

    /// Sets the raw DLC of an 8-byte classic frame (9..=15).
    pub fn with_len8_dlc(mut self, dlc: u8) -> Result<CanFrame, FrameError> {
        if !(9..=15).contains(&dlc) || self.len != 8 || self.flags & (flags::FD | flags::ERROR) != 0
        {
            return Err(FrameError::Len8Dlc(dlc));
        }
        self.len8_dlc = dlc;
        Ok(self)
    }

    fn raw(id: u32, flags: u8, payload: &[u8]) -> CanFrame {
        let mut data = [0u8; MAX_FD_LEN];
        data[..payload.len()].copy_from_slice(payload);
        CanFrame {
            id,
            flags,
            len: payload.len() as u8,
            len8_dlc: 0,
            data,
        }
    }

    /// The payload bytes (empty for a remote frame).
    pub fn payload(&self) -> &[u8] {
        if self.is_remote() {
            &[]
        } else {
            &self.data[..usize::from(self.len).min(MAX_FD_LEN)]
        }
    }
    pub fn is_extended(&self) -> bool {
        self.flags & flags::EXTENDED != 0
    }
    pub fn is_remote(&self) -> bool {
        self.flags & flags::RTR != 0
    }
    pub fn is_error(&self) -> bool {
        self.flags & flags::ERROR != 0
    }
    pub fn is_fd(&self) -> bool {
        self.flags & flags::FD != 0
    }

    /// The error classes of an error frame, by name (empty for other frames).
    pub fn error_classes(&self) -> impl Iterator<Item = ErrorClass> + '_ {
        ErrorClass::ALL
            .into_iter()
            .filter(move |c| self.is_error() && self.id & c.mask() != 0)
    }
}

fn ext(extended: bool) -> u8 {
    if extended { flags::EXTENDED } else { 0 }
}

fn check_id(id: u32, extended: bool) -> Result<(), FrameError> {
    let bits = if extended { 29 } else { 11 };
    if id >> bits != 0 {
        return Err(FrameError::IdRange { id, bits });
    }
    Ok(())
}

/// Error classes of a SocketCAN error frame (`linux/can/error.h`), counted separately by sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    TxTimeout,
    LostArbitration,
    Controller,
    Protocol,
    Transceiver,
    NoAck,
    BusOff,
    BusError,
    Restarted,
    Counters,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 10] = [
        ErrorClass::TxTimeout,
        ErrorClass::LostArbitration,
        ErrorClass::Controller,
        ErrorClass::Protocol,
        ErrorClass::Transceiver,
        ErrorClass::NoAck,
        ErrorClass::BusOff,
        ErrorClass::BusError,
        ErrorClass::Restarted,
        ErrorClass::Counters,
    ];

    /// The class bit in an error frame's id (`CAN_ERR_TX_TIMEOUT` = 0x1 … `CAN_ERR_CNT` = 0x200).
    pub fn mask(self) -> u32 {
        1 << (self as u32)
    }

    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::TxTimeout => "tx_timeout",
            ErrorClass::LostArbitration => "lost_arbitration",
            ErrorClass::Controller => "controller",
            ErrorClass::Protocol => "protocol",
            ErrorClass::Transceiver => "transceiver",
            ErrorClass::NoAck => "no_ack",
            ErrorClass::BusOff => "bus_off",
            ErrorClass::BusError => "bus_error",
            ErrorClass::Restarted => "restarted",
            ErrorClass::Counters => "counters",
        }
    }
}

/// Serialises only the used part of the payload (a 64-byte array would waste 56 bytes per
/// classic frame on the wire).
mod payload {
    use super::MAX_FD_LEN;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &[u8; MAX_FD_LEN], s: S) -> Result<S::Ok, S::Error> {
        let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        s.serialize_bytes(&data[..end])
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; MAX_FD_LEN], D::Error> {
        let v: &[u8] = <&[u8]>::deserialize(d)?;
        if v.len() > MAX_FD_LEN {
            return Err(serde::de::Error::invalid_length(
                v.len(),
                &"at most 64 bytes",
            ));
        }
        let mut data = [0u8; MAX_FD_LEN];
        data[..v.len()].copy_from_slice(v);
        Ok(data)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn constructors_check_their_limits() {
        assert!(CanFrame::classic(0x7ff, false, &[1, 2]).is_ok());
        assert_eq!(
            CanFrame::classic(0x800, false, &[]),
            Err(FrameError::IdRange {
                id: 0x800,
                bits: 11
            })
        );
        assert!(CanFrame::classic(0x1fff_ffff, true, &[0; 8]).is_ok());
        assert!(CanFrame::classic(1, false, &[0; 9]).is_err());
        assert!(CanFrame::fd(1, false, flags::BRS, &[0; 12]).is_ok());
        assert_eq!(
            CanFrame::fd(1, false, 0, &[0; 13]),
            Err(FrameError::FdLen { len: 13 })
        );
        let r = CanFrame::remote(0x10, false, 4).unwrap();
        assert!(r.payload().is_empty());
        assert_eq!(r.len, 4);
        let c = CanFrame::classic(1, false, &[0; 8]).unwrap();
        assert_eq!(c.with_len8_dlc(12).unwrap().len8_dlc, 12);
        assert!(c.with_len8_dlc(8).is_err());
    }

    #[test]
    fn error_classes_follow_linux_bits() {
        let e = CanFrame::error(0x40 | 0x4, &[0; 8]).unwrap();
        let classes: Vec<_> = e.error_classes().collect();
        assert_eq!(classes, vec![ErrorClass::Controller, ErrorClass::BusOff]);
        assert_eq!(ErrorClass::Counters.mask(), 0x200);
    }

    #[test]
    fn postcard_keeps_only_the_used_payload() {
        let f = CanFrame::fd(0x123, false, flags::BRS, &[7; 64]).unwrap();
        let b = postcard::to_stdvec(&f).unwrap();
        assert_eq!(postcard::from_bytes::<CanFrame>(&b).unwrap(), f);
        let c = CanFrame::classic(0x123, false, &[1, 0, 0]).unwrap();
        let b = postcard::to_stdvec(&c).unwrap();
        assert!(b.len() < 10, "{} bytes", b.len());
        assert_eq!(postcard::from_bytes::<CanFrame>(&b).unwrap(), c);
    }
}
