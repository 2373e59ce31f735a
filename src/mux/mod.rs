//! The multiplexer: many ports over one ordered byte stream, as a state
//! machine without I/O and without a clock.
//!
//! # Driving a mux
//!
//! A [`Mux`] never reads a socket, never sleeps and never looks at a clock;
//! a driver (`conn::driver`, or the `Pair` of the tests) moves bytes and
//! time in and out of it. As in quinn-proto's `Connection`, its methods are
//! of four kinds:
//!
//! - A. Getters, taking `&self`: `side`, `stats`, `error`, `is_closed`,
//!   `is_send_closed`, `send_ready`, `received_seq`,
//!   `max_unacked`. Call them whenever.
//! - B. Inputs, named `handle_*`: [`Mux::handle_input`] with the bytes read
//!   from the transport (it applies every complete frame and leaves a
//!   partial one in the buffer, to be completed by the next read), and
//!   [`Mux::handle_timeout`] once the instant of [`Mux::poll_timeout`] has
//!   come (earlier is harmless). It reports a peer silent for the idle
//!   timeout ([`Liveness::Silent`]) without ending the mux: the driver
//!   decides whether the session ends (`time_out`) or waits to resume.
//! - C. Commands, from the handles: `open_port`, `send` (with the
//!   [`SendLimit`] the caller picks), `discard_unsent`, `pop_chunk`, `pop_chunk_if`, `close_end`,
//!   `discard_ports`, `close`; and from the session: `resume` when a new
//!   transport takes over, `time_out` when a silent peer ends the session.
//!   They take no `now`.
//! - D. Outputs, named `poll_*`: [`Mux::poll_transmit`] (frames for the
//!   transport), [`Mux::poll_timeout`] (when to call `handle_timeout`),
//!   [`Mux::poll_event`] (which handles to wake), and for the handles
//!   [`Mux::poll_wake`] (whether to wake the driver).
//!
//! After any B or C call, as soon as feasible, call the outputs in this
//! order, and act on each:
//!
//! 1. `poll_transmit`, into an empty [`Transmit`]; write its segments,
//!    [`Transmit::advance`] by what was written, and once it is empty call
//!    `poll_transmit` again, until it adds nothing. Control frames always
//!    go in full; data stops at about `budget` bytes.
//! 2. `poll_timeout`. It moves after inputs, after commands that queue a
//!    terminal frame, and after transmits: a transmit that sends an
//!    acknowledgement clears a deadline, and one that sends the last chunk
//!    of a closed port queues its `Fin`, which waits up to `ACK_DELAY`.
//! 3. `poll_event` until `None`. Inputs queue events (data, `Fin`, `Stop`),
//!    so do transmits (send buffer space freed) and discarding a message
//!    (the ports it carried end).
//!
//! A command that produces output does not say so itself; after commands,
//! a handle calls [`Mux::poll_wake`] and wakes the driver if it says so: a
//! send made its port ready, a read queued a credit grant, closing a port
//! queued a terminal frame with a new deadline, `close` asked for a
//! `GoAway`.
//!
//! **Time.** `now` is the driver's clock: `Instant::now()` in the driver, a
//! virtual clock in the tests. It must never go backwards from one input (or
//! `resume`) to the next. Deadlines are instants computed from it; a
//! command that sets one (closing a port queues a terminal frame that waits
//! at most `ACK_DELAY`) uses the latest `now` passed in.
//!
//! **Errors.** A fatal error ends the mux for good (see `error.rs`): the
//! inputs return it, [`Mux::error`] reports it, `poll_transmit` produces
//! nothing more and sends fail with `Closed`. `poll_transmit` itself returns
//! nothing: a driver checks `error()` after it (a peer that never
//! acknowledges fails the mux there). A refused command (`send`,
//! `open_port`, `resume`) is not an error of the mux: it returns why, and
//! the mux goes on as before (a send refused as `Full` only remembers to
//! wake its handle with `Writable`).
//!
//! # Layout
//!
//! One file per concept, each opening with the protocol facts it relies on:
//!
//! | file             | holds                                                         |
//! |------------------|---------------------------------------------------------------|
//! | `mod.rs`         | [`Mux`], its constructor, the input dispatch, events           |
//! | `ports.rs`       | ids, allocation, parity, the port table, a port's life        |
//! | `send.rs`        | send queues and buffers, the chunk scheduler (round robin)    |
//! | `recv.rs`        | `Data` and `Fin` in, reassembly, popping chunks               |
//! | `credit.rs`      | windows and grants                                            |
//! | `reliability.rs` | sequence numbers, acks, the replay buffer, resume             |
//! | `timers.rs`      | ping, idle timeout, ack delay                                 |
//! | `transmit.rs`    | the [`Transmit`] buffer and [`Mux::poll_transmit`]            |
//! | `error.rs`       | [`MuxError`], [`SendError`], how a fatal error is recorded    |
//! | `tests/`         | the `Pair` harness with a virtual clock; one file per area    |

