//! One BFD session in asynchronous mode (RFC 5880 §6.2, §6.8), without I/O or clocks.
//!
//! Time comes in with every [`Session::step`]; the session keeps two deadlines (the next
//! periodic transmission and the detection timer), reports the earlier through
//! [`Session::next_deadline`], and fires what is due when stepped with [`Input::Tick`].
//! Jitter comes from a seed given at construction, so a run is reproducible.
//!
//! Departures from RFC 5880, on purpose:
//! - Active role only (§6.1): we always transmit, also before hearing from the peer.
//! - No Demand mode, no Echo function, no authentication: we advertise Required Min Echo RX
//!   0 (we do not loop Echo packets back in software) and never set D or A.
//! - A state change is announced by one packet at once, besides the periodic ones, so the
//!   three-way handshake and a drain do not wait for the (slow start) timer.
//! - Timer changes start a Poll Sequence only while Up (§6.8.3 asks for one on any change):
//!   before Up the one-second slow-start floor governs both sides anyway.

use std::time::{Duration, Instant};

use super::packet::{ControlPacket, Diag, Flags, State};

/// RFC 5880 §6.8.3: while not Up, Desired Min TX is at least one second.
pub const SLOW_START_MIN_TX_US: u32 = 1_000_000;

/// Local timer configuration of a session (RFC 5880 §6.8.1's bfd.DesiredMinTxInterval,
/// bfd.RequiredMinRxInterval and bfd.DetectMult).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BfdTimers {
    pub desired_min_tx: Duration,
    pub required_min_rx: Duration,
    pub detect_multiplier: u8,
}

impl Default for BfdTimers {
    /// 300 ms × 3, FRR's defaults.
    fn default() -> BfdTimers {
        BfdTimers {
            desired_min_tx: Duration::from_millis(300),
            required_min_rx: Duration::from_millis(300),
            detect_multiplier: 3,
        }
    }
}

/// A configuration the session cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("local discriminator must be nonzero")]
    ZeroDiscriminator,
    #[error("detect multiplier must be nonzero")]
    ZeroDetectMult,
    #[error("{0} must be between 1 µs and 4294 s")]
    IntervalOutOfRange(&'static str),
}

impl BfdTimers {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.detect_multiplier == 0 {
            return Err(ConfigError::ZeroDetectMult);
        }
        micros(self.desired_min_tx, "desired_min_tx")?;
        micros(self.required_min_rx, "required_min_rx")?;
        Ok(())
    }
}

fn micros(d: Duration, name: &'static str) -> Result<u32, ConfigError> {
    match u32::try_from(d.as_micros()) {
        Ok(0) | Err(_) => Err(ConfigError::IntervalOutOfRange(name)),
        Ok(us) => Ok(us),
    }
}

/// Everything the session reacts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A packet that passed the codec and was demultiplexed to this session.
    Received(ControlPacket),
    /// Fire whatever is due.
    Tick,
    /// Hold the session administratively down (RFC 5880 §6.8.16), e.g. to drain.
    AdminDown,
    /// Leave AdminDown and start over from Down.
    Enable,
    /// New local timers; a Poll Sequence announces them while Up (RFC 5880 §6.8.3).
    SetTimers(BfdTimers),
}

/// What the actor has to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send(ControlPacket),
    StateChanged {
        from: State,
        to: State,
        diag: Diag,
    },
    /// A received packet was discarded after demultiplexing; counted under `reason`.
    Dropped {
        reason: &'static str,
    },
}

/// One BFD session with one peer.
#[derive(Debug, Clone)]
pub struct Session {
    local_discr: u32,
    detect_mult: u8,
    /// Configured values, µs.
    cfg_tx: u32,
    cfg_rx: u32,
    state: State,
    local_diag: Diag,
    /// What we advertise (bfd.DesiredMinTxInterval / bfd.RequiredMinRxInterval), µs.
    adv_tx: u32,
    adv_rx: u32,
    /// What we act on until a Poll Sequence confirms the advertised values (§6.8.3).
    tx_in_use: u32,
    rx_for_detect: u32,
    polling: bool,
    remote_discr: u32,
    remote_state: State,
    remote_diag: Diag,
    /// bfd.RemoteMinRxInterval starts at 1 µs (RFC 5880 §6.8.1).
    remote_min_rx: u32,
    remote_desired_tx: u32,
    /// 0 until the first packet.
    remote_detect_mult: u8,
    next_tx: Option<Instant>,
    detect_deadline: Option<Instant>,
    up_since: Option<Instant>,
    rng: u64,
}

