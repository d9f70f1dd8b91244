//! Client buffers given back between transactions, kept per worker thread for the next session
//! that needs one.
//!
//! A session that holds no backend connection gives its empty buffers back
//! (`Session::shrink_when_idle`), so an idle client costs next to nothing; in transaction mode
//! that is after every transaction, and each transaction then allocated its read buffer and
//! grew its write buffer again (callgrind: 1.1k of pgcast's 16.4k instructions per pgbench
//! transaction in `BytesMut::reserve_inner` alone). A few spares per thread are handed out
//! again instead. They are bounded in number and size, so idle clients still hold nothing.

use std::cell::RefCell;

use bytes::BytesMut;

/// Which of a session's buffers: the two are sized differently.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// What the client sent (`client_buf`).
    Read = 0,
    /// What the client is sent (`client_out`).
    Write = 1,
}

/// Spares of each kind per thread.
const MAX_SPARES: usize = 16;
/// Larger buffers (a large message went through) go back to the allocator.
const MAX_SPARE_CAPACITY: usize = 16 * 1024;

thread_local! {
    static SPARES: RefCell<[Vec<BytesMut>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

/// Keeps an emptied buffer's room for the next session, if it is worth keeping and there is
/// space; else frees it.
pub fn give_back(kind: Kind, mut buf: BytesMut) {
    buf.clear();
    if buf.capacity() == 0 || buf.capacity() > MAX_SPARE_CAPACITY {
        return;
    }
    SPARES.with(|s| {
        let list = &mut s.borrow_mut()[kind as usize];
        if list.len() < MAX_SPARES {
            list.push(buf);
        }
    });
}

/// An empty buffer with room for `min` bytes at least: a spare, else a new one of `new`.
pub fn take(kind: Kind, min: usize, new: usize) -> BytesMut {
    let spare = SPARES.with(|s| s.borrow_mut()[kind as usize].pop());
    match spare {
        Some(buf) if buf.capacity() >= min => buf,
        _ => BytesMut::with_capacity(new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_back_buffer_is_handed_out_again_and_large_ones_are_not_kept() {
        let mut buf = BytesMut::with_capacity(4096);
        buf.extend_from_slice(b"done");
        let at = buf.as_ptr();
        give_back(Kind::Read, buf);
        let again = take(Kind::Read, 1024, 8192);
        assert_eq!(
            (again.as_ptr(), again.len()),
            (at, 0),
            "the same room, empty"
        );
        assert!(
            take(Kind::Write, 0, 64).capacity() >= 64,
            "none of the other kind"
        );
        give_back(Kind::Read, BytesMut::with_capacity(MAX_SPARE_CAPACITY + 1));
        assert_eq!(take(Kind::Read, 0, 10).capacity(), 10, "too large to keep");
    }
}
