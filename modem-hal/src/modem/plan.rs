//! Sans-IO decisions of [`super::AtModem`]: the dialect from the identity text, capabilities
//! from probe answers, the exact command lines (RADIO.md §2.2) and the outages they cause.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Capabilities, ModemError, Outage};
use crate::radio::LockState;

/// Re-attach outage after a cell lock, a release or a CFUN 4→1 cycle. RADIO.md §4 gives 2–10 s
/// (unverified on hardware); the upper bound is used so a scheduler does not return too early.
pub const REATTACH_OUTAGE: Duration = Duration::from_secs(10);

/// Longest identity field kept (model, firmware, IMEI), in characters.
const MAX_ID_LEN: usize = 64;

/// The AT command set a modem speaks beyond 3GPP 27.007.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// Quectel (`+QENG`, `+QNWLOCK`, `+QCSQ`).
    Quectel,
    /// Sierra Wireless (`!GSTATUS`, `!LTEINFO`).
    Sierra,
    /// 3GPP 27.007 only.
    #[default]
    Generic,
    /// Not spoken over AT: the modem is driven through ModemManager's D-Bus API
    /// ([`crate::mm::MmModem`]); never detected from `ATI` text.
    ModemManager,
}

/// Quectel model prefixes (EC2x, EG2x, EP06, EM0x/EM1x, BG9x, RM5xx, RG5xx/RG6xx).
const QUECTEL_MODELS: &[&str] = &[
    "EC2", "EG2", "EG9", "EP0", "EM0", "EM1", "BG9", "RM5", "RG5", "RG6",
];
/// Sierra Wireless model prefixes (MC73xx/74xx/77xx, EM74xx/75xx/76xx/77xx/91xx).
const SIERRA_MODELS: &[&str] = &["MC7", "EM7", "EM9", "AR7", "WP7"];

/// The dialect from the `ATI` text (manufacturer, model, revision lines) and/or the model.
pub fn detect_dialect(ati: &[String], model: Option<&str>) -> Dialect {
    let mentions = |needle: &str| {
        ati.iter()
            .chain(model.map(str::to_owned).iter())
            .any(|l| l.to_ascii_lowercase().contains(needle))
    };
    if mentions("quectel") {
        return Dialect::Quectel;
    }
    if mentions("sierra") {
        return Dialect::Sierra;
    }
    let model = model
        .map(|m| m.trim().to_ascii_uppercase())
        .unwrap_or_default();
    // EM7/EM9 prefixes are Sierra; Quectel's EM0x/EM1x are listed separately.
    if SIERRA_MODELS.iter().any(|p| model.starts_with(p)) {
        Dialect::Sierra
    } else if QUECTEL_MODELS.iter().any(|p| model.starts_with(p)) {
        Dialect::Quectel
    } else {
        Dialect::Generic
    }
}

/// The value of a one-value response such as `AT+CGMM` → `EC25` or `AT+CGSN` → `+CGSN: 8675...`:
/// the first non-empty line, without a `+TAG:` prefix or quotes, cut at 64 characters.
pub fn single_value(lines: &[String], tag: &str) -> Option<String> {
    let line = lines.iter().map(|l| l.trim()).find(|l| !l.is_empty())?;
    let v = line
        .strip_prefix(tag)
        .and_then(|r| r.strip_prefix(':'))
        .unwrap_or(line)
        .trim()
        .trim_matches('"')
        .trim();
    (!v.is_empty()).then(|| v.chars().take(MAX_ID_LEN).collect())
}

/// `Revision: EC25EFAR06A06M4G` in `ATI` output → the revision.
pub fn ati_revision(lines: &[String]) -> Option<String> {
    lines.iter().find_map(|l| {
        l.trim()
            .strip_prefix("Revision:")
            .map(|r| r.trim().chars().take(MAX_ID_LEN).collect::<String>())
            .filter(|r| !r.is_empty())
    })
}

/// The SIM's service provider name from Quectel `+QSPN: <FNN>,<SNN>,<SPN>,<alphabet>,<RPLMN>`:
/// the SPN, else the full network name; `None` when both are empty. Commas inside quotes are
/// kept; the result is cut at 64 characters.
pub fn qspn_operator(lines: &[String]) -> Option<String> {
    let rest = lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("+QSPN:"))?
        .trim();
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in rest.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut cur)),
            c => {
                if cur.chars().count() < MAX_ID_LEN {
                    cur.push(c);
                }
            }
        }
        if fields.len() > 3 {
            break;
        }
    }
    fields.push(cur);
    let pick = |i: usize| {
        fields
            .get(i)
            .map(|f| f.trim().to_owned())
            .filter(|f| !f.is_empty())
    };
    pick(2).or_else(|| pick(0))
}

