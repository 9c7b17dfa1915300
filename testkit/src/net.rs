//! Free loopback ports, for servers that must be told their port up front
//! (`redis-server --port`, a coordinator restarted on the same address).

use std::net::{SocketAddr, TcpListener};

/// A free loopback address: bind `127.0.0.1:0` and release it. Another
/// process may take the port before the caller does; callers that restart
/// servers retry.
pub fn free_addr() -> Result<SocketAddr, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    l.local_addr().map_err(|e| e.to_string())
}

/// The port of [`free_addr`].
pub fn free_port() -> Result<u16, String> {
    free_addr().map(|a| a.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_address_is_loopback_and_can_be_bound_again() {
        let addr = free_addr().unwrap();
        assert!(addr.ip().is_loopback());
        assert_ne!(addr.port(), 0);
        // Released: binding it again works (nothing else on this machine
        // is expected to grab the very same ephemeral port meanwhile).
        let l = TcpListener::bind(addr).unwrap();
        assert_eq!(l.local_addr().unwrap(), addr);
        assert_ne!(free_port().unwrap(), 0);
    }
}
