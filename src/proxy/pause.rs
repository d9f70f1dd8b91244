//! Pausing a listener for a drain without refusing anyone.

use tokio::net::TcpListener;

/// Classic BPF opcodes (linux/filter.h) for the pause filter.
const BPF_LD_B_ABS: u16 = 0x30;
const BPF_JMP_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;
/// The TCP header's flags octet (RFC 9293 §3.1); a TCP socket filter sees the packet from the
/// TCP header on.
const TCP_FLAGS_OFFSET: u32 = 13;
const TCP_SYN: u32 = 0x02;

/// Pauses a listener for a drain: new connection attempts (SYNs) are dropped silently, so a
/// client retransmits its SYN (after ~1 s on Linux) instead of being refused — by then the
/// anycast prefix is withdrawn and the retry reaches another balancer. The mechanism is a
/// classic BPF socket filter: on a listening TCP socket the kernel applies it to every packet
/// the listener handles, SYNs and also the ACKs that complete handshakes already answered.
/// Only SYNs are dropped, so those handshakes complete and the drain's quiesce waits for
/// their sessions; dropping the ACK too would leave such a client sending its startup
/// packet to a half-open connection that the withdrawal then moves to another balancer.
pub fn pause_accepting(listener: &TcpListener) -> std::io::Result<()> {
    use socket2::SockFilter;
    let drop_syns = [
        SockFilter::new(BPF_LD_B_ABS, 0, 0, TCP_FLAGS_OFFSET),
        // SYN set: next instruction (drop); otherwise skip it (keep).
        SockFilter::new(BPF_JMP_JSET_K, 0, 1, TCP_SYN),
        SockFilter::new(BPF_RET_K, 0, 0, 0),
        SockFilter::new(BPF_RET_K, 0, 0, u32::MAX),
    ];
    socket2::SockRef::from(listener).attach_filter(&drop_syns)
}

/// Undoes [`pause_accepting`] (after `pgcast drain`: the prefix is withdrawn, and clients that
/// use this balancer's own address are served again).
pub fn resume_accepting(listener: &TcpListener) -> std::io::Result<()> {
    socket2::SockRef::from(listener).detach_filter()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn connects(addr: std::net::SocketAddr) -> Option<TcpStream> {
        // A dropped SYN is retransmitted after 1 s: 300 ms tells paused from open.
        tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr))
            .await
            .ok()
            .and_then(Result::ok)
    }

    #[tokio::test]
    async fn paused_listener_drops_new_syns_keeps_accepted_connections_and_resumes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut before = connects(addr).await.expect("connect before the pause");
        let (mut served, _) = listener.accept().await.expect("accept");

        pause_accepting(&listener).expect("pause");
        assert!(connects(addr).await.is_none(), "a new SYN is dropped");
        // The connection from before still carries data both ways.
        before.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        served.read_exact(&mut buf).await.expect("read");
        served.write_all(b"pong").await.expect("write back");
        before.read_exact(&mut buf).await.expect("read back");
        assert_eq!(&buf, b"pong");

        resume_accepting(&listener).expect("resume");
        let _after = connects(addr).await.expect("connect after resuming");
        tokio::time::timeout(Duration::from_secs(2), listener.accept())
            .await
            .expect("accept after resuming")
            .expect("accepted");
    }
}