/// An IMEI is 14–16 digits (15 with the check digit, 16 for IMEISV); anything else is not one.
pub fn valid_imei(s: &str) -> bool {
    (14..=16).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// Whether a 27.007 test-form list such as `(0,1,4)` or `(0-10)` contains `value`. Entries that do
/// not parse are ignored; ranges are inclusive.
pub fn list_contains(list: &str, value: u32) -> bool {
    let inner = list.trim().trim_start_matches('(');
    let inner = inner.split(')').next().unwrap_or("");
    inner.split(',').any(|item| {
        let item = item.trim();
        match item.split_once('-') {
            Some((a, b)) => match (a.trim().parse::<u32>(), b.trim().parse::<u32>()) {
                (Ok(a), Ok(b)) => (a..=b).contains(&value),
                _ => false,
            },
            None => item.parse::<u32>() == Ok(value),
        }
    })
}

/// The probe answers capabilities are decided from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Probes {
    /// `AT+QNWLOCK=?` parsed (`None`: not asked, or answered with an error).
    pub qnwlock: Option<LockState>,
    /// `AT+CFUN=?` information lines (`None`: answered with an error).
    pub cfun: Option<Vec<String>>,
}

/// Which probes a dialect needs: QNWLOCK exists only on Quectel.
pub fn probe_qnwlock(dialect: Dialect) -> bool {
    dialect == Dialect::Quectel
}

/// Capabilities from the probe answers.
pub fn capabilities(dialect: Dialect, probes: &Probes) -> Capabilities {
    let modes = probes
        .qnwlock
        .as_ref()
        .filter(|_| probe_qnwlock(dialect))
        .map(|l| l.supported.as_slice())
        .unwrap_or_default();
    let has = |m: &str| modes.iter().any(|s| s == m);
    // RF off is CFUN level 4; a modem that answers the test form without a list is trusted.
    let rf_off = probes.cfun.as_ref().is_some_and(|lines| {
        lines
            .iter()
            .filter_map(|l| l.trim().strip_prefix("+CFUN:"))
            .map(|r| list_contains(r, 4))
            .next()
            .unwrap_or(true)
    });
    Capabilities {
        lte_lock: has("common/4g"),
        nr_lock: has("common/5g"),
        reselect: rf_off,
        radio: rf_off,
        neighbours: dialect != Dialect::Generic,
    }
}

/// `AT+QNWLOCK="common/4g",1,<earfcn>,<pci>`.
pub fn lock_lte_command(earfcn: u32, pci: u16) -> Result<String, ModemError> {
    check_pci(pci, 503)?;
    Ok(format!("AT+QNWLOCK=\"common/4g\",1,{earfcn},{pci}"))
}

/// `AT+QNWLOCK="common/5g",<pci>,<arfcn>,<scs>,<band>` (SCS in kHz).
pub fn lock_nr_command(
    pci: u16,
    arfcn: u32,
    scs_khz: u16,
    band: u16,
) -> Result<String, ModemError> {
    check_pci(pci, 1007)?;
    if arfcn > 3_279_165 {
        return Err(ModemError::InvalidArgument {
            name: "arfcn",
            value: arfcn.to_string(),
            why: "NR-ARFCN is 0..=3279165",
        });
    }
    if !matches!(scs_khz, 15 | 30 | 60 | 120) {
        return Err(ModemError::InvalidArgument {
            name: "scs_khz",
            value: scs_khz.to_string(),
            why: "subcarrier spacing is 15, 30, 60 or 120 kHz",
        });
    }
    if band == 0 || band > 1024 {
        return Err(ModemError::InvalidArgument {
            name: "band",
            value: band.to_string(),
            why: "NR band is 1..=1024",
        });
    }
    Ok(format!(
        "AT+QNWLOCK=\"common/5g\",{pci},{arfcn},{scs_khz},{band}"
    ))
}

fn check_pci(pci: u16, max: u16) -> Result<(), ModemError> {
    if pci > max {
        return Err(ModemError::InvalidArgument {
            name: "pci",
            value: pci.to_string(),
            why: if max == 503 {
                "LTE PCI is 0..=503"
            } else {
                "NR PCI is 0..=1007"
            },
        });
    }
    Ok(())
}

