//! Socket options of BGP connections that the standard library and socket2 do not offer:
//! TCP-MD5 signatures (RFC 2385, Linux `TCP_MD5SIG`) and GTSM (RFC 5082, `IP_MINTTL`).

use std::mem::size_of;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::libc;

/// Longest key Linux accepts (`TCP_MD5SIG_MAXKEYLEN`).
pub const MD5_MAX_KEY_LEN: usize = 80;

/// `struct tcp_md5sig` of `<linux/tcp.h>`: libc does not define it.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefix_len: u8,
    key_len: u16,
    ifindex: libc::c_int,
    key: [u8; MD5_MAX_KEY_LEN],
}

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
    // SAFETY: an all-zero sockaddr_storage is a valid value (AF_UNSPEC).
    let mut sig = TcpMd5Sig {
        addr: unsafe { std::mem::zeroed() },
        flags: 0,
        prefix_len: 0,
        key_len: key.len() as u16,
        ifindex: 0,
        key: [0; MD5_MAX_KEY_LEN],
    };
    sig.key[..key.len()].copy_from_slice(key);
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(peer).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned for it.
    unsafe {
        std::ptr::write(
            std::ptr::addr_of_mut!(sig.addr).cast::<libc::sockaddr_in>(),
            sin,
        )
    };
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_MD5SIG, "TCP_MD5SIG", &sig)
}

/// GTSM for a directly connected peer (RFC 5082 section 3): send with TTL 255 and drop every
/// segment that arrives with a TTL below 254, which no packet from further away can have.
pub fn set_gtsm(fd: BorrowedFd<'_>) -> Result<(), SockoptError> {
    set_ttl_255(fd)?;
    let min: libc::c_int = 254;
    setsockopt(fd, libc::IPPROTO_IP, libc::IP_MINTTL, "IP_MINTTL", &min)
}

/// The sending half of GTSM alone.
pub fn set_ttl_255(fd: BorrowedFd<'_>) -> Result<(), SockoptError> {
    let ttl: libc::c_int = 255;
    setsockopt(fd, libc::IPPROTO_IP, libc::IP_TTL, "IP_TTL", &ttl)
}

fn setsockopt<T>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    option: &'static str,
    value: &T,
) -> Result<(), SockoptError> {
    // SAFETY: `value` points to a live, initialised T of the size we pass.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(SockoptError::Setsockopt {
            option,
            source: std::io::Error::last_os_error(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn md5_struct_matches_the_kernel_layout() {
        // 128 (sockaddr_storage) + 1 + 1 + 2 + 4 (ifindex) + 80 = 216 bytes.
        assert_eq!(size_of::<TcpMd5Sig>(), 216);
    }

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
