//! [`AtModem`]: the [`Modem`] trait over an AT command channel (the transport's [`AtHandle`]).
//! Every response goes through [`crate::at::parse::Parser`]; the decisions are in [`super::plan`].

use std::future::Future;
use std::time::Duration;

use tokio::sync::OnceCell;

use super::plan::{self, Dialect, Probes};
use super::{Capabilities, CommandOutcome, Feature, Identity, Modem, ModemError, Outage};
use crate::at::parse::{ParseOptions, Parsed, Parser};
use crate::at::transport::{AtError, AtHandle, Response};
use crate::radio::{NeighbourCell, Registration, ServingCell};

/// Something that runs one AT command line and returns its response.
pub trait AtChannel: Send + Sync {
    /// Runs `line` with `timeout` (or the command's default).
    fn command(
        &self,
        line: &str,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<Response, AtError>> + Send;
}

impl AtChannel for AtHandle {
    fn command(
        &self,
        line: &str,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<Response, AtError>> + Send {
        AtHandle::command(self, line, timeout)
    }
}

/// The identity answers the dialect is decided from.
#[derive(Debug, Clone)]
struct Ident {
    dialect: Dialect,
    ati: Vec<String>,
    model: Option<String>,
}

/// A modem driven by AT commands. The dialect and the capabilities are probed once and cached;
/// a network scan (`AT+COPS=?`) is never sent.
#[derive(Debug)]
pub struct AtModem<H> {
    at: H,
    opts: ParseOptions,
    ident: OnceCell<Ident>,
    caps: OnceCell<Capabilities>,
}

impl<H: AtChannel> AtModem<H> {
    /// A modem over `at` with the default parse options.
    pub fn new(at: H) -> Self {
        Self::with_options(at, ParseOptions::default())
    }

    /// A modem over `at` with per-firmware parse options (SINR scaling).
    pub fn with_options(at: H, opts: ParseOptions) -> Self {
        Self {
            at,
            opts,
            ident: OnceCell::new(),
            caps: OnceCell::new(),
        }
    }

    /// The channel.
    pub fn channel(&self) -> &H {
        &self.at
    }

    /// The dialect, detected from `ATI` and `AT+CGMM` on first use.
    pub async fn dialect(&self) -> Result<Dialect, ModemError> {
        Ok(self.ident().await?.dialect)
    }

    async fn ident(&self) -> Result<&Ident, ModemError> {
        self.ident
            .get_or_try_init(|| async {
                // ATI is not standardised; a modem that refuses it still answers AT+CGMM.
                let ati = match self.at.command("ATI", None).await {
                    Ok(r) => r.lines,
                    Err(e) if is_refusal(&e) => Vec::new(),
                    Err(e) => return Err(ModemError::from(e)),
                };
                let model = match self.at.command("AT+CGMM", None).await {
                    Ok(r) => plan::single_value(&r.lines, "+CGMM"),
                    Err(e) if is_refusal(&e) => None,
                    Err(e) => return Err(ModemError::from(e)),
                };
                let dialect = plan::detect_dialect(&ati, model.as_deref());
                tracing::debug!(?dialect, ?model, "modem dialect");
                Ok(Ident {
                    dialect,
                    ati,
                    model,
                })
            })
            .await
    }

    async fn run(&self, line: &str) -> Result<Response, ModemError> {
        self.at.command(line, None).await.map_err(ModemError::from)
    }

    /// Runs `line` and parses its response.
    async fn query(&self, line: &str) -> Result<Parsed, ModemError> {
        let r = self.run(line).await?;
        Ok(self.parse(&r))
    }

    fn parse(&self, r: &Response) -> Parsed {
        let mut p = Parser::new(self.opts);
        p.feed_line(&r.command);
        for l in &r.lines {
            p.feed_line(l);
        }
        p.feed_line("OK");
        p.finish()
    }

    async fn require(&self, feature: Feature) -> Result<Capabilities, ModemError> {
        let caps = self.capabilities_cached().await?;
        if caps.has(feature) {
            Ok(caps)
        } else {
            Err(ModemError::Unsupported {
                feature,
                dialect: self.ident().await?.dialect,
            })
        }
    }

