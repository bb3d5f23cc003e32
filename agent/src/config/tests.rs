use super::*;
use std::path::Path;

const GOOD: &str = r#"
vehicle = "car-07"

[queue]
dir = "/tmp/q"
max_mb = 64
segment_mb = 4
flush_ms = 50

[broker]
host = "127.0.0.1"
port = 1883

[[links]]
name = "wwan0"
interface = "wwan0"

[[sources]]
name = "synth"
kind = "synthetic"
channels = 8
rate_hz = 1000
waveform = "saw"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("pitlink.toml"))
}

fn located(text: &str) -> error::Located {
    match parse(text) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.located().cloned().expect("a located error"),
    }
}

#[test]
fn good_config_parses_with_defaults_filled() {
    let c = parse(GOOD).expect("valid");
    assert_eq!(c.vehicle, "car-07");
    assert_eq!(c.queue.max_mb, 64);
    assert_eq!(c.batch.window_ms, 100, "default batch window");
    assert_eq!(c.broker.topic_prefix, "pitlink");
    assert_eq!(c.links[0].interface.as_deref(), Some("wwan0"));
    let spec = c.sources[0].synthetic_spec();
    assert_eq!((spec.channels, spec.rate_hz), (8, 1000));
    assert_eq!(spec.waveform, sensor_drivers::synthetic::Waveform::Saw);
}

#[test]
fn misspelled_key_names_key_line_table_and_allowed_keys() {
    let bad = GOOD.replace("max_mb = 64", "queue_sise_mb = 64");
    let e = located(&bad);
    assert_eq!(e.file, "pitlink.toml");
    assert_eq!(e.line, 6, "{e}");
    assert_eq!(e.column, 1, "{e}");
    assert_eq!(
        e.message,
        "unknown key 'queue_sise_mb' in [queue]; expected one of: dir, max_mb, segment_mb, flush_ms, flush_kb"
    );
    assert_eq!(
        e.to_string(),
        "pitlink.toml:6:1: unknown key 'queue_sise_mb' in [queue]; expected one of: dir, max_mb, segment_mb, flush_ms, flush_kb"
    );
}

#[test]
fn unknown_key_in_array_table() {
    let bad = GOOD.replace("interface = \"wwan0\"", "iface = \"wwan0\"");
    let e = located(&bad);
    assert_eq!((e.line, e.column), (16, 1), "{e}");
    assert!(
        e.message.starts_with(
            "unknown key 'iface' in [[links]]; expected one of: name, interface, address, modem, modemmanager, modem_sinr"
        ),
        "{e}"
    );
}

#[test]
fn unknown_top_level_key() {
    let bad = format!("vehicel = \"x\"\n{GOOD}");
    let e = located(&bad);
    assert_eq!((e.line, e.column), (1, 1));
    assert!(
        e.message.contains("unknown key 'vehicel' in the top level"),
        "{e}"
    );
    assert!(
        e.message
            .contains("vehicle, queue, batch, broker, diag, links, sources"),
        "{e}"
    );
}

#[test]
fn missing_key_is_named() {
    let bad = GOOD.replace("vehicle = \"car-07\"\n", "");
    let e = located(&bad);
    assert!(e.message.starts_with("missing key 'vehicle'"), "{e}");
}

#[test]
fn bad_enum_value_lists_choices() {
    let bad = GOOD.replace("waveform = \"saw\"", "waveform = \"triangle\"");
    let e = located(&bad);
    assert_eq!((e.line, e.column), (23, 12), "{e}");
    assert!(e.message.contains("'triangle'"), "{e}");
    assert!(e.message.contains("sine, saw, square, noise"), "{e}");
}

#[test]
fn wrong_type_is_located() {
    let bad = GOOD.replace("flush_ms = 50", "flush_ms = \"fast\"");
    let e = located(&bad);
    assert_eq!(e.line, 8, "{e}");
    assert!(e.message.contains("[queue]"), "{e}");
}

