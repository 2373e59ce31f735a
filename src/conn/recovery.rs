//! Recovery of a session whose transport broke, as a state machine without
//! I/O and without a clock: the supervisor actor feeds it what happened
//! (`link_failed`, `dial_failed`, `dial_lost`, `resumed`, `handle_timeout`)
//! with the time, and carries out what it asks for ([`Recovery::poll_action`])
//! and wakes it at [`Recovery::poll_timeout`].
//!
//! A dialing side redials with exponential backoff and full jitter until an
//! attempt resumes the session or the policy gives up; an accepting side
//! keeps the session for the linger time, waiting for the dialer. A session
//! without recovery ends with its transport. Which errors a new transport
//! can cure is [`ConnectionError::is_transport_failure`]: a peer that broke
//! the protocol or said goodbye is not dialed again.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::error::{ConnectionError, SessionLost};
use crate::config::ReconnectPolicy;

/// What happens to a connection over its life. Every event is also logged.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// The transport broke; the session waits to be resumed.
    Disconnected(ConnectionError),
    /// The dialing side tries again after `delay`.
    Reconnecting {
        /// 1 for the first attempt.
        attempt: u32,
        /// The wait before this attempt.
        delay: Duration,
    },
    /// A new transport took over the session: nothing was lost.
    Resumed,
    /// The session cannot be resumed; the connection has ended.
    SessionLost(SessionLost),
}

/// How a broken transport is recovered.
#[derive(Clone, Debug)]
pub(crate) enum Policy {
    /// Not at all: the connection ends with its transport.
    None,
    /// Dial again with backoff and resume.
    Dial(ReconnectPolicy),
    /// Wait this long for the dialer to come back.
    Linger(Duration),
}

/// Where recovery stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Transport `generation` carries the session.
    Up { generation: u64 },
    /// Dialer: attempt `attempt` is due at `at`; the outage began at `started`.
    Backoff { attempt: u32, at: Instant, started: Instant },
    /// Dialer: attempt `attempt` is under way.
    Dialing { attempt: u32, started: Instant },
    /// Acceptor: the dialer may come back until `until`.
    Lingering { until: Instant },
    /// The session is over; nothing more happens.
    Ended,
}

/// What the owner of a [`Recovery`] must do.
#[derive(Debug)]
pub(crate) enum Action {
    /// Tell the connection's subscribers.
    Emit(ConnectionEvent),
    /// Dial and try to resume the session; report the outcome with
    /// `resumed`, `dial_failed` or `dial_lost`.
    Dial { attempt: u32 },
    /// End the connection with this error.
    End(ConnectionError),
}

/// The recovery decisions of one connection.
pub(crate) struct Recovery {
    policy: Policy,
    phase: Phase,
    /// A number in [0, 1) for each backoff's jitter.
    jitter: Box<dyn FnMut() -> f64 + Send>,
    /// At most three: an event, a dial or an end, and the event before it.
    actions: VecDeque<Action>,
}

impl std::fmt::Debug for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovery").field("policy", &self.policy).field("phase", &self.phase).finish()
    }
}

impl Recovery {
    /// Recovery for a session carried by transport `generation`, with
    /// random jitter.
    pub(crate) fn new(policy: Policy, generation: u64) -> Recovery {
        Recovery::with_jitter(policy, generation, Box::new(unit_random))
    }

    /// [`Recovery::new`] with the jitter given (tests pass a fixed one).
    pub(crate) fn with_jitter(policy: Policy, generation: u64, jitter: Box<dyn FnMut() -> f64 + Send>) -> Recovery {
        Recovery { policy, phase: Phase::Up { generation }, jitter, actions: VecDeque::new() }
    }

    /// Whether the session is over.
    #[cfg(test)]
    pub(crate) fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// The transport `generation` stopped with `error` at `now`.
    pub(crate) fn link_failed(&mut self, generation: u64, error: ConnectionError, now: Instant) {
        if self.phase != (Phase::Up { generation }) {
            // An older transport, or one already given up on.
            return;
        }
        if !error.is_transport_failure() {
            return self.end(error);
        }
        match self.policy.clone() {
            Policy::None => self.end(error),
            Policy::Dial(_) => {
                self.actions.push_back(Action::Emit(ConnectionEvent::Disconnected(error)));
                self.schedule(1, now, now);
            }
            Policy::Linger(linger) => {
                self.actions.push_back(Action::Emit(ConnectionEvent::Disconnected(error)));
                self.phase = Phase::Lingering { until: now + linger };
            }
        }
    }

