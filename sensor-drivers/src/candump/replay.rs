//! The sans-IO replay core: which log lines become readings, with which timestamp, and when
//! (on the agent's clock) each is due. The async shell in [`super::shell`] reads the file, sleeps
//! and hands readings over.

use super::parse::{LogLine, parse_line};
use crate::can::CanFrame;
use crate::sample::TimedFrame;

/// How fast a log is replayed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Speed {
    /// At the pace it was recorded.
    #[default]
    Recorded,
    /// `n` times the recorded pace (2.0 = twice as fast). A factor that is not finite and
    /// positive replays flat out.
    Factor(f64),
    /// As fast as the agent takes the readings.
    FlatOut,
}

impl Speed {
    /// True when frames are never waited for.
    pub fn is_flat_out(self) -> bool {
        match self {
            Speed::FlatOut => true,
            Speed::Recorded => false,
            Speed::Factor(f) => !(f.is_finite() && f > 0.0),
        }
    }
}

/// Why a speed text was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "replay speed '{0}' is not understood: use 'recorded', a factor such as '2x' or '0.5x', or 'max'"
)]
pub struct SpeedError(pub String);

impl std::str::FromStr for Speed {
    type Err = SpeedError;

    /// `recorded` (or `1x`), `<factor>x` (or a bare positive number), `max` / `flat-out`.
    fn from_str(s: &str) -> Result<Speed, SpeedError> {
        let t = s.trim();
        match t.to_ascii_lowercase().as_str() {
            "recorded" | "realtime" | "real-time" => return Ok(Speed::Recorded),
            "max" | "flat-out" | "flatout" | "flat_out" => return Ok(Speed::FlatOut),
            _ => {}
        }
        let num = t.strip_suffix(['x', 'X']).unwrap_or(t);
        match num.parse::<f64>() {
            Ok(1.0) => Ok(Speed::Recorded),
            Ok(f) if f.is_finite() && f > 0.0 => Ok(Speed::Factor(f)),
            _ => Err(SpeedError(s.to_string())),
        }
    }
}

impl std::fmt::Display for Speed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Speed::Recorded => f.write_str("recorded"),
            Speed::Factor(x) => write!(f, "{x}x"),
            Speed::FlatOut => f.write_str("max"),
        }
    }
}

/// When frames are due: the first frame at once, every later one at its recorded distance from
/// the first, divided by the speed factor.
#[derive(Debug, Clone)]
pub struct Pacer {
    speed: Speed,
    first_us: Option<u64>,
}

impl Pacer {
    /// A pacer whose first frame will be due at once.
    pub fn new(speed: Speed) -> Pacer {
        Pacer {
            speed,
            first_us: None,
        }
    }

    /// µs after the replay started (agent clock) at which the frame recorded at `rec_us` is due.
    /// A frame recorded before the first one (an unordered log) is due at once; flat out,
    /// everything is.
    pub fn due_us(&mut self, rec_us: u64) -> u64 {
        let first = *self.first_us.get_or_insert(rec_us);
        let d = rec_us.saturating_sub(first);
        match self.speed {
            Speed::Recorded => d,
            Speed::FlatOut => 0,
            Speed::Factor(f) if f.is_finite() && f > 0.0 => (d as f64 / f) as u64,
            Speed::Factor(_) => 0,
        }
    }
}

/// Frames a looping replay keeps in memory (about 80 bytes each) so later loops need no file
/// reading or parsing; a longer log is read again for every loop.
pub const CACHE_FRAMES: usize = 100_000;
/// Inter-frame gaps sampled for the loop period (the first ones of the log).
const GAP_SAMPLE: usize = 1 << 16;
/// Distinct interface names given an index; later ones share [`ReplayCore::OTHER_IFACE`].
const MAX_IFACES: usize = 1024;

/// What one log line (or cached frame) means for the replay.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Emit `frame` once the agent clock is `due_us` µs past the start of the replay. `iface`
    /// indexes [`ReplayCore::iface_name`].
    Frame {
        due_us: u64,
        frame: TimedFrame,
        iface: u16,
    },
    /// Nothing to emit: a comment, another interface's frame, or a line already counted in the
    /// first pass of a looping replay.
    Skip,
    /// The recording lost this many frames (`DROPCOUNT`): count them as overruns.
    Overrun(u64),
    /// A malformed line: count it as a parse error with this message (it names the line).
    Malformed(String),
}