#[test]
fn format_version_is_1_or_2() {
    let c = parse(GOOD).expect("good config");
    assert_eq!(c.batch.format_version, crate::codec::FORMAT_VERSION);
    let v1 = format!("{GOOD}\n[batch]\nformat_version = 1\n");
    assert_eq!(
        parse(&v1)
            .expect("version 1 is allowed")
            .batch
            .format_version,
        1
    );
    let e = located(&format!("{GOOD}\n[batch]\nformat_version = 3\n"));
    assert!(
        e.message
            .contains("format_version = 3 is not a wire format version"),
        "{e}"
    );
    assert!(e.message.contains("allowed: 1"), "{e}");
}

#[test]
fn semantic_errors_point_at_the_key() {
    let bad = GOOD.replace("rate_hz = 1000", "rate_hz = 0");
    let e = located(&bad);
    assert_eq!((e.line, e.column), (22, 1), "{e}");
    assert!(e.message.contains("rate_hz = 0 is out of range"), "{e}");

    let bad = GOOD.replace("port = 1883", "port = 1883\nsocket = \"/tmp/s\"");
    let e = located(&bad);
    assert_eq!(e.line, 13, "{e}");
    assert!(e.message.contains("not both"), "{e}");

    let bad = GOOD.replace("max_mb = 64", "max_mb = 5");
    let e = located(&bad);
    assert_eq!(e.line, 6);
    assert!(e.message.contains("at least two segments"), "{e}");
}

#[test]
fn duplicate_link_names_rejected() {
    let bad = format!("{GOOD}\n[[links]]\nname = \"wwan0\"\n");
    let e = located(&bad);
    assert_eq!(e.line, 26, "{e}");
    assert!(e.message.contains("used twice"), "{e}");
}

#[test]
fn syntax_error_is_located() {
    let bad = GOOD.replace("[broker]", "[broker");
    let e = located(&bad);
    assert_eq!(e.line, 10, "{e}");
}

#[test]
fn shipped_default_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/pitlink.toml");
    let c = Config::load(&path).expect("packaging/pitlink.toml must pass check-config");
    assert!(!c.links.is_empty());
}

#[test]
fn missing_file_error_names_the_path() {
    let e = Config::load(Path::new("/nonexistent/pitlink.toml")).expect_err("no file");
    assert!(
        e.to_string()
            .starts_with("/nonexistent/pitlink.toml: cannot read config")
    );
}

proptest::proptest! {
    /// Arbitrary text never panics the loader; it either parses or gives a located error.
    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,300}") {
        match parse(&s) {
            Ok(_) => {}
            Err(e) => {
                let l = e.located().expect("parse errors are located");
                proptest::prop_assert!(l.line >= 1 && l.column >= 1);
            }
        }
    }

    /// Mutating the good config (dropping one line) never panics.
    #[test]
    fn line_dropped_never_panics(i in 0usize..30) {
        let text: String = GOOD.lines().enumerate().filter(|(n, _)| *n != i).map(|(_, l)| format!("{l}\n")).collect();
        let _ = parse(&text);
    }
}