impl Session {
    /// A session in Down that sends its first packet on the first `Tick`.
    pub fn new(
        local_discr: u32,
        timers: BfdTimers,
        seed: u64,
        now: Instant,
    ) -> Result<Session, ConfigError> {
        if local_discr == 0 {
            return Err(ConfigError::ZeroDiscriminator);
        }
        timers.validate()?;
        let cfg_tx = micros(timers.desired_min_tx, "desired_min_tx")?;
        let cfg_rx = micros(timers.required_min_rx, "required_min_rx")?;
        let adv_tx = cfg_tx.max(SLOW_START_MIN_TX_US);
        Ok(Session {
            local_discr,
            detect_mult: timers.detect_multiplier,
            cfg_tx,
            cfg_rx,
            state: State::Down,
            local_diag: Diag::None,
            adv_tx,
            adv_rx: cfg_rx,
            tx_in_use: adv_tx,
            rx_for_detect: cfg_rx,
            polling: false,
            remote_discr: 0,
            remote_state: State::Down,
            remote_diag: Diag::None,
            remote_min_rx: 1,
            remote_desired_tx: 0,
            remote_detect_mult: 0,
            next_tx: Some(now),
            detect_deadline: None,
            up_since: None,
            rng: seed,
        })
    }

    pub fn step(&mut self, now: Instant, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Received(p) => self.on_received(now, p, &mut out),
            Input::Tick => self.on_tick(now, &mut out),
            Input::AdminDown => {
                if self.state != State::AdminDown {
                    // §6.8.16: AdminDown, diag 7, no detection while held down.
                    self.detect_deadline = None;
                    self.transition(now, State::AdminDown, Diag::AdministrativelyDown, &mut out);
                    self.send_now(now, false, &mut out);
                }
            }
            Input::Enable => {
                if self.state == State::AdminDown {
                    self.transition(now, State::Down, Diag::None, &mut out);
                    self.send_now(now, false, &mut out);
                }
            }
            Input::SetTimers(t) => self.on_set_timers(t),
        }
        out
    }

    /// The earliest instant at which a `Tick` has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.next_tx, self.detect_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_set_timers(&mut self, t: BfdTimers) {
        if t.validate().is_err() {
            return;
        }
        self.detect_mult = t.detect_multiplier;
        self.cfg_tx = micros(t.desired_min_tx, "desired_min_tx").unwrap_or(self.cfg_tx);
        self.cfg_rx = micros(t.required_min_rx, "required_min_rx").unwrap_or(self.cfg_rx);
        self.apply_timer_targets();
    }

    /// Moves the advertised intervals to what the state calls for. While Up a change starts
    /// a Poll Sequence, and §6.8.3 keeps the old transmit rate after an increase of Desired
    /// Min TX and the old detection time after a decrease of Required Min RX until the Final
    /// arrives; decreases of the rate and increases of the detection time are safe at once.
    fn apply_timer_targets(&mut self) {
        let target_tx = if self.state == State::Up {
            self.cfg_tx
        } else {
            self.cfg_tx.max(SLOW_START_MIN_TX_US)
        };
        let target_rx = self.cfg_rx;
        if target_tx == self.adv_tx && target_rx == self.adv_rx {
            return;
        }
        self.adv_tx = target_tx;
        self.adv_rx = target_rx;
        if self.state == State::Up {
            self.polling = true;
            self.tx_in_use = self.tx_in_use.min(target_tx);
            self.rx_for_detect = self.rx_for_detect.max(target_rx);
        } else {
            self.polling = false;
            self.tx_in_use = target_tx;
            self.rx_for_detect = target_rx;
        }
    }

    /// RFC 5880 §6.8.6, from "set bfd.RemoteDiscr" on: the codec and the demultiplexer did
    /// the checks before.
    fn on_received(&mut self, now: Instant, p: ControlPacket, out: &mut Vec<Action>) {
        self.remote_discr = p.my_discr;
        self.remote_state = p.state;
        self.remote_diag = p.diag;
        self.remote_min_rx = p.required_min_rx;
        self.remote_desired_tx = p.desired_min_tx;
        self.remote_detect_mult = p.detect_mult;
        // §6.8.7: no periodic packets while the peer asks for none; resume when it asks.
        if self.remote_min_rx == 0 {
            self.next_tx = None;
        } else if self.next_tx.is_none() {
            self.next_tx = Some(now);
        }
        // §6.5: a Final ends our Poll Sequence; a Final we did not ask for changes nothing.
        if self.polling && p.flags.final_ {
            self.polling = false;
            self.tx_in_use = self.adv_tx;
            self.rx_for_detect = self.adv_rx;
        }
        if self.state == State::AdminDown {
            out.push(Action::Dropped {
                reason: "local_admin_down",
            });
            return;
        }
        self.detect_deadline = Some(now + self.detection_time_or_zero());
        let before = self.state;
        match (self.state, p.state) {
            // §6.8.6: the peer went AdminDown; its session is down whatever ours was.
            (State::Down, State::AdminDown) => {}
            (State::Init | State::Up, State::AdminDown) => {
                self.transition(now, State::Down, Diag::NeighborSignaledSessionDown, out)
            }
            (State::Down, State::Down) => self.transition(now, State::Init, Diag::None, out),
            (State::Down, State::Init) => self.transition(now, State::Up, Diag::None, out),
            (State::Down, State::Up) => {}
            (State::Init, State::Init | State::Up) => {
                self.transition(now, State::Up, Diag::None, out)
            }
            (State::Init, State::Down) => {}
            (State::Up, State::Down) => {
                self.transition(now, State::Down, Diag::NeighborSignaledSessionDown, out)
            }
            (State::Up, State::Init | State::Up) => {}
            // Returned early above: §6.8.6 discards packets while we are AdminDown.
            (State::AdminDown, _) => {}
        }
        // §6.8.6: a Poll is answered at once, regardless of the transmit timer, with F set.
        if p.flags.poll {
            self.send_now(now, true, out);
        } else if self.state != before {
            self.send_now(now, false, out);
        }
    }

    fn on_tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.detect_deadline.is_some_and(|d| now >= d) {
            self.detect_deadline = None;
            // §6.8.1: a Detection Time of silence forgets the remote discriminator.
            self.remote_discr = 0;
            self.remote_state = State::Down;
            // §6.8.4: detection expiry takes Init and Up down with diag 1.
            if matches!(self.state, State::Init | State::Up) {
                self.transition(now, State::Down, Diag::ControlDetectionTimeExpired, out);
                self.send_now(now, false, out);
            }
        }
        if self.next_tx.is_some_and(|t| now >= t) {
            self.send_now(now, false, out);
        }
    }

    fn transition(&mut self, now: Instant, to: State, diag: Diag, out: &mut Vec<Action>) {
        let from = self.state;
        if from == to {
            return;
        }
        self.state = to;
        self.local_diag = diag;
        if to == State::Up {
            self.up_since = Some(now);
        } else if from == State::Up {
            self.up_since = None;
        }
        if to != State::Up {
            // A Poll Sequence only matters while Up; leaving Up abandons it.
            self.polling = false;
        }
        self.apply_timer_targets();
        out.push(Action::StateChanged { from, to, diag });
    }

    /// Sends a packet now and restarts the periodic timer from here.
    fn send_now(&mut self, now: Instant, final_: bool, out: &mut Vec<Action>) {
        out.push(Action::Send(self.packet(final_)));
        self.next_tx = self.periodic_interval().map(|i| now + i);
    }

    /// The packet we would send now (RFC 5880 §6.8.7). P and F are never both set (§6.5).
    pub fn packet(&self, final_: bool) -> ControlPacket {
        ControlPacket {
            diag: self.local_diag,
            state: self.state,
            flags: Flags {
                poll: self.polling && !final_,
                final_,
                ..Flags::default()
            },
            detect_mult: self.detect_mult,
            my_discr: self.local_discr,
            your_discr: self.remote_discr,
            desired_min_tx: self.adv_tx,
            required_min_rx: self.adv_rx,
            required_min_echo_rx: 0,
        }
    }

    /// The jittered interval to the next periodic packet, or None when §6.8.7 forbids
    /// periodic transmission (the peer asked for Required Min RX 0).
    fn periodic_interval(&mut self) -> Option<Duration> {
        if self.remote_min_rx == 0 {
            return None;
        }
        let base = u64::from(self.negotiated_tx_us());
        // §6.8.7: 75..=100 % of the interval, at most 90 % when bfd.DetectMult is 1.
        let span = if self.detect_mult == 1 { 151 } else { 251 };
        let per_mille = 750 + self.next_random() % span;
        Some(Duration::from_micros(base * per_mille / 1000))
    }

    fn next_random(&mut self) -> u64 {
        splitmix64(&mut self.rng)
    }

    /// The transmit interval before jitter: the larger of our Desired Min TX in use and the
    /// peer's Required Min RX (RFC 5880 §6.8.7).
    pub fn negotiated_tx_us(&self) -> u32 {
        self.tx_in_use.max(self.remote_min_rx)
    }

    /// Asynchronous mode (RFC 5880 §6.8.4): the peer's Detect Mult times the larger of our
    /// Required Min RX and the peer's Desired Min TX. None before the first packet.
    pub fn detection_time(&self) -> Option<Duration> {
        if self.remote_detect_mult == 0 {
            return None;
        }
        let us = u64::from(self.rx_for_detect.max(self.remote_desired_tx))
            * u64::from(self.remote_detect_mult);
        Some(Duration::from_micros(us))
    }

    fn detection_time_or_zero(&self) -> Duration {
        self.detection_time().unwrap_or_default()
    }

    pub fn state(&self) -> State {
        self.state
    }
    pub fn remote_state(&self) -> State {
        self.remote_state
    }
    pub fn local_diag(&self) -> Diag {
        self.local_diag
    }
    pub fn remote_diag(&self) -> Diag {
        self.remote_diag
    }
    pub fn local_discr(&self) -> u32 {
        self.local_discr
    }
    pub fn remote_discr(&self) -> u32 {
        self.remote_discr
    }
    pub fn up_since(&self) -> Option<Instant> {
        self.up_since
    }
    /// A Poll Sequence is in progress.
    pub fn polling(&self) -> bool {
        self.polling
    }
}

/// splitmix64: small, deterministic, good enough to decorrelate transmit times and to pick
/// discriminators. Not for secrets.
pub(super) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
