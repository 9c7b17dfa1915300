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
    fn a_free_address_is_loopback_and_not_held_by_us() {
        let addr = free_addr().unwrap();
        assert!(addr.ip().is_loopback());
        assert_ne!(addr.port(), 0);
        // Released, so binding it again normally works. Any other process
        // on the machine (a parallel test binary, a browser) may take the
        // same ephemeral port in between, which is the race the doc
        // comment warns callers of: a few tries must find one that binds.
        let rebound = (0..20).find_map(|_| {
            let a = free_addr().unwrap();
            TcpListener::bind(a).ok().map(|l| (a, l))
        });
        let (a, l) = rebound.expect("no released port could be bound again in 20 tries");
        assert_eq!(l.local_addr().unwrap(), a);
        assert_ne!(free_port().unwrap(), 0);
    }
}
