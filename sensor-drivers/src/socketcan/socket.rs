//! The system calls of the SocketCAN source: opening a configured CAN_RAW socket and reading
//! frames with their control messages.
//!
//! The socket is created unbound, gets every option (FD frames, filters, error mask, drop counter,
//! timestamps, buffer size) and is bound last, so no frame arrives under default settings. The
//! `socketcan` crate sets the CAN options and binds; `nix` sets the generic socket options and
//! calls `recvmsg`, because the crate's readers drop the `SO_RXQ_OVFL` control message.

use super::SocketCanOptions;
use super::codec::{CANFD_MTU, DecodeError, decode_frame};
use super::filter::FilterError;
use crate::can::CanFrame;
use nix::libc;
use nix::sys::socket::{
    AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockProtocol, SockType,
    TimestampingFlag, Timestamps, getsockopt, recvmsg, setsockopt, socket, sockopt,
};
use nix::sys::time::TimeSpec;
use socketcan::{CanAddr, CanFdSocket, Socket, SocketOptions};
use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The one unsafe call of the source: registering the socket with tokio's reactor.
#[allow(unsafe_code)]
mod registered {
    use socketcan::CanFdSocket;
    use std::io;
    use tokio::io::unix::AsyncFd;

    /// `AsyncFd::register` for a CAN socket (tokio deprecated the safe `AsyncFd::new`, which
    /// cannot check its requirement for an arbitrary type).
    pub(super) fn register(sock: CanFdSocket) -> io::Result<AsyncFd<CanFdSocket>> {
        // SAFETY: `CanFdSocket` owns its descriptor (a `socket2::Socket`) and `as_raw_fd` always
        // returns that descriptor. The `AsyncFd` takes ownership of the socket, nothing here ever
        // replaces the inner socket (only `get_ref` is used), and the descriptor is closed only when
        // the socket is dropped, after the `AsyncFd` has deregistered it.
        unsafe { AsyncFd::register(sock) }.map_err(io::Error::from)
    }
}

/// What went wrong with a SocketCAN interface or its settings.
#[derive(Debug, thiserror::Error)]
pub enum SocketCanError {
    #[error("CAN interface {iface} not found: {source}")]
    NoInterface { iface: String, source: io::Error },
    #[error("CAN interface {iface} is down")]
    Down { iface: String },
    #[error("{iface}: cannot {step}: {source}")]
    Setup {
        iface: String,
        step: &'static str,
        source: io::Error,
    },
    #[error("reading {iface}: {source}")]
    Read { iface: String, source: io::Error },
    #[error(transparent)]
    Filter(FilterError),
    #[error("error mask {0:#x} has bits outside CAN_ERR_MASK (0x1fffffff)")]
    ErrorMask(u32),
}

/// One frame as `recvmsg` returned it, with what its control messages said.
#[derive(Debug, Clone)]
pub struct RxFrame {
    buf: [u8; CANFD_MTU],
    /// Bytes of the frame (may exceed the buffer when the kernel truncated it).
    len: usize,
    /// Kernel software receive timestamp, µs since the epoch.
    pub kernel_us: Option<u64>,
    /// The socket's cumulative drop counter when this frame was queued (`SO_RXQ_OVFL`).
    pub drops: Option<u32>,
}

impl RxFrame {
    /// Decodes the frame (a truncated read is reported with its real size).
    pub fn decode(&self) -> Result<CanFrame, DecodeError> {
        match self.buf.get(..self.len) {
            Some(b) => decode_frame(b),
            None => Err(DecodeError::Size(self.len)),
        }
    }
}

/// Frames read in one go, and the error that ended the read, if any.
#[derive(Debug, Default)]
pub struct Batch {
    pub frames: Vec<RxFrame>,
    /// The socket failed after `frames` were read.
    pub error: Option<SocketCanError>,
    /// Some frame's control messages did not fit (its timestamp or drop counter is missing).
    pub control_truncated: bool,
}

/// A bound, non-blocking CAN_RAW socket registered with tokio.
#[derive(Debug)]
pub struct RxSocket {
    fd: AsyncFd<CanFdSocket>,
    iface: String,
    cmsg: Vec<u8>,
}