mod credit;
mod error;
mod ports;
mod recv;
mod reliability;
mod send;
#[cfg(test)]
mod tests;
mod timers;
mod transmit;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Buf;

use crate::wire::{End, Frame, FrameDecoder, HelloLimits, PortId};

pub use error::MuxError;
pub(crate) use error::SendError;
use ports::{Port, PortMap, FIRST_ALLOCATED};
pub(crate) use ports::{Side, ROOT_CLIENT_TO_SERVER, ROOT_SERVER_TO_CLIENT};
use recv::Payload;
pub(crate) use recv::{join, Chunk, Pop};
pub(crate) use send::{OutMessage, SendLimit};
pub(crate) use timers::Liveness;
use transmit::Ctl;
pub(crate) use transmit::Transmit;

// Protocol constants that tests and the fuzzing entry points name by their
// `crate::mux::` path; the mux itself uses them where they are defined.
#[cfg(any(test, fuzzing, feature = "fuzzing"))]
pub(crate) use credit::CHUNK_OVERHEAD;
#[cfg(test)]
use {
    reliability::{ACK_BYTES, ACK_EVERY},
    send::MSG_OVERHEAD,
    timers::ACK_DELAY,
};

/// Something a handle may be waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// The port has chunks to pop, or its sender finished.
    Readable(PortId),
    /// The port's send buffer has room again, or the port closed.
    Writable(PortId),
}

/// Counters for tests and monitoring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MuxStats {
    /// Ports known to this side, including the two root ports.
    pub open_ports: usize,
    /// Message bytes queued here and not yet sent, plus
    /// [`MSG_OVERHEAD`](send::MSG_OVERHEAD) per message.
    pub send_queued: usize,
    /// Credit held by received chunks not yet read by the application: their
    /// payload bytes plus [`CHUNK_OVERHEAD`](credit::CHUNK_OVERHEAD) per
    /// chunk. At most the windows.
    /// (The payload of a message of several chunks sits in its port's
    /// reassembly segments, not in the chunks.)
    pub recv_buffered: usize,
    /// Sent bytes kept for replay until the peer acknowledges them.
    pub replay_bytes: usize,
    /// Reliable frames sent on this session.
    pub sent_seq: u64,
    /// Reliable frames received on this session.
    pub received_seq: u64,
    /// Messages and bytes in and out, sends refused.
    pub totals: Totals,
    /// Round-trip time from pings, smoothed; `None` before the first pong.
    pub rtt: Option<Duration>,
}

/// Messages queued to the peer and received from it, since the session
/// began: each once, however often a resume replays its frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub messages_out: u64,
    /// Their encoded bytes (with their channel-end tables).
    pub bytes_out: u64,
    pub messages_in: u64,
    pub bytes_in: u64,
    /// Sends refused with `Full` because the send buffers were (each
    /// message once: see `OutMessage::counted_full`).
    pub full: u64,
    /// Messages no one will read because their reader closed its end (an
    /// actor stopped, a channel dropped) first; each counted once, on the
    /// side holding its last chunk then: received here (by the mux, or by
    /// the channel for those read ahead), or queued here and never sent.
    pub unread: u64,
}

/// Connection-level settings of one mux, ours and the peer's.
#[derive(Clone, Debug)]
pub(crate) struct MuxConfig {
    /// Our receive limits (what we announced).
    pub local: HelloLimits,
    /// The peer's receive limits (what it announced).
    pub peer: HelloLimits,
    /// Largest chunk we cut.
    pub chunk_size: u32,
    /// Bytes queued per port before `send` reports `Full`.
    pub send_buffer: u32,
    /// Bytes queued on all ports before `send` reports `Full` for a port
    /// that already has something queued.
    pub conn_send_buffer: u32,
    /// Time between pings.
    pub ping_interval: Duration,
    /// Silence after which the peer is declared dead.
    pub idle_timeout: Duration,
    /// The compression algorithms we accept (what we announced: the
    /// `Hello`'s compression byte); a message packed otherwise is refused.
    pub accepts: u8,
}

/// The multiplexer of one connection.
#[derive(Debug)]
pub(crate) struct Mux {
    side: Side,
    cfg: MuxConfig,
    decoder: FrameDecoder,