/// Every source kind with its keys parses; the keys reach the config.
#[test]
fn every_source_kind_parses() {
    let text = format!(
        "{GOOD}{}",
        r#"
[[sources]]
name = "replay"
kind = "candump"
path = "/var/log/can.log"
speed = 4.0
loop = true
interfaces = ["can0"]

[[sources]]
name = "fast"
kind = "candump"
path = "/var/log/can.log"
speed = "max"

[[sources]]
name = "pt"
kind = "socketcan"
interface = "can0"
fd = false
rcvbuf_kb = 1024
filters = [{ id = 0x100, mask = 0x700 }, { id = 0x18FEF100, mask = 0x1FFFFFFF, extended = true, invert = true }]

[[sources]]
name = "chassis"
kind = "slcan"
device = "/dev/ttyACM0"
bitrate = 500
listen_only = true
timestamps = true

[[sources]]
name = "gps"
kind = "nmea"
device = "/dev/ttyUSB0"
baud = 38400

[[sources]]
name = "oil"
kind = "line"
device = "/dev/ttyUSB1"
fields = "t_ms, oil_temp, -, oil_pressure"
delimiter = ";"
"#
    );
    let c = parse(&text).expect("valid");
    assert_eq!(c.sources.len(), 7);
    assert_eq!(c.sources[1].speed, Some(ReplaySpeed::Factor(4.0)));
    assert_eq!(c.sources[2].speed, Some(ReplaySpeed::Word(ReplayWord::Max)));
    assert_eq!(c.sources[3].filters.as_ref().map(Vec::len), Some(2));
    assert!(c.sources[3].filters.as_ref().expect("filters")[1].invert);
    assert_eq!(c.sources[4].bitrate, Some(500));
    assert_eq!(c.sources[5].baud, Some(38400));
    assert_eq!(
        c.sources[6].line_fields(),
        vec!["t_ms", "oil_temp", "-", "oil_pressure"]
    );
    assert_eq!(c.sources[3].describe(), "can0");
}

#[test]
fn source_key_of_another_kind_is_located_and_explained() {
    let text = format!(
        "{GOOD}{}",
        "\n[[sources]]\nname = \"pt\"\nkind = \"socketcan\"\ninterface = \"can0\"\nbaud = 9600\n"
    );
    let e = located(&text);
    assert_eq!(
        e.line,
        text.lines()
            .position(|l| l.starts_with("baud"))
            .expect("line")
            + 1
    );
    assert!(
        e.message
            .contains("'baud' does not apply to a socketcan source"),
        "{e}"
    );
    assert!(e.message.contains("slcan, nmea, line"), "{e}");
}

#[test]
fn source_requirements_are_checked() {
    let cases = [
        ("kind = \"candump\"", "needs 'path'"),
        ("kind = \"socketcan\"", "needs 'interface'"),
        (
            "kind = \"socketcan\"\ninterface = \"a/b\"",
            "not a valid network interface",
        ),
        (
            "kind = \"slcan\"\ndevice = \"/dev/x\"\nbitrate = 300",
            "not an slcan rate",
        ),
        ("kind = \"line\"\ndevice = \"/dev/x\"", "needs 'fields'"),
        (
            "kind = \"line\"\ndevice = \"/dev/x\"\nfields = \"t_ms,-\"",
            "names no value channel",
        ),
        (
            "kind = \"line\"\ndevice = \"/dev/x\"\nfields = \"a,,b\"",
            "empty name",
        ),
        (
            "kind = \"line\"\ndevice = \"/dev/x\"\nfields = \"a\"\ndelimiter = \"::\"",
            "exactly one character",
        ),
        (
            "kind = \"candump\"\npath = \"x\"\nspeed = -1.0",
            "speed = -1",
        ),
        (
            "kind = \"socketcan\"\ninterface = \"can0\"\nfilters = [{ id = 0x800, mask = 0x7ff }]",
            "does not fit in 11 bits",
        ),
    ];
    for (body, want) in cases {
        let text = format!("{GOOD}\n[[sources]]\nname = \"x\"\n{body}\n");
        let e = located(&text);
        assert!(e.message.contains(want), "{body}: {e}");
    }
}

