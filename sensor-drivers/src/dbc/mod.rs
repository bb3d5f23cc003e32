//! DBC decoding: CAN frames to named physical signals.
//!
//! `can-dbc` parses the file; this module compiles each message into a decoding plan (per
//! signal: byte window, shift, mask, sign, IEEE type, scale, value table, multiplexer condition)
//! and decodes frames with it. Supported: Intel and Motorola byte order, signed values,
//! factor/offset, IEEE float/double (`SIG_VALTYPE_`), value tables (`VAL_`), multiplexing
//! (`M`/`mN`) including extended multiplexing (cascaded `mNM`, `SG_MUL_VAL_` ranges), CAN FD
//! lengths up to 64 bytes, UTF-8 or cp1252 files. Vector's `VECTOR__INDEPENDENT_SIG_MSG`
//! pseudo-message is ignored.
//!
//! Decoding is sans-IO and allocation-free with a reused [`DecodeBuf`]: a frame shorter than
//! its message yields the signals that fit and lists the others as missing.

mod signal;

pub use signal::{ByteOrder, MuxCondition, Raw, SignalDef, ValueKind};

use crate::can::{CanFrame, MAX_FD_LEN};
use can_dbc::{MessageId, MultiplexIndicator, SignalExtendedValueType};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Vector's container for signals that belong to no message; never decoded.
pub const INDEPENDENT_SIG_MSG: &str = "VECTOR__INDEPENDENT_SIG_MSG";

/// Why a DBC could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DbcError {
    #[error("cannot read DBC file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render_syntax(file.as_deref(), *line, *col, message))]
    Syntax {
        /// The file, when loaded from one.
        file: Option<PathBuf>,
        /// 1-based line and column, when the parser reports them.
        line: Option<usize>,
        col: Option<usize>,
        message: String,
    },
}

fn render_syntax(
    file: Option<&Path>,
    line: Option<usize>,
    col: Option<usize>,
    message: &str,
) -> String {
    let file = file.map_or_else(|| "DBC".to_string(), |p| p.display().to_string());
    match (line, col) {
        (Some(l), Some(c)) => format!("{file}:{l}:{c}: not a valid DBC file: {message}"),
        _ => format!("{file}: not a valid DBC file: {message}"),
    }
}

impl DbcError {
    fn in_file(self, path: &Path) -> DbcError {
        match self {
            DbcError::Syntax {
                line, col, message, ..
            } => DbcError::Syntax {
                file: Some(path.to_path_buf()),
                line,
                col,
                message,
            },
            e => e,
        }
    }
}

/// One decoded signal of a frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignalValue {
    /// Index into [`Message::signals`].
    pub signal: u16,
    pub raw: Raw,
    /// raw × factor + offset.
    pub phys: f64,
}

/// How a signal's presence is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sel {
    Always,
    /// Its multiplexer is undefined or part of a cycle.
    Never,
    /// Decided by the multiplexer in this slot of [`Message::mux_order`].
    Slot(u16),
}

/// A multiplexer's state while a frame is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MuxState {
    Absent,
    Missing,
    Value(Option<u64>),
}

/// A DBC message compiled for decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub name: String,
    /// Identifier without flag bits (11 or 29 bits).
    pub id: u32,
    /// 29-bit identifier (`BO_` id with bit 31 set in the DBC).
    pub extended: bool,
    /// Length in bytes per the DBC (CAN FD messages: up to 64).
    pub size: u16,
    /// In the order of the DBC.
    pub signals: Vec<SignalDef>,
    sel: Vec<Sel>,
    /// Multiplexer signals, each after the multiplexer that selects it.
    mux_order: Vec<u16>,
}

impl Message {
    /// The signal of this name.
    pub fn signal(&self, name: &str) -> Option<&SignalDef> {
        self.signals.iter().find(|s| s.name == name)
    }

    /// True when some signals depend on a multiplexer value.
    pub fn is_multiplexed(&self) -> bool {
        !self.mux_order.is_empty()
    }
}

/// Reusable output of [`Dbc::decode_into`].
#[derive(Debug, Clone, Default)]
pub struct DecodeBuf {
    /// The signals present in the frame (multiplexed ones only when selected), in DBC order.
    pub values: Vec<SignalValue>,
    /// Signals that would be present but lie beyond the frame's payload (indexes into
    /// [`Message::signals`]).
    pub missing: Vec<u16>,
    mux: Vec<MuxState>,
}

