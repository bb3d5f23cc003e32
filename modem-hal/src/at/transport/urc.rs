//! Result codes and unsolicited result codes (URCs): recognising them and telling a URC from an
//! information line of the command in flight.
//!
//! # The URC rule
//!
//! Lines without a `+XXX:` prefix that are URCs (`RDY`, `POWERED DOWN`, `RING`, ...) are always
//! URCs. A line with a known URC prefix (`+CREG:`, `+CGREG:`, `+CEREG:`, `+C5GREG:`, `+QIND:`,
//! `+QUSIM:`, `+CPIN:`, `+CFUN:`, `+CGEV:`, `+CMTI:`) is an information line only when the command
//! in flight asks for it: the command has the same name (`AT+CEREG?` for `+CEREG:`) and is in read,
//! test or execute form (a set command such as `AT+CEREG=2` or `AT+CPIN="1234"` answers `OK` only,
//! so a `+CEREG:` or `+CPIN: READY` then is a URC). For the registration prefixes in read form the
//! field shape decides as well: the solicited form is `<n>,<stat>[,...]` (at least two fields, the
//! second a 1–2 digit `<stat>` of at most 11), the URC omits `<n>`: `<stat>[,<tac>,<ci>,<AcT>]`,
//! so a single field or a second field that is a TAC (quoted, or hex of more than two digits) makes
//! it a URC. Any other line while a command is in flight is an information line of that command;
//! any line while no command is in flight is a URC ([`UrcKind::Other`] when not a known form).

use super::command::{CommandLine, Form};

/// The kind of an unsolicited result code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UrcKind {
    /// `+CREG:` circuit-switched registration.
    Creg,
    /// `+CGREG:` GPRS registration.
    Cgreg,
    /// `+CEREG:` EPS (LTE) registration.
    Cereg,
    /// `+C5GREG:` 5GS registration.
    C5greg,
    /// `+QIND:` Quectel indication (`"csq"`, `"act"`, `SMS DONE`, `PB DONE`, ...).
    Qind,
    /// `+QUSIM:` Quectel SIM type at boot.
    Qusim,
    /// `+CPIN:` SIM state (e.g. `+CPIN: READY` at boot).
    Cpin,
    /// `+CFUN:` functionality level reported at boot.
    Cfun,
    /// `+CGEV:` packet-domain event.
    Cgev,
    /// `+CMTI:` new SMS stored.
    Cmti,
    /// `RDY`: the modem has booted.
    Ready,
    /// `POWERED DOWN` / `NORMAL POWER DOWN`.
    PoweredDown,
    /// `RING`.
    Ring,
    /// A line received while no command was in flight that is no known URC.
    Other,
}

/// An unsolicited result code: its kind and the line as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Urc {
    /// What kind of URC.
    pub kind: UrcKind,
    /// The full line, e.g. `+QIND: "csq",20,99`.
    pub line: String,
}

/// A final result code ending a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Final {
    /// `OK`.
    Ok,
    /// `ERROR`.
    Error,
    /// `+CME ERROR: <err>`.
    Cme(ErrorCode),
    /// `+CMS ERROR: <err>`.
    Cms(ErrorCode),
    /// `NO CARRIER`, `BUSY`, `NO ANSWER`, `NO DIALTONE`.
    Other(String),
}

/// The `<err>` of a `+CME ERROR` / `+CMS ERROR`: numeric (`AT+CMEE=1`) or verbose (`AT+CMEE=2`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    /// Numeric code, e.g. 30.
    Numeric(u32),
    /// Verbose text, e.g. `no network service`.
    Text(String),
}

/// 27.007 §9.2 codes and their verbose texts (those RADIO.md §2.3 lists).
const CME_TEXTS: &[(u32, &str)] = &[
    (0, "phone failure"),
    (3, "operation not allowed"),
    (4, "operation not supported"),
    (10, "SIM not inserted"),
    (13, "SIM failure"),
    (14, "SIM busy"),
    (30, "no network service"),
    (31, "network timeout"),
    (32, "network not allowed - emergency calls only"),
    (50, "incorrect parameters"),
    (100, "unknown"),
];

