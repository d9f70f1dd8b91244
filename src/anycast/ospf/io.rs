//! The OSPF actor: owns one raw IP socket (protocol 89) per interface and the instance's
//! timers, feeds received packets to the pure [`Instance`], and sends what it asks for.
//! Nothing here decides anything about OSPF.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot, watch};

use super::auth::{self, AuthConfig, AuthKey, HmacKeying};
use super::instance::{
    Action, Announcement, ExternalConfig, Input, Instance, InstanceConfig, InterfaceConfig,
    NetworkType,
};
use super::packet::{ALL_SPF_ROUTERS, IP_PROTO_OSPF};
use super::status::OspfStatus;
use crate::config::{HmacKeyPreparation, OspfAuth, OspfConfig, OspfNetwork};

/// Errors setting up the OSPF speaker (runtime packet problems are counted, not errors).
#[derive(Debug, thiserror::Error)]
pub enum OspfIoError {
    #[error("interface {0}: not found")]
    NoInterface(String),
    #[error("interface {0}: has no IPv4 address")]
    NoAddress(String),
    #[error("interface {name}: raw OSPF socket: {source} (needs CAP_NET_RAW)")]
    Socket {
        name: String,
        source: std::io::Error,
    },
}

/// IPv4 header TOS for OSPF: precedence "internetwork control" (RFC 2328 A.1).
const TOS_INTERNETWORK_CONTROL: u32 = 0xc0;

/// Commands to the actor.
enum Command {
    Announce(Vec<Announcement>),
    Shutdown(oneshot::Sender<()>),
}

/// Handle to a running OSPF speaker.
#[derive(Clone)]
pub struct OspfHandle {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<Option<OspfStatus>>,
}

impl OspfHandle {
    /// Replaces the set of announced prefixes.
    pub async fn announce(&self, list: Vec<Announcement>) {
        let _ = self.commands.send(Command::Announce(list)).await;
    }

    /// Flushes our LSAs (MaxAge) and stops; returns when they were acknowledged or after one
    /// retransmit interval.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    pub fn status_receiver(&self) -> watch::Receiver<Option<OspfStatus>> {
        self.status.clone()
    }
}

struct IfaceSocket {
    ifindex: u32,
    sock: Arc<AsyncFd<Socket>>,
    auth: AuthKey,
}

/// Resolves the interfaces, opens the sockets and starts the actor.
pub fn spawn(cfg: &OspfConfig) -> Result<OspfHandle, OspfIoError> {
    let mut interfaces = Vec::new();
    let mut sockets = Vec::new();
    let (pkt_tx, pkt_rx) = mpsc::channel::<Input>(1024);
    for ic in &cfg.interfaces {
        let ifindex = nix::net::if_::if_nametoindex(ic.name.as_str())
            .map_err(|_| OspfIoError::NoInterface(ic.name.clone()))?;
        let (address, prefix_len) = ipv4_of(&ic.name)?;
        let mtu = std::fs::read_to_string(format!("/sys/class/net/{}/mtu", ic.name))
            .ok()
            .and_then(|s| s.trim().parse::<u16>().ok())
            .unwrap_or(1500);
        let auth = auth_config(&ic.auth);
        let sock =
            open_socket(&ic.name, ifindex, address).map_err(|source| OspfIoError::Socket {
                name: ic.name.clone(),
                source,
            })?;
        let registered = crate::sys::async_fd_readable(sock);
        let sock = Arc::new(registered.map_err(|e| OspfIoError::Socket {
            name: ic.name.clone(),
            source: std::io::Error::other(e.to_string()),
        })?);
        tokio::spawn(receive_loop(
            Arc::clone(&sock),
            ifindex,
            auth.clone(),
            pkt_tx.clone(),
        ));
        sockets.push(IfaceSocket {
            ifindex,
            sock,
            auth: auth.send.clone(),
        });
        interfaces.push(InterfaceConfig {
            name: ic.name.clone(),
            ifindex,
            address,
            prefix_len,
            network_type: match ic.network {
                OspfNetwork::Broadcast => NetworkType::Broadcast,
                OspfNetwork::PointToPoint => NetworkType::PointToPoint,
            },
            hello_interval: ic.hello_interval,
            dead_interval: ic.dead_interval,
            retransmit_interval: ic.retransmit_interval,
            transmit_delay: ic.transmit_delay,
            cost: ic.cost,
            priority: ic.priority,
            mtu,
            mtu_ignore: ic.mtu_ignore,
            auth,
        });
        tracing::info!(interface = %ic.name, ifindex, %address, prefix_len, mtu, "ospf: interface up");
    }
    let instance_cfg = InstanceConfig {
        router_id: cfg.router_id,
        area_id: cfg.area,
        interfaces,
        lsdb_max_lsas: cfg.lsdb_max_lsas,
        min_ls_interval: cfg.min_ls_interval,
        external: cfg.external.as_ref().map(|e| ExternalConfig {
            type2: e.type2,
            metric: e.metric,
            tag: e.tag,
        }),
    };
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let (status_tx, status_rx) = watch::channel(None);
    tokio::spawn(actor(instance_cfg, sockets, pkt_rx, cmd_rx, status_tx));
    Ok(OspfHandle {
        commands: cmd_tx,
        status: status_rx,
    })
}

