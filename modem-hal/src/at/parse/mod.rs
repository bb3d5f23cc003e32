//! Sans-IO parsers from AT response text to [`crate::radio`] types.
//!
//! [`Parser`] is fed the lines of one or more responses exactly as a modem or
//! `mmcli --command` prints them (echo lines, `OK`/`ERROR`/`+CME ERROR: n`, blank lines,
//! `response: '...'` wrapping) and merges what it understands into a [`RadioReport`]; every other
//! line is kept in [`Parsed::unparsed`] with the reason. [`parse_text`] does it for a whole text.
//!
//! Formats: Quectel `+QENG` (LTE 18/20-field, NR5G-NSA three-line, NR5G-SA, neighbourcell
//! intra/inter), `+QCSQ`, `+QNWLOCK`, `+QCFG: "nwscanmode"`, `+QIND: "csq"`; 3GPP `+CSQ`,
//! `+CESQ`, `+COPS`, `+CREG`/`+CEREG`/`+C5GREG`/`+CGREG`, `+CFUN`; Sierra `!GSTATUS`, `!LTEINFO`.

mod fields;
mod generic;
mod quectel;
mod sierra;

use crate::radio::{AtError, RadioReport, ServingCell};
use serde::{Deserialize, Serialize};

pub use generic::cme_error_text;

/// Longest line kept (in characters) in an [`Unparsed`] entry or an error message.
const MAX_KEPT: usize = 200;

/// Why a line was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AtParseError {
    /// The line is not a response this crate knows.
    #[error("unknown response")]
    Unknown,
    /// A known response with an unsupported variant (e.g. a RAT without a parser).
    #[error("{what}: unsupported variant {variant:?}")]
    Unsupported {
        /// The response.
        what: &'static str,
        /// The variant seen.
        variant: String,
    },
    /// A known response with the wrong number of fields.
    #[error("{what}: expected {expected} fields, got {got}")]
    FieldCount {
        /// The response.
        what: &'static str,
        /// Allowed count(s).
        expected: String,
        /// Count seen.
        got: usize,
    },
    /// A field that does not decode.
    #[error("{what}: field {field} is not valid: {value:?}")]
    BadField {
        /// The response.
        what: &'static str,
        /// Name of the field.
        field: &'static str,
        /// Its text (cut at 40 characters).
        value: String,
    },
    /// A required field that is missing or a placeholder.
    #[error("{what}: field {field} is missing")]
    MissingField {
        /// The response.
        what: &'static str,
        /// Name of the field.
        field: &'static str,
    },
}

/// How a command's SINR is scaled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinrScale {
    /// Printed in dB.
    #[default]
    Db,
    /// Qualcomm raw 0..250 in 1/5 dB: dB = raw/5 − 20.
    Fifths,
}

/// Per-firmware choices the text alone cannot settle (RADIO.md §2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParseOptions {
    /// SINR of LTE `+QENG` lines (servingcell and neighbourcell). The captured EC25/EG25 and
    /// RM5xx firmware print dB (the default); some documentation says raw 1/5 dB.
    pub qeng_lte_sinr: SinrScale,
    /// SINR of `+QCSQ: "LTE"` lines: raw 1/5 dB by default.
    pub qcsq_lte_sinr: SinrScale,
}

impl Default for ParseOptions {
    fn default() -> Self {
        Self {
            qeng_lte_sinr: SinrScale::Db,
            qcsq_lte_sinr: SinrScale::Fifths,
        }
    }
}

/// A line that was not understood.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unparsed {
    /// 1-based line number in the text fed.
    pub line: usize,
    /// The line (cut at 200 characters).
    pub text: String,
    /// Why.
    pub error: String,
}

/// The result of parsing: the merged report and the lines not understood.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Parsed {
    /// What was understood.
    #[serde(flatten)]
    pub report: RadioReport,
    /// What was not.
    #[serde(default)]
    pub unparsed: Vec<Unparsed>,
}

/// Multi-line responses whose body lines carry no tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    None,
    Gstatus,
    Lteinfo(sierra::LteinfoSection),
}

/// Incremental parser: feed lines, then [`Parser::finish`].
#[derive(Debug)]
pub struct Parser {
    opts: ParseOptions,
    out: Parsed,
    line_no: usize,
    in_mmcli: bool,
    command: Option<String>,
    block: Block,
    lteinfo_columns: Vec<String>,
    /// A `+QCSQ` response is in progress (its lines replace the previous response's).
    in_qcsq: bool,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new(ParseOptions::default())
    }
}

impl Parser {
    /// A parser with these options.
    pub fn new(opts: ParseOptions) -> Self {
        Self {
            opts,
            out: Parsed::default(),
            line_no: 0,
            in_mmcli: false,
            command: None,
            block: Block::None,
            lteinfo_columns: Vec::new(),
            in_qcsq: false,
        }
    }