/// A decoded frame.
#[derive(Debug, Clone)]
pub struct Decoded<'a> {
    pub message: &'a Message,
    pub values: Vec<SignalValue>,
    pub missing: Vec<u16>,
}

impl<'a> Decoded<'a> {
    /// Each decoded signal's definition with its value.
    pub fn signals(&self) -> impl Iterator<Item = (&'a SignalDef, SignalValue)> + '_ {
        let m = self.message;
        self.values
            .iter()
            .filter_map(move |v| m.signals.get(usize::from(v.signal)).map(|s| (s, *v)))
    }
}

const NO_MESSAGE: u32 = u32::MAX;
const EXT_KEY: u32 = 1 << 31;

/// A compiled DBC database.
#[derive(Debug, Clone)]
pub struct Dbc {
    messages: Vec<Message>,
    /// Message index by standard identifier.
    standard: Vec<u32>,
    /// Message index by extended identifier | bit 31 (and standard identifiers above 0x7FF).
    other: HashMap<u32, u32>,
    warnings: Vec<String>,
}

/// The text of a DBC file: UTF-8 (a BOM is dropped) or, failing that, Windows-1252, the
/// encoding Vector's tools write.
pub fn decode_text(bytes: &[u8]) -> Cow<'_, str> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => {
            encoding_rs::WINDOWS_1252
                .decode_without_bom_handling(bytes)
                .0
        }
    }
}

impl Dbc {
    /// Loads and compiles a DBC file. Errors name the file and, for syntax errors, the place.
    pub fn load(path: impl AsRef<Path>) -> Result<Dbc, DbcError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| DbcError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Dbc::from_bytes(&bytes).map_err(|e| e.in_file(path))
    }

    /// Compiles a DBC from the bytes of a file (UTF-8 or cp1252).
    pub fn from_bytes(bytes: &[u8]) -> Result<Dbc, DbcError> {
        Dbc::parse(&decode_text(bytes))
    }

    /// Compiles a DBC from its text.
    pub fn parse(text: &str) -> Result<Dbc, DbcError> {
        // can-dbc states some grammar assumptions with `expect`; a file that breaks one must be
        // an error, not a crash.
        let parsed = std::panic::catch_unwind(|| can_dbc::Dbc::try_from(text)).map_err(|_| {
            DbcError::Syntax {
                file: None,
                line: None,
                col: None,
                message: "the DBC parser gave up on this file (internal error in can-dbc)".into(),
            }
        })?;
        let ast = parsed.map_err(syntax_error)?;
        Ok(compile(&ast))
    }

    /// All messages, in DBC order.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// What the compiler ignored or could not use (unsupported signal sizes, undefined
    /// multiplexers, duplicate identifiers…), one sentence each.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The message with this identifier.
    pub fn message(&self, id: u32, extended: bool) -> Option<&Message> {
        let i = if !extended && (id as usize) < self.standard.len() {
            self.standard[id as usize]
        } else {
            let key = if extended { id | EXT_KEY } else { id };
            *self.other.get(&key)?
        };
        self.messages.get(i as usize)
    }

    /// Decodes `frame` (None for an unknown identifier, a remote or an error frame).
    pub fn decode(&self, frame: &CanFrame) -> Option<Decoded<'_>> {
        let mut buf = DecodeBuf::default();
        let message = self.decode_into(frame, &mut buf)?;
        Some(Decoded {
            message,
            values: buf.values,
            missing: buf.missing,
        })
    }

    /// Decodes `frame` into `buf` (cleared first) without allocating once `buf` has grown;
    /// returns its message, or None for an unknown identifier, a remote or an error frame.
    pub fn decode_into<'a>(&'a self, frame: &CanFrame, buf: &mut DecodeBuf) -> Option<&'a Message> {
        buf.values.clear();
        buf.missing.clear();
        buf.mux.clear();
        if frame.is_remote() || frame.is_error() {
            return None;
        }
        let msg = self.message(frame.id, frame.is_extended())?;
        let len = usize::from(frame.len).min(MAX_FD_LEN);
        let mut padded: signal::Padded = [0; MAX_FD_LEN + 16];
        padded[..len].copy_from_slice(&frame.data[..len]);

        for &m in &msg.mux_order {
            let m = usize::from(m);
            let st = match select(msg, m, &buf.mux) {
                MuxState::Value(_) => match msg.signals[m].bits(&padded, len) {
                    Some(b) => MuxState::Value(msg.signals[m].raw(b).selector()),
                    None => MuxState::Missing,
                },
                other => other,
            };
            buf.mux.push(st);
        }
        for (i, s) in msg.signals.iter().enumerate() {
            match select(msg, i, &buf.mux) {
                MuxState::Absent => {}
                MuxState::Missing => buf.missing.push(i as u16),
                MuxState::Value(_) => match s.bits(&padded, len) {
                    Some(b) => {
                        let raw = s.raw(b);
                        buf.values.push(SignalValue {
                            signal: i as u16,
                            raw,
                            phys: s.physical(raw),
                        });
                    }
                    None => buf.missing.push(i as u16),
                },
            }
        }
        Some(msg)
    }
}

