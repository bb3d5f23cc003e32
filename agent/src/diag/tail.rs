//! `pitlink tail <source>[/<channel>|/<CAN id>] [--dbc FILE]`: live readings of the running
//! agent, values as they are sampled, CAN frames raw or decoded with a DBC.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use sensor_drivers::dbc::Dbc;

use super::TailLine;

/// What to show of the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Everything.
    All,
    /// One value channel.
    Channel(u16),
    /// One CAN identifier.
    CanId(u32),
}

/// Splits `source[/channel|/0xID]`.
pub fn parse_spec(spec: &str) -> Result<(String, Pick)> {
    let (source, rest) = match spec.split_once('/') {
        Some((s, r)) => (s, Some(r)),
        None => (spec, None),
    };
    if source.is_empty() {
        bail!("'{spec}': give a source name, e.g. engine, engine/3 or can0/0x1A0");
    }
    let pick = match rest {
        None | Some("") | Some("*") => Pick::All,
        Some(r) => {
            if let Some(hex) = r.strip_prefix("0x").or_else(|| r.strip_prefix("0X")) {
                Pick::CanId(u32::from_str_radix(hex, 16).with_context(|| {
                    format!("'{r}' is not a CAN identifier in hex (e.g. 0x1A0)")
                })?)
            } else {
                Pick::Channel(r.parse().with_context(|| {
                    format!("'{r}' is not a channel number (0, 1, ...) or a CAN identifier (0x1A0)")
                })?)
            }
        }
    };
    Ok((source.to_string(), pick))
}

/// Streams `source` from the daemon at `socket` to `out` until `count` lines (or forever).
pub fn run(
    socket: &Path,
    spec: &str,
    dbc: Option<&Path>,
    json: bool,
    count: Option<u64>,
    out: &mut dyn Write,
) -> Result<()> {
    let (source, pick) = parse_spec(spec)?;
    let dbc = dbc.map(Dbc::load).transpose()?;
    let mut conn = std::os::unix::net::UnixStream::connect(socket).map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the pitlink daemon at {}: {e}\n  is `pitlink run` running? the socket is [diag] socket in the config (or pass --socket)",
            socket.display()
        )
    })?;
    writeln!(conn, "tail {source}")?;
    let mut shown = 0u64;
    for line in BufReader::new(conn).lines() {
        let line = line?;
        let l: TailLine = serde_json::from_str(&line)
            .with_context(|| format!("the daemon sent an unreadable line: {line}"))?;
        let text = match l {
            TailLine::Error { error } => bail!("{error}"),
            TailLine::Lagged { lagged } => {
                format!("... {lagged} chunks skipped (the terminal is slower than the source)")
            }
            TailLine::Value { t_us, ch, v } => {
                if !matches!(pick, Pick::All) && pick != Pick::Channel(ch) {
                    continue;
                }
                if json {
                    serde_json::to_string(&serde_json::json!({"t_us": t_us, "ch": ch, "v": v}))?
                } else {
                    format!("{}  {source}/{ch}  {v}", stamp(t_us))
                }
            }
            TailLine::Frame {
                t_us,
                id,
                flags,
                len,
                data: hex,
            } => {
                if !matches!(pick, Pick::All) && pick != Pick::CanId(id) {
                    continue;
                }
                let mut frame = sensor_drivers::can::CanFrame {
                    id,
                    flags,
                    len,
                    len8_dlc: 0,
                    data: [0; 64],
                };
                for (i, b) in frame
                    .data
                    .iter_mut()
                    .enumerate()
                    .take(usize::from(len).min(64))
                {
                    *b = hex
                        .get(2 * i..2 * i + 2)
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .unwrap_or(0);
                }
                let decoded = dbc.as_ref().and_then(|d| d.decode(&frame));
                if json {
                    let mut v = serde_json::json!({"t_us": t_us, "id": frame.id, "data": hex});
                    if let Some(d) = &decoded {
                        v["msg"] = d.message.name.clone().into();
                        let sig: serde_json::Map<String, serde_json::Value> = d
                            .signals()
                            .map(|(s, val)| (s.name.clone(), val.phys.into()))
                            .collect();
                        v["signals"] = sig.into();
                    }
                    serde_json::to_string(&v)?
                } else {
                    let mut t = format!(
                        "{}  {source}  {:>8X}  [{}] {hex}",
                        stamp(t_us),
                        frame.id,
                        frame.len
                    );
                    if let Some(d) = &decoded {
                        t.push_str(&format!("  {}", d.message.name));
                        for (s, val) in d.signals() {
                            t.push_str(&format!(
                                " {}={}{}",
                                s.name,
                                val.phys,
                                if s.unit.is_empty() {
                                    String::new()
                                } else {
                                    format!(" {}", s.unit)
                                }
                            ));
                        }
                    }
                    t
                }
            }
        };
        writeln!(out, "{text}")?;
        shown += 1;
        if count.is_some_and(|c| shown >= c) {
            break;
        }
    }
    Ok(())
}

/// `HH:MM:SS.mmm` UTC of a µs time.
fn stamp(t_us: u64) -> String {
    let s = t_us / 1_000_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600 % 24,
        s / 60 % 60,
        s % 60,
        t_us / 1000 % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(
            parse_spec("engine").expect("ok"),
            ("engine".into(), Pick::All)
        );
        assert_eq!(
            parse_spec("engine/3").expect("ok"),
            ("engine".into(), Pick::Channel(3))
        );
        assert_eq!(
            parse_spec("can0/0x1A0").expect("ok"),
            ("can0".into(), Pick::CanId(0x1A0))
        );
        assert!(parse_spec("/3").is_err());
        let e = parse_spec("engine/x").expect_err("bad");
        assert!(e.to_string().contains("not a channel number"), "{e}");
        assert_eq!(stamp(3_723_004_000), "01:02:03.004");
    }
}