    async fn capabilities_cached(&self) -> Result<Capabilities, ModemError> {
        self.caps
            .get_or_try_init(|| async {
                let dialect = self.ident().await?.dialect;
                let mut probes = Probes::default();
                if plan::probe_qnwlock(dialect) {
                    probes.qnwlock = match self.at.command("AT+QNWLOCK=?", None).await {
                        Ok(r) => Some(self.parse(&r).report.lock.unwrap_or_default()),
                        Err(e) if is_refusal(&e) => None,
                        Err(e) => return Err(ModemError::from(e)),
                    };
                }
                probes.cfun = match self.at.command("AT+CFUN=?", None).await {
                    Ok(r) => Some(r.lines),
                    Err(e) if is_refusal(&e) => None,
                    Err(e) => return Err(ModemError::from(e)),
                };
                let caps = plan::capabilities(dialect, &probes);
                tracing::info!(?dialect, ?caps, "modem capabilities");
                Ok(caps)
            })
            .await
            .copied()
    }

    async fn send_all(
        &self,
        lines: &[String],
        outage: Outage,
    ) -> Result<CommandOutcome, ModemError> {
        for l in lines {
            self.run(l).await?;
        }
        Ok(CommandOutcome {
            commands: lines.to_vec(),
            outage,
        })
    }
}

/// The modem answered (`ERROR`, `+CME ERROR`): a definite "no", unlike a timeout or a lost port.
fn is_refusal(e: &AtError) -> bool {
    matches!(
        e,
        AtError::Error { .. } | AtError::Cme { .. } | AtError::Cms { .. } | AtError::Final { .. }
    )
}

/// The first line that did not parse as an error, or `Missing`.
fn missing(command: &str, parsed: &Parsed, what: &'static str) -> ModemError {
    match parsed.unparsed.first() {
        Some(u) => ModemError::Parse {
            command: command.to_owned(),
            line: u.text.clone(),
            why: u.error.clone(),
        },
        None => ModemError::Missing {
            command: command.to_owned(),
            what,
        },
    }
}

impl<H: AtChannel> Modem for AtModem<H> {
    async fn identity(&self) -> Result<Identity, ModemError> {
        let ident = self.ident().await?.clone();
        let optional = |r: Result<Response, AtError>| match r {
            Ok(r) => Ok(Some(r)),
            Err(e) if is_refusal(&e) => Ok(None),
            Err(e) => Err(ModemError::from(e)),
        };
        let firmware = optional(self.at.command("AT+CGMR", None).await)?
            .and_then(|r| plan::single_value(&r.lines, "+CGMR"))
            .or_else(|| plan::ati_revision(&ident.ati));
        let imei = optional(self.at.command("AT+CGSN", None).await)?
            .and_then(|r| plan::single_value(&r.lines, "+CGSN"))
            .filter(|s| plan::valid_imei(s));
        let sim_operator = if ident.dialect == Dialect::Quectel {
            optional(self.at.command("AT+QSPN", None).await)?
                .and_then(|r| plan::qspn_operator(&r.lines))
        } else {
            None
        };
        let operator = optional(self.at.command("AT+COPS?", None).await)?
            .and_then(|r| self.parse(&r).report.operator);
        let manufacturer = ident
            .ati
            .iter()
            .map(|l| l.trim())
            .find(|l| !l.is_empty())
            .filter(|l| Some(*l) != ident.model.as_deref() && !l.starts_with("Revision"))
            .map(|l| l.chars().take(64).collect());
        Ok(Identity {
            dialect: ident.dialect,
            manufacturer,
            model: ident.model,
            firmware,
            imei,
            sim_operator,
            operator,
        })
    }

    async fn registration(&self) -> Result<Registration, ModemError> {
        let cmd = "AT+CEREG?";
        let p = self.query(cmd).await?;
        match p.report.registration {
            Some(r) => Ok(r),
            None => Err(missing(cmd, &p, "registration")),
        }
    }

