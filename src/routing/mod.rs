//! Anycast announcement of the proxy's address. `ospf` is the embedded OSPFv2 speaker
//! (RFC 2328): a pure codec, pure state machines and one actor that owns the sockets.
pub mod ospf;