/// What comes after a pass through the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassEnd {
    /// Not looping: the replay is over.
    Finished,
    /// Looping: replay again, from the cache ([`ReplayCore::cached`]) if `cached`, else by
    /// reading the file again and feeding its lines.
    Again { cached: bool },
    /// Looping, but the log held no frame of the selected interfaces: there is nothing to loop.
    Empty,
}

/// The replay's decisions, fed lines (first pass and re-read passes) or asked for cached
/// frames (later passes).
///
/// Reading timestamps: the recorded times shifted so that the first frame of the run falls on
/// `wall_start_us`, spacing kept exactly. Each loop adds the log's span plus one median
/// inter-frame gap, so timestamps keep increasing across loops.
#[derive(Debug)]
pub struct ReplayCore {
    interfaces: Vec<String>,
    looping: bool,
    pacer: Pacer,
    wall_start_us: u64,
    pass: u64,
    shift_us: u64,
    period_us: u64,
    first_us: Option<u64>,
    last_us: u64,
    prev_us: Option<u64>,
    gaps: Vec<u64>,
    cache: Option<Vec<(u64, u16, CanFrame)>>,
    names: Vec<String>,
    last_name: usize,
}

impl ReplayCore {
    /// Index of frames from interfaces beyond the first 1024 names.
    pub const OTHER_IFACE: u16 = u16::MAX;

    /// `interfaces`: the interface names to replay (empty: all). `wall_start_us`: the wall clock
    /// when the replay started (the first frame's reading time).
    pub fn new(speed: Speed, looping: bool, interfaces: Vec<String>, wall_start_us: u64) -> Self {
        ReplayCore {
            interfaces,
            looping,
            pacer: Pacer::new(speed),
            wall_start_us,
            pass: 0,
            shift_us: 0,
            period_us: 0,
            first_us: None,
            last_us: 0,
            prev_us: None,
            gaps: Vec::new(),
            cache: looping.then(Vec::new),
            names: Vec::new(),
            last_name: 0,
        }
    }

    /// The pass through the log being replayed (0 = the first).
    pub fn pass(&self) -> u64 {
        self.pass
    }

    /// The name of interface index `i` (as in [`Step::Frame`]).
    pub fn iface_name(&self, i: u16) -> Option<&str> {
        self.names.get(usize::from(i)).map(String::as_str)
    }

    /// Frames cached for later passes (0 when not looping or over [`CACHE_FRAMES`]).
    pub fn cached_len(&self) -> usize {
        self.cache.as_ref().map_or(0, Vec::len)
    }

    fn iface_index(&mut self, name: &str) -> u16 {
        if self.names.get(self.last_name).is_some_and(|n| n == name) {
            return self.last_name as u16;
        }
        if let Some(i) = self.names.iter().position(|n| n == name) {
            self.last_name = i;
            return i as u16;
        }
        if self.names.len() >= MAX_IFACES {
            return Self::OTHER_IFACE;
        }
        self.names.push(name.to_string());
        self.last_name = self.names.len() - 1;
        self.last_name as u16
    }

    fn wanted(&self, iface: &str) -> bool {
        self.interfaces.is_empty() || self.interfaces.iter().any(|i| i == iface)
    }

    /// Line `line_no` (1-based) of the log, in the current pass.
    pub fn line(&mut self, line_no: u64, line: &str) -> Step {
        match parse_line(line) {
            Ok(LogLine::Frame(f)) => {
                if !self.wanted(f.iface) {
                    return Step::Skip;
                }
                let iface = self.iface_index(f.iface);
                let rec = f.timestamp.as_micros();
                if self.pass == 0 {
                    self.observe(rec, iface, &f.frame);
                }
                self.frame(rec, iface, f.frame)
            }
            Ok(LogLine::Comment) => Step::Skip,
            Ok(LogLine::DropCount(d)) if self.pass == 0 => Step::Overrun(d.dropped),
            Err(e) if self.pass == 0 => Step::Malformed(format!("line {line_no}: {e}")),
            Ok(LogLine::DropCount(_)) | Err(_) => Step::Skip,
        }
    }

    /// Frame `k` of the cache, for a pass after the first (None past the end).
    pub fn cached(&mut self, k: usize) -> Option<Step> {
        let &(rec, iface, frame) = self.cache.as_ref()?.get(k)?;
        Some(self.frame(rec, iface, frame))
    }