    async fn serving_cell(&self) -> Result<ServingCell, ModemError> {
        let cmd = match self.ident().await?.dialect {
            Dialect::Quectel => "AT+QENG=\"servingcell\"",
            Dialect::Sierra => "AT!GSTATUS?",
            // `ModemManager` is never detected over AT; treated as 27.007 only.
            Dialect::Generic | Dialect::ModemManager => {
                // 27.007 only: the cell from +CEREG, the levels from +CESQ.
                let reg = self.registration().await?;
                let cmd = "AT+CESQ";
                let p = self.query(cmd).await?;
                let Some(cesq) = p.report.signal.cesq.clone() else {
                    return Err(missing(cmd, &p, "+CESQ"));
                };
                return Ok(ServingCell {
                    rat: match reg.act {
                        Some(11) => Some("NR5G-SA".into()),
                        Some(13) => Some("NR5G-NSA".into()),
                        Some(7) => Some("LTE".into()),
                        _ => None,
                    },
                    tac: reg.tac,
                    cell_id: reg.cell_id,
                    rsrp_dbm: cesq.rsrp_dbm,
                    rsrq_db: cesq.rsrq_db,
                    ..ServingCell::default()
                });
            }
        };
        let p = self.query(cmd).await?;
        match p.report.serving {
            Some(s) => {
                for u in &p.unparsed {
                    tracing::debug!(command = cmd, line = %u.text, why = %u.error, "line ignored");
                }
                Ok(s)
            }
            None => Err(missing(cmd, &p, "serving cell")),
        }
    }

    async fn neighbours(&self) -> Result<Vec<NeighbourCell>, ModemError> {
        let dialect = self.ident().await?.dialect;
        let cmd = match dialect {
            Dialect::Quectel => "AT+QENG=\"neighbourcell\"",
            Dialect::Sierra => "AT!LTEINFO?",
            Dialect::Generic | Dialect::ModemManager => {
                return Err(ModemError::Unsupported {
                    feature: Feature::Neighbours,
                    dialect,
                });
            }
        };
        let p = self.query(cmd).await?;
        if p.report.neighbours.is_empty() && !p.unparsed.is_empty() {
            return Err(missing(cmd, &p, "neighbour cells"));
        }
        Ok(p.report.neighbours)
    }

    async fn capabilities(&self) -> Result<Capabilities, ModemError> {
        self.capabilities_cached().await
    }

    async fn lock_lte(&self, earfcn: u32, pci: u16) -> Result<CommandOutcome, ModemError> {
        let line = plan::lock_lte_command(earfcn, pci)?;
        self.require(Feature::LteLock).await?;
        self.send_all(&[line], Outage::Reattach(plan::REATTACH_OUTAGE))
            .await
    }

    async fn lock_nr(
        &self,
        pci: u16,
        arfcn: u32,
        scs_khz: u16,
        band: u16,
    ) -> Result<CommandOutcome, ModemError> {
        let line = plan::lock_nr_command(pci, arfcn, scs_khz, band)?;
        self.require(Feature::NrLock).await?;
        self.send_all(&[line], Outage::Reattach(plan::REATTACH_OUTAGE))
            .await
    }

    async fn release_lock(&self) -> Result<CommandOutcome, ModemError> {
        let caps = self.require(Feature::ReleaseLock).await?;
        let lines = plan::release_commands(&caps);
        self.send_all(&lines, Outage::Reattach(plan::REATTACH_OUTAGE))
            .await
    }

    async fn reselect(&self) -> Result<CommandOutcome, ModemError> {
        self.require(Feature::Reselect).await?;
        let lines = plan::reselect_commands().map(str::to_owned);
        self.send_all(&lines, Outage::Reattach(plan::REATTACH_OUTAGE))
            .await
    }