impl ErrorCode {
    fn parse(s: &str) -> Self {
        let s = s.trim();
        match s.parse::<u32>() {
            Ok(n) => Self::Numeric(n),
            Err(_) => Self::Text(s.to_string()),
        }
    }

    /// The numeric 27.007 code, also for the verbose texts of the known codes.
    pub fn code(&self) -> Option<u32> {
        match self {
            Self::Numeric(n) => Some(*n),
            Self::Text(t) => CME_TEXTS
                .iter()
                .find(|(_, text)| text.eq_ignore_ascii_case(t))
                .map(|(n, _)| *n),
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Numeric(n) => match CME_TEXTS.iter().find(|(c, _)| c == n) {
                Some((_, text)) => write!(f, "{n} ({text})"),
                None => write!(f, "{n}"),
            },
            Self::Text(t) => f.write_str(t),
        }
    }
}

/// The final result code `line` is, if any.
pub fn final_code(line: &str) -> Option<Final> {
    match line {
        "OK" => return Some(Final::Ok),
        "ERROR" => return Some(Final::Error),
        "NO CARRIER" | "BUSY" | "NO ANSWER" | "NO DIALTONE" => {
            return Some(Final::Other(line.to_string()));
        }
        _ => {}
    }
    if let Some(rest) = line.strip_prefix("+CME ERROR:") {
        return Some(Final::Cme(ErrorCode::parse(rest)));
    }
    line.strip_prefix("+CMS ERROR:")
        .map(|rest| Final::Cms(ErrorCode::parse(rest)))
}

/// The `+XXX` prefix of a line (upper case, without the colon), if it has one.
fn prefix(line: &str) -> Option<(String, &str)> {
    if !line.starts_with(['+', '!', '$', '^']) {
        return None;
    }
    let colon = line.find(':')?;
    Some((
        line[..colon].trim().to_ascii_uppercase(),
        &line[colon + 1..],
    ))
}

/// The URC kind of `line` given the command in flight (`None` when idle); `None` means an
/// information line of that command. See the module documentation for the rule.
pub fn classify(line: &str, in_flight: Option<&CommandLine>) -> Option<UrcKind> {
    let known = known_urc(line);
    let Some(cmd) = in_flight else {
        return Some(known.unwrap_or(UrcKind::Other));
    };
    let kind = known?;
    let Some((name, fields)) = prefix(line) else {
        return Some(kind); // RDY, POWERED DOWN, RING: never an information line.
    };
    if cmd.name != name || cmd.form == Form::Set {
        return Some(kind);
    }
    let registration = matches!(
        kind,
        UrcKind::Creg | UrcKind::Cgreg | UrcKind::Cereg | UrcKind::C5greg
    );
    if registration && cmd.form != Form::Test && !solicited_registration(fields) {
        return Some(kind);
    }
    None
}

/// `<n>,<stat>[,...]`: at least two fields and the second a `<stat>` (1–2 digits, at most 11).
fn solicited_registration(fields: &str) -> bool {
    let mut it = fields.split(',');
    let _n = it.next();
    it.next().is_some_and(|stat| {
        let stat = stat.trim();
        (1..=2).contains(&stat.len())
            && stat.bytes().all(|b| b.is_ascii_digit())
            && stat.parse::<u8>().is_ok_and(|v| v <= 11)
    })
}

