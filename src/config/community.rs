//! BGP values that appear in the configuration as well as on the wire: communities and
//! AS_TRANS. They live here, with the configuration, so that config depends on nothing else
//! in the crate; the BGP speaker re-exports them and encodes them on the wire.

/// AS_TRANS, the 2-octet stand-in for an AS number that does not fit in
/// 16 bits (RFC 6793 §9).
pub const AS_TRANS: u16 = 23456;

/// An RFC 1997 community, high 16 bits an AS number, low 16 a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StandardCommunity(pub u32);

impl StandardCommunity {
    /// GRACEFUL_SHUTDOWN, 65535:0 (RFC 8326 §3).
    pub const GRACEFUL_SHUTDOWN: Self = StandardCommunity(0xffff_0000);
    /// NO_EXPORT (RFC 1997).
    pub const NO_EXPORT: Self = StandardCommunity(0xffff_ff01);
    /// NO_ADVERTISE (RFC 1997).
    pub const NO_ADVERTISE: Self = StandardCommunity(0xffff_ff02);
    /// NO_EXPORT_SUBCONFED (RFC 1997).
    pub const NO_EXPORT_SUBCONFED: Self = StandardCommunity(0xffff_ff03);

    pub fn new(asn: u16, value: u16) -> Self {
        StandardCommunity((u32::from(asn) << 16) | u32::from(value))
    }
}

/// An RFC 8092 large community.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LargeCommunity {
    pub global_admin: u32,
    pub local_data_1: u32,
    pub local_data_2: u32,
}