    async fn radio(&self, on: bool) -> Result<CommandOutcome, ModemError> {
        self.require(Feature::Radio).await?;
        let line = plan::radio_command(on).to_owned();
        self.send_all(&[line], plan::radio_outage(on)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// One scripted exchange: the line expected and the answer.
    type Step = (String, Result<Vec<String>, AtError>);

    /// A channel answering from a script, checking the order.
    #[derive(Debug, Default)]
    struct Script(Mutex<VecDeque<Step>>);

    impl Script {
        fn new(steps: &[(&str, Result<&[&str], AtError>)]) -> Self {
            let steps = steps
                .iter()
                .map(|(l, r)| {
                    let r = r
                        .clone()
                        .map(|lines| lines.iter().map(|s| s.to_string()).collect());
                    (l.to_string(), r)
                })
                .collect();
            Self(Mutex::new(steps))
        }

        fn left(&self) -> usize {
            self.0.lock().expect("script lock").len()
        }
    }

    impl AtChannel for Script {
        fn command(
            &self,
            line: &str,
            _timeout: Option<Duration>,
        ) -> impl Future<Output = Result<Response, AtError>> + Send {
            let next = self.0.lock().expect("script lock").pop_front();
            let line = line.to_owned();
            async move {
                let (want, answer) = next.unwrap_or_else(|| panic!("unexpected {line}"));
                assert_eq!(line, want, "command order");
                answer.map(|lines| Response {
                    command: line,
                    lines,
                })
            }
        }
    }

    const QUECTEL: &[&str] = &["Quectel", "RM520N-GL", "Revision: RM520NGLAAR03A03M4G"];

    #[tokio::test]
    async fn a_probe_that_times_out_is_not_cached_but_a_refusal_is() {
        let timeout = AtError::Timeout {
            command: "AT+QNWLOCK=?".into(),
            after: Duration::from_secs(3),
        };
        let refused = AtError::Error {
            command: "AT+QNWLOCK=?".into(),
        };
        let script = Script::new(&[
            ("ATI", Ok(QUECTEL)),
            ("AT+CGMM", Ok(&["RM520N-GL"])),
            ("AT+QNWLOCK=?", Err(timeout)),
            ("AT+QNWLOCK=?", Err(refused)),
            ("AT+CFUN=?", Ok(&["+CFUN: (0,1,4),(0,1)"])),
        ]);
        let m = AtModem::new(script);
        let err = m.capabilities().await.expect_err("timeout");
        assert!(
            matches!(err, ModemError::At(AtError::Timeout { .. })),
            "{err}"
        );
        let caps = m.capabilities().await.expect("probed again");
        assert!(!caps.lte_lock && !caps.nr_lock && caps.radio);
        // Cached: no further probe (the script is empty), and no lock attempt either.
        assert!(matches!(
            m.lock_lte(1350, 195).await,
            Err(ModemError::Unsupported {
                feature: Feature::LteLock,
                dialect: Dialect::Quectel
            })
        ));
        assert_eq!(m.channel().left(), 0);
    }

    #[tokio::test]
    async fn no_service_and_parse_errors_are_typed() {
        let script = Script::new(&[
            ("ATI", Ok(QUECTEL)),
            ("AT+CGMM", Ok(&["RM520N-GL"])),
            (
                "AT+QENG=\"servingcell\"",
                Err(AtError::Cme {
                    command: "AT+QENG=\"servingcell\"".into(),
                    code: crate::at::transport::ErrorCode::Text("no network service".into()),
                }),
            ),
            (
                "AT+QENG=\"servingcell\"",
                Ok(&["+QENG: \"servingcell\",\"NOCONN\",\"LTE\",\"FDD\",x"]),
            ),
            ("AT+CEREG?", Ok(&[])),
        ]);
        let m = AtModem::new(script);
        let err = m.serving_cell().await.expect_err("no service");
        assert!(matches!(err, ModemError::NoService { .. }), "{err}");
        let err = m.serving_cell().await.expect_err("bad line");
        assert!(
            matches!(&err, ModemError::Parse { line, .. } if line.starts_with("+QENG")),
            "{err}"
        );
        let err = m.registration().await.expect_err("empty answer");
        assert_eq!(
            err,
            ModemError::Missing {
                command: "AT+CEREG?".into(),
                what: "registration"
            }
        );
    }
}
