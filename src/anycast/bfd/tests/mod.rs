//! Unit tests of the BFD speaker, one file per concern: `codec` (exact bytes, RFC 5880
//! §6.8.6 rejections), `proptests`, `fixtures` (packets captured from FRR), `fsm` (scripted
//! sessions), `sessions` (the session set) and `io` (the actor over loopback UDP). Paths are
//! relative (`super::super`) so the folder moves with the module. Shared helpers below.

mod codec;
mod fixtures;
mod fsm;
mod io;
mod proptests;
mod sessions;

use bytes::BytesMut;

use super::packet::{ControlPacket, Diag, Flags, State};

fn sample() -> ControlPacket {
    ControlPacket {
        diag: Diag::NeighborSignaledSessionDown,
        state: State::Up,
        flags: Flags {
            poll: true,
            ..Flags::default()
        },
        detect_mult: 3,
        my_discr: 0x0102_0304,
        your_discr: 0xa0b0_c0d0,
        desired_min_tx: 100_000,
        required_min_rx: 300_000,
        required_min_echo_rx: 0,
    }
}

fn encoded(p: &ControlPacket) -> Vec<u8> {
    let mut out = BytesMut::new();
    p.encode(&mut out);
    out.to_vec()
}
