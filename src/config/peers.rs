//! `[[peers]]`: the other balancers of the same anycast group. With anycast a client's
//! CancelRequest (a new TCP connection) may reach a different balancer than the one holding the
//! session; the top byte of the cancel secret names the issuer's `node.id`, and this list says
//! where that issuer can be reached, so the request can be handed on to it.

use std::collections::HashSet;
use std::net::SocketAddr;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, ListenerConfig, PrefixConfig, Validator};

// ---------------------------------------------------------------------------------------------
// Raw (serde) layer

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeer {
    // Spanned per key, so an error points at the line of the offending key rather than at the
    // `[[peers]]` header.
    id: Spanned<i64>,
    address: Spanned<String>,
}

// ---------------------------------------------------------------------------------------------
// Validated layer

/// Another balancer that issues cancel keys with its own `node.id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The peer's `node.id`: the top byte of the cancel secrets it issues.
    pub id: u8,
    /// A listener of that peer, reachable from this balancer.
    pub address: SocketAddr,
}

impl Validator<'_> {
    pub(super) fn peers(
        &self,
        raw: Vec<Spanned<RawPeer>>,
        node_id: u8,
        listeners: &[ListenerConfig],
        prefixes: &[PrefixConfig],
    ) -> Result<Vec<Peer>, ConfigError> {
        let mut ids = HashSet::new();
        let mut out: Vec<Peer> = Vec::new();
        for (i, item) in raw.into_iter().enumerate() {
            let p = item.into_inner();
            let key = |k: &str| format!("peers[{i}].{k}");
            let id_span = p.id.span();
            let id = self.count(&id_span, &key("id"), Some(*p.id.get_ref()), 0, 0, 255)? as u8;
            if id == node_id {
                // Keys with our own id are never forwarded (proxy::cancel::cancel_route), so
                // such an entry would be dead; most likely the file was copied from a peer.
                return Err(self.err(
                    id_span,
                    &key("id"),
                    format!("{id} is this balancer's own node.id"),
                ));
            }
            if !ids.insert(id) {
                return Err(self.err(id_span, &key("id"), format!("duplicate peer id {id}")));
            }
            let addr_span = p.address.span();
            let text = p.address.into_inner();
            let address: SocketAddr = text.parse().map_err(|e| {
                self.err(
                    addr_span.clone(),
                    &key("address"),
                    format!("not an IP:port ({e}): {text:?}"),
                )
            })?;
            if address.ip().is_unspecified() || address.port() == 0 {
                return Err(self.err(
                    addr_span,
                    &key("address"),
                    format!("{address} cannot be connected to; give the peer's IP and port"),
                ));
            }
            // A peer address that is one of our own listeners would hand foreign keys back to
            // ourselves, over and over.
            if listeners.iter().any(|l| l.address == address) {
                return Err(self.err(
                    addr_span,
                    &key("address"),
                    format!("{address} is a listener of this balancer, not of a peer"),
                ));
            }
            // The anycast address leads to whichever balancer the router picks, maybe this one.
            if prefixes.iter().any(|p| address.ip() == p.address) {
                return Err(self.err(
                    addr_span,
                    &key("address"),
                    format!(
                        "{} is an anycast address; give the peer's own address",
                        address.ip()
                    ),
                ));
            }
            if let Some(other) = out.iter().find(|x| x.address == address) {
                return Err(self.err(
                    addr_span,
                    &key("address"),
                    format!("{address} is already the address of peer {}", other.id),
                ));
            }
            out.push(Peer { id, address });
        }
        Ok(out)
    }
}