fn auth_config(a: &OspfAuth) -> AuthConfig {
    let key = match a {
        OspfAuth::None => AuthKey::Null,
        OspfAuth::Simple(pw) => AuthKey::simple(pw.as_bytes()),
        OspfAuth::Md5 { key_id, key } => AuthKey::Md5 {
            key_id: *key_id,
            key: key.as_bytes().to_vec(),
        },
        OspfAuth::HmacSha256 {
            key_id,
            key,
            preparation,
        } => AuthKey::HmacSha256 {
            key_id: *key_id,
            key: key.as_bytes().to_vec(),
            keying: match preparation {
                HmacKeyPreparation::Rfc5709 => HmacKeying::Rfc5709,
                HmacKeyPreparation::Rfc2104 => HmacKeying::Rfc2104,
            },
        },
    };
    AuthConfig::single(key)
}

fn ipv4_of(name: &str) -> Result<(Ipv4Addr, u8), OspfIoError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|_| OspfIoError::NoInterface(name.into()))?;
    for ifa in addrs {
        if ifa.interface_name != name {
            continue;
        }
        let Some(addr) = ifa.address.as_ref().and_then(|a| a.as_sockaddr_in()) else {
            continue;
        };
        let mask = ifa
            .netmask
            .as_ref()
            .and_then(|m| m.as_sockaddr_in())
            .map(|m| u32::from(m.ip()).count_ones() as u8)
            .unwrap_or(32);
        return Ok((addr.ip(), mask));
    }
    Err(OspfIoError::NoAddress(name.into()))
}

fn open_socket(name: &str, ifindex: u32, address: Ipv4Addr) -> std::io::Result<Socket> {
    let sock = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(i32::from(IP_PROTO_OSPF))),
    )?;
    sock.bind_device(Some(name.as_bytes()))?;
    // Without the join nothing sent to AllSPFRouters is received.
    sock.join_multicast_v4_n(&ALL_SPF_ROUTERS, &InterfaceIndexOrAddress::Index(ifindex))?;
    sock.set_multicast_if_v4(&address)?;
    // RFC 2328 A.1: OSPF packets never leave the link.
    sock.set_multicast_ttl_v4(1)?;
    sock.set_ttl_v4(1)?;
    sock.set_multicast_loop_v4(false)?;
    // Only the groups joined on this socket, not every group joined on the host.
    sock.set_multicast_all_v4(false)?;
    sock.set_tos_v4(TOS_INTERNETWORK_CONTROL)?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// Reads packets, strips the IP header, decodes and authenticates, and hands them to the actor.
async fn receive_loop(
    sock: Arc<AsyncFd<Socket>>,
    ifindex: u32,
    auth: AuthConfig,
    tx: mpsc::Sender<Input>,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok(mut guard) = sock.readable().await else {
            return;
        };
        let n = match guard.try_io(|s| {
            let mut socket: &Socket = s.get_ref();
            socket.read(&mut buf)
        }) {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                crate::log_limited!(debug, error = %e, "ospf: receive failed");
                continue;
            }
            Err(_would_block) => continue,
        };
        let input = match split_ip(buf.get(..n).unwrap_or_default()) {
            None => Input::DecodeFailed {
                ifindex,
                reason: "bad_ip_header",
            },
            Some((src, dst, payload)) => match auth::decode_packet(payload, &auth) {
                Ok(received) => Input::Packet {
                    ifindex,
                    src,
                    dst,
                    received,
                },
                Err(e) => Input::DecodeFailed {
                    ifindex,
                    reason: e.reason(),
                },
            },
        };
        if tx.send(input).await.is_err() {
            return;
        }
    }
}

