//! What a command line is: its name, its form, its default timeout, whether it is disruptive.

use std::time::Duration;

/// Longest command line accepted (27.007 asks modems to accept at least 256 characters).
pub const MAX_COMMAND_LEN: usize = 256;

/// The syntactic form of an extended command (27.007 §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `AT+CMD` (or a basic command such as `ATE0`).
    Exec,
    /// `AT+CMD?`
    Read,
    /// `AT+CMD=?`
    Test,
    /// `AT+CMD=<args>`
    Set,
}

/// A command line split into the parts the transport needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// The line as written, without terminator.
    pub text: String,
    /// Upper-case name after `AT`, e.g. `+CEREG`, `+QENG`, `!GSTATUS`, `E0`.
    pub name: String,
    /// The form of the command.
    pub form: Form,
}

/// Why a command line was refused before being sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Not starting with `AT`.
    #[error("command {0:?} does not start with AT")]
    NotAt(String),
    /// Longer than [`MAX_COMMAND_LEN`].
    #[error("command is {0} bytes long, more than the {MAX_COMMAND_LEN} accepted")]
    TooLong(usize),
    /// Contains a byte that is not printable ASCII (a CR or LF would split it into two commands).
    #[error("command {0:?} contains a byte that is not printable ASCII at offset {1}")]
    BadByte(String, usize),
    /// A command that disrupts the data link, submitted without permission.
    #[error("command {0:?} disrupts the radio link for minutes; refused unless explicitly allowed")]
    Disruptive(String),
}

impl CommandLine {
    /// Checks and analyses a command line such as `AT+CEREG?`.
    pub fn parse(text: &str) -> Result<Self, CommandError> {
        if text.len() > MAX_COMMAND_LEN {
            return Err(CommandError::TooLong(text.len()));
        }
        if let Some(pos) = text.bytes().position(|b| !(0x20..0x7f).contains(&b)) {
            return Err(CommandError::BadByte(text.to_string(), pos));
        }
        if !text.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("AT")) {
            return Err(CommandError::NotAt(text.to_string()));
        }
        let rest = &text[2..];
        let (name, form) = if let Some(i) = rest.find('=') {
            let form = if rest[i + 1..].trim() == "?" {
                Form::Test
            } else {
                Form::Set
            };
            (&rest[..i], form)
        } else if let Some(i) = rest.find('?') {
            (&rest[..i], Form::Read)
        } else {
            (rest, Form::Exec)
        };
        Ok(Self {
            text: text.to_string(),
            name: name.trim().to_ascii_uppercase(),
            form,
        })
    }

    /// Disrupts the data link (a network scan: `AT+COPS=?`, `AT+QSCAN`): the transport refuses
    /// it unless the request explicitly allows it (RADIO.md §2.3: never on a live link).
    pub fn is_disruptive(&self) -> bool {
        (self.name == "+COPS" && self.form == Form::Test) || self.name == "+QSCAN"
    }

    /// Default timeout of this command (RADIO.md §2.3, ModemManager's values).
    pub fn default_timeout(&self) -> Duration {
        let s = match (self.name.as_str(), self.form) {
            ("+COPS", Form::Test) | ("+QSCAN", _) => 315,
            ("+COPS", Form::Set) => 120,
            ("+QPOWD", _) => 60,
            ("+CFUN", _) => 15,
            ("+CREG" | "+CGREG" | "+CEREG" | "+C5GREG", _) => 10,
            _ => 3,
        };
        Duration::from_secs(s)
    }

    /// Whether the echo of this command is `line` (case and surrounding blanks ignored).
    pub fn is_echo(&self, line: &str) -> bool {
        line.trim().eq_ignore_ascii_case(self.text.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cl(s: &str) -> CommandLine {
        CommandLine::parse(s).expect("valid command")
    }

    #[test]
    fn forms_and_names() {
        assert_eq!(
            (cl("AT+CEREG?").name.as_str(), cl("AT+CEREG?").form),
            ("+CEREG", Form::Read)
        );
        assert_eq!(cl("at+cops=?").form, Form::Test);
        assert_eq!(cl("AT+QENG=\"servingcell\"").form, Form::Set);
        assert_eq!(cl("AT+QENG=\"servingcell\"").name, "+QENG");
        assert_eq!(cl("AT+CSQ").form, Form::Exec);
        assert_eq!(cl("AT!GSTATUS?").name, "!GSTATUS");
    }

    #[test]
    fn timeouts_and_disruptive() {
        assert_eq!(cl("AT+COPS=?").default_timeout(), Duration::from_secs(315));
        assert!(cl("AT+COPS=?").is_disruptive());
        assert!(!cl("AT+COPS?").is_disruptive());
        assert_eq!(cl("AT+COPS?").default_timeout(), Duration::from_secs(3));
        assert_eq!(cl("AT+COPS=0").default_timeout(), Duration::from_secs(120));
        assert_eq!(cl("AT+CFUN=1").default_timeout(), Duration::from_secs(15));
        assert_eq!(cl("AT+CEREG?").default_timeout(), Duration::from_secs(10));
    }

    #[test]
    fn bad_lines_are_refused() {
        assert!(matches!(
            CommandLine::parse("AT\r+CSQ"),
            Err(CommandError::BadByte(_, 2))
        ));
        assert!(matches!(
            CommandLine::parse("+CSQ"),
            Err(CommandError::NotAt(_))
        ));
        assert!(matches!(
            CommandLine::parse(""),
            Err(CommandError::NotAt(_))
        ));
        let long = format!("AT{}", "A".repeat(300));
        assert!(matches!(
            CommandLine::parse(&long),
            Err(CommandError::TooLong(302))
        ));
    }
}
