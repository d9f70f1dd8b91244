//! Bodies of the fuzz targets: one pure function per decoder that takes arbitrary bytes, runs
//! them through the decoder and checks what must hold for any input.
//!
//! They live in the library, not in the `fuzz/` crate, so that the same bodies run in two
//! places: under libFuzzer (`fuzz/fuzz_targets/*.rs` only call them; `bench/fuzz` runs them for
//! a given time) and in the plain `cargo test` suite (`tests/fuzz_smoke.rs` runs them over the
//! seed corpus under `fuzz/seeds/` and a bounded number of deterministic mutations).
//!
//! A broken invariant panics on purpose: a panic is how libFuzzer and the smoke test learn
//! about it. The decoders themselves never panic on input; a panic that starts inside one is a
//! bug of that decoder.
//!
//! Where the wire format has a checksum or a fixed header that random mutation would almost
//! never get right, a target takes a mode from its first input byte and repairs those fields
//! itself in some modes, so the fuzzer reaches the decoders behind them.

mod anycast;
mod proxy;

pub use anycast::{bfd, bgp, ospf};
pub use proxy::{classify, message, sasl, startup};

/// A target's body: any bytes in, a panic for a bug.
pub type Body = fn(&[u8]);

/// Every target's name with its body, in the order `bench/fuzz` runs them. The names are the
/// `fuzz/fuzz_targets/<name>.rs` files and the `fuzz/seeds/<name>/` directories.
pub const TARGETS: &[(&str, Body)] = &[
    ("startup", startup),
    ("message", message),
    ("sasl", sasl),
    ("classify", classify),
    ("ospf", ospf),
    ("bgp", bgp),
    ("bfd", bfd),
];

/// Splits the mode byte off an input: `(mode, rest)`; an empty input is mode 0 with no bytes.
fn mode(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((&mode, rest)) => (mode, rest),
        None => (0, data),
    }
}
