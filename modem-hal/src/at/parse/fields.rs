//! Field splitting and value decoding shared by the dialects.

use super::AtParseError;

/// One comma-separated field: its text (quotes removed, spaces trimmed) and whether it was quoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field<'a> {
    pub text: &'a str,
    pub quoted: bool,
}

/// Splits `s` at commas outside double quotes and parentheses. Fields are trimmed (MM's tests
/// have space-padded fields) and unquoted. An unterminated quote runs to the end of the line.
pub(crate) fn split_fields(s: &str) -> Vec<Field<'_>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_quote = false;
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '"' => in_quote = !in_quote,
            '(' if !in_quote => depth += 1,
            ')' if !in_quote => depth = depth.saturating_sub(1),
            ',' if !in_quote && depth == 0 => {
                out.push(field(&s[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(field(&s[start..]));
    out
}

fn field(raw: &str) -> Field<'_> {
    let t = raw.trim();
    if let Some(inner) = t.strip_prefix('"') {
        Field {
            text: inner.strip_suffix('"').unwrap_or(inner).trim(),
            quoted: true,
        }
    } else {
        Field {
            text: t,
            quoted: false,
        }
    }
}

/// True for the placeholders modems print for "no value": empty, `-`, `--`.
pub(crate) fn is_placeholder(s: &str) -> bool {
    s.is_empty() || s.chars().all(|c| c == '-')
}

/// Field accessor that names the field in errors.
pub(crate) struct Fields<'a> {
    pub what: &'static str,
    pub f: Vec<Field<'a>>,
}

impl<'a> Fields<'a> {
    pub fn new(what: &'static str, s: &'a str) -> Self {
        Self {
            what,
            f: split_fields(s),
        }
    }

    pub fn len(&self) -> usize {
        self.f.len()
    }

    /// Errors unless the count is within `min..=max`.
    pub fn expect_count(&self, min: usize, max: usize) -> Result<(), AtParseError> {
        let got = self.f.len();
        if got < min || got > max {
            return Err(AtParseError::FieldCount {
                what: self.what,
                expected: if min == max {
                    format!("{min}")
                } else {
                    format!("{min}..={max}")
                },
                got,
            });
        }
        Ok(())
    }

    pub fn text(&self, i: usize) -> Option<&'a str> {
        self.f.get(i).map(|f| f.text)
    }

    pub fn quoted(&self, i: usize) -> bool {
        self.f.get(i).is_some_and(|f| f.quoted)
    }

    /// Text, or `None` if missing or a placeholder.
    pub fn string(&self, i: usize) -> Option<String> {
        self.text(i)
            .filter(|t| !is_placeholder(t))
            .map(str::to_owned)
    }

    fn bad(&self, name: &'static str, value: &str) -> AtParseError {
        AtParseError::BadField {
            what: self.what,
            field: name,
            value: value.chars().take(40).collect(),
        }
    }

    /// Signed decimal integer; `None` if missing or a placeholder.
    pub fn int(&self, i: usize, name: &'static str) -> Result<Option<i64>, AtParseError> {
        match self.text(i) {
            None => Ok(None),
            Some(t) if is_placeholder(t) => Ok(None),
            Some(t) => t.parse::<i64>().map(Some).map_err(|_| self.bad(name, t)),
        }
    }

    /// Decimal number (integer or fractional); `None` if missing or a placeholder.
    pub fn num(&self, i: usize, name: &'static str) -> Result<Option<f64>, AtParseError> {
        match self.text(i) {
            None => Ok(None),
            Some(t) if is_placeholder(t) => Ok(None),
            Some(t) => match t.parse::<f64>() {
                Ok(v)
                    if v.is_finite()
                        && t.bytes().all(|b| b.is_ascii_digit() || b"+-.".contains(&b)) =>
                {
                    Ok(Some(v))
                }
                _ => Err(self.bad(name, t)),
            },
        }
    }

    /// Required signed integer.
    pub fn req_int(&self, i: usize, name: &'static str) -> Result<i64, AtParseError> {
        self.int(i, name)?.ok_or(AtParseError::MissingField {
            what: self.what,
            field: name,
        })
    }

    /// Hexadecimal integer (no `0x`), at most 16 digits; `None` if missing or a placeholder.
    pub fn hex(&self, i: usize, name: &'static str) -> Result<Option<u64>, AtParseError> {
        match self.text(i) {
            None => Ok(None),
            Some(t) if is_placeholder(t) => Ok(None),
            Some(t) => {
                let h = t.strip_prefix("0x").unwrap_or(t);
                if h.is_empty() || h.len() > 16 {
                    return Err(self.bad(name, t));
                }
                u64::from_str_radix(h, 16)
                    .map(Some)
                    .map_err(|_| self.bad(name, t))
            }
        }
    }
}

