//! A simulated slcan adapter on the master side of a PTY: answers commands as a Lawicell CANUSB
//! does (BEL for a command that is wrong in the current state), and sends frames on request.

use super::Master;
use sensor_drivers::CanFrame;
use sensor_drivers::serial::{LineSplitter, Piece};
use sensor_drivers::slcan::{BEL, Bitrate, Command, encode_frame};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The adapter's state machine (sans-IO).
#[derive(Debug)]
pub struct SimAdapter {
    pub open: bool,
    pub listen_only: bool,
    pub timestamps: bool,
    pub bitrate: Option<Bitrate>,
    /// Commands answered with BEL whatever the state (to simulate a refusing firmware).
    pub refuse: Vec<Command>,
    /// Every command line received, in order.
    pub log: Vec<String>,
    splitter: LineSplitter,
}

impl Default for SimAdapter {
    fn default() -> Self {
        SimAdapter {
            open: false,
            listen_only: false,
            timestamps: false,
            bitrate: None,
            refuse: Vec::new(),
            log: Vec::new(),
            splitter: LineSplitter::new(64, b"\r"),
        }
    }
}

impl SimAdapter {
    /// An adapter that answers BEL to `refuse` whatever its state.
    pub fn refusing(refuse: Vec<Command>) -> Self {
        SimAdapter {
            refuse,
            ..SimAdapter::default()
        }
    }

    /// Feeds bytes from the host; appends the replies.
    pub fn input(&mut self, bytes: &[u8], reply: &mut Vec<u8>) {
        let mut lines = Vec::new();
        self.splitter.push(bytes, |p| match p {
            Piece::Line { text, .. } => lines.push(text.to_vec()),
            Piece::Overlong { .. } => lines.push(Vec::new()),
        });
        for line in lines {
            self.log.push(String::from_utf8_lossy(&line).into_owned());
            let ok = match Command::parse(&line) {
                Some(c) if self.refuse.contains(&c) => false,
                Some(c) => self.apply(c, reply),
                None => false,
            };
            if ok {
                reply.push(b'\r');
            } else {
                reply.push(BEL);
            }
        }
    }

    fn apply(&mut self, c: Command, reply: &mut Vec<u8>) -> bool {
        match c {
            Command::Close => std::mem::replace(&mut self.open, false),
            Command::Bitrate(b) if !self.open => {
                self.bitrate = Some(b);
                true
            }
            Command::Timestamps(on) if !self.open => {
                self.timestamps = on;
                true
            }
            Command::DataBitrate(_) => !self.open,
            Command::Open | Command::ListenOnly if !self.open && self.bitrate.is_some() => {
                self.open = true;
                self.listen_only = c == Command::ListenOnly;
                true
            }
            Command::Status if self.open => {
                reply.extend_from_slice(b"F00");
                true
            }
            Command::Version => {
                reply.extend_from_slice(b"V1013");
                true
            }
            _ => false,
        }
    }
}

/// The simulated adapter running on a PTY master.
#[derive(Debug)]
pub struct Sim {
    pub adapter: Arc<Mutex<SimAdapter>>,
    tx: mpsc::Sender<Vec<u8>>,
    task: JoinHandle<()>,
}

impl Sim {
    /// Runs `adapter` on `master` until [`Sim::unplug`].
    pub fn spawn(master: Master, adapter: SimAdapter) -> Sim {
        let adapter = Arc::new(Mutex::new(adapter));
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
        let a = adapter.clone();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 256];
            loop {
                tokio::select! {
                    r = master.read(&mut buf) => {
                        let Ok(n) = r else { break };
                        let mut reply = Vec::new();
                        a.lock().unwrap().input(&buf[..n], &mut reply);
                        if master.write_all(&reply).await.is_err() {
                            break;
                        }
                    }
                    bytes = rx.recv() => {
                        let Some(bytes) = bytes else { break };
                        if master.write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Sim { adapter, tx, task }
    }

    /// Whether the host has opened the channel.
    pub fn is_open(&self) -> bool {
        self.adapter.lock().unwrap().open
    }

    /// The commands received so far.
    pub fn log(&self) -> Vec<String> {
        self.adapter.lock().unwrap().log.clone()
    }

    /// Sends raw bytes to the host.
    pub async fn send(&self, bytes: Vec<u8>) {
        self.tx
            .send(bytes)
            .await
            .expect("simulated adapter stopped");
    }

    /// Sends frames as received from the bus, with the adapter's timestamps when they are on.
    pub async fn send_frames(&self, frames: &[(CanFrame, u16)]) {
        let ts_on = self.adapter.lock().unwrap().timestamps;
        let mut bytes = Vec::new();
        for (f, ts) in frames {
            encode_frame(f, ts_on.then_some(*ts), &mut bytes).expect("encodable frame");
        }
        self.send(bytes).await;
    }

    /// Stops the adapter and closes the PTY master (the USB cable is pulled).
    pub async fn unplug(self) {
        drop(self.tx);
        self.task.await.expect("simulated adapter task");
    }
}