/// Whether signal `i` is present: `Value` (present), `Absent` (not selected) or `Missing` (its
/// multiplexer lies beyond the payload).
#[inline]
fn select(msg: &Message, i: usize, mux: &[MuxState]) -> MuxState {
    match msg.sel[i] {
        Sel::Always => MuxState::Value(None),
        Sel::Never => MuxState::Absent,
        Sel::Slot(k) => match mux.get(usize::from(k)) {
            Some(MuxState::Value(Some(v))) => {
                let selected = msg.signals[i].mux.as_ref().is_some_and(|c| c.selects(*v));
                if selected {
                    MuxState::Value(None)
                } else {
                    MuxState::Absent
                }
            }
            Some(MuxState::Missing) => MuxState::Missing,
            _ => MuxState::Absent,
        },
    }
}

fn syntax_error(e: can_dbc::DbcError) -> DbcError {
    match e {
        can_dbc::DbcError::Pest(p) => {
            let rendered = p.to_string();
            // pest renders " --> LINE:COL", the source line with a caret, then "= what".
            let loc = rendered.lines().find_map(|l| {
                let (l, c) = l.trim().strip_prefix("-->")?.trim().split_once(':')?;
                Some((l.parse().ok()?, c.parse().ok()?))
            });
            let what = rendered
                .lines()
                .rev()
                .find_map(|l| l.trim().strip_prefix("= "))
                .unwrap_or("syntax error");
            let source_line = p.line().trim();
            DbcError::Syntax {
                file: None,
                line: loc.map(|(l, _)| l),
                col: loc.map(|(_, c)| c),
                message: format!("{what}, in '{}'", cut(source_line, 80)),
            }
        }
        other => DbcError::Syntax {
            file: None,
            line: None,
            col: None,
            message: other.to_string(),
        },
    }
}

fn cut(s: &str, n: usize) -> Cow<'_, str> {
    match s.char_indices().nth(n) {
        Some((i, _)) => Cow::Owned(format!("{}…", &s[..i])),
        None => Cow::Borrowed(s),
    }
}

type Key<'a> = (MessageId, &'a str);

fn compile(ast: &can_dbc::Dbc) -> Dbc {
    let mut warnings = Vec::new();
    let mut valtypes: HashMap<Key<'_>, SignalExtendedValueType> = HashMap::new();
    for v in &ast.signal_extended_value_type_list {
        valtypes.insert(
            (v.message_id, v.signal_name.as_str()),
            v.signal_extended_value_type,
        );
    }
    // Later VAL_ entries win, as in a dictionary.
    let mut tables: HashMap<Key<'_>, BTreeMap<i64, String>> = HashMap::new();
    for d in &ast.value_descriptions {
        if let can_dbc::ValueDescription::Signal {
            message_id,
            name,
            value_descriptions,
        } = d
        {
            let t = tables.entry((*message_id, name.as_str())).or_default();
            for v in value_descriptions {
                t.insert(v.id, v.description.clone());
            }
        }
    }
    let mut mul_val: HashMap<Key<'_>, Vec<&can_dbc::ExtendedMultiplex>> = HashMap::new();
    for x in &ast.extended_multiplex {
        mul_val
            .entry((x.message_id, x.signal_name.as_str()))
            .or_default()
            .push(x);
    }

    let mut dbc = Dbc {
        messages: Vec::new(),
        standard: vec![NO_MESSAGE; 0x800],
        other: HashMap::new(),
        warnings: Vec::new(),
    };
    for m in &ast.messages {
        if m.name == INDEPENDENT_SIG_MSG {
            continue;
        }
        let (id, extended) = match m.id {
            MessageId::Standard(v) => (u32::from(v), false),
            MessageId::Extended(v) => (v, true),
        };
        if dbc.message(id, extended).is_some() {
            warnings.push(format!(
                "message {} ({id:#x}) has the identifier of an earlier message; ignored",
                m.name
            ));
            continue;
        }
        let msg = compile_message(m, id, extended, &valtypes, &tables, &mul_val, &mut warnings);
        let index = dbc.messages.len() as u32;
        if !extended && (id as usize) < dbc.standard.len() {
            dbc.standard[id as usize] = index;
        } else {
            dbc.other
                .insert(if extended { id | EXT_KEY } else { id }, index);
        }
        dbc.messages.push(msg);
    }
    dbc.warnings = warnings;
    dbc
}

