//! Socket options of BGP connections that the standard library and socket2 do not offer:
//! TCP-MD5 signatures (RFC 2385, Linux `TCP_MD5SIG`) and GTSM (RFC 5082, `IP_MINTTL`).
//! The system calls are in `crate::sys`; this module holds what BGP makes of them.

use std::net::Ipv4Addr;
use std::os::fd::BorrowedFd;

use crate::sys;

/// Longest key Linux accepts (`TCP_MD5SIG_MAXKEYLEN`).
pub const MD5_MAX_KEY_LEN: usize = sys::TCP_MD5SIG_MAXKEYLEN;

#[derive(Debug, thiserror::Error)]
pub enum SockoptError {
    #[error("TCP-MD5 key is {0} bytes; Linux accepts 1 to 80")]
    KeyLength(usize),
    #[error("setsockopt {option}: {source}")]
    Setsockopt {
        option: &'static str,
        source: std::io::Error,
    },
}

/// Signs and checks every segment exchanged with `peer` with `key` (RFC 2385). On a listening
/// socket it covers the connections accepted from `peer`; an empty `key` removes it.
pub fn set_tcp_md5(fd: BorrowedFd<'_>, peer: Ipv4Addr, key: &[u8]) -> Result<(), SockoptError> {
    if key.len() > MD5_MAX_KEY_LEN {
        return Err(SockoptError::KeyLength(key.len()));
    }
    sys::set_tcp_md5sig(fd, peer, key).map_err(setsockopt_error("TCP_MD5SIG"))
}

/// GTSM for a directly connected peer (RFC 5082 section 3): send with TTL 255 and drop every
/// segment that arrives with a TTL below 254, which no packet from further away can have.
pub fn set_gtsm(fd: BorrowedFd<'_>) -> Result<(), SockoptError> {
    set_ttl_255(fd)?;
    sys::set_ip_minttl(fd, 254).map_err(setsockopt_error("IP_MINTTL"))
}

/// The sending half of GTSM alone.
pub fn set_ttl_255(fd: BorrowedFd<'_>) -> Result<(), SockoptError> {
    sys::set_ip_ttl(fd, 255).map_err(setsockopt_error("IP_TTL"))
}

fn setsockopt_error(option: &'static str) -> impl FnOnce(std::io::Error) -> SockoptError {
    move |source| SockoptError::Setsockopt { option, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn md5_key_is_accepted_on_a_tcp_socket_and_length_checked() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        set_tcp_md5(listener.as_fd(), Ipv4Addr::LOCALHOST, b"secret").expect("set key");
        set_tcp_md5(listener.as_fd(), Ipv4Addr::LOCALHOST, b"").expect("remove key");
        let long = [b'k'; 81];
        assert!(matches!(
            set_tcp_md5(listener.as_fd(), Ipv4Addr::LOCALHOST, &long),
            Err(SockoptError::KeyLength(81))
        ));
        set_gtsm(listener.as_fd()).expect("gtsm");
    }
}