/// Source, destination and payload of a raw IPv4 datagram (the kernel delivers the header).
fn split_ip(d: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, &[u8])> {
    let ihl = usize::from(d.first()? & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*d.get(2)?, *d.get(3)?]));
    let src = Ipv4Addr::new(*d.get(12)?, *d.get(13)?, *d.get(14)?, *d.get(15)?);
    let dst = Ipv4Addr::new(*d.get(16)?, *d.get(17)?, *d.get(18)?, *d.get(19)?);
    let end = total.min(d.len());
    if ihl < 20 || end < ihl {
        return None;
    }
    Some((src, dst, d.get(ihl..end)?))
}

/// RFC 2328 D.4.3 allows the cryptographic sequence number to stay equal but never to go
/// down, also across our restarts: seconds since the epoch satisfy both.
fn crypto_seq() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

async fn actor(
    cfg: InstanceConfig,
    sockets: Vec<IfaceSocket>,
    mut packets: mpsc::Receiver<Input>,
    mut commands: mpsc::Receiver<Command>,
    status: watch::Sender<Option<OspfStatus>>,
) {
    let mut inst = Instance::new(cfg, Instant::now());
    let mut shutdown_reply: Option<oneshot::Sender<()>> = None;
    // The instance queued its first Hellos at construction.
    let first = inst.step(Instant::now(), Input::Timer);
    let mut done = execute(&sockets, first);
    loop {
        status.send_replace(Some(inst.status(Instant::now())));
        if done {
            if let Some(reply) = shutdown_reply.take() {
                let _ = reply.send(());
            }
            return;
        }
        let deadline = inst.next_deadline();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        let input = tokio::select! {
            Some(i) = packets.recv() => i,
            c = commands.recv() => match c {
                Some(Command::Announce(list)) => Input::SetAnnouncements(list),
                Some(Command::Shutdown(reply)) => {
                    shutdown_reply = Some(reply);
                    Input::Shutdown
                }
                // Every handle is gone: flush, as on a shutdown nobody waits for.
                None => Input::Shutdown,
            },
            _ = sleep => Input::Timer,
        };
        let actions = inst.step(Instant::now(), input);
        done = execute(&sockets, actions);
    }
}

/// Sends what the instance asked for; true once the shutdown flush is complete.
fn execute(sockets: &[IfaceSocket], actions: Vec<Action>) -> bool {
    let mut done = false;
    let mut buf = BytesMut::with_capacity(1500);
    for a in actions {
        match a {
            Action::ShutdownComplete => done = true,
            Action::Send {
                ifindex,
                dst,
                packet,
            } => {
                let Some(s) = sockets.iter().find(|s| s.ifindex == ifindex) else {
                    continue;
                };
                buf.clear();
                auth::encode_packet(&packet, &s.auth, crypto_seq(), &mut buf);
                let to = SockAddr::from(SocketAddrV4::new(dst, 0));
                // Raw sends do not block in practice; a full socket buffer drops the packet,
                // which OSPF's retransmissions cover.
                if let Err(e) = s.sock.get_ref().send_to(&buf, &to) {
                    tracing::debug!(error = %e, %dst, "ospf: send failed");
                }
            }
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_header_is_stripped() {
        let mut d = vec![0x45, 0xc0, 0, 28, 0, 0, 0, 0, 1, 89, 0, 0];
        d.extend([198, 18, 1, 90, 224, 0, 0, 5]);
        d.extend([2, 1, 0, 8, 9, 9, 9, 9]);
        let (src, dst, payload) = split_ip(&d).expect("valid");
        assert_eq!(src, Ipv4Addr::new(198, 18, 1, 90));
        assert_eq!(dst, Ipv4Addr::new(224, 0, 0, 5));
        assert_eq!(payload, &[2, 1, 0, 8, 9, 9, 9, 9]);
        assert!(split_ip(&d[..10]).is_none());
        let mut bad = d.clone();
        bad[0] = 0x44; // IHL 16 bytes: not a valid IPv4 header
        assert!(split_ip(&bad).is_none());
    }
}