impl RxSocket {
    /// Creates the socket, applies `opts` and binds it to the interface. An interface that exists
    /// but is down is an error ([`SocketCanError::Down`]) like a missing one.
    pub fn open(opts: &SocketCanOptions) -> Result<RxSocket, SocketCanError> {
        let iface = opts.interface.clone();
        let setup = |step: &'static str| {
            let iface = iface.clone();
            move |source: io::Error| SocketCanError::Setup {
                iface,
                step,
                source,
            }
        };
        let addr = CanAddr::from_iface(&iface).map_err(|source| SocketCanError::NoInterface {
            iface: iface.clone(),
            source,
        })?;
        let fd = socket(
            AddressFamily::Can,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::CanRaw,
        )
        .map_err(|e| setup("create a CAN_RAW socket")(e.into()))?;
        let sock = CanFdSocket::from(fd);
        if opts.fd {
            sock.set_socket_option_int(libc::SOL_CAN_RAW, libc::CAN_RAW_FD_FRAMES, 1)
                .map_err(setup("enable CAN FD frames"))?;
        }
        if !opts.filters.is_empty() {
            let kernel: Vec<(u32, u32)> = opts
                .filters
                .iter()
                .map(|f| f.to_kernel())
                .collect::<Result<_, _>>()
                .map_err(SocketCanError::Filter)?;
            sock.set_filters(&kernel).map_err(setup("set filters"))?;
        }
        sock.set_error_filter(opts.error_mask)
            .map_err(setup("set the error mask"))?;
        setsockopt(&sock, sockopt::RxqOvfl, &1)
            .map_err(|e| setup("enable SO_RXQ_OVFL")(e.into()))?;
        if opts.timestamps {
            let ts = TimestampingFlag::SOF_TIMESTAMPING_RX_SOFTWARE
                | TimestampingFlag::SOF_TIMESTAMPING_SOFTWARE;
            setsockopt(&sock, sockopt::Timestamping, &ts)
                .map_err(|e| setup("enable SO_TIMESTAMPING")(e.into()))?;
        }
        if let Some(n) = opts.rcvbuf {
            setsockopt(&sock, sockopt::RcvBuf, &n).map_err(|e| setup("set SO_RCVBUF")(e.into()))?;
        }
        sock.as_raw_socket()
            .bind(&addr.into_sock_addr())
            .map_err(|source| match source.raw_os_error() {
                Some(libc::ENODEV) => SocketCanError::NoInterface {
                    iface: iface.clone(),
                    source,
                },
                _ => setup("bind")(source),
            })?;
        // Binding to an interface that is down succeeds but leaves ENETDOWN pending.
        match getsockopt(&sock, sockopt::SocketError) {
            Ok(0) => {}
            Ok(libc::ENETDOWN) => return Err(SocketCanError::Down { iface }),
            Ok(e) => return Err(setup("bind")(io::Error::from_raw_os_error(e))),
            Err(e) => return Err(setup("read SO_ERROR")(e.into())),
        }
        let fd = registered::register(sock).map_err(setup("register with the runtime"))?;
        Ok(RxSocket {
            fd,
            iface,
            cmsg: nix::cmsg_space!(Timestamps, u32, [TimeSpec; 2]),
        })
    }

    /// The effective receive buffer size (what the kernel made of `SO_RCVBUF`).
    pub fn rcvbuf(&self) -> io::Result<usize> {
        Ok(getsockopt(self.fd.get_ref(), sockopt::RcvBuf)?)
    }

    /// Waits until frames are queued, then reads up to `max` of them without waiting again.
    /// Cancel-safe: no frame is lost when the future is dropped.
    pub async fn read_batch(&mut self, max: usize) -> Batch {
        let mut batch = Batch::default();
        loop {
            // An interface going down or away sets an error on the socket, which epoll reports as
            // EPOLLERR alone: wait for that as well as for frames.
            let mut guard = match self.fd.ready(Interest::READABLE | Interest::ERROR).await {
                Ok(g) => g,
                Err(source) => {
                    batch.error = Some(self.read_error(source));
                    return batch;
                }
            };
            while batch.frames.len() < max {
                let cmsg = &mut self.cmsg;
                match guard.try_io(|fd| recv_one(fd.get_ref(), cmsg)) {
                    Ok(Ok((frame, ctrunc))) => {
                        batch.control_truncated |= ctrunc;
                        batch.frames.push(frame);
                    }
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Ok(Err(source)) => {
                        batch.error = Some(self.read_error(source));
                        return batch;
                    }
                    Err(_would_block) => break,
                }
            }
            if !batch.frames.is_empty() {
                return batch;
            }
        }
    }

    fn read_error(&self, source: io::Error) -> SocketCanError {
        match source.raw_os_error() {
            Some(libc::ENETDOWN) => SocketCanError::Down {
                iface: self.iface.clone(),
            },
            Some(libc::ENODEV) => SocketCanError::NoInterface {
                iface: self.iface.clone(),
                source,
            },
            _ => SocketCanError::Read {
                iface: self.iface.clone(),
                source,
            },
        }
    }
}

/// One `recvmsg`: the frame and whether its control messages were truncated.
fn recv_one(sock: &CanFdSocket, cmsg: &mut [u8]) -> io::Result<(RxFrame, bool)> {
    let mut buf = [0u8; CANFD_MTU];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(cmsg), MsgFlags::MSG_TRUNC)?;
    let len = msg.bytes;
    let ctrunc = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    let mut kernel_us = None;
    let mut drops = None;
    for c in msg.cmsgs()? {
        match c {
            ControlMessageOwned::ScmTimestampsns(ts) => kernel_us = timespec_us(&ts.system),
            ControlMessageOwned::RxqOvfl(n) => drops = Some(n),
            _ => {}
        }
    }
    Ok((
        RxFrame {
            buf,
            len,
            kernel_us,
            drops,
        },
        ctrunc,
    ))
}

/// µs since the epoch; `None` for the zero the kernel reports when it has no timestamp.
fn timespec_us(ts: &TimeSpec) -> Option<u64> {
    let (s, ns) = (ts.tv_sec(), ts.tv_nsec());
    if (s, ns) == (0, 0) || s < 0 || ns < 0 {
        return None;
    }
    Some((s as u64).saturating_mul(1_000_000) + ns as u64 / 1000)
}
