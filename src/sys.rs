//! The operating-system boundary: every `unsafe` block of the crate is in this module, behind
//! safe functions. The rest of the crate is compiled with `#![deny(unsafe_code)]` (src/lib.rs),
//! so a new system call has to come here with its SAFETY argument.
//!
//! - thread scheduling: [`set_current_thread_round_robin`], [`current_thread_scheduling`];
//! - socket options the standard library, socket2 and nix do not offer: [`set_tcp_md5sig`],
//!   [`set_ip_ttl`], [`set_ip_minttl`];
//! - registering a raw socket with the tokio reactor: [`async_fd_readable`];
//! - the open-files limit: [`raise_nofile_limit`] (safe through nix; here because it is the
//!   process's boundary with the system, like the rest).

use std::io;
use std::mem::size_of;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::libc;
use socket2::Socket;
use tokio::io::unix::{AsyncFd, AsyncFdRegisterError};
use tokio::io::Interest;

// --- Thread scheduling -----------------------------------------------------------------------
//
// Why the routing thread runs under SCHED_RR: BFD detects a dead balancer after 300 ms of
// silence (100 ms x 3), so a packet must leave within tens of milliseconds of its timer. On a
// busy host a sleeping thread can wait 200 ms and more to be scheduled after its timer fires
// (measured in the lab: `epoll_wait` with a 23 ms timeout returned after 192 ms while pgbench
// loaded the proxies), and the router declares the balancer dead although it is fine. Under
// SCHED_RR the thread runs as soon as it wakes; the speakers use little CPU, and the kernel's
// real-time throttling bounds what a runaway could take.

/// Puts the calling thread under SCHED_RR at `priority` (1..=99). Threads it would fork do
/// not inherit it (SCHED_RESET_ON_FORK). Fails without root or CAP_SYS_NICE (EPERM).
pub fn set_current_thread_round_robin(priority: u8) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: `param` is a valid, initialised sched_param; pid 0 names the calling thread.
    let rc =
        unsafe { libc::sched_setscheduler(0, libc::SCHED_RR | libc::SCHED_RESET_ON_FORK, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// How the calling thread is scheduled, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadScheduling {
    /// `libc::SCHED_*`, without the SCHED_RESET_ON_FORK flag.
    pub policy: libc::c_int,
    /// The static priority (0 under SCHED_OTHER).
    pub priority: libc::c_int,
}

/// Reads the calling thread's scheduling policy and priority.
pub fn current_thread_scheduling() -> ThreadScheduling {
    // SAFETY: sched_getscheduler and sched_getparam only read the calling thread's (pid 0)
    // settings into a valid sched_param.
    let (policy, param) = unsafe {
        let mut param = libc::sched_param { sched_priority: 0 };
        let policy = libc::sched_getscheduler(0);
        libc::sched_getparam(0, &mut param);
        (policy & !libc::SCHED_RESET_ON_FORK, param)
    };
    ThreadScheduling {
        policy,
        priority: param.sched_priority,
    }
}

// --- Socket options --------------------------------------------------------------------------

/// Longest key Linux accepts (`TCP_MD5SIG_MAXKEYLEN`).
pub const TCP_MD5SIG_MAXKEYLEN: usize = 80;

/// `struct tcp_md5sig` of `<linux/tcp.h>`: libc does not define it.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefix_len: u8,
    key_len: u16,
    ifindex: libc::c_int,
    key: [u8; TCP_MD5SIG_MAXKEYLEN],
}

/// Sets `TCP_MD5SIG` (RFC 2385) on `fd` for `peer` with `key`; an empty `key` removes it.
/// A key longer than [`TCP_MD5SIG_MAXKEYLEN`] is refused with `InvalidInput`.
pub fn set_tcp_md5sig(fd: BorrowedFd<'_>, peer: Ipv4Addr, key: &[u8]) -> io::Result<()> {
    if key.len() > TCP_MD5SIG_MAXKEYLEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TCP-MD5 key of {} bytes", key.len()),
        ));
    }
    // SAFETY: an all-zero sockaddr_storage is a valid value (AF_UNSPEC).
    let mut sig = TcpMd5Sig {
        addr: unsafe { std::mem::zeroed() },
        flags: 0,
        prefix_len: 0,
        key_len: key.len() as u16,
        ifindex: 0,
        key: [0; TCP_MD5SIG_MAXKEYLEN],
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
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_MD5SIG, &sig)
}

/// Sets `IP_TTL`, the TTL of the packets `fd` sends.
pub fn set_ip_ttl(fd: BorrowedFd<'_>, ttl: libc::c_int) -> io::Result<()> {
    setsockopt(fd, libc::IPPROTO_IP, libc::IP_TTL, &ttl)
}

/// Sets `IP_MINTTL`: the kernel drops packets for `fd` that arrive with a lower TTL.
pub fn set_ip_minttl(fd: BorrowedFd<'_>, min: libc::c_int) -> io::Result<()> {
    setsockopt(fd, libc::IPPROTO_IP, libc::IP_MINTTL, &min)
}

/// Private: only the option/type pairs above (whose `T` is what the kernel expects for that
/// option) are exposed.
fn setsockopt<T>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points to a live, initialised T of the size we pass; `fd` is borrowed,
    // so it is open for the duration of the call.
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
        Err(io::Error::last_os_error())
    }
}

// --- The open-files limit ---------------------------------------------------------------------
//
// Why: every client, pre-login connection and backend connection is a descriptor, and the soft
// limit a process inherits is often 1024 (systemd's default, a login shell's) while the hard
// limit is far higher. At 1024, max_client_connections = 1000 cannot be reached and a flood
// runs pgcast out of descriptors long before the pre-login budget refuses anything.

/// The open-files limit before and after raising the soft limit to the hard one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    pub soft_before: u64,
    pub soft: u64,
    pub hard: u64,
}

/// Raises RLIMIT_NOFILE's soft limit to its hard limit (allowed without privileges).
pub fn raise_nofile_limit() -> io::Result<NofileLimit> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft_before, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft_before < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    Ok(NofileLimit {
        soft_before,
        soft,
        hard,
    })
}

// --- The tokio reactor -----------------------------------------------------------------------

/// Registers `sock` with the current tokio runtime's reactor for readability. Must be called
/// within a tokio runtime (panics otherwise, as `AsyncFd` does).
pub fn async_fd_readable(sock: Socket) -> Result<AsyncFd<Socket>, AsyncFdRegisterError<Socket>> {
    // SAFETY: the socket2::Socket owns its descriptor, which stays open and unchanged until
    // the AsyncFd (which owns the Socket) is dropped or gives the Socket back; `as_raw_fd`
    // of a Socket always returns that same descriptor.
    unsafe { AsyncFd::register_with_interest(sock, Interest::READABLE) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_struct_matches_the_kernel_layout() {
        // 128 (sockaddr_storage) + 1 + 1 + 2 + 4 (ifindex) + 80 = 216 bytes.
        assert_eq!(size_of::<TcpMd5Sig>(), 216);
    }
}
