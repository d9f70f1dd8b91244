//! Walking a stream of protocol messages by their headers alone — a type byte and a length
//! that counts itself but not the type byte (PostgreSQL protocol, "Message Formats") — so a
//! relay can pass bytes on as they arrive, without splitting, decoding or copying every
//! message. Only the messages the caller asks to see are held back until they are whole.

use super::message::DecodeError;

/// Where a stream stands between buffers: how much of a message that began in an earlier
/// buffer is still to come.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Frames {
    body_left: usize,
}

/// What the next stretch of a buffer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// All of `buf[..relay]` may go on. What follows waits for more bytes: a header split
    /// between reads, or a message to be seen whole that has not fully arrived.
    More { relay: usize },
    /// `buf[..at]` may go on; then `buf[at..end]` is a whole message the caller asked to see.
    Whole { at: usize, end: usize },
}

/// A header no protocol stream can have: the stream cannot be followed past `at`.
#[derive(Debug, PartialEq, Eq)]
pub struct BadFrame {
    pub at: usize,
    pub error: DecodeError,
}

/// A message header: 1 type byte and a 4-byte length.
const HEADER: usize = 5;

impl Frames {
    /// Walks `buf` from its start, which is where the previous call's relayable bytes ended.
    /// `header` is called once for the type of every message whose header passes by;
    /// messages whose type satisfies `whole` are returned whole and unrelayed. A length below
    /// 4 or a message longer than `max` bytes is an error.
    pub fn next(
        &mut self,
        buf: &[u8],
        max: usize,
        whole: impl Fn(u8) -> bool,
        mut header: impl FnMut(u8),
    ) -> Result<Next, BadFrame> {
        let mut pos = self.body_left.min(buf.len());
        self.body_left -= pos;
        if self.body_left > 0 {
            return Ok(Next::More { relay: pos });
        }
        loop {
            let Some(h) = buf.get(pos..pos + HEADER) else {
                return Ok(Next::More { relay: pos });
            };
            let tag = h[0];
            let len = i32::from_be_bytes([h[1], h[2], h[3], h[4]]);
            let bad = |error| BadFrame { at: pos, error };
            if len < 4 {
                return Err(bad(DecodeError::BadLength(i64::from(len))));
            }
            let total = len as usize + 1;
            if total > max {
                return Err(bad(DecodeError::TooLong { len: total, max }));
            }
            let end = pos + total;
            if whole(tag) {
                if end > buf.len() {
                    return Ok(Next::More { relay: pos });
                }
                header(tag);
                return Ok(Next::Whole { at: pos, end });
            }
            header(tag);
            if end > buf.len() {
                self.body_left = end - buf.len();
                return Ok(Next::More { relay: buf.len() });
            }
            pos = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    /// Feeds `stream` in pieces split at `cuts`, the way reads deliver it, keeping unrelayed
    /// bytes for the next piece like a relay does. Returns the relayed bytes, the headers seen
    /// and the whole messages taken out (which are not relayed).
    fn relay(stream: &[u8], cuts: &[usize], whole: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<Vec<u8>>) {
        let mut frames = Frames::default();
        let (mut relayed, mut seen, mut taken) = (Vec::new(), Vec::new(), Vec::new());
        let mut held: Vec<u8> = Vec::new();
        let mut last = 0;
        for &cut in cuts.iter().chain([stream.len()].iter()) {
            held.extend_from_slice(&stream[last..cut]);
            last = cut;
            let mut from = 0;
            loop {
                let next = frames
                    .next(
                        &held[from..],
                        1 << 20,
                        |t| whole.contains(&t),
                        |t| seen.push(t),
                    )
                    .expect("valid stream");
                match next {
                    Next::More { relay } => {
                        relayed.extend_from_slice(&held[from..from + relay]);
                        from += relay;
                        break;
                    }
                    Next::Whole { at, end } => {
                        relayed.extend_from_slice(&held[from..from + at]);
                        taken.push(held[from + at..from + end].to_vec());
                        from += end;
                    }
                }
            }
            held.drain(..from);
        }
        assert!(held.is_empty(), "bytes left over: {held:?}");
        (relayed, seen, taken)
    }

    /// pgbench -S's reply to one simple Query, as PostgreSQL 15 sends it.
    fn select_reply() -> Vec<u8> {
        let mut s = msg(b'T', b"\x00\x01abalance\x00\x00\x00\x40\x05\x00\x03\x00\x00\x00\x17\x00\x04\xff\xff\xff\xff\x00\x00");
        s.extend(msg(b'D', b"\x00\x01\x00\x00\x00\x01\x30"));
        s.extend(msg(b'C', b"SELECT 1\x00"));
        s.extend(msg(b'Z', b"I"));
        s
    }

    #[test]
    fn every_split_relays_the_same_bytes_and_takes_out_the_same_messages() {
        let mut stream = select_reply();
        stream.extend(msg(b'E', b"SERROR\x00C42601\x00Mx\x00\x00"));
        stream.extend(msg(b'Z', b"E"));
        let want_taken = vec![
            msg(b'Z', b"I"),
            msg(b'E', b"SERROR\x00C42601\x00Mx\x00\x00"),
            msg(b'Z', b"E"),
        ];
        let want_seen = b"TDCZEZ".to_vec();
        for a in 0..=stream.len() {
            for b in a..=stream.len() {
                let (relayed, seen, taken) = relay(&stream, &[a, b], b"ZE");
                let mut expect = stream.clone();
                for t in &want_taken {
                    let at = expect
                        .windows(t.len())
                        .position(|w| w == &t[..])
                        .expect("taken message is in the stream");
                    expect.drain(at..at + t.len());
                }
                assert_eq!(relayed, expect, "cuts {a} {b}");
                assert_eq!(seen, want_seen, "cuts {a} {b}");
                assert_eq!(taken, want_taken, "cuts {a} {b}");
            }
        }
    }

    #[test]
    fn a_long_body_is_relayed_as_it_arrives() {
        let row = msg(b'D', &[7u8; 100]);
        let mut frames = Frames::default();
        let step = |f: &mut Frames, b: &[u8]| f.next(b, 1 << 20, |t| t == b'Z', |_| {});
        assert_eq!(step(&mut frames, &row[..40]), Ok(Next::More { relay: 40 }));
        assert_eq!(
            step(&mut frames, &row[40..90]),
            Ok(Next::More { relay: 50 })
        );
        let mut rest = row[90..].to_vec();
        rest.extend(msg(b'Z', b"I"));
        assert_eq!(
            step(&mut frames, &rest),
            Ok(Next::Whole { at: 15, end: 21 })
        );
    }

    #[test]
    fn a_split_header_waits_and_is_seen_once() {
        let stream = msg(b'Q', b"SELECT 1\x00");
        let mut frames = Frames::default();
        let mut seen = Vec::new();
        let r = frames.next(&stream[..3], 1 << 20, |_| false, |t| seen.push(t));
        assert_eq!(r, Ok(Next::More { relay: 0 }));
        let r = frames.next(&stream, 1 << 20, |_| false, |t| seen.push(t));
        assert_eq!(
            r,
            Ok(Next::More {
                relay: stream.len()
            })
        );
        assert_eq!(seen, b"Q");
    }

    #[test]
    fn bad_lengths_are_errors_at_their_header() {
        let mut stream = msg(b'S', b"");
        stream.extend_from_slice(b"Q\x00\x00\x00\x03");
        let mut frames = Frames::default();
        let r = frames.next(&stream, 1 << 20, |_| false, |_| {});
        assert_eq!(
            r,
            Err(BadFrame {
                at: 5,
                error: DecodeError::BadLength(3)
            })
        );
        let big = msg(b'd', &[0u8; 64]);
        let r = Frames::default().next(&big, 32, |_| false, |_| {});
        assert_eq!(
            r,
            Err(BadFrame {
                at: 0,
                error: DecodeError::TooLong { len: 69, max: 32 }
            })
        );
    }
}
