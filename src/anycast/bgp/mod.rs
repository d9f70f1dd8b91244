//! Sans-IO core of the BGP-4 speaker that announces pgcast's anycast prefix.
//!
//! Nothing in here touches a socket or a clock. The actor that owns the TCP
//! connection does four things with it:
//!
//! 1. Reads bytes into a buffer and asks [`frame_len`] whether a whole
//!    message is there; if so it splits it off and hands it to
//!    [`Message::decode`] with the session's [`DecodeContext`].
//! 2. Feeds the result to [`Session::step`] as [`Input::Message`] or
//!    [`Input::DecodeError`], together with the current `Instant`.
//! 3. Carries out the returned [`Action`]s in order (`Send` means
//!    [`Message::encode`] into the write buffer).
//! 4. Sleeps until [`Session::next_deadline`] and then steps [`Input::Tick`].
//!
//! Module map:
//! - [`message`]: the 19-byte header, framing, OPEN / NOTIFICATION /
//!   KEEPALIVE / ROUTE-REFRESH codecs and the error → NOTIFICATION mapping.
//! - [`notification`]: NOTIFICATION codes and the Cease / shutdown
//!   communication helpers (RFC 4486, RFC 8203, RFC 9003).
//! - [`update`]: building the UPDATEs we send (through bgpkit-parser).
//! - [`update_check`]: bounded validation of the UPDATEs we receive.
//! - [`adj_rib_out`]: what we have announced and the diff to what we want.
//! - [`fsm`]: the RFC 4271 §8 session state machine.
//! - [`session_config`]: what a session is configured with.
//! - [`collision`]: RFC 4271 §6.8 connection collision resolution.
//! - [`damping`]: the back-off after a failure and what is accepted meanwhile.
//! - [`io`], `neighbor`: the actor (TCP, listener, one task per neighbour); [`sockopt`]:
//!   TCP-MD5 and GTSM; [`status`]: what `pgcast status` shows.

pub mod adj_rib_out;
pub mod collision;
pub mod damping;
pub mod fsm;
pub mod io;
pub mod message;
mod neighbor;
pub mod notification;
pub mod prefix;
pub mod session_config;
pub mod session_info;
pub mod sockopt;
pub mod status;
pub mod update;
pub mod update_check;

#[cfg(test)]
mod tests;

pub use adj_rib_out::ExportedRoute;
pub use collision::{resolve_collision, ConnectionOrigin, SpeakerIdentity};
pub use fsm::{Action, DownReason, Input, ReceivedUpdates, Session, SessionInfo, SessionState};
pub use message::{frame_len, Capabilities, DecodeContext, Message, MessageError, Open};
pub use notification::{Notification, ShutdownCommunicationError};
pub use session_config::{ConfigError, SessionConfig};
pub use update::{
    LargeCommunity, Prefix, RouteAttributes, StandardCommunity, Update, UpdateBuildError,
    UpdateEncoding, UpdateSummary,
};

/// The only BGP version we speak (RFC 4271 §4.2).
pub const BGP_VERSION: u8 = 4;

/// AS_TRANS, the 2-octet stand-in for an AS number that does not fit in
/// 16 bits (RFC 6793 §9); defined with the configuration, which rejects it as an AS number.
pub use crate::config::AS_TRANS;

/// Address families and the subsequent AFI we read or send (RFC 4760, IANA registries).
pub const AFI_IPV4: u16 = 1;
pub const AFI_IPV6: u16 = 2;
pub const SAFI_UNICAST: u8 = 1;

/// Length of the fixed message header: marker, length, type (RFC 4271 §4.1).
pub const HEADER_LEN: usize = 19;

/// Largest message allowed without the Extended Message capability
/// (RFC 4271 §4.1; we never advertise RFC 8654).
pub const MAX_MESSAGE_LEN: usize = 4096;