    // Ports (ports.rs).
    ports: PortMap,
    next_local: u32,
    free_local: Vec<u32>,
    /// Live ports allocated by us / by the peer.
    local_count: u32,
    peer_count: u32,

    // Sending (send.rs, transmit.rs).
    /// Sender ports that can cut a chunk now, in round-robin order.
    ready: VecDeque<PortId>,
    /// Control frames to go ahead of data.
    control: VecDeque<Ctl>,
    /// Output (or an earlier deadline) was queued since the last
    /// `poll_transmit` or `poll_wake`: see [`Mux::poll_wake`].
    wants_transmit: bool,
    /// Message bytes queued on all ports (see [`MuxStats::send_queued`]).
    send_queued: usize,
    /// Ports refused for a full connection send queue, to wake when it
    /// drains.
    conn_blocked: Vec<PortId>,

    // Credit (credit.rs).
    /// Connection credit the peer granted and we have not used.
    conn_credit: u64,
    /// Connection credit the peer still holds.
    conn_window_left: u64,
    /// Connection credit consumed here and not yet granted back.
    conn_unreported: u64,
    /// A connection `Credit` is in the control queue.
    conn_credit_queued: bool,
    /// See [`MuxStats::recv_buffered`].
    recv_buffered: usize,

    // Session sequence (reliability.rs).
    sent_seq: u64,
    received_seq: u64,
    /// The count our last `Ack` reported.
    acked_sent: u64,
    /// Payload bytes received since the last acknowledgement we sent.
    unacked_bytes: usize,
    /// Reliable frames the peer will send again that we already have (see
    /// `resume`): dropped on arrival.
    duplicates: u64,
    /// Reliable frames sent and not yet acknowledged; the first has sequence
    /// number `replay_base`.
    replay: VecDeque<Frame>,
    replay_base: u64,
    replay_bytes: usize,
    /// After a resume: where in `replay` to start sending again.
    replay_cursor: Option<usize>,

    // Liveness (timers.rs).
    last_heard: Instant,
    next_ping: Instant,
    ping_nonce: u64,
    pongs: Vec<u64>,
    ping_due: bool,
    /// Our last ping not yet answered: its nonce and when it went out.
    ping_sent: Option<(u64, Instant)>,
    /// Round-trip time from pings, smoothed as TCP smooths it (7/8 of the
    /// last estimate and 1/8 of the new sample).
    srtt: Option<Duration>,

    /// Messages and their bytes, for the stats.
    totals: Totals,
    /// When received frames must be acknowledged even with nothing else to
    /// send, and whether that time has come.
    ack_due: Option<Instant>,
    ack_now: bool,
    /// Terminal frames waiting to ride along (see `queue_lazy`).
    lazy: Vec<Ctl>,
    /// The latest time passed in, for deadlines set by commands.
    last_now: Instant,

    events: VecDeque<Event>,
    /// A graceful close was asked for: its code and reason.
    closing: Option<(u32, String)>,
    goaway_sent: bool,
    /// The fatal error, written only by `Mux::fail` (see error.rs).
    error: Option<MuxError>,
}

impl Mux {
    /// A mux for a fresh session. The two root ports exist from the start.
    pub(crate) fn new(side: Side, cfg: MuxConfig, now: Instant) -> Mux {
        let mut mux = Mux {
            side,
            decoder: FrameDecoder::new(cfg.local.max_frame),
            ports: PortMap::default(),
            next_local: FIRST_ALLOCATED + side.parity(),
            free_local: Vec::new(),
            local_count: 0,
            peer_count: 0,
            ready: VecDeque::new(),
            control: VecDeque::new(),
            wants_transmit: false,
            conn_credit: cfg.peer.conn_window as u64,
            send_queued: 0,
            conn_blocked: Vec::new(),
            conn_window_left: cfg.local.conn_window as u64,
            conn_unreported: 0,
            conn_credit_queued: false,
            recv_buffered: 0,
            sent_seq: 0,
            received_seq: 0,
            acked_sent: 0,
            unacked_bytes: 0,
            duplicates: 0,
            replay: VecDeque::new(),
            replay_base: 0,
            replay_bytes: 0,
            replay_cursor: None,
            last_heard: now,
            next_ping: now + cfg.ping_interval,
            ping_nonce: 0,
            pongs: Vec::new(),
            ping_due: false,
            ping_sent: None,
            srtt: None,
            totals: Totals::default(),
            ack_due: None,
            ack_now: false,
            lazy: Vec::new(),
            last_now: now,
            events: VecDeque::new(),
            closing: None,
            goaway_sent: false,
            error: None,
            cfg,
        };
        let (send_root, recv_root) = Mux::roots(side);
        let (pw_peer, pw_local) = (mux.cfg.peer.port_window, mux.cfg.local.port_window);
        mux.ports.insert(send_root, Port::new(End::Sender, true, pw_peer));
        mux.ports.insert(recv_root, Port::new(End::Receiver, true, pw_local));
        mux
    }

