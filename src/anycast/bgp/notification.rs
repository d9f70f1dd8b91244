//! NOTIFICATION messages (RFC 4271 §4.5) and the codes we send.
//!
//! The wire codec is bgpkit-parser's `BgpNotificationMessage` (see
//! `message.rs`); this module holds our own value type, the code points
//! and the Cease helpers. The RFC 8203 / RFC 9003 shutdown communication is
//! written here by hand because bgpkit-parser keeps NOTIFICATION data as
//! opaque bytes.

use bytes::{BufMut, Bytes, BytesMut};

use super::{HEADER_LEN, MAX_MESSAGE_LEN};

/// NOTIFICATION error codes (RFC 4271 §4.5, IANA "BGP Error Codes").
pub mod code {
    pub const MESSAGE_HEADER_ERROR: u8 = 1;
    pub const OPEN_MESSAGE_ERROR: u8 = 2;
    pub const UPDATE_MESSAGE_ERROR: u8 = 3;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM_ERROR: u8 = 5;
    pub const CEASE: u8 = 6;
}

/// Message Header Error subcodes (RFC 4271 §6.1).
pub mod header_subcode {
    pub const CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
    pub const BAD_MESSAGE_LENGTH: u8 = 2;
    pub const BAD_MESSAGE_TYPE: u8 = 3;
}

/// OPEN Message Error subcodes (RFC 4271 §6.2; 0 is "Unspecific" per
/// RFC 9072 §3 for a recognised but malformed optional parameter).
pub mod open_subcode {
    pub const UNSPECIFIC: u8 = 0;
    pub const UNSUPPORTED_VERSION_NUMBER: u8 = 1;
    pub const BAD_PEER_AS: u8 = 2;
    pub const BAD_BGP_IDENTIFIER: u8 = 3;
    pub const UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
}

/// UPDATE Message Error subcodes (RFC 4271 §6.3).
pub mod update_subcode {
    pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    pub const UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE: u8 = 2;
    pub const MISSING_WELL_KNOWN_ATTRIBUTE: u8 = 3;
    pub const ATTRIBUTE_FLAGS_ERROR: u8 = 4;
    pub const ATTRIBUTE_LENGTH_ERROR: u8 = 5;
    pub const INVALID_ORIGIN_ATTRIBUTE: u8 = 6;
    pub const INVALID_NEXT_HOP_ATTRIBUTE: u8 = 8;
    pub const OPTIONAL_ATTRIBUTE_ERROR: u8 = 9;
    pub const INVALID_NETWORK_FIELD: u8 = 10;
    pub const MALFORMED_AS_PATH: u8 = 11;
}

/// Finite State Machine Error subcodes (RFC 6608 §3).
pub mod fsm_subcode {
    pub const UNEXPECTED_MESSAGE_IN_OPEN_SENT: u8 = 1;
    pub const UNEXPECTED_MESSAGE_IN_OPEN_CONFIRM: u8 = 2;
    pub const UNEXPECTED_MESSAGE_IN_ESTABLISHED: u8 = 3;
}

/// Cease subcodes (RFC 4486 §4).
pub mod cease_subcode {
    pub const ADMINISTRATIVE_SHUTDOWN: u8 = 2;
    pub const ADMINISTRATIVE_RESET: u8 = 4;
    pub const CONNECTION_COLLISION_RESOLUTION: u8 = 7;
}

/// Most data a NOTIFICATION can carry: the 4096-octet message limit minus
/// the header and the code/subcode octets (RFC 4271 §4.5).
pub const MAX_DATA_LEN: usize = MAX_MESSAGE_LEN - HEADER_LEN - 2;

/// Longest shutdown communication in octets (RFC 9003 §2 raised RFC
/// 8203's 128 to 255, the most its 1-octet length can say).
pub const MAX_SHUTDOWN_COMMUNICATION_LEN: usize = 255;

/// A NOTIFICATION, sent or received. `data` never exceeds [`MAX_DATA_LEN`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Bytes,
}

/// Why a received shutdown communication could not be read (RFC 9003 §3
/// says to log such a NOTIFICATION rather than act on it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShutdownCommunicationError {
    #[error("shutdown communication length {declared} exceeds the {available} data octets")]
    LengthExceedsData { declared: usize, available: usize },
    #[error("shutdown communication is not valid UTF-8")]
    InvalidUtf8,
}

impl Notification {
    /// A NOTIFICATION with arbitrary data, cut to [`MAX_DATA_LEN`] so the
    /// message always fits in 4096 octets.
    pub fn new(code: u8, subcode: u8, data: impl Into<Bytes>) -> Self {
        let mut data: Bytes = data.into();
        data.truncate(MAX_DATA_LEN);
        Notification {
            code,
            subcode,
            data,
        }
    }

    /// Cease / Administrative Shutdown carrying `communication` as the
    /// RFC 8203 shutdown communication (length rules of RFC 9003 §2).
    pub fn administrative_shutdown(communication: &str) -> Self {
        Self::with_shutdown_communication(cease_subcode::ADMINISTRATIVE_SHUTDOWN, communication)
    }