    /// Feeds one line (with or without its line ending).
    pub fn feed_line(&mut self, raw: &str) {
        self.line_no += 1;
        let mut line = raw.trim();
        if let Some(rest) = line.strip_prefix("response: '") {
            line = rest;
            self.in_mmcli = true;
            self.end_response();
        }
        if self.in_mmcli
            && let Some(rest) = line.strip_suffix('\'')
        {
            line = rest;
            self.in_mmcli = false;
        }
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        if let Err(e) = self.dispatch(line) {
            self.out.unparsed.push(Unparsed {
                line: self.line_no,
                text: line.chars().take(MAX_KEPT).collect(),
                error: e.to_string(),
            });
        }
    }

    /// Feeds a whole text, line by line.
    pub fn feed_text(&mut self, text: &str) {
        for l in text.lines() {
            self.feed_line(l);
        }
    }

    /// The report and the unparsed lines.
    pub fn finish(self) -> Parsed {
        self.out
    }

    fn end_response(&mut self) {
        self.block = Block::None;
        self.in_qcsq = false;
    }

    fn dispatch(&mut self, line: &str) -> Result<(), AtParseError> {
        let upper3: String = line
            .chars()
            .take(2)
            .collect::<String>()
            .to_ascii_uppercase();
        if upper3 == "AT" {
            self.end_response();
            self.command = Some(line.chars().take(MAX_KEPT).collect());
            return Ok(());
        }
        match line {
            "OK" => {
                self.end_response();
                return Ok(());
            }
            "ERROR" | "NO CARRIER" => {
                self.end_response();
                self.out.report.errors.push(AtError {
                    command: self.command.clone(),
                    code: None,
                    message: line.to_owned(),
                });
                return Ok(());
            }
            // Boot and power URCs: understood, nothing to report.
            "RDY" | "POWERED DOWN" => return Ok(()),
            _ => {}
        }
        if let Some(rest) = line
            .strip_prefix("+CME ERROR:")
            .or_else(|| line.strip_prefix("+CMS ERROR:"))
        {
            self.end_response();
            let e = generic::cme_error(rest.trim(), self.command.clone());
            self.out.report.errors.push(e);
            return Ok(());
        }
        let (tag, rest) = match line.split_once(':') {
            Some((t, r)) if t.starts_with(['+', '!']) => (t.trim(), r.trim()),
            _ => return self.untagged(line),
        };
        if tag != "+QCSQ" {
            self.in_qcsq = false;
        }
        if !matches!(tag, "!GSTATUS" | "!LTEINFO") {
            self.block = Block::None;
        }
        let r = &mut self.out.report;
        match tag {
            "+QENG" => quectel::apply_qeng(r, rest, &self.opts)?,
            "+QCSQ" => {
                let q = quectel::parse_qcsq(rest, &self.opts)?;
                if !self.in_qcsq {
                    r.signal.qcsq.clear();
                    self.in_qcsq = true;
                }
                r.signal.qcsq.push(q);
            }
            "+QNWLOCK" => quectel::apply_qnwlock(r, rest)?,
            "+QCFG" => quectel::apply_qcfg(r, rest)?,
            "+QIND" => quectel::apply_qind(r, rest)?,
            "+CSQ" => r.signal.csq = Some(generic::parse_csq(rest)?),
            "+CESQ" => r.signal.cesq = Some(generic::parse_cesq(rest)?),
            "+COPS" => generic::apply_cops(r, rest)?,
            "+CREG" | "+CEREG" | "+C5GREG" | "+CGREG" => {
                r.registration = Some(generic::parse_reg(&tag[1..], rest)?);
            }
            "+CFUN" => r.cfun = Some(generic::parse_cfun(rest)?),
            // Boot URCs: understood, nothing to report.
            "+CPIN" | "+QUSIM" => {}
            "!GSTATUS" => {
                self.block = Block::Gstatus;
                r.serving = Some(ServingCell::default());
                if !rest.is_empty() {
                    sierra::apply_gstatus_line(r, rest)?;
                }
            }
            "!LTEINFO" => {
                self.block = Block::Lteinfo(sierra::LteinfoSection::None);
                self.lteinfo_columns.clear();
                r.neighbours.clear();
            }
            _ => return Err(AtParseError::Unknown),
        }
        Ok(())
    }

    /// Lines without a `+TAG:`: bodies of Sierra tables, or unknown.
    fn untagged(&mut self, line: &str) -> Result<(), AtParseError> {
        match self.block {
            Block::Gstatus => sierra::apply_gstatus_line(&mut self.out.report, line),
            Block::Lteinfo(section) => {
                let next = sierra::apply_lteinfo_line(
                    &mut self.out.report,
                    section,
                    &mut self.lteinfo_columns,
                    line,
                )?;
                self.block = Block::Lteinfo(next);
                Ok(())
            }
            Block::None => Err(AtParseError::Unknown),
        }
    }
}

/// Parses a whole text with the default options.
pub fn parse_text(text: &str) -> Parsed {
    parse_text_with(text, ParseOptions::default())
}

/// Parses a whole text.
pub fn parse_text_with(text: &str, opts: ParseOptions) -> Parsed {
    let mut p = Parser::new(opts);
    p.feed_text(text);
    p.finish()
}

#[cfg(test)]
mod tests;