    /// Time passed: starts a due attempt, or ends a linger that ran out.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Backoff { attempt, at, started } if at <= now => {
                self.phase = Phase::Dialing { attempt, started };
                self.actions.push_back(Action::Dial { attempt });
            }
            Phase::Lingering { until } if until <= now => self.end(ConnectionError::SessionLost(SessionLost::Expired)),
            _ => {}
        }
    }

    /// The attempt under way failed in a way another may cure (no answer,
    /// refused, a handshake that broke off).
    pub(crate) fn dial_failed(&mut self, now: Instant) {
        if let Phase::Dialing { attempt, started } = self.phase {
            self.schedule(attempt.saturating_add(1), started, now);
        }
    }

    /// The attempt under way reached the peer, which cannot resume: it
    /// restarted, or no longer has the session.
    pub(crate) fn dial_lost(&mut self, why: SessionLost) {
        if matches!(self.phase, Phase::Dialing { .. }) {
            self.end(ConnectionError::SessionLost(why));
        }
    }

    /// Transport `generation` took the session over (our dial, or the
    /// dialer came back to us).
    pub(crate) fn resumed(&mut self, generation: u64) {
        if self.phase == Phase::Ended {
            return;
        }
        self.phase = Phase::Up { generation };
        self.actions.push_back(Action::Emit(ConnectionEvent::Resumed));
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Backoff { at, .. } => Some(at),
            Phase::Lingering { until } => Some(until),
            _ => None,
        }
    }

    /// The next thing to do.
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Attempt `attempt` of an outage that began at `started`, or giving up.
    fn schedule(&mut self, attempt: u32, started: Instant, now: Instant) {
        let Policy::Dial(policy) = &self.policy else { return };
        if attempt > policy.max_attempts || now.saturating_duration_since(started) >= policy.give_up_after {
            let attempts = attempt - 1;
            return self.end(ConnectionError::SessionLost(SessionLost::GaveUp { attempts }));
        }
        let delay = policy.delay(attempt, (self.jitter)());
        self.actions.push_back(Action::Emit(ConnectionEvent::Reconnecting { attempt, delay }));
        self.phase = Phase::Backoff { attempt, at: now + delay, started };
    }

    fn end(&mut self, error: ConnectionError) {
        self.phase = Phase::Ended;
        self.actions.push_back(Action::End(error));
    }
}

