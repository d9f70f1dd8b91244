//! BFD Control packet codec (RFC 5880 §4.1), with the reception checks of RFC 5880 §6.8.6
//! that need nothing but the packet itself. Demultiplexing and the state machine are elsewhere.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Vers |  Diag   |Sta|P|F|C|A|D|M|  Detect Mult  |    Length     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       My Discriminator                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                      Your Discriminator                       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Desired Min TX Interval                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                   Required Min RX Interval                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Required Min Echo RX Interval                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Intervals are in microseconds on the wire and here. Authentication (the A bit and the
//! section after the mandatory one) is not supported: such packets are refused with
//! [`DecodeError::AuthenticationPresent`], which RFC 5880 §6.8.6 asks of a system that does
//! not use authentication.

use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Serialize};

/// The only protocol version (RFC 5880 §4.1).
pub const BFD_VERSION: u8 = 1;
/// Length of the mandatory section, the whole packet when unauthenticated.
pub const MANDATORY_LEN: usize = 24;
/// The shortest packet with the A bit set: mandatory section plus auth type and length.
pub const MIN_AUTH_LEN: usize = 26;

/// Session state as carried in the Sta field (RFC 5880 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum State {
    AdminDown,
    Down,
    Init,
    Up,
}

impl State {
    fn from_bits(bits: u8) -> State {
        match bits & 0x03 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }

    fn bits(self) -> u8 {
        match self {
            State::AdminDown => 0,
            State::Down => 1,
            State::Init => 2,
            State::Up => 3,
        }
    }

    /// Stable snake_case name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            State::AdminDown => "admin_down",
            State::Down => "down",
            State::Init => "init",
            State::Up => "up",
        }
    }
}

/// Diagnostic code (RFC 5880 §4.1): the sender's reason for its last state change.
/// Codes 9..=31 are reserved; they are kept as received rather than refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Diag {
    None,
    ControlDetectionTimeExpired,
    EchoFunctionFailed,
    NeighborSignaledSessionDown,
    ForwardingPlaneReset,
    PathDown,
    ConcatenatedPathDown,
    AdministrativelyDown,
    ReverseConcatenatedPathDown,
    Reserved(u8),
}

impl Diag {
    /// Maps the 5-bit field; bits above the field are ignored.
    pub fn from_code(code: u8) -> Diag {
        match code & 0x1f {
            0 => Diag::None,
            1 => Diag::ControlDetectionTimeExpired,
            2 => Diag::EchoFunctionFailed,
            3 => Diag::NeighborSignaledSessionDown,
            4 => Diag::ForwardingPlaneReset,
            5 => Diag::PathDown,
            6 => Diag::ConcatenatedPathDown,
            7 => Diag::AdministrativelyDown,
            8 => Diag::ReverseConcatenatedPathDown,
            other => Diag::Reserved(other),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Diag::None => 0,
            Diag::ControlDetectionTimeExpired => 1,
            Diag::EchoFunctionFailed => 2,
            Diag::NeighborSignaledSessionDown => 3,
            Diag::ForwardingPlaneReset => 4,
            Diag::PathDown => 5,
            Diag::ConcatenatedPathDown => 6,
            Diag::AdministrativelyDown => 7,
            Diag::ReverseConcatenatedPathDown => 8,
            Diag::Reserved(c) => c & 0x1f,
        }
    }
}

/// The six flag bits of the second octet (RFC 5880 §4.1). `authentication` and
/// `multipoint` are always false in a decoded packet: such packets are refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    pub poll: bool,
    pub final_: bool,
    pub control_plane_independent: bool,
    pub authentication: bool,
    pub demand: bool,
    pub multipoint: bool,
}

impl Flags {
    const POLL: u8 = 0x20;
    const FINAL: u8 = 0x10;
    const CPI: u8 = 0x08;
    const AUTH: u8 = 0x04;
    const DEMAND: u8 = 0x02;
    const MULTIPOINT: u8 = 0x01;

    fn from_bits(b: u8) -> Flags {
        Flags {
            poll: b & Self::POLL != 0,
            final_: b & Self::FINAL != 0,
            control_plane_independent: b & Self::CPI != 0,
            authentication: b & Self::AUTH != 0,
            demand: b & Self::DEMAND != 0,
            multipoint: b & Self::MULTIPOINT != 0,
        }
    }

    fn bits(self) -> u8 {
        let mut b = 0;
        for (set, bit) in [
            (self.poll, Self::POLL),
            (self.final_, Self::FINAL),
            (self.control_plane_independent, Self::CPI),
            (self.authentication, Self::AUTH),
            (self.demand, Self::DEMAND),
            (self.multipoint, Self::MULTIPOINT),
        ] {
            if set {
                b |= bit;
            }
        }
        b
    }
}

