//! The links' modems behind one type: [`AnyModem`] is an AT modem on a serial port or a
//! ModemManager modem, as the link's `[[links]]` table says ([`open`]).

use std::time::Duration;

use anyhow::{Result, bail};
use modem_hal::at::transport::{AtHandle, AtPort, PortConfig};
use modem_hal::modem::{AtModem, Capabilities, CommandOutcome, Identity, Modem, ModemError};
use modem_hal::radio::{NeighbourCell, Registration, ServingCell};

use crate::config::{LinkConfig, SinrUnit};

/// A link's modem, whichever backend drives it.
#[derive(Debug)]
pub enum AnyModem {
    /// AT commands on a serial port.
    At(AtModem<AtHandle>),
    /// ModemManager over D-Bus.
    #[cfg(feature = "modemmanager")]
    Mm(modem_hal::mm::MmModem),
}

/// How a link's modem is reached, for messages.
pub fn describe(link: &LinkConfig) -> Option<String> {
    if let Some(p) = &link.modem {
        return Some(format!("AT {}", p.display()));
    }
    link.modemmanager
        .as_ref()
        .map(|m| format!("ModemManager {m}"))
}

/// Opens the modem of `link`; `Ok(None)` when the link has none. `reopen_max` bounds the
/// AT port's reopen backoff (short for one-shot commands, longer for the daemon).
pub async fn open(link: &LinkConfig, reopen_max: Duration) -> Result<Option<AnyModem>> {
    if let Some(path) = &link.modem {
        if !path.exists() {
            bail!(
                "link '{}': the modem's AT port {} does not exist (is the modem plugged in? is the path in [[links]] modem right?)",
                link.name,
                path.display()
            );
        }
        let mut cfg = PortConfig::new(path.clone());
        cfg.reopen_max = reopen_max;
        let handle = AtPort::spawn(cfg);
        let opts = modem_hal::at::parse::ParseOptions {
            qeng_lte_sinr: match link.modem_sinr {
                SinrUnit::Db => modem_hal::at::parse::SinrScale::Db,
                SinrUnit::Fifths => modem_hal::at::parse::SinrScale::Fifths,
            },
            ..Default::default()
        };
        return Ok(Some(AnyModem::At(AtModem::with_options(handle, opts))));
    }
    if let Some(which) = &link.modemmanager {
        return open_mm(link, which).await.map(Some);
    }
    Ok(None)
}

#[cfg(not(feature = "modemmanager"))]
async fn open_mm(link: &LinkConfig, _which: &str) -> Result<AnyModem> {
    bail!(
        "link '{}' uses ModemManager, but this pitlink was built without the modemmanager feature",
        link.name
    )
}

#[cfg(feature = "modemmanager")]
async fn open_mm(link: &LinkConfig, which: &str) -> Result<AnyModem> {
    use anyhow::Context;
    use modem_hal::mm::{MmConfig, MmModem, ModemSelector};
    let select = match which {
        "first" => ModemSelector::First,
        // Modem indexes are small; IMEIs have 14 to 16 digits.
        n if n.len() < 8 => ModemSelector::Index(n.parse().unwrap_or(0)),
        imei => ModemSelector::Imei(imei.to_string()),
    };
    let m = MmModem::connect_system(MmConfig {
        select,
        ..Default::default()
    })
    .await
    .with_context(|| format!("link '{}': ModemManager modem {which}", link.name))?;
    Ok(AnyModem::Mm(m))
}

macro_rules! both {
    ($self:ident, $m:ident => $e:expr) => {
        match $self {
            AnyModem::At($m) => $e,
            #[cfg(feature = "modemmanager")]
            AnyModem::Mm($m) => $e,
        }
    };
}

impl Modem for AnyModem {
    async fn identity(&self) -> Result<Identity, ModemError> {
        both!(self, m => m.identity().await)
    }
    async fn registration(&self) -> Result<Registration, ModemError> {
        both!(self, m => m.registration().await)
    }
    async fn serving_cell(&self) -> Result<ServingCell, ModemError> {
        both!(self, m => m.serving_cell().await)
    }
    async fn neighbours(&self) -> Result<Vec<NeighbourCell>, ModemError> {
        both!(self, m => m.neighbours().await)
    }
    async fn capabilities(&self) -> Result<Capabilities, ModemError> {
        both!(self, m => m.capabilities().await)
    }
    async fn lock_lte(&self, earfcn: u32, pci: u16) -> Result<CommandOutcome, ModemError> {
        both!(self, m => m.lock_lte(earfcn, pci).await)
    }
    async fn lock_nr(
        &self,
        pci: u16,
        arfcn: u32,
        scs_khz: u16,
        band: u16,
    ) -> Result<CommandOutcome, ModemError> {
        both!(self, m => m.lock_nr(pci, arfcn, scs_khz, band).await)
    }
    async fn release_lock(&self) -> Result<CommandOutcome, ModemError> {
        both!(self, m => m.release_lock().await)
    }
    async fn reselect(&self) -> Result<CommandOutcome, ModemError> {
        both!(self, m => m.reselect().await)
    }
    async fn radio(&self, on: bool) -> Result<CommandOutcome, ModemError> {
        both!(self, m => m.radio(on).await)
    }
}
