//! Who a call comes from, as far as a client cannot change it for free:
//! its client certificate under mutual TLS, else its peer IP address. The
//! self-declared `node_id` is not it: rotating node ids costs nothing.
//!
//! Per-client limits and the Watch stream caps are keyed by it. Under
//! mutual TLS the quorum rule counts certificates too
//! ([`Principal::quorum_node`]); without client certificates node ids are
//! trusted for the quorum, and a client that rotates them can meet any
//! quorum (DESIGN.md says so).

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    net::IpAddr,
};

use tonic::Request;

/// Who a call counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Principal {
    /// The client certificate of a mutual-TLS connection (a hash of the
    /// leaf certificate's DER bytes).
    Certificate(u64),
    /// The peer's IP address.
    Peer(IpAddr),
    /// No peer address (in-process calls).
    Local,
}

impl Principal {
    /// The principal of `request`.
    pub fn of<T>(request: &Request<T>) -> Self {
        if let Some(leaf) = request
            .peer_certs()
            .as_ref()
            .and_then(|c| c.first().cloned())
        {
            let mut h = DefaultHasher::new();
            leaf.as_ref().hash(&mut h);
            return Principal::Certificate(h.finish());
        }
        match request.remote_addr() {
            Some(a) => Principal::Peer(a.ip()),
            None => Principal::Local,
        }
    }

    /// Said in refusals: `peer 10.0.0.7`, `client certificate 3f…`.
    pub fn describe(&self) -> String {
        match self {
            Principal::Certificate(h) => format!("client certificate {h:016x}"),
            Principal::Peer(ip) => format!("peer {ip}"),
            Principal::Local => "this peer".to_owned(),
        }
    }

    /// The node id the quorum rule (and probe leases) count `node_id` as:
    /// the certificate under mutual TLS, so that one client presenting one
    /// certificate is one node however many node ids it declares; else the
    /// declared node id, trusted.
    pub fn quorum_node<'a>(&self, node_id: &'a str) -> std::borrow::Cow<'a, str> {
        match self {
            Principal::Certificate(h) => format!("cert-{h:016x}").into(),
            _ => node_id.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_certificate_the_peer_ip_is_the_principal_and_node_ids_are_trusted() {
        let mut req = Request::new(());
        assert_eq!(Principal::of(&req), Principal::Local);
        req.extensions_mut()
            .insert(tonic::transport::server::TcpConnectInfo {
                local_addr: None,
                remote_addr: Some("10.1.2.3:5000".parse().unwrap()),
            });
        let p = Principal::of(&req);
        assert_eq!(p, Principal::Peer("10.1.2.3".parse().unwrap()));
        assert_eq!(p.describe(), "peer 10.1.2.3");
        assert_eq!(p.quorum_node("node-7"), "node-7");
    }

    #[test]
    fn a_certificate_is_one_quorum_node_whatever_the_node_id() {
        let p = Principal::Certificate(0xabc);
        assert_eq!(p.quorum_node("a"), p.quorum_node("b"));
        assert_eq!(p.quorum_node("a"), "cert-0000000000000abc");
        assert!(breakerd_core::validate_node_id(&p.quorum_node("a")).is_ok());
    }
}