fn known_urc(line: &str) -> Option<UrcKind> {
    if let Some((name, _)) = prefix(line) {
        return Some(match name.as_str() {
            "+CREG" => UrcKind::Creg,
            "+CGREG" => UrcKind::Cgreg,
            "+CEREG" => UrcKind::Cereg,
            "+C5GREG" => UrcKind::C5greg,
            "+QIND" => UrcKind::Qind,
            "+QUSIM" => UrcKind::Qusim,
            "+CPIN" => UrcKind::Cpin,
            "+CFUN" => UrcKind::Cfun,
            "+CGEV" => UrcKind::Cgev,
            "+CMTI" => UrcKind::Cmti,
            _ => return None,
        });
    }
    match line {
        "RDY" => Some(UrcKind::Ready),
        "POWERED DOWN" | "NORMAL POWER DOWN" => Some(UrcKind::PoweredDown),
        "RING" => Some(UrcKind::Ring),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cl(s: &str) -> CommandLine {
        CommandLine::parse(s).expect("valid command")
    }

    #[test]
    fn finals() {
        assert_eq!(final_code("OK"), Some(Final::Ok));
        assert_eq!(final_code("ERROR"), Some(Final::Error));
        assert_eq!(
            final_code("+CME ERROR: 30"),
            Some(Final::Cme(ErrorCode::Numeric(30)))
        );
        let verbose = final_code("+CME ERROR: no network service");
        assert_eq!(
            verbose,
            Some(Final::Cme(ErrorCode::Text("no network service".into())))
        );
        assert_eq!(ErrorCode::Text("SIM busy".into()).code(), Some(14));
        assert_eq!(
            final_code("+CMS ERROR: 321"),
            Some(Final::Cms(ErrorCode::Numeric(321)))
        );
        assert_eq!(final_code("+CSQ: 16,99"), None);
        assert_eq!(
            ErrorCode::Numeric(30).to_string(),
            "30 (no network service)"
        );
    }

    #[test]
    fn cereg_solicited_or_urc() {
        let q = cl("AT+CEREG?");
        assert_eq!(
            classify("+CEREG: 2,1,\"1F00\",\"079D903\",7", Some(&q)),
            None
        );
        assert_eq!(classify("+CEREG: 2,1, 1F00, 79D903 ,7", Some(&q)), None);
        assert_eq!(classify("+CEREG: 0,1", Some(&q)), None);
        assert_eq!(
            classify("+CREG: 2,1,\"8BE3\",\"00002BAF\"", Some(&cl("AT+CREG?"))),
            None
        );
        let urc = Some(UrcKind::Cereg);
        assert_eq!(classify("+CEREG: 1,\"1F00\",\"079D903\",7", Some(&q)), urc);
        assert_eq!(classify("+CEREG: 1, 1F00, 79D903 ,7", Some(&q)), urc);
        assert_eq!(classify("+CEREG: 2", Some(&q)), urc);
        // Another command, a set command, or no command: always a URC.
        assert_eq!(classify("+CEREG: 2,1", Some(&cl("AT+CREG?"))), urc);
        assert_eq!(classify("+CEREG: 2,1", Some(&cl("AT+CEREG=2"))), urc);
        assert_eq!(classify("+CEREG: 2,1", None), urc);
        assert_eq!(classify("+CEREG: (0-5)", Some(&cl("AT+CEREG=?"))), None);
    }

    #[test]
    fn other_urcs() {
        let q = cl("AT+QENG=\"servingcell\"");
        assert_eq!(
            classify("+QIND: \"csq\",20,99", Some(&q)),
            Some(UrcKind::Qind)
        );
        assert_eq!(
            classify("+QIND:\"act\",\"LTE\"", Some(&q)),
            Some(UrcKind::Qind)
        );
        assert_eq!(classify("RDY", Some(&q)), Some(UrcKind::Ready));
        assert_eq!(
            classify("POWERED DOWN", Some(&cl("AT+QPOWD"))),
            Some(UrcKind::PoweredDown)
        );
        assert_eq!(classify("+CPIN: READY", Some(&q)), Some(UrcKind::Cpin));
        assert_eq!(classify("+CPIN: READY", Some(&cl("AT+CPIN?"))), None);
        assert_eq!(
            classify("+CPIN: READY", Some(&cl("AT+CPIN=\"1234\""))),
            Some(UrcKind::Cpin)
        );
        assert_eq!(classify("+QENG:\"NR5G-NSA\",515,03", Some(&q)), None);
        assert_eq!(
            classify("System mode:   LTE", Some(&cl("AT!GSTATUS?"))),
            None
        );
        assert_eq!(classify("whatever", None), Some(UrcKind::Other));
    }
}