    fn observe(&mut self, rec: u64, iface: u16, frame: &CanFrame) {
        if self.first_us.is_none() {
            self.first_us = Some(rec);
        }
        self.last_us = self.last_us.max(rec);
        if let Some(p) = self.prev_us
            && self.gaps.len() < GAP_SAMPLE
        {
            self.gaps.push(rec.saturating_sub(p));
        }
        self.prev_us = Some(rec);
        if let Some(c) = &mut self.cache {
            if c.len() < CACHE_FRAMES {
                c.push((rec, iface, *frame));
            } else {
                self.cache = None;
            }
        }
    }

    fn frame(&mut self, rec: u64, iface: u16, frame: CanFrame) -> Step {
        let rec = rec.saturating_add(self.shift_us);
        let first = self.first_us.unwrap_or(rec);
        let t_us = if rec >= first {
            self.wall_start_us.saturating_add(rec - first)
        } else {
            self.wall_start_us.saturating_sub(first - rec)
        };
        Step::Frame {
            due_us: self.pacer.due_us(rec),
            frame: TimedFrame { t_us, frame },
            iface,
        }
    }

    /// The current pass reached the end of the log.
    pub fn end_pass(&mut self) -> PassEnd {
        if !self.looping {
            return PassEnd::Finished;
        }
        let Some(first) = self.first_us else {
            return PassEnd::Empty;
        };
        if self.pass == 0 {
            let mut gaps = std::mem::take(&mut self.gaps);
            let median = if gaps.is_empty() {
                0
            } else {
                let mid = gaps.len() / 2;
                *gaps.select_nth_unstable(mid).1
            };
            self.period_us = (self.last_us - first).saturating_add(median.max(1));
        }
        self.pass += 1;
        self.shift_us = self.shift_us.saturating_add(self.period_us);
        PassEnd::Again {
            cached: self.cache.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::candump::parse::{Timestamp, format_line};
    use proptest::prelude::*;

    fn line(t_us: u64, iface: &str, id: u32) -> String {
        let f = CanFrame::classic(id, false, &[id as u8]).unwrap();
        format_line(Timestamp::from_micros(t_us), iface, &f, None)
    }

    fn frames(core: &mut ReplayCore, lines: &[String]) -> Vec<(u64, u64, u32)> {
        let mut out = vec![];
        for (n, l) in lines.iter().enumerate() {
            if let Step::Frame { due_us, frame, .. } = core.line(n as u64 + 1, l) {
                out.push((due_us, frame.t_us, frame.frame.id));
            }
        }
        out
    }

    #[test]
    fn speeds_parse_and_pace() {
        assert_eq!("recorded".parse(), Ok(Speed::Recorded));
        assert_eq!("1x".parse(), Ok(Speed::Recorded));
        assert_eq!("2.5x".parse(), Ok(Speed::Factor(2.5)));
        assert_eq!("10".parse(), Ok(Speed::Factor(10.0)));
        assert_eq!("max".parse(), Ok(Speed::FlatOut));
        assert!("0x".parse::<Speed>().is_err());
        assert!(
            "fast"
                .parse::<Speed>()
                .unwrap_err()
                .to_string()
                .contains("'fast'")
        );

        let mut p = Pacer::new(Speed::Recorded);
        assert_eq!(p.due_us(5_000_000), 0);
        assert_eq!(p.due_us(5_250_000), 250_000);
        assert_eq!(p.due_us(4_000_000), 0, "earlier than the first: at once");
        let mut p = Pacer::new(Speed::Factor(4.0));
        p.due_us(100);
        assert_eq!(p.due_us(1_000_100), 250_000);
        let mut p = Pacer::new(Speed::FlatOut);
        p.due_us(1);
        assert_eq!(p.due_us(9_000_000), 0);
        assert!(Speed::Factor(f64::NAN).is_flat_out());
    }

    #[test]
    fn readings_keep_spacing_from_the_wall_clock_start() {
        let lines = vec![
            line(46_408_584_930, "can0", 1),
            "# comment".to_string(),
            line(46_408_585_000, "can1", 2),
            line(46_408_594_930, "can0", 3),
        ];
        let mut core = ReplayCore::new(Speed::Recorded, false, vec![], 1_700_000_000_000_000);
        assert_eq!(
            frames(&mut core, &lines),
            vec![
                (0, 1_700_000_000_000_000, 1),
                (70, 1_700_000_000_000_070, 2),
                (10_000, 1_700_000_000_010_000, 3)
            ]
        );
        assert_eq!(core.iface_name(0), Some("can0"));
        assert_eq!(core.iface_name(1), Some("can1"));
        assert_eq!(core.end_pass(), PassEnd::Finished);

        let mut core = ReplayCore::new(Speed::Recorded, false, vec!["can1".into()], 1_000);
        assert_eq!(frames(&mut core, &lines), vec![(0, 1_000, 2)], "filtered");
    }

    #[test]
    fn loops_continue_after_span_plus_median_gap() {
        // Gaps 10, 10, 30: span 50, median 10 → period 60.
        let lines: Vec<String> = [100, 110, 120, 150]
            .iter()
            .map(|&t| line(t, "can0", 7))
            .collect();
        let mut core = ReplayCore::new(Speed::Recorded, true, vec![], 0);
        let first = frames(&mut core, &lines);
        assert_eq!(
            first.iter().map(|f| f.1).collect::<Vec<_>>(),
            vec![0, 10, 20, 50]
        );
        assert_eq!(core.end_pass(), PassEnd::Again { cached: true });
        let mut second = vec![];
        let mut k = 0;
        while let Some(Step::Frame { due_us, frame, .. }) = core.cached(k) {
            second.push((due_us, frame.t_us));
            k += 1;
        }
        assert_eq!(second, vec![(60, 60), (70, 70), (80, 80), (110, 110)]);
        assert_eq!(core.end_pass(), PassEnd::Again { cached: true });
        assert!(matches!(
            core.cached(0),
            Some(Step::Frame { due_us: 120, .. })
        ));
    }

    #[test]
    fn errors_and_dropcounts_are_counted_in_the_first_pass_only() {
        let lines = [
            line(1, "can0", 1),
            "(2.0) can0 123#1".to_string(),
            "DROPCOUNT: dropped 4 CAN frames on 'can0' socket (total drops 4)".to_string(),
        ];
        let mut core = ReplayCore::new(Speed::FlatOut, true, vec![], 0);
        assert!(matches!(core.line(1, &lines[0]), Step::Frame { .. }));
        assert_eq!(
            core.line(2, &lines[1]),
            Step::Malformed("line 2: data has an odd number of hex digits".into())
        );
        assert_eq!(core.line(3, &lines[2]), Step::Overrun(4));
        core.end_pass();
        assert_eq!(core.line(2, &lines[1]), Step::Skip);
        assert_eq!(core.line(3, &lines[2]), Step::Skip);
    }

    #[test]
    fn an_empty_loop_says_so_and_a_long_log_is_not_cached() {
        let mut core = ReplayCore::new(Speed::FlatOut, true, vec!["can9".into()], 0);
        core.line(1, &line(1, "can0", 1));
        assert_eq!(core.end_pass(), PassEnd::Empty);

        let mut core = ReplayCore::new(Speed::FlatOut, true, vec![], 0);
        for k in 0..=CACHE_FRAMES as u64 {
            core.line(k + 1, &line(k, "can0", 1));
        }
        assert_eq!(core.cached_len(), 0);
        assert_eq!(core.end_pass(), PassEnd::Again { cached: false });
        match core.line(1, &line(0, "can0", 1)) {
            Step::Frame { frame, .. } => assert_eq!(frame.t_us, CACHE_FRAMES as u64 + 1),
            s => panic!("{s:?}"),
        }
    }

    proptest! {
        #[test]
        fn looped_timestamps_never_go_back(
            gaps in proptest::collection::vec(0u64..5_000, 1..40),
            passes in 1usize..4,
        ) {
            let mut t = 1_000_000u64;
            let lines: Vec<String> = gaps.iter().map(|g| { t += g; line(t, "can0", 1) }).collect();
            let mut core = ReplayCore::new(Speed::Recorded, true, vec![], 5);
            let mut all = frames(&mut core, &lines);
            for _ in 0..passes {
                prop_assert_eq!(core.end_pass(), PassEnd::Again { cached: true });
                let mut k = 0;
                let mut pass = vec![];
                while let Some(Step::Frame { due_us, frame, .. }) = core.cached(k) {
                    pass.push((due_us, frame.t_us, frame.frame.id));
                    k += 1;
                }
                // A loop starts strictly after the previous one ended.
                prop_assert!(pass[0].1 > all[all.len() - 1].1);
                all.extend(pass);
            }
            for w in all.windows(2) {
                prop_assert!(w[1].1 >= w[0].1);
                prop_assert!(w[1].0 >= w[0].0);
                // Recorded speed: due time and reading time advance together.
                prop_assert_eq!(w[1].0 - w[0].0, w[1].1 - w[0].1);
            }
        }
    }
}