fn compile_message(
    m: &can_dbc::Message,
    id: u32,
    extended: bool,
    valtypes: &HashMap<Key<'_>, SignalExtendedValueType>,
    tables: &HashMap<Key<'_>, BTreeMap<i64, String>>,
    mul_val: &HashMap<Key<'_>, Vec<&can_dbc::ExtendedMultiplex>>,
    warnings: &mut Vec<String>,
) -> Message {
    let size = u16::try_from(m.size).unwrap_or(u16::MAX);
    if usize::from(size) > MAX_FD_LEN {
        warnings.push(format!(
            "message {}: length {} exceeds the 64 bytes of a CAN FD frame",
            m.name, m.size
        ));
    }
    let mut signals = Vec::new();
    let mut sources = Vec::new();
    for s in &m.signals {
        let Ok(start) = u16::try_from(s.start_bit) else {
            warnings.push(format!(
                "signal {}.{}: start bit {} is out of range; ignored",
                m.name, s.name, s.start_bit
            ));
            continue;
        };
        if !(1..=64).contains(&s.size) {
            warnings.push(format!(
                "signal {}.{}: {} bits is not a supported size (1-64); ignored",
                m.name, s.name, s.size
            ));
            continue;
        }
        let size_bits = s.size as u8;
        let mut kind = match s.value_type {
            can_dbc::ValueType::Signed => ValueKind::Signed,
            can_dbc::ValueType::Unsigned => ValueKind::Unsigned,
        };
        match valtypes.get(&(m.id, s.name.as_str())) {
            Some(SignalExtendedValueType::IEEEfloat32Bit) if size_bits == 32 => {
                kind = ValueKind::Float32;
            }
            Some(SignalExtendedValueType::IEEEdouble64bit) if size_bits == 64 => {
                kind = ValueKind::Float64;
            }
            Some(SignalExtendedValueType::SignedOrUnsignedInteger) | None => {}
            Some(t) => warnings.push(format!(
                "signal {}.{}: {t:?} needs {} bits, it has {size_bits}; decoded as an integer",
                m.name,
                s.name,
                if *t == SignalExtendedValueType::IEEEfloat32Bit {
                    32
                } else {
                    64
                }
            )),
        }
        let labels = tables
            .get(&(m.id, s.name.as_str()))
            .map(|t| t.iter().map(|(k, v)| (*k, v.clone())).collect())
            .unwrap_or_default();
        let def = SignalDef::new(
            s.name.clone(),
            s.unit.clone(),
            start,
            size_bits,
            match s.byte_order {
                can_dbc::ByteOrder::LittleEndian => ByteOrder::LittleEndian,
                can_dbc::ByteOrder::BigEndian => ByteOrder::BigEndian,
            },
            kind,
            s.factor,
            s.offset,
            labels,
        );
        if def.needed_len() > MAX_FD_LEN {
            warnings.push(format!(
                "signal {}.{}: lies beyond byte 64; it can never be decoded",
                m.name, s.name
            ));
        }
        signals.push(def);
        sources.push(s);
    }

    // Multiplexing: each `mN`/`mNM` signal's multiplexer and selecting values.
    let index: HashMap<&str, usize> = sources
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .rev()
        .collect();
    let plain_muxes: Vec<usize> = sources
        .iter()
        .enumerate()
        .filter(|(_, s)| s.multiplexer_indicator == MultiplexIndicator::Multiplexor)
        .map(|(i, _)| i)
        .collect();
    let mut sel = vec![Sel::Always; signals.len()];
    for (i, s) in sources.iter().enumerate() {
        let value = match s.multiplexer_indicator {
            MultiplexIndicator::MultiplexedSignal(v)
            | MultiplexIndicator::MultiplexorAndMultiplexedSignal(v) => v,
            MultiplexIndicator::Multiplexor | MultiplexIndicator::Plain => continue,
        };
        let cond = if let Some(entries) = mul_val.get(&(m.id, s.name.as_str())) {
            let mux_name = entries[0].multiplexor_signal_name.as_str();
            let ranges: Vec<(u64, u64)> = entries
                .iter()
                .filter(|e| e.multiplexor_signal_name == mux_name)
                .flat_map(|e| e.mappings.iter().map(|r| (r.min_value, r.max_value)))
                .collect();
            if entries
                .iter()
                .any(|e| e.multiplexor_signal_name != mux_name)
            {
                warnings.push(format!(
                    "signal {}.{}: SG_MUL_VAL_ names several multiplexers; using {mux_name}",
                    m.name, s.name
                ));
            }
            match index.get(mux_name) {
                Some(&mux) if mux != i => Some((mux, ranges)),
                _ => {
                    warnings.push(format!(
                        "signal {}.{}: multiplexer {mux_name} is not a signal of the message; never decoded",
                        m.name, s.name
                    ));
                    None
                }
            }
        } else {
            match plain_muxes.as_slice() {
                [mux] => Some((*mux, vec![(value, value)])),
                [mux, ..] => {
                    warnings.push(format!(
                        "signal {}.{}: several multiplexers and no SG_MUL_VAL_; using {}",
                        m.name, s.name, signals[*mux].name
                    ));
                    Some((*mux, vec![(value, value)]))
                }
                [] => {
                    warnings.push(format!(
                        "signal {}.{}: multiplexed but the message has no multiplexer; never decoded",
                        m.name, s.name
                    ));
                    None
                }
            }
        };
        match cond {
            Some((mux, ranges)) => {
                signals[i].mux = Some(MuxCondition {
                    multiplexer: mux as u16,
                    ranges,
                });
                signals[mux].is_multiplexer = true;
            }
            None => sel[i] = Sel::Never,
        }
    }
    for &i in &plain_muxes {
        signals[i].is_multiplexer = true;
    }

    // Evaluation order of the multiplexers: by depth of their own multiplexer chain.
    let n = signals.len();
    let depth = |start: usize| -> Option<usize> {
        let mut d = 0;
        let mut cur = start;
        while let Some(c) = &signals[cur].mux {
            cur = usize::from(c.multiplexer);
            d += 1;
            if d > n {
                return None;
            }
        }
        Some(d)
    };
    let mut muxes: Vec<(usize, usize)> = Vec::new();
    for i in 0..n {
        match depth(i) {
            None => {
                if sel[i] != Sel::Never {
                    warnings.push(format!(
                        "signal {}.{}: its multiplexers select each other in a cycle; never decoded",
                        m.name, signals[i].name
                    ));
                }
                sel[i] = Sel::Never;
            }
            Some(d) if signals[i].is_multiplexer => muxes.push((d, i)),
            Some(_) => {}
        }
    }
    muxes.sort_unstable();
    let mux_order: Vec<u16> = muxes.iter().map(|&(_, i)| i as u16).collect();
    let slot_of: HashMap<usize, u16> = muxes
        .iter()
        .enumerate()
        .map(|(k, &(_, i))| (i, k as u16))
        .collect();
    for i in 0..n {
        if sel[i] == Sel::Never {
            continue;
        }
        if let Some(c) = &signals[i].mux {
            sel[i] = match slot_of.get(&usize::from(c.multiplexer)) {
                Some(&k) => Sel::Slot(k),
                None => Sel::Never,
            };
        }
    }

    Message {
        name: m.name.clone(),
        id,
        extended,
        size,
        signals,
        sel,
        mux_order,
    }
}

#[cfg(test)]
mod tests;
