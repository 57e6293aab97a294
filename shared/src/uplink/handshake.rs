//! The link handshake as two state machines with no IO and no clock: the hub's [`Dialer`]
//! and the cloud's [`Acceptor`]. The async shells (the hub's uplink, the cloud's relay
//! endpoint) only move their frames over the QUIC control stream and tell them the time;
//! every rule of the handshake is here, and is tested with both sides connected in memory
//! on simulated time (the tests below).
//!
//! The exchange: the hub sends `Hello` (link version, relay id, database epoch, rooms,
//! dictionaries); the cloud checks the version and that the relay id is the one its
//! client certificate was issued to, and answers `Welcome` (its id, its epoch, how far the
//! hub's log is durable at the cloud) or `Refused` with a stable code. Either side gives up
//! at its deadline. Time is a [`Duration`] since an origin the caller picks, the way the
//! rest of this crate takes `now`.

use std::time::Duration;

use crate::ids::{Cursor, RelayId, RoomId};
use crate::uplink::control::{Control, LINK_VERSION, MIN_LINK_VERSION};

/// Why a handshake did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The other side refused, with a stable code (`unsupported_version`,
    /// `identity_mismatch`) and a sentence.
    #[error("refused ({code}): {message}")]
    Refused { code: String, message: String },
    /// A frame the handshake does not allow here.
    #[error("{0}")]
    Protocol(String),
    /// Nothing decisive arrived before the deadline.
    #[error("{0}")]
    TimedOut(&'static str),
}

/// What the hub announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloParams {
    pub relay: String,
    pub epoch: String,
    pub rooms: Vec<RoomId>,
    pub dicts: Vec<u32>,
}

/// The cloud's answer, as the hub goes on with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcomed {
    pub cloud: String,
    /// The cloud's database: a new one means it lost what the hub sent.
    pub epoch: String,
    /// The hub's log is durable at the cloud up to here.
    pub hwm: Cursor,
    /// The link version both ends speak (1 with a cloud that answered plain `Welcome`).
    pub v: u16,
}

/// The hub's side.
#[derive(Debug)]
pub struct Dialer {
    hello: Option<Control>,
    deadline: Duration,
    done: bool,
}

impl Dialer {
    /// A handshake that started at `now` and gives up `timeout` later.
    pub fn new(params: HelloParams, now: Duration, timeout: Duration) -> Self {
        let HelloParams { relay, epoch, rooms, dicts } = params;
        Self {
            hello: Some(Control::Hello { v: LINK_VERSION, relay, epoch, rooms, dicts }),
            deadline: now + timeout,
            done: false,
        }
    }

    /// The frame to send now, if any (the `Hello`, once).
    pub fn poll_transmit(&mut self) -> Option<Control> {
        self.hello.take()
    }

    /// When [`Dialer::handle_timeout`] must be called if nothing arrives before.
    pub fn poll_timeout(&self) -> Option<Duration> {
        (!self.done).then_some(self.deadline)
    }

    /// The cloud's answer (`None`: the stream ended first). Ends the handshake.
    pub fn handle_control(&mut self, frame: Option<Control>) -> Result<Welcomed, HandshakeError> {
        self.done = true;
        match frame {
            Some(Control::Welcome { cloud, epoch, hwm }) => Ok(Welcomed { cloud, epoch, hwm, v: 1 }),
            Some(Control::WelcomeV2 { cloud, epoch, hwm, v }) => {
                Ok(Welcomed { cloud, epoch, hwm, v: v.clamp(MIN_LINK_VERSION, LINK_VERSION) })
            }
            Some(Control::Refused { code, message }) => Err(HandshakeError::Refused { code, message }),
            other => Err(HandshakeError::Protocol(format!("expected Welcome, got {other:?}"))),
        }
    }

    /// The time is `now`: past the deadline the handshake has failed.
    pub fn handle_timeout(&mut self, now: Duration) -> Option<HandshakeError> {
        if self.done || now < self.deadline {
            return None;
        }
        self.done = true;
        Some(HandshakeError::TimedOut("connect timed out"))
    }
}

/// A hub the cloud accepted: who it is and what it announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub relay: String,
    pub epoch: String,
    pub rooms: Vec<RoomId>,
    /// The link version both ends will speak: the lower of the hub's and ours.
    pub v: u16,
}

