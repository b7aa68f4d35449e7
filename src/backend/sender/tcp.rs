//! A stream transport over one persistent TCP connection (Graphite's plaintext protocol,
//! StatsD forwarding over TCP): connected on first use, with a connect and a write timeout;
//! any error closes it, and the next attempt (after the sender's backoff) connects again.

use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::{Failure, Transport};

/// Writes payloads, as they are, to one `host:port`.
pub struct TcpTransport {
    address: String,
    stream: Option<TcpStream>,
}

impl TcpTransport {
    /// A transport to `address` (`host:port`); nothing connects until the first payload.
    pub fn new(address: impl Into<String>) -> TcpTransport {
        TcpTransport {
            address: address.into(),
            stream: None,
        }
    }

    fn connect(&self, timeout: Duration) -> std::io::Result<TcpStream> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        let addrs: Vec<SocketAddr> = self.address.to_socket_addrs()?.collect();
        for addr in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match TcpStream::connect_timeout(&addr, left) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "no address answered in time")
        }))
    }
}

impl Transport for TcpTransport {
    fn describe(&self) -> String {
        format!("tcp://{}", self.address)
    }

    fn deliver(&mut self, payload: &[u8], timeout: Duration) -> Result<(), Failure> {
        let retry = |what: &str, e: std::io::Error| Failure::Retry {
            error: format!("{what} {}: {e}", self.address),
            after: None,
        };
        let stream = match self.stream.take().filter(still_open) {
            Some(stream) => stream,
            None => self.connect(timeout).map_err(|e| retry("connect to", e))?,
        };
        // The whole payload within the timeout; a timed-out or failed write leaves part of
        // it on the wire, so the connection is closed (the receiver drops a partial line)
        // and the payload is sent whole again on a new one.
        stream
            .set_write_timeout(Some(timeout.max(Duration::from_millis(1))))
            .map_err(|e| retry("configure", e))?;
        let mut writer = &stream;
        writer
            .write_all(payload)
            .map_err(|e| retry("write to", e))?;
        self.stream = Some(stream);
        Ok(())
    }
}

/// Whether the receiver has not closed the connection (nor reset it) since the last
/// payload: a write to a connection the peer closed would still succeed once, into the
/// kernel's buffer, and that payload would be lost. Receivers of these protocols never
/// send anything, so anything readable means closed.
fn still_open(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let mut byte = [0u8; 1];
    let open =
        matches!(stream.peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    open && stream.set_nonblocking(false).is_ok()
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn payloads_go_down_one_connection_and_a_dead_receiver_is_a_retry() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut transport = TcpTransport::new(addr.to_string());
        let timeout = Duration::from_secs(5);
        transport.deliver(b"a 1 1\n", timeout).expect("sent");
        transport.deliver(b"b 2 1\n", timeout).expect("sent");
        let (mut conn, _) = listener.accept().expect("one connection");
        let mut got = vec![0u8; 12];
        conn.read_exact(&mut got).expect("read");
        assert_eq!(got, b"a 1 1\nb 2 1\n");
        // The receiver closes: the next payload goes down a new connection, not into the
        // dead one's buffer.
        drop(conn);
        transport.deliver(b"c 3 1\n", timeout).expect("sent again");
        let (mut again, _) = listener.accept().expect("a second connection");
        let mut got = vec![0u8; 6];
        again.read_exact(&mut got).expect("read");
        assert_eq!(got, b"c 3 1\n");
        drop(listener);
        drop(again);
        let refused = TcpTransport::new(addr.to_string()).deliver(b"c 3 1\n", timeout);
        assert!(matches!(refused, Err(Failure::Retry { .. })), "{refused:?}");
    }
}