/// The release lines for the lock kinds the modem has: `AT+QNWLOCK="common/4g",0`,
/// `AT+QNWLOCK="common/5g",0`.
pub fn release_commands(caps: &Capabilities) -> Vec<String> {
    let mut out = Vec::new();
    if caps.lte_lock {
        out.push("AT+QNWLOCK=\"common/4g\",0".to_owned());
    }
    if caps.nr_lock {
        out.push("AT+QNWLOCK=\"common/5g\",0".to_owned());
    }
    out
}

/// Forced reselection: RF off then on (RADIO.md §2.2: CFUN 4→1 forces a fresh cell selection).
pub fn reselect_commands() -> [&'static str; 2] {
    ["AT+CFUN=4", "AT+CFUN=1"]
}

/// Radio on (`AT+CFUN=1`) or RF off (`AT+CFUN=4`, not 0: level 0 also shuts the SIM down).
pub fn radio_command(on: bool) -> &'static str {
    if on { "AT+CFUN=1" } else { "AT+CFUN=4" }
}

/// The outage a radio command causes.
pub fn radio_outage(on: bool) -> Outage {
    if on {
        Outage::Reattach(REATTACH_OUTAGE)
    } else {
        Outage::UntilRadioOn
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn dialects() {
        let ati = lines(&["Quectel", "EC25", "Revision: EC25EFAR06A06M4G"]);
        assert_eq!(detect_dialect(&ati, None), Dialect::Quectel);
        assert_eq!(detect_dialect(&[], Some("RM520N-GL")), Dialect::Quectel);
        assert_eq!(detect_dialect(&[], Some("EM1000T")), Dialect::Quectel);
        assert_eq!(detect_dialect(&[], Some("MC7455")), Dialect::Sierra);
        assert_eq!(detect_dialect(&[], Some("EM7565")), Dialect::Sierra);
        let ati = lines(&[
            "Manufacturer: Sierra Wireless, Incorporated",
            "Model: EM9191",
        ]);
        assert_eq!(detect_dialect(&ati, None), Dialect::Sierra);
        assert_eq!(detect_dialect(&[], Some("SIM7600E-H")), Dialect::Generic);
        assert_eq!(detect_dialect(&[], None), Dialect::Generic);
    }

    #[test]
    fn identity_values() {
        assert_eq!(
            single_value(&lines(&["", "EC25"]), "+CGMM"),
            Some("EC25".into())
        );
        assert_eq!(
            single_value(&lines(&["+CGSN: \"867698041234567\""]), "+CGSN"),
            Some("867698041234567".into())
        );
        assert_eq!(single_value(&lines(&[" "]), "+CGMM"), None);
        assert_eq!(
            ati_revision(&lines(&["Quectel", "EC25", "Revision: EC25EFAR06A06M4G"])),
            Some("EC25EFAR06A06M4G".into())
        );
        assert!(valid_imei("867698041234567"));
        assert!(!valid_imei("86769804123456x"));
        assert!(!valid_imei("123"));
    }

    #[test]
    fn qspn() {
        let l = lines(&["+QSPN: \"CHN-UNICOM\",\"UNICOM\",\"Uni, Co\",0,\"46001\""]);
        assert_eq!(qspn_operator(&l), Some("Uni, Co".into()));
        let l = lines(&["+QSPN: \"T-Mobile\",\"T-Mobile\",\"\",0,\"310260\""]);
        assert_eq!(qspn_operator(&l), Some("T-Mobile".into()));
        assert_eq!(
            qspn_operator(&lines(&["+QSPN: \"\",\"\",\"\",0,\"\""])),
            None
        );
        assert_eq!(qspn_operator(&lines(&["+COPS: 0"])), None);
    }

    #[test]
    fn test_form_lists() {
        assert!(list_contains("(0,1,4),(0,1)", 4));
        assert!(!list_contains("(0,1),(0,1,4)", 4));
        assert!(list_contains(" (0-10)", 4));
        assert!(!list_contains("(x-y,z)", 4));
        assert!(!list_contains("", 4));
    }

    #[test]
    fn capability_decisions() {
        let full = LockState {
            supported: lines(&["common/4g", "common/5g", "save_ctrl", "common/4g_ext"]),
            ..LockState::default()
        };
        let cfun = Some(lines(&["+CFUN: (0,1,4),(0,1)"]));
        let probes = Probes {
            qnwlock: Some(full.clone()),
            cfun: cfun.clone(),
        };
        let c = capabilities(Dialect::Quectel, &probes);
        assert_eq!(
            c,
            Capabilities {
                lte_lock: true,
                nr_lock: true,
                reselect: true,
                radio: true,
                neighbours: true
            }
        );
        // Only 4G listed.
        let lte_only = LockState {
            supported: lines(&["common/4g"]),
            ..LockState::default()
        };
        let c = capabilities(
            Dialect::Quectel,
            &Probes {
                qnwlock: Some(lte_only),
                cfun: cfun.clone(),
            },
        );
        assert!(c.lte_lock && !c.nr_lock);
        // QNWLOCK answered ERROR: no lock at all.
        let c = capabilities(
            Dialect::Quectel,
            &Probes {
                qnwlock: None,
                cfun: cfun.clone(),
            },
        );
        assert!(!c.lte_lock && !c.nr_lock && c.radio);
        assert_eq!(release_commands(&c), Vec::<String>::new());
        // A QNWLOCK answer on a non-Quectel dialect is ignored.
        let c = capabilities(Dialect::Generic, &probes);
        assert!(!c.lte_lock && !c.nr_lock && !c.neighbours);
        assert!(capabilities(Dialect::Sierra, &probes).neighbours);
        // CFUN without level 4, or CFUN=? refused.
        let c = capabilities(
            Dialect::Quectel,
            &Probes {
                qnwlock: None,
                cfun: Some(lines(&["+CFUN: (0,1),(0,1)"])),
            },
        );
        assert!(!c.radio && !c.reselect);
        let c = capabilities(Dialect::Quectel, &Probes::default());
        assert!(!c.radio);
        // An OK without a list is trusted.
        let c = capabilities(
            Dialect::Generic,
            &Probes {
                qnwlock: None,
                cfun: Some(Vec::new()),
            },
        );
        assert!(c.radio);
    }

    #[test]
    fn command_lines() {
        assert_eq!(
            lock_lte_command(1350, 195).expect("valid"),
            "AT+QNWLOCK=\"common/4g\",1,1350,195"
        );
        assert_eq!(
            lock_nr_command(264, 504_990, 30, 41).expect("valid"),
            "AT+QNWLOCK=\"common/5g\",264,504990,30,41"
        );
        assert!(matches!(
            lock_lte_command(1350, 504),
            Err(ModemError::InvalidArgument { name: "pci", .. })
        ));
        assert!(matches!(
            lock_nr_command(264, 504_990, 45, 41),
            Err(ModemError::InvalidArgument {
                name: "scs_khz",
                ..
            })
        ));
        assert!(matches!(
            lock_nr_command(264, 504_990, 30, 0),
            Err(ModemError::InvalidArgument { name: "band", .. })
        ));
        let both = Capabilities {
            lte_lock: true,
            nr_lock: true,
            ..Capabilities::default()
        };
        assert_eq!(
            release_commands(&both),
            ["AT+QNWLOCK=\"common/4g\",0", "AT+QNWLOCK=\"common/5g\",0"]
        );
        assert_eq!(reselect_commands(), ["AT+CFUN=4", "AT+CFUN=1"]);
        assert_eq!(radio_command(false), "AT+CFUN=4");
        assert_eq!(radio_outage(false), Outage::UntilRadioOn);
        assert_eq!(radio_outage(true).expected(), Some(REATTACH_OUTAGE));
    }

    proptest! {
        #[test]
        fn list_contains_never_panics(s in ".{0,64}", v in 0u32..20) {
            let _ = list_contains(&s, v);
        }

        #[test]
        fn list_contains_finds_listed_values(vals in proptest::collection::vec(0u32..100, 1..8)) {
            let list = format!("({})", vals.iter().map(u32::to_string).collect::<Vec<_>>().join(","));
            for v in &vals {
                prop_assert!(list_contains(&list, *v));
            }
        }

        #[test]
        fn identity_helpers_never_panic(s in proptest::collection::vec(".{0,80}", 0..4)) {
            let _ = single_value(&s, "+CGSN");
            let _ = ati_revision(&s);
            let _ = qspn_operator(&s);
            let _ = detect_dialect(&s, s.first().map(String::as_str));
        }
    }
}