    /// This side.
    pub(crate) fn side(&self) -> Side {
        self.side
    }

    /// `n` messages taken off the mux ahead of their reads will never be
    /// read (their reader closed).
    pub(crate) fn count_unread(&mut self, n: u64) {
        self.totals.unread += n;
    }

    /// Counters.
    pub(crate) fn stats(&self) -> MuxStats {
        MuxStats {
            open_ports: self.ports.len(),
            send_queued: self.send_queued,
            recv_buffered: self.recv_buffered,
            replay_bytes: self.replay_bytes,
            sent_seq: self.sent_seq,
            received_seq: self.received_seq,
            totals: self.totals,
            rtt: self.srtt,
        }
    }

    /// Begins a graceful close: a `GoAway` goes out, then the mux ends.
    pub(crate) fn close(&mut self, code: u32, reason: &str) {
        if self.closing.is_none() && self.error.is_none() {
            self.closing = Some((code, reason.to_owned()));
            self.wants_transmit = true;
        }
    }

    /// Whether the `GoAway` of [`Mux::close`] has been handed to the transport.
    pub(crate) fn is_closed(&self) -> bool {
        self.goaway_sent || self.error.is_some()
    }

    /// Decodes and applies every complete frame in `buf`.
    pub(crate) fn handle_input(&mut self, buf: &mut bytes::BytesMut, now: Instant) -> Result<(), MuxError> {
        self.check_alive()?;
        self.last_now = self.last_now.max(now);
        let mut any = false;
        let res = loop {
            match self.decoder.peek(buf) {
                Ok(Some(head)) => {
                    any = true;
                    let res = if head.is_data() && head.total() < recv::ZERO_COPY_MIN {
                        // A small payload is read in place: whatever of it
                        // is kept is copied (see `RecvHalf::keep`).
                        let res = self.handle_data(head.port, head.flags, Payload::InPlace(head.payload(buf)));
                        buf.advance(head.total());
                        res
                    } else {
                        self.handle_frame(head.take(buf))
                    };
                    if let Err(e) = res {
                        break Err(e);
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e.into()),
            }
        };
        self.arm_ack_delay(now);
        if any {
            self.last_heard = now;
        }
        res.map_err(|e| self.fail(e))
    }

    /// Applies a `Data` frame.
    fn handle_data(&mut self, port: PortId, flags: u8, payload: Payload<'_>) -> Result<(), MuxError> {
        if !self.count_received_reliable() {
            return Ok(());
        }
        self.on_data(port, flags, payload)
    }

    /// Applies one frame; each kind is handled in the file of its concept.
    fn handle_frame(&mut self, frame: Frame) -> Result<(), MuxError> {
        if let Frame::Data { port, flags, payload } = frame {
            return self.handle_data(port, flags, Payload::Shared(payload));
        }
        if frame.is_reliable() && !self.count_received_reliable() {
            return Ok(());
        }
        match frame {
            Frame::Data { .. } => unreachable!("handled above"),
            Frame::Credit { port: 0, bytes } => self.on_conn_credit(bytes),
            Frame::Credit { port, bytes } => self.on_credit(port, bytes),
            Frame::Fin { port } => self.on_fin(port),
            Frame::Stop { port } => self.on_stop(port),
            Frame::Ack { received } => self.on_ack(received),
            Frame::Ping { nonce } => {
                self.on_ping(nonce);
                Ok(())
            }
            Frame::Pong { nonce } => {
                self.on_pong(nonce);
                Ok(())
            }
            Frame::GoAway { code, reason } => Err(MuxError::PeerClosed { code, reason }),
        }
    }

    /// Queues `ev` for its port's handle, unless one is already queued.
    fn notify(&mut self, ev: Event) {
        let id = match ev {
            Event::Readable(id) | Event::Writable(id) => id,
        };
        if let Some(p) = self.ports.get_mut(&id) {
            if !p.event_pending {
                p.event_pending = true;
                self.events.push_back(ev);
            }
        }
    }

    /// The next event for a handle.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        let ev = self.events.pop_front()?;
        let (Event::Readable(id) | Event::Writable(id)) = ev;
        if let Some(p) = self.ports.get_mut(&id) {
            p.event_pending = false;
        }
        Some(ev)
    }
}