/// A random number in [0, 1), for jitter.
fn unit_random() -> f64 {
    (uuid::Uuid::new_v4().as_u64_pair().0 >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mux::MuxError;

    const SEC: Duration = Duration::from_secs(1);

    fn dialer(max_attempts: u32, give_up_after: Duration) -> Recovery {
        let policy =
            ReconnectPolicy { enabled: true, base: Duration::from_millis(100), cap: SEC, give_up_after, max_attempts };
        // Full jitter at its top: each delay is the whole backoff step.
        Recovery::with_jitter(Policy::Dial(policy), 1, Box::new(|| 1.0))
    }

    fn eof() -> ConnectionError {
        ConnectionError::Eof
    }

    fn actions(r: &mut Recovery) -> Vec<Action> {
        std::iter::from_fn(|| r.poll_action()).collect()
    }

    /// Runs `r` to its next dial, checking the backoff it announced.
    fn next_dial(r: &mut Recovery, now: &mut Instant, attempt: u32, delay_ms: u64) {
        match actions(r).as_slice() {
            [.., Action::Emit(ConnectionEvent::Reconnecting { attempt: a, delay })] => {
                assert_eq!(*a, attempt);
                assert_eq!(delay.as_millis().abs_diff(delay_ms as u128), 0, "delay {delay:?}");
            }
            other => panic!("expected Reconnecting {attempt}, got {other:?}"),
        }
        let due = r.poll_timeout().expect("a dial is scheduled");
        assert_eq!(due.duration_since(*now).as_millis().abs_diff(delay_ms as u128), 0);
        r.handle_timeout(due - Duration::from_millis(1));
        assert!(r.poll_action().is_none(), "nothing happens before the backoff ran out");
        *now = due;
        r.handle_timeout(*now);
        assert!(matches!(r.poll_action(), Some(Action::Dial { attempt: a }) if a == attempt));
    }

    #[test]
    fn a_dialer_backs_off_exponentially_and_resumes() {
        let mut now = Instant::now();
        let mut r = dialer(u32::MAX, Duration::from_secs(60));
        r.link_failed(1, eof(), now);
        assert!(matches!(r.poll_action(), Some(Action::Emit(ConnectionEvent::Disconnected(ConnectionError::Eof)))));
        next_dial(&mut r, &mut now, 1, 100);
        r.dial_failed(now);
        next_dial(&mut r, &mut now, 2, 200);
        r.dial_failed(now);
        next_dial(&mut r, &mut now, 3, 400);
        r.dial_failed(now);
        next_dial(&mut r, &mut now, 4, 800);
        r.dial_failed(now);
        next_dial(&mut r, &mut now, 5, 1000); // capped
        r.resumed(2);
        assert!(matches!(actions(&mut r).as_slice(), [Action::Emit(ConnectionEvent::Resumed)]));
        assert_eq!(r.poll_timeout(), None);
        // The old transport's late report changes nothing; the new one's does.
        r.link_failed(1, eof(), now);
        assert!(r.poll_action().is_none());
        r.link_failed(2, eof(), now);
        assert!(matches!(r.poll_action(), Some(Action::Emit(ConnectionEvent::Disconnected(_)))));
        next_dial(&mut r, &mut now, 1, 100);
    }

    #[test]
    fn a_dialer_gives_up_after_max_attempts() {
        let mut now = Instant::now();
        let mut r = dialer(3, Duration::from_secs(60));
        r.link_failed(1, eof(), now);
        for attempt in 1..=3 {
            next_dial(&mut r, &mut now, attempt, 100 << (attempt - 1));
            r.dial_failed(now);
        }
        match actions(&mut r).as_slice() {
            [Action::End(ConnectionError::SessionLost(SessionLost::GaveUp { attempts: 3 }))] => {}
            other => panic!("{other:?}"),
        }
        assert!(r.is_ended());
        // A late reconnect after giving up changes nothing.
        r.resumed(2);
        r.dial_failed(now);
        assert!(r.poll_action().is_none());
        assert!(r.is_ended());
    }

    #[test]
    fn a_dialer_gives_up_after_its_time() {
        let mut now = Instant::now();
        let mut r = dialer(u32::MAX, Duration::from_millis(250));
        r.link_failed(1, eof(), now);
        next_dial(&mut r, &mut now, 1, 100);
        // The attempt itself hangs for a while before it fails.
        now += Duration::from_millis(200);
        r.dial_failed(now);
        match actions(&mut r).as_slice() {
            [Action::End(ConnectionError::SessionLost(SessionLost::GaveUp { attempts: 1 }))] => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_restarted_peer_ends_the_session_at_once() {
        let mut now = Instant::now();
        let mut r = dialer(u32::MAX, Duration::from_secs(60));
        r.link_failed(1, eof(), now);
        next_dial(&mut r, &mut now, 1, 100);
        r.dial_lost(SessionLost::PeerRestarted);
        assert!(matches!(
            actions(&mut r).as_slice(),
            [Action::End(ConnectionError::SessionLost(SessionLost::PeerRestarted))]
        ));
        assert_eq!(r.poll_timeout(), None, "no further attempt");
    }

    #[test]
    fn errors_a_new_transport_cannot_cure_end_at_once() {
        let now = Instant::now();
        for error in [
            ConnectionError::Protocol(MuxError::UnknownPort(9)),
            ConnectionError::PeerClosed { code: 7, reason: "bye".into() },
            ConnectionError::Closed,
        ] {
            let mut r = dialer(u32::MAX, Duration::from_secs(60));
            r.link_failed(1, error.clone(), now);
            match actions(&mut r).as_slice() {
                [Action::End(e)] => assert_eq!(e.to_string(), error.to_string()),
                other => panic!("{error}: {other:?}"),
            }
        }
        // A silent peer is a transport failure: worth a redial.
        let mut r = dialer(u32::MAX, Duration::from_secs(60));
        r.link_failed(1, ConnectionError::Protocol(MuxError::Timeout(SEC)), now);
        assert!(matches!(r.poll_action(), Some(Action::Emit(ConnectionEvent::Disconnected(_)))));
    }

    #[test]
    fn an_acceptor_lingers_then_expires() {
        let now = Instant::now();
        let mut r = Recovery::new(Policy::Linger(Duration::from_secs(5)), 1);
        r.link_failed(1, eof(), now);
        assert!(matches!(actions(&mut r).as_slice(), [Action::Emit(ConnectionEvent::Disconnected(_))]));
        assert_eq!(r.poll_timeout(), Some(now + Duration::from_secs(5)));
        r.handle_timeout(now + Duration::from_millis(4999));
        assert!(r.poll_action().is_none());
        r.handle_timeout(now + Duration::from_secs(5));
        assert!(matches!(
            actions(&mut r).as_slice(),
            [Action::End(ConnectionError::SessionLost(SessionLost::Expired))]
        ));
    }

    #[test]
    fn an_acceptor_resumed_in_time_stops_lingering() {
        let now = Instant::now();
        let mut r = Recovery::new(Policy::Linger(Duration::from_secs(5)), 1);
        r.link_failed(1, eof(), now);
        let _ = actions(&mut r);
        r.resumed(2);
        assert!(matches!(actions(&mut r).as_slice(), [Action::Emit(ConnectionEvent::Resumed)]));
        r.handle_timeout(now + Duration::from_secs(60));
        assert!(r.poll_action().is_none(), "the linger no longer runs");
    }

    #[test]
    fn without_recovery_the_session_ends_with_its_transport() {
        let mut r = Recovery::new(Policy::None, 1);
        r.link_failed(1, eof(), Instant::now());
        assert!(matches!(actions(&mut r).as_slice(), [Action::End(ConnectionError::Eof)]));
    }
}