/// `Some(v)` if `v` is within `lo..=hi`, else `None` (out-of-range sentinels become absent).
pub(crate) fn in_range(v: Option<f64>, lo: f64, hi: f64) -> Option<f64> {
    v.filter(|x| (lo..=hi).contains(x))
}

/// Narrows to an integer type, `None` when out of range.
pub(crate) fn narrow<T: TryFrom<i64>>(v: Option<i64>) -> Option<T> {
    v.and_then(|x| T::try_from(x).ok())
}

/// Plausible RSRP (dBm); the reporting range is −140…−44 with some margin for modems.
pub(crate) fn rsrp(v: Option<f64>) -> Option<f64> {
    in_range(v, -160.0, -20.0)
}

/// Plausible RSRQ (dB): NR goes up to +20 (AOSP bound), LTE down to −19.5; margin included.
pub(crate) fn rsrq(v: Option<f64>) -> Option<f64> {
    in_range(v, -45.0, 20.0)
}

/// Plausible RSSI (dBm).
pub(crate) fn rssi(v: Option<f64>) -> Option<f64> {
    in_range(v, -130.0, 0.0)
}

/// Plausible SINR (dB), after scaling.
pub(crate) fn sinr(v: Option<f64>) -> Option<f64> {
    in_range(v, -30.0, 50.0)
}

/// Physical cell id: 0..=503 (LTE), 0..=1007 (NR).
pub(crate) fn pci(v: Option<i64>) -> Option<u16> {
    v.filter(|x| (0..=1007).contains(x))
        .and_then(|x| u16::try_from(x).ok())
}

/// MCC or MNC (three digits at most).
pub(crate) fn mcc_mnc(v: Option<i64>) -> Option<u16> {
    v.filter(|x| (0..=999).contains(x))
        .and_then(|x| u16::try_from(x).ok())
}

/// LTE bandwidth enum of QENG / LTEINFO: 0..=5 = 1.4/3/5/10/15/20 MHz.
pub(crate) fn lte_bandwidth_mhz(v: Option<i64>) -> Option<f64> {
    const T: [f64; 6] = [1.4, 3.0, 5.0, 10.0, 15.0, 20.0];
    v.and_then(|x| usize::try_from(x).ok())
        .and_then(|i| T.get(i).copied())
}

/// NR bandwidth enum of QENG: 0..=13 = 5/10/15/20/25/30/40/50/60/80/90/100/200/400 MHz.
pub(crate) fn nr_bandwidth_mhz(v: Option<i64>) -> Option<f64> {
    const T: [f64; 14] = [
        5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0, 80.0, 90.0, 100.0, 200.0, 400.0,
    ];
    v.and_then(|x| usize::try_from(x).ok())
        .and_then(|i| T.get(i).copied())
}

/// NR subcarrier spacing enum of QENG: 0..=4 = 15/30/60/120/240 kHz.
pub(crate) fn nr_scs_khz(v: Option<i64>) -> Option<u16> {
    const T: [u16; 5] = [15, 30, 60, 120, 240];
    v.and_then(|x| usize::try_from(x).ok())
        .and_then(|i| T.get(i).copied())
}

/// Qualcomm raw SINR (1/5 dB steps from −20 dB) to dB.
pub(crate) fn sinr_fifths(raw: f64) -> f64 {
    raw / 5.0 - 20.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_quotes_and_parens() {
        let f = split_fields(r#""a,b", 12 ,(1,"x","y"),,"#);
        let t: Vec<_> = f.iter().map(|f| f.text).collect();
        assert_eq!(t, vec!["a,b", "12", r#"(1,"x","y")"#, "", ""]);
        assert!(f[0].quoted && !f[1].quoted);
    }

    #[test]
    fn placeholders_and_hex() {
        let f = Fields::new("t", "-,--,4CAA71F,zz,00000000000000000");
        assert_eq!(f.int(0, "a").ok(), Some(None));
        assert_eq!(f.num(1, "a").ok(), Some(None));
        assert_eq!(f.hex(2, "a").ok(), Some(Some(0x4CAA71F)));
        assert!(f.hex(3, "a").is_err());
        assert!(f.hex(4, "a").is_err());
    }

    #[test]
    fn enums() {
        assert_eq!(lte_bandwidth_mhz(Some(3)), Some(10.0));
        assert_eq!(lte_bandwidth_mhz(Some(6)), None);
        assert_eq!(nr_bandwidth_mhz(Some(2)), Some(15.0));
        assert_eq!(nr_scs_khz(Some(1)), Some(30));
        assert_eq!(sinr_fifths(150.0), 10.0);
    }
}