/// A BFD Control packet without authentication section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlPacket {
    pub diag: Diag,
    pub state: State,
    pub flags: Flags,
    pub detect_mult: u8,
    pub my_discr: u32,
    pub your_discr: u32,
    /// Microseconds.
    pub desired_min_tx: u32,
    /// Microseconds.
    pub required_min_rx: u32,
    /// Microseconds; 0 means the sender does not accept Echo packets.
    pub required_min_echo_rx: u32,
}

/// Why a datagram is not an acceptable BFD Control packet (RFC 5880 §6.8.6). Every variant
/// is a drop reason counted by the actor under [`DecodeError::reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("datagram of {0} bytes is shorter than the 24-byte mandatory section")]
    Truncated(usize),
    #[error("version {0}, expected 1")]
    BadVersion(u8),
    #[error("length field {length} below the minimum {minimum}")]
    LengthTooSmall { length: u8, minimum: u8 },
    #[error("length field {length} exceeds the {datagram}-byte datagram")]
    LengthExceedsDatagram { length: u8, datagram: usize },
    #[error("detect multiplier is zero")]
    ZeroDetectMult,
    #[error("multipoint bit set")]
    Multipoint,
    #[error("my discriminator is zero")]
    ZeroMyDiscriminator,
    #[error("authentication present but not configured")]
    AuthenticationPresent,
}

impl DecodeError {
    /// Stable snake_case name for the drop counters.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Truncated(_) => "truncated",
            DecodeError::BadVersion(_) => "bad_version",
            DecodeError::LengthTooSmall { .. } => "length_too_small",
            DecodeError::LengthExceedsDatagram { .. } => "length_exceeds_datagram",
            DecodeError::ZeroDetectMult => "zero_detect_mult",
            DecodeError::Multipoint => "multipoint",
            DecodeError::ZeroMyDiscriminator => "zero_my_discriminator",
            DecodeError::AuthenticationPresent => "authentication_present",
        }
    }
}

fn be32(d: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(s) = d.get(at..at + 4) {
        b.copy_from_slice(s);
    }
    u32::from_be_bytes(b)
}

impl ControlPacket {
    /// Decodes one UDP payload. The checks follow the order of RFC 5880 §6.8.6; the first
    /// failing one is reported. Bytes after the Length field's end are ignored.
    pub fn decode(d: &[u8]) -> Result<ControlPacket, DecodeError> {
        let header: [u8; MANDATORY_LEN] = d
            .get(..MANDATORY_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(DecodeError::Truncated(d.len()))?;
        let version = header[0] >> 5;
        if version != BFD_VERSION {
            return Err(DecodeError::BadVersion(version));
        }
        let flags = Flags::from_bits(header[1]);
        let length = header[3];
        let minimum = if flags.authentication {
            MIN_AUTH_LEN
        } else {
            MANDATORY_LEN
        };
        if usize::from(length) < minimum {
            return Err(DecodeError::LengthTooSmall {
                length,
                minimum: minimum as u8,
            });
        }
        if usize::from(length) > d.len() {
            return Err(DecodeError::LengthExceedsDatagram {
                length,
                datagram: d.len(),
            });
        }
        let detect_mult = header[2];
        if detect_mult == 0 {
            return Err(DecodeError::ZeroDetectMult);
        }
        if flags.multipoint {
            return Err(DecodeError::Multipoint);
        }
        let my_discr = be32(&header, 4);
        if my_discr == 0 {
            return Err(DecodeError::ZeroMyDiscriminator);
        }
        // §6.8.6 checks the discriminators and session lookup before authentication; the
        // codec has no sessions, so the A-bit refusal comes last here. The drop is the same.
        if flags.authentication {
            return Err(DecodeError::AuthenticationPresent);
        }
        Ok(ControlPacket {
            diag: Diag::from_code(header[0]),
            state: State::from_bits(header[1] >> 6),
            flags,
            detect_mult,
            my_discr,
            your_discr: be32(&header, 8),
            desired_min_tx: be32(&header, 12),
            required_min_rx: be32(&header, 16),
            required_min_echo_rx: be32(&header, 20),
        })
    }

    /// Appends the 24-byte wire form (Length 24, no authentication section).
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8((BFD_VERSION << 5) | self.diag.code());
        out.put_u8((self.state.bits() << 6) | self.flags.bits());
        out.put_u8(self.detect_mult);
        out.put_u8(MANDATORY_LEN as u8);
        out.put_u32(self.my_discr);
        out.put_u32(self.your_discr);
        out.put_u32(self.desired_min_tx);
        out.put_u32(self.required_min_rx);
        out.put_u32(self.required_min_echo_rx);
    }
}
