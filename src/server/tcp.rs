//! TCP listeners: newline-framed streams, many connections, on the tokio runtime. A line
//! waits for its `\n` or the connection's close; a line longer than `tcp_max_line_bytes` is
//! dropped (counted `too_long`) up to its newline. On stop, each connection reads what is
//! already buffered, handles it as if the peer had closed, and ends.

use std::io;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::router::Router;
use crate::protocol::ParseError;

/// Accepts connections until `stop` turns true, then waits for every connection to finish.
pub async fn serve(
    listener: TcpListener,
    make_router: impl Fn() -> Router + Send,
    max_line: usize,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let stop_connections = stop.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let router = make_router().with_max_line(max_line);
                    connections.spawn(connection(stream, router, max_line, stop_connections.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TCP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = stopped(&mut stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Completes once the stop flag is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Line framing state of one connection.
struct Framer {
    buf: BytesMut,
    max_line: usize,
    /// Inside an overlong line: skip bytes up to the next newline.
    discarding: bool,
}

impl Framer {
    fn new(max_line: usize) -> Framer {
        Framer {
            buf: BytesMut::with_capacity(8 * 1024),
            max_line,
            discarding: false,
        }
    }

    /// Hands every complete line to the router; keeps the incomplete tail.
    fn complete_lines(&mut self, router: &mut Router) {
        if self.discarding {
            match self.buf.iter().position(|&b| b == b'\n') {
                Some(at) => {
                    self.buf.advance(at + 1);
                    self.discarding = false;
                }
                None => {
                    self.buf.clear();
                    return;
                }
            }
        }
        if let Some(last) = self.buf.iter().rposition(|&b| b == b'\n') {
            let complete = self.buf.split_to(last + 1);
            router.handle_packet(&complete);
        }
        if self.buf.len() > self.max_line {
            router.reject_line(ParseError::TooLong);
            self.buf.clear();
            self.discarding = true;
        }
    }

    /// At the connection's end: the unterminated last line counts when the peer closed the
    /// stream; when the agent stops (or the connection breaks) it may be a cut line, so it is
    /// dropped and counted in `dropped_lines` instead of being read with a wrong value.
    fn finish(&mut self, router: &mut Router, peer_closed: bool) {
        self.complete_lines(router);
        if !self.discarding && !self.buf.is_empty() {
            if peer_closed {
                router.handle_packet(&self.buf);
            } else {
                router.drop_lines(1);
            }
        }
        self.buf.clear();
    }
}

/// How soon lines that wait for a busy shard are offered to it again.
const RETRY: std::time::Duration = std::time::Duration::from_millis(5);

async fn connection(
    mut stream: TcpStream,
    mut router: Router,
    max_line: usize,
    mut stop: watch::Receiver<bool>,
) {
    let mut framer = Framer::new(max_line);
    let mut peer_closed = false;
    loop {
        framer.buf.reserve(8 * 1024);
        // Lines waiting for a busy shard are retried shortly, without blocking this task's
        // worker on the shard's lock.
        let pending = router.is_pending();
        let retry = async move {
            if pending {
                tokio::time::sleep(RETRY).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = retry => {
                router.try_flush();
                continue;
            }
            read = stream.read_buf(&mut framer.buf) => match read {
                Ok(0) => {
                    peer_closed = true;
                    break;
                }
                Ok(_) => framer.complete_lines(&mut router),
                Err(e) => {
                    tracing::debug!(error = %e, "TCP connection failed");
                    break;
                }
            },
            _ = stopped(&mut stop) => {
                peer_closed = drain(&stream, &mut framer, &mut router);
                break;
            }
        }
        router.try_flush();
    }
    framer.finish(&mut router, peer_closed);
    router.try_flush();
    while router.is_pending() {
        tokio::time::sleep(RETRY).await;
        router.try_flush();
    }
}

/// Reads whatever the socket already holds without waiting; true when the peer had closed. Reads the descriptor directly:
/// tokio's cached readiness may not yet know of bytes that arrived just before the stop.
fn drain(stream: &TcpStream, framer: &mut Framer, router: &mut Router) -> bool {
    use std::io::Read;
    let socket = socket2::SockRef::from(stream);
    let deadline = std::time::Instant::now() + super::udp::DRAIN_LIMIT;
    let mut chunk = vec![0u8; 64 * 1024];
    while std::time::Instant::now() < deadline {
        // The descriptor is non-blocking (tokio set it so): this never waits.
        match (&*socket).read(&mut chunk) {
            Ok(0) => return true,
            Ok(n) => {
                framer.buf.extend_from_slice(&chunk[..n]);
                framer.complete_lines(router);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    false
}
