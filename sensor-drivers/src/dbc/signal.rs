//! One signal's decoding plan: where its bits are, how to read them, how to scale them.

/// Bit numbering of a signal (`@1` Intel / little endian, `@0` Motorola / big endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ByteOrder {
    LittleEndian,
    BigEndian,
}

/// How a signal's bits are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKind {
    Unsigned,
    /// Two's complement of `size` bits.
    Signed,
    /// IEEE 754 single precision (`SIG_VALTYPE_ … : 1`, 32 bits).
    Float32,
    /// IEEE 754 double precision (`SIG_VALTYPE_ … : 2`, 64 bits).
    Float64,
}

/// A signal's raw value: the integer in the frame (after sign extension), or the IEEE value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Raw {
    Unsigned(u64),
    Signed(i64),
    Float(f64),
}

impl Raw {
    /// The value as f64 (rounded for integers beyond 2⁵³).
    pub fn as_f64(self) -> f64 {
        match self {
            Raw::Unsigned(u) => u as f64,
            Raw::Signed(i) => i as f64,
            Raw::Float(x) => x,
        }
    }

    /// The value as a multiplexer selector (None for negative and float values).
    pub fn selector(self) -> Option<u64> {
        match self {
            Raw::Unsigned(u) => Some(u),
            Raw::Signed(i) => u64::try_from(i).ok(),
            Raw::Float(_) => None,
        }
    }

    /// The value as a value-table key (None when it has none).
    pub fn table_key(self) -> Option<i64> {
        match self {
            Raw::Unsigned(u) => i64::try_from(u).ok(),
            Raw::Signed(i) => Some(i),
            Raw::Float(_) => None,
        }
    }
}

impl std::fmt::Display for Raw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Raw::Unsigned(u) => write!(f, "{u}"),
            Raw::Signed(i) => write!(f, "{i}"),
            Raw::Float(x) => write!(f, "{x}"),
        }
    }
}

/// Which multiplexer value(s) select a signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MuxCondition {
    /// The multiplexer: index of a signal of the same message.
    pub multiplexer: u16,
    /// Inclusive ranges of multiplexer values (`mN` gives `N-N`; `SG_MUL_VAL_` gives its ranges).
    pub ranges: Vec<(u64, u64)>,
}

impl MuxCondition {
    /// Whether multiplexer value `value` selects the signal.
    pub fn selects(&self, value: u64) -> bool {
        self.ranges
            .iter()
            .any(|&(lo, hi)| lo <= value && value <= hi)
    }
}

/// A signal of a DBC message, compiled for decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalDef {
    pub name: String,
    /// Unit text of the DBC (may be empty).
    pub unit: String,
    /// Start bit as the DBC gives it (LSB for Intel, MSB in sawtooth numbering for Motorola).
    pub start_bit: u16,
    /// Length in bits, 1..=64.
    pub size: u8,
    pub byte_order: ByteOrder,
    pub kind: ValueKind,
    /// Physical value = raw × factor + offset.
    pub factor: f64,
    pub offset: f64,
    /// When the signal is multiplexed: what selects it.
    pub mux: Option<MuxCondition>,
    /// Whether other signals are selected by this one's value.
    pub is_multiplexer: bool,
    /// Value table (`VAL_`), sorted by value.
    labels: Vec<(i64, String)>,
    layout: Layout,
}

/// Precomputed extraction: read 16 bytes at `first` (from a zero-padded copy of the payload),
/// shift right, mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    first: u8,
    shift: u8,
    mask: u64,
    /// Payload bytes the signal needs (more than 64: it can never be decoded).
    needed: u16,
}

/// Zero-padded payload copy the fast path reads 16-byte windows from.
pub(crate) type Padded = [u8; crate::can::MAX_FD_LEN + 16];

