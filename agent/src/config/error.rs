//! Config error messages that name the file, line, column, key and the fix.

use super::KeyPart;
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read config: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A located problem: `file:line:col: message`.
    #[error("{0}")]
    At(Located),
}

/// A message tied to a place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl ConfigError {
    pub fn located(&self) -> Option<&Located> {
        match self {
            ConfigError::At(l) => Some(l),
            ConfigError::Io { .. } => None,
        }
    }
}

fn file_label(path: &Path) -> String {
    path.display().to_string()
}

fn floor_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// 1-based line and column of byte offset `at` in `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = &text[..floor_boundary(text, at)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The table header (`[queue]`, `[[links]]`) in force at byte offset `at`, or "the top level".
fn table_at(text: &str, at: usize) -> String {
    let before = &text[..floor_boundary(text, at)];
    for line in before.lines().rev() {
        let t = line.trim();
        if t.starts_with('[') {
            let end = t.find(']').map_or(t.len(), |i| {
                if t[i + 1..].starts_with(']') {
                    i + 2
                } else {
                    i + 1
                }
            });
            return t[..end].to_string();
        }
    }
    "the top level".to_string()
}

/// Turns serde's "`a`, `b`" lists into "a, b".
fn unquote_list(s: &str) -> String {
    s.replace("` or `", "`, `")
        .split(',')
        .map(|p| p.trim().trim_matches('`').to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rewrites a toml/serde parse error into the house format.
pub(super) fn from_toml(e: &toml::de::Error, text: &str, path: &Path) -> ConfigError {
    let at = e.span().map_or(0, |s| s.start);
    let (line, column) = line_col(text, at);
    let raw = e.message().trim().to_string();
    let table = table_at(text, at);
    let message = if let Some(rest) = raw.strip_prefix("unknown field `") {
        // unknown field `x`, expected one of `a`, `b`   |   unknown field `x`, expected `a`
        let (key, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let allowed = tail
            .trim_start_matches(',')
            .trim()
            .strip_prefix("expected one of ")
            .or_else(|| {
                tail.trim_start_matches(',')
                    .trim()
                    .strip_prefix("expected ")
            })
            .map(unquote_list);
        match allowed {
            Some(list) => {
                format!("unknown key '{key}' in {table}; expected one of: {list}")
            }
            None => format!("unknown key '{key}' in {table}; this table takes no keys"),
        }
    } else if let Some(rest) = raw.strip_prefix("missing field `") {
        let key = rest.split('`').next().unwrap_or(rest);
        format!(
            "missing key '{key}' in {table}; add it (see packaging/pitlink.toml for an example)"
        )
    } else if let Some(rest) = raw.strip_prefix("unknown variant `") {
        let (val, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let allowed = tail
            .trim_start_matches(',')
            .trim()
            .strip_prefix("expected one of ")
            .or_else(|| {
                tail.trim_start_matches(',')
                    .trim()
                    .strip_prefix("expected ")
            })
            .map(unquote_list)
            .unwrap_or_default();
        format!("unknown value '{val}' in {table}; expected one of: {allowed}")
    } else {
        format!("{raw} (in {table})")
    };
    ConfigError::At(Located {
        file: file_label(path),
        line,
        column,
        message,
    })
}

/// Locates `key_path` in the document (best effort: the deepest part that exists) and attaches
/// `message` to it.
pub(super) fn semantic(
    text: &str,
    path: &Path,
    key_path: &[KeyPart],
    message: String,
) -> ConfigError {
    let at = locate(text, key_path).unwrap_or(0);
    let (line, column) = line_col(text, at);
    ConfigError::At(Located {
        file: file_label(path),
        line,
        column,
        message,
    })
}

fn locate(text: &str, key_path: &[KeyPart]) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(text).ok()?;
    let mut best = None;
    let mut cur: Option<&DeValue<'_>> = None;
    let mut table: Option<&DeTable<'_>> = Some(doc.get_ref());
    for part in key_path {
        match part {
            KeyPart::Key(k) => {
                let t = table.or_else(|| cur.and_then(|v| v.as_table()))?;
                let (key, val) = t.get_key_value(*k)?;
                best = Some(key.span().start);
                cur = Some(val.get_ref());
                table = None;
            }
            KeyPart::Index(i) => {
                let arr = cur?.as_array()?;
                let item = arr.get(*i)?;
                best = Some(item.span().start);
                cur = Some(item.get_ref());
                table = None;
            }
        }
    }
    best
}