    /// Cease / Administrative Reset with a shutdown communication
    /// (RFC 9003 §2 allows one on this subcode too).
    pub fn administrative_reset(communication: &str) -> Self {
        Self::with_shutdown_communication(cease_subcode::ADMINISTRATIVE_RESET, communication)
    }

    /// Hold Timer Expired (RFC 4271 §6.5); it has no subcode or data.
    pub fn hold_timer_expired() -> Self {
        Self::new(code::HOLD_TIMER_EXPIRED, 0, Bytes::new())
    }

    /// Finite State Machine Error for an unexpected message; RFC 6608 §4
    /// puts the type of the offending message in the data.
    pub fn fsm_error(subcode: u8, unexpected_message_type: u8) -> Self {
        Self::new(code::FSM_ERROR, subcode, vec![unexpected_message_type])
    }

    /// Cease / Connection Collision Resolution, sent on the connection
    /// that loses an RFC 4271 §6.8 collision (RFC 4486 §4).
    pub fn connection_collision() -> Self {
        Self::new(
            code::CEASE,
            cease_subcode::CONNECTION_COLLISION_RESOLUTION,
            Bytes::new(),
        )
    }

    /// The shutdown communication of a received Cease / Administrative
    /// Shutdown or Reset, `None` for any other NOTIFICATION or when the
    /// peer sent no data. An empty communication is `Some(Ok(""))`.
    pub fn shutdown_communication(&self) -> Option<Result<&str, ShutdownCommunicationError>> {
        let carries_communication = self.code == code::CEASE
            && matches!(
                self.subcode,
                cease_subcode::ADMINISTRATIVE_SHUTDOWN | cease_subcode::ADMINISTRATIVE_RESET
            );
        if !carries_communication {
            return None;
        }
        let (&declared, rest) = self.data.split_first()?;
        let declared = usize::from(declared);
        // RFC 9003 §2: the length octet counts only the UTF-8 text;
        // anything after it is not ours to interpret.
        let Some(text) = rest.get(..declared) else {
            return Some(Err(ShutdownCommunicationError::LengthExceedsData {
                declared,
                available: rest.len(),
            }));
        };
        Some(std::str::from_utf8(text).map_err(|_| ShutdownCommunicationError::InvalidUtf8))
    }

    fn with_shutdown_communication(subcode: u8, communication: &str) -> Self {
        let text = truncate_at_char_boundary(communication, MAX_SHUTDOWN_COMMUNICATION_LEN);
        let mut data = BytesMut::with_capacity(1 + text.len());
        // Cannot truncate: `text` is at most 255 octets long.
        data.put_u8(u8::try_from(text.len()).unwrap_or(u8::MAX));
        data.put_slice(text.as_bytes());
        Self::new(code::CEASE, subcode, data.freeze())
    }
}

/// The longest prefix of `text` that fits in `max_len` octets without
/// splitting a UTF-8 sequence (RFC 9003 §2 requires valid UTF-8).
fn truncate_at_char_boundary(text: &str, max_len: usize) -> &str {
    if text.len() <= max_len {
        return text;
    }
    let mut end = max_len;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn administrative_shutdown_carries_length_prefixed_utf8() {
        let notification = Notification::administrative_shutdown("maintenance ☕");
        assert_eq!(notification.code, 6);
        assert_eq!(notification.subcode, 2);
        assert_eq!(notification.data[0] as usize, "maintenance ☕".len());
        assert_eq!(
            notification.shutdown_communication(),
            Some(Ok("maintenance ☕"))
        );
    }

    #[test]
    fn long_shutdown_communication_is_cut_at_a_char_boundary() {
        // 200 two-octet characters = 400 octets; 255 falls inside one.
        let text = "é".repeat(200);
        let notification = Notification::administrative_shutdown(&text);
        let communication = notification.shutdown_communication();
        let Some(Ok(kept)) = communication else {
            panic!("expected a readable communication, got {communication:?}");
        };
        assert_eq!(kept.len(), 254);
        assert_eq!(notification.data.len(), 255);
    }

    #[test]
    fn bad_shutdown_communications_are_reported_not_trusted() {
        let too_long = Notification::new(6, 2, vec![10, b'a']);
        assert_eq!(
            too_long.shutdown_communication(),
            Some(Err(ShutdownCommunicationError::LengthExceedsData {
                declared: 10,
                available: 1
            }))
        );
        let not_utf8 = Notification::new(6, 2, vec![2, 0xc3, 0x28]);
        assert_eq!(
            not_utf8.shutdown_communication(),
            Some(Err(ShutdownCommunicationError::InvalidUtf8))
        );
        assert_eq!(
            Notification::hold_timer_expired().shutdown_communication(),
            None
        );
        assert_eq!(
            Notification::new(6, 2, Bytes::new()).shutdown_communication(),
            None
        );
    }

    #[test]
    fn oversized_data_is_truncated_to_fit_one_message() {
        let notification = Notification::new(3, 1, vec![0u8; 10_000]);
        assert_eq!(notification.data.len(), MAX_DATA_LEN);
    }
}