impl SignalDef {
    /// Builds the plan; `size` must be 1..=64.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: String,
        unit: String,
        start_bit: u16,
        size: u8,
        byte_order: ByteOrder,
        kind: ValueKind,
        factor: f64,
        offset: f64,
        labels: Vec<(i64, String)>,
    ) -> SignalDef {
        let n = u32::from(size.clamp(1, 64));
        let s = u32::from(start_bit);
        let (first, shift, last_bit) = match byte_order {
            ByteOrder::LittleEndian => (s / 8, s % 8, s + n - 1),
            ByteOrder::BigEndian => {
                // Linear position counting from the MSB of byte 0.
                let msb = (s / 8) * 8 + (7 - s % 8);
                (msb / 8, 128 - msb % 8 - n, msb + n - 1)
            }
        };
        let needed = (last_bit / 8 + 1).min(u32::from(u16::MAX)) as u16;
        let layout = Layout {
            first: first.min(63) as u8,
            shift: shift as u8,
            mask: if n == 64 { u64::MAX } else { (1u64 << n) - 1 },
            needed,
        };
        SignalDef {
            name,
            unit,
            start_bit,
            size: n as u8,
            byte_order,
            kind,
            factor,
            offset,
            mux: None,
            is_multiplexer: false,
            labels,
            layout,
        }
    }

    /// Payload bytes a frame needs for this signal to be decoded.
    pub fn needed_len(&self) -> usize {
        usize::from(self.layout.needed)
    }

    /// The value-table text for `raw`, if any.
    pub fn label(&self, raw: Raw) -> Option<&str> {
        let k = raw.table_key()?;
        self.labels
            .binary_search_by_key(&k, |(v, _)| *v)
            .ok()
            .map(|i| self.labels[i].1.as_str())
    }

    /// The value table, sorted by value.
    pub fn labels(&self) -> &[(i64, String)] {
        &self.labels
    }

    /// The raw bits (not sign-extended) from a padded payload, when `len` bytes cover them.
    #[inline]
    pub(crate) fn bits(&self, padded: &Padded, len: usize) -> Option<u64> {
        let l = self.layout;
        if usize::from(l.needed) > len {
            return None;
        }
        let f = usize::from(l.first);
        let window = padded.get(f..)?.first_chunk::<16>()?;
        let w = match self.byte_order {
            ByteOrder::LittleEndian => u128::from_le_bytes(*window),
            ByteOrder::BigEndian => u128::from_be_bytes(*window),
        };
        Some((w >> l.shift) as u64 & l.mask)
    }

    /// The typed raw value of raw bits.
    #[inline]
    pub(crate) fn raw(&self, bits: u64) -> Raw {
        match self.kind {
            ValueKind::Unsigned => Raw::Unsigned(bits),
            ValueKind::Signed => {
                let sh = 64 - u32::from(self.size);
                Raw::Signed(((bits << sh) as i64) >> sh)
            }
            ValueKind::Float32 => Raw::Float(f64::from(f32::from_bits(bits as u32))),
            ValueKind::Float64 => Raw::Float(f64::from_bits(bits)),
        }
    }

    /// Physical value: raw × factor + offset.
    #[inline]
    pub fn physical(&self, raw: Raw) -> f64 {
        raw.as_f64() * self.factor + self.offset
    }

    /// Decodes this signal from a payload (None when the payload is too short for it).
    pub fn decode(&self, payload: &[u8]) -> Option<(Raw, f64)> {
        let mut padded: Padded = [0; crate::can::MAX_FD_LEN + 16];
        let len = payload.len().min(crate::can::MAX_FD_LEN);
        padded[..len].copy_from_slice(&payload[..len]);
        let raw = self.raw(self.bits(&padded, len)?);
        Some((raw, self.physical(raw)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    /// The textbook definition, one bit at a time: Intel counts up from the LSB; Motorola
    /// starts at the MSB and walks down each byte, then to bit 7 of the next byte.
    fn reference(payload: &[u8], start: u16, size: u8, order: ByteOrder) -> Option<u64> {
        let bit = |p: u32| -> Option<u64> {
            let byte = payload.get(usize::try_from(p / 8).ok()?)?;
            Some(u64::from(byte >> (p % 8) & 1))
        };
        let mut v = 0u64;
        let mut p = u32::from(start);
        for k in 0..u32::from(size) {
            match order {
                ByteOrder::LittleEndian => v |= bit(p + k)? << k,
                ByteOrder::BigEndian => {
                    v = (v << 1) | bit(p)?;
                    p = if p % 8 == 0 { p + 15 } else { p - 1 };
                }
            }
        }
        Some(v)
    }

    fn sig(start: u16, size: u8, order: ByteOrder, kind: ValueKind) -> SignalDef {
        SignalDef::new(
            "s".into(),
            String::new(),
            start,
            size,
            order,
            kind,
            1.0,
            0.0,
            vec![],
        )
    }

    #[test]
    fn motorola_and_intel_examples() {
        // motohawk.dbc: Temperature 0|12@0- , AverageRadius 6|6@0+, Enable 7|1@0+.
        let p = [0xC0, 0x06, 0xE0, 0, 0, 0, 0, 0];
        assert_eq!(
            sig(7, 1, ByteOrder::BigEndian, ValueKind::Unsigned)
                .decode(&p)
                .unwrap()
                .0,
            Raw::Unsigned(1)
        );
        assert_eq!(
            sig(6, 6, ByteOrder::BigEndian, ValueKind::Unsigned)
                .decode(&p)
                .unwrap()
                .0,
            Raw::Unsigned(0b10_0000)
        );
        let t = sig(0, 12, ByteOrder::BigEndian, ValueKind::Signed);
        assert_eq!(t.decode(&p).unwrap().0, Raw::Signed(0b0000_0011_0111));
        assert_eq!(t.decode(&[0x01, 0, 0]).unwrap().0, Raw::Signed(-2048));
        assert_eq!(t.needed_len(), 3);
        let le = sig(12, 12, ByteOrder::LittleEndian, ValueKind::Unsigned);
        assert_eq!(le.decode(&[0, 0x30, 0x12]).unwrap().0, Raw::Unsigned(0x123));
        assert_eq!(le.decode(&[0, 0x30]), None, "too short");
        let f = sig(0, 32, ByteOrder::LittleEndian, ValueKind::Float32);
        assert_eq!(f.decode(&1.5f32.to_le_bytes()).unwrap().0, Raw::Float(1.5));
        let d = sig(7, 64, ByteOrder::BigEndian, ValueKind::Float64);
        assert_eq!(
            d.decode(&(-2.25f64).to_be_bytes()).unwrap().0,
            Raw::Float(-2.25)
        );
    }

    #[test]
    fn labels_look_up_signed_and_unsigned_raws() {
        let mut s = sig(0, 8, ByteOrder::LittleEndian, ValueKind::Signed);
        s.labels = vec![(-5, "neg".into()), (1, "one".into())];
        assert_eq!(s.label(Raw::Signed(-5)), Some("neg"));
        assert_eq!(s.label(Raw::Unsigned(1)), Some("one"));
        assert_eq!(s.label(Raw::Unsigned(u64::MAX)), None);
        assert_eq!(s.label(Raw::Float(1.0)), None);
    }

    proptest! {
        #[test]
        fn fast_path_agrees_with_the_bit_by_bit_reference(
            payload in proptest::collection::vec(any::<u8>(), 0..=64),
            start in 0u16..520,
            size in 1u8..=64,
            big in any::<bool>(),
            signed in any::<bool>(),
        ) {
            let order = if big { ByteOrder::BigEndian } else { ByteOrder::LittleEndian };
            let kind = if signed { ValueKind::Signed } else { ValueKind::Unsigned };
            let s = sig(start, size, order, kind);
            let want = reference(&payload, start, size, order);
            let got = s.decode(&payload);
            match (want, got) {
                (None, None) => {}
                (Some(bits), Some((raw, phys))) => {
                    let expect = if signed {
                        let sh = 64 - u32::from(size);
                        Raw::Signed(((bits << sh) as i64) >> sh)
                    } else {
                        Raw::Unsigned(bits)
                    };
                    prop_assert_eq!(raw, expect);
                    prop_assert_eq!(phys, expect.as_f64());
                }
                (w, g) => prop_assert!(false, "reference {:?}, fast {:?}", w, g),
            }
        }
    }
}
