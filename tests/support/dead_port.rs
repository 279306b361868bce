//! A port that refuses connections, for tests of unreachable endpoints.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

/// A port on 127.0.0.1 that refuses connections for as long as this value lives: a socket bound
/// to it that never listens. Holding the socket keeps the port ours, so no test running beside this
/// one can bind it (as it could between binding a port, letting it go and connecting to it).
pub struct DeadPort {
    _socket: tokio::net::TcpSocket,
    port: u16,
}

impl DeadPort {
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// A [`DeadPort`].
pub fn dead_port() -> DeadPort {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    DeadPort {
        _socket: socket,
        port,
    }
}