/// The cloud's decision on a `Hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on: answer [`Acceptor::welcome`].
    Accept(Accepted),
    /// Send this `Refused` frame, then close.
    Refuse(Control),
}

/// The cloud's side.
#[derive(Debug)]
pub struct Acceptor {
    deadline: Duration,
    done: bool,
}

impl Acceptor {
    /// A connection that arrived at `now`; the hub has `timeout` to say `Hello`.
    pub fn new(now: Duration, timeout: Duration) -> Self {
        Self { deadline: now + timeout, done: false }
    }

    /// When [`Acceptor::handle_timeout`] must be called if nothing arrives before.
    pub fn poll_timeout(&self) -> Option<Duration> {
        (!self.done).then_some(self.deadline)
    }

    /// The hub's first frame (`None`: the stream ended first). `certified(relay)` tells
    /// whether the connection's client certificate was issued to that relay id.
    pub fn handle_control(
        &mut self,
        frame: Option<Control>,
        certified: impl FnOnce(&str) -> bool,
    ) -> Result<Decision, HandshakeError> {
        self.done = true;
        let Some(Control::Hello { v, relay, epoch, rooms, dicts: _ }) = frame else {
            return Err(HandshakeError::Protocol("the first frame must be Hello".into()));
        };
        let refuse =
            |code: &str, message: String| Ok(Decision::Refuse(Control::Refused { code: code.into(), message }));
        if v < MIN_LINK_VERSION {
            return refuse(
                "unsupported_version",
                format!("link version {v} is not supported; this cloud speaks {MIN_LINK_VERSION} to {LINK_VERSION}"),
            );
        }
        // A newer hub speaks our version: it keeps every older frame's encoding.
        let v = v.min(LINK_VERSION);
        if RelayId::new(relay.clone()).is_err() || !certified(&relay) {
            return refuse("identity_mismatch", format!("the certificate was not issued to relay {relay:?}"));
        }
        Ok(Decision::Accept(Accepted { relay, epoch, rooms, v }))
    }

    /// The answer to an accepted hub that speaks link version `v`.
    pub fn welcome(cloud: String, epoch: String, hwm: Cursor, v: u16) -> Control {
        if v >= 2 { Control::WelcomeV2 { cloud, epoch, hwm, v } } else { Control::Welcome { cloud, epoch, hwm } }
    }