#[test]
fn modem_backends_are_exclusive_and_checked() {
    let both = format!(
        "{GOOD}\n[[links]]\nname = \"m\"\nmodem = \"/dev/ttyUSB2\"\nmodemmanager = \"first\"\n"
    );
    let e = located(&both);
    assert!(e.message.contains("one backend"), "{e}");
    assert_eq!(
        both.lines().nth(e.line - 1),
        Some("modemmanager = \"first\"")
    );
    let bad = format!("{GOOD}\n[[links]]\nname = \"m\"\nmodemmanager = \"modem0\"\n");
    assert!(located(&bad).message.contains("IMEI"));
    let ok = format!(
        "{GOOD}\n[[links]]\nname = \"m\"\nmodemmanager = \"861234567890123\"\n[[links]]\nname = \"n\"\nmodem = \"/dev/ttyUSB2\"\nmodem_sinr = \"fifths\"\n"
    );
    let cfg = parse(&ok).expect("valid");
    let n = cfg.links.iter().find(|l| l.name == "n").expect("link n");
    assert_eq!(n.modem_sinr, SinrUnit::Fifths);
    let bad = ok.replace("\"fifths\"", "\"tenths\"");
    assert!(
        located(&bad).message.contains("db, fifths"),
        "{}",
        located(&bad)
    );
}

#[test]
fn critical_applies_to_every_source_kind() {
    let text = GOOD.replace(
        "kind = \"synthetic\"",
        "kind = \"synthetic\"\ncritical = true",
    );
    assert_ne!(text, GOOD);
    let cfg = parse(&text).expect("valid");
    assert!(cfg.sources[0].critical);
    assert!(!parse(GOOD).expect("valid").sources[0].critical);
}

/// Keys of every table of the configuration, as the code (de)serialises them: section name
/// ("" for the top level, "broker.tls", "links", ...) → keys.
fn code_keys() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let text = GOOD.replace(
        "port = 1883",
        "port = 1883\n\n[broker.tls]\nca = \"/etc/ca.pem\"",
    );
    let cfg = parse(&text).expect("valid");
    let v = serde_json::to_value(&cfg).expect("serialisable");
    let mut out = std::collections::BTreeMap::new();
    fn walk(
        name: &str,
        v: &serde_json::Value,
        out: &mut std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    ) {
        let Some(obj) = v.as_object() else { return };
        out.entry(name.to_string()).or_default();
        for (k, val) in obj {
            let child = if name.is_empty() {
                k.clone()
            } else {
                format!("{name}.{k}")
            };
            match val {
                serde_json::Value::Object(_) => walk(&child, val, out),
                // Arrays of tables ([[links]], [[sources]]): the keys of their first element.
                serde_json::Value::Array(a) if a.first().is_some_and(|x| x.is_object()) => {
                    walk(&child, &a[0], out)
                }
                _ => {
                    out.get_mut(name).expect("entry").insert(k.clone());
                }
            }
        }
    }
    walk("", &v, &mut out);
    out
}

/// Keys documented in docs/configuration.md, by section (the first column of each table).
fn doc_keys() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md"),
    )
    .expect("docs/configuration.md");
    let mut out: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    let mut section = String::new();
    for line in text.lines() {
        if line.starts_with("## ") || line.starts_with("### ") {
            section = match (line.find('`'), line.rfind('`')) {
                (Some(a), Some(b)) if b > a => line[a + 1..b].trim_matches(['[', ']']).to_string(),
                _ => String::new(),
            };
            continue;
        }
        if let Some(row) = line.strip_prefix("| `") {
            let cell = format!("`{}", row.split(" |").next().unwrap_or(""));
            for (i, part) in cell.split('`').enumerate() {
                if i % 2 == 1 {
                    out.entry(section.clone())
                        .or_default()
                        .insert(part.to_string());
                }
            }
        }
    }
    out
}

#[test]
fn docs_configuration_md_documents_exactly_the_keys_of_the_code() {
    let code = code_keys();
    let docs = doc_keys();
    for (section, keys) in &code {
        let documented = docs.get(section).cloned().unwrap_or_default();
        let missing: Vec<_> = keys.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(keys).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "[{section}] in docs/configuration.md: undocumented keys {missing:?}, documented keys the code does not have {extra:?}"
        );
    }
    for section in docs.keys() {
        assert!(
            code.contains_key(section),
            "docs/configuration.md documents a table [{section}] the code does not have"
        );
    }
}