    /// The time is `now`: past the deadline without a `Hello`, the hub is dropped.
    pub fn handle_timeout(&mut self, now: Duration) -> Option<HandshakeError> {
        if self.done || now < self.deadline {
            return None;
        }
        self.done = true;
        Some(HandshakeError::TimedOut("no hello"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    const HUB_TIMEOUT: Duration = Duration::from_secs(10);
    const CLOUD_TIMEOUT: Duration = Duration::from_secs(20);

    /// The two sides joined by an in-memory stream each way, on simulated time: each frame
    /// takes `delay` to cross, and the first `drop_hub_frames` frames from the hub are
    /// lost (a control stream that never delivers).
    struct Pair {
        now: Duration,
        delay: Duration,
        drop_hub_frames: usize,
        to_cloud: VecDeque<(Duration, Control)>,
        to_hub: VecDeque<(Duration, Control)>,
        dialer: Dialer,
        acceptor: Acceptor,
        /// The relay id the hub's certificate names.
        certificate: String,
        cloud_hwm: Cursor,
        /// The link version the hub announces.
        hub_version: u16,
    }

    #[derive(Debug, PartialEq)]
    struct Ends {
        hub: Result<Welcomed, HandshakeError>,
        cloud: Result<Option<Accepted>, HandshakeError>,
    }

    impl Pair {
        fn new(relay: &str) -> Self {
            let params = HelloParams {
                relay: relay.into(),
                epoch: "hub-epoch".into(),
                rooms: vec![RoomId::new("clinic").unwrap_or_else(|e| panic!("{e}"))],
                dicts: vec![1],
            };
            Self {
                now: Duration::ZERO,
                delay: Duration::from_millis(300),
                drop_hub_frames: 0,
                to_cloud: VecDeque::new(),
                to_hub: VecDeque::new(),
                dialer: Dialer::new(params, Duration::ZERO, HUB_TIMEOUT),
                acceptor: Acceptor::new(Duration::ZERO, CLOUD_TIMEOUT),
                certificate: "village-7".into(),
                cloud_hwm: Cursor(41),
                hub_version: LINK_VERSION,
            }
        }

        /// Runs until both sides have ended, moving time to the next event each step.
        fn drive(mut self) -> Ends {
            let (mut hub, mut cloud) = (None, None);
            while hub.is_none() || cloud.is_none() {
                if let Some(mut hello) = self.dialer.poll_transmit() {
                    if let Control::Hello { v, .. } = &mut hello {
                        *v = self.hub_version;
                    }
                    if self.drop_hub_frames > 0 {
                        self.drop_hub_frames -= 1;
                    } else {
                        self.to_cloud.push_back((self.now + self.delay, hello));
                    }
                }
                if cloud.is_none()
                    && let Some((at, _)) = self.to_cloud.front()
                    && *at <= self.now
                {
                    let frame = self.to_cloud.pop_front().map(|(_, f)| f);
                    let certificate = self.certificate.clone();
                    cloud = Some(match self.acceptor.handle_control(frame, |r| r == certificate) {
                        Ok(Decision::Accept(a)) => {
                            let w = Acceptor::welcome("cloud-1".into(), "cloud-epoch".into(), self.cloud_hwm, a.v);
                            self.to_hub.push_back((self.now + self.delay, w));
                            Ok(Some(a))
                        }
                        Ok(Decision::Refuse(r)) => {
                            self.to_hub.push_back((self.now + self.delay, r));
                            Ok(None)
                        }
                        Err(e) => Err(e),
                    });
                    continue;
                }
                if hub.is_none()
                    && let Some((at, _)) = self.to_hub.front()
                    && *at <= self.now
                {
                    hub = Some(self.dialer.handle_control(self.to_hub.pop_front().map(|(_, f)| f)));
                    continue;
                }
                if hub.is_none()
                    && let Some(e) = self.dialer.handle_timeout(self.now)
                {
                    hub = Some(Err(e));
                    continue;
                }
                if cloud.is_none()
                    && let Some(e) = self.acceptor.handle_timeout(self.now)
                {
                    cloud = Some(Err(e));
                    continue;
                }
                // Nothing to do now: jump to the next arrival or deadline.
                let next = [
                    self.to_cloud.front().map(|(at, _)| *at),
                    self.to_hub.front().map(|(at, _)| *at),
                    hub.is_none().then(|| self.dialer.poll_timeout()).flatten(),
                    cloud.is_none().then(|| self.acceptor.poll_timeout()).flatten(),
                ]
                .into_iter()
                .flatten()
                .min();
                match next {
                    Some(t) if t > self.now => self.now = t,
                    Some(_) => {}
                    None => break,
                }
            }
            Ends {
                hub: hub.unwrap_or(Err(HandshakeError::Protocol("never ended".into()))),
                cloud: cloud.unwrap_or(Err(HandshakeError::Protocol("never ended".into()))),
            }
        }
    }

    #[test]
    fn a_certified_hub_is_welcomed_and_resumes_from_the_clouds_mark() {
        let ends = Pair::new("village-7").drive();
        let welcomed =
            Welcomed { cloud: "cloud-1".into(), epoch: "cloud-epoch".into(), hwm: Cursor(41), v: LINK_VERSION };
        assert_eq!(ends.hub, Ok(welcomed));
        let accepted = ends.cloud.ok().flatten().unwrap_or_else(|| panic!("the cloud accepted"));
        assert_eq!((accepted.relay.as_str(), accepted.epoch.as_str()), ("village-7", "hub-epoch"));
        assert_eq!(accepted.rooms.len(), 1);
    }

    #[test]
    fn a_hub_naming_another_relay_than_its_certificate_is_refused() {
        let mut pair = Pair::new("village-8");
        pair.certificate = "village-7".into();
        let ends = pair.drive();
        assert_eq!(ends.cloud, Ok(None));
        assert!(
            matches!(&ends.hub, Err(HandshakeError::Refused { code, message }) if code == "identity_mismatch" && message.contains("village-8")),
            "{:?}",
            ends.hub
        );
    }

    #[test]
    fn an_invalid_relay_id_is_refused_even_if_the_certificate_matches_it() {
        let mut pair = Pair::new("Village 7!");
        pair.certificate = "Village 7!".into();
        let ends = pair.drive();
        assert!(matches!(&ends.hub, Err(HandshakeError::Refused { code, .. }) if code == "identity_mismatch"));
    }

    #[test]
    fn a_version_1_hub_gets_the_plain_welcome_it_can_decode() {
        let mut pair = Pair::new("village-7");
        pair.hub_version = 1;
        let ends = pair.drive();
        assert_eq!(ends.hub.map(|w| w.v), Ok(1));
        assert_eq!(ends.cloud.ok().flatten().map(|a| a.v), Some(1));
    }

    #[test]
    fn a_newer_hub_is_welcomed_at_the_clouds_version() {
        let mut pair = Pair::new("village-7");
        pair.hub_version = LINK_VERSION + 1;
        let ends = pair.drive();
        assert_eq!(ends.hub.map(|w| w.v), Ok(LINK_VERSION));
    }

    #[test]
    fn an_older_link_version_than_supported_is_refused_with_its_code() {
        let mut acceptor = Acceptor::new(Duration::ZERO, CLOUD_TIMEOUT);
        let hello = Control::Hello {
            v: MIN_LINK_VERSION - 1,
            relay: "village-7".into(),
            epoch: "e".into(),
            rooms: vec![],
            dicts: vec![],
        };
        let decision = acceptor.handle_control(Some(hello), |_| true);
        assert!(
            matches!(&decision, Ok(Decision::Refuse(Control::Refused { code, .. })) if code == "unsupported_version"),
            "{decision:?}"
        );
        let mut dialer = Dialer::new(
            HelloParams { relay: "village-7".into(), epoch: "e".into(), rooms: vec![], dicts: vec![] },
            Duration::ZERO,
            HUB_TIMEOUT,
        );
        let Ok(Decision::Refuse(refused)) = decision else { panic!("refused") };
        assert!(matches!(dialer.handle_control(Some(refused)), Err(HandshakeError::Refused { .. })));
    }

    #[test]
    fn a_lost_hello_times_both_sides_out_at_their_deadlines() {
        let mut pair = Pair::new("village-7");
        pair.drop_hub_frames = 1;
        let ends = pair.drive();
        assert_eq!(ends.hub, Err(HandshakeError::TimedOut("connect timed out")));
        assert_eq!(ends.cloud, Err(HandshakeError::TimedOut("no hello")));
    }

    #[test]
    fn a_slow_link_still_completes_within_the_deadlines() {
        let mut pair = Pair::new("village-7");
        // A satellite hop each way: 4.9 s out, 4.9 s back, under the hub's 10 s.
        pair.delay = Duration::from_millis(4_900);
        assert!(pair.drive().hub.is_ok());
        let mut pair = Pair::new("village-7");
        pair.delay = Duration::from_millis(5_100);
        assert_eq!(pair.drive().hub, Err(HandshakeError::TimedOut("connect timed out")));
    }

    #[test]
    fn a_first_frame_other_than_hello_or_welcome_is_a_protocol_error() {
        let mut acceptor = Acceptor::new(Duration::ZERO, CLOUD_TIMEOUT);
        assert!(matches!(
            acceptor.handle_control(Some(Control::Ack { batch: 1 }), |_| true),
            Err(HandshakeError::Protocol(_))
        ));
        let mut acceptor = Acceptor::new(Duration::ZERO, CLOUD_TIMEOUT);
        assert!(matches!(acceptor.handle_control(None, |_| true), Err(HandshakeError::Protocol(_))));
        let mut dialer = Dialer::new(
            HelloParams { relay: "village-7".into(), epoch: "e".into(), rooms: vec![], dicts: vec![] },
            Duration::ZERO,
            HUB_TIMEOUT,
        );
        assert!(matches!(
            dialer.handle_control(Some(Control::Rooms { rooms: vec![] })),
            Err(HandshakeError::Protocol(_))
        ));
        assert_eq!(dialer.handle_timeout(HUB_TIMEOUT * 2), None, "an ended handshake does not time out again");
    }
}
