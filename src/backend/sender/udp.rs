//! A datagram transport (StatsD forwarding over UDP). A payload is a run of datagrams, each
//! framed by its length (a big-endian `u32`, see [`frame`]), so that one queued payload
//! carries a whole slice of a flush and the queue's bounds count what it should; the
//! transport sends each datagram as it was packed, never splitting or joining them.

use std::net::{ToSocketAddrs, UdpSocket};
use std::time::Duration;

use super::{Failure, Transport};

/// Sends framed datagrams to one `host:port`.
pub struct UdpTransport {
    address: String,
    socket: Option<UdpSocket>,
}

impl UdpTransport {
    /// A transport to `address`; the socket is opened (and the name resolved) on first use.
    pub fn new(address: impl Into<String>) -> UdpTransport {
        UdpTransport {
            address: address.into(),
            socket: None,
        }
    }

    fn open(&self) -> std::io::Result<UdpSocket> {
        let target = self.address.to_socket_addrs()?.next().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "the name has no address")
        })?;
        let bind = if target.is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        };
        let socket = UdpSocket::bind(bind)?;
        socket.connect(target)?;
        Ok(socket)
    }
}

/// Appends the frame header of a datagram of `len` bytes.
pub fn frame(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
}

/// The datagrams of a framed payload.
pub fn datagrams(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = payload;
    std::iter::from_fn(move || {
        let (header, body) = rest.split_first_chunk::<4>()?;
        let len = (u32::from_be_bytes(*header) as usize).min(body.len());
        let (datagram, next) = body.split_at(len);
        rest = next;
        Some(datagram)
    })
}

impl Transport for UdpTransport {
    fn describe(&self) -> String {
        format!("udp://{}", self.address)
    }

    fn deliver(&mut self, payload: &[u8], timeout: Duration) -> Result<(), Failure> {
        let socket = match self.socket.take() {
            Some(socket) => socket,
            None => self.open().map_err(|e| Failure::Retry {
                error: format!("open a socket to {}: {e}", self.address),
                after: None,
            })?,
        };
        let _ = socket.set_write_timeout(Some(timeout.max(Duration::from_millis(1))));
        let (mut sent, mut failed, mut last_error) = (0usize, 0usize, None);
        for datagram in datagrams(payload) {
            // A refusal reported here is often the ICMP answer to an earlier datagram:
            // one more try tells the two apart.
            let result = socket.send(datagram).or_else(|_| socket.send(datagram));
            match result {
                Ok(_) => sent += 1,
                Err(e) => {
                    failed += 1;
                    last_error = Some(e);
                }
            }
        }
        self.socket = Some(socket);
        match last_error {
            None => Ok(()),
            // Nothing went out: the whole payload can be tried again without doubling.
            Some(e) if sent == 0 => Err(Failure::Retry {
                error: format!("send to {}: {e}", self.address),
                after: None,
            }),
            // Sending it again would count the datagrams that went out twice.
            Some(e) => Err(Failure::Reject {
                error: format!(
                    "{failed} of {} datagrams to {} not sent: {e}",
                    sent + failed,
                    self.address
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_framed_datagram_arrives_as_it_was_packed() {
        let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind");
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut payload = Vec::new();
        for datagram in [&b"a:1|c\nb:2|c\n"[..], b"c:3|c\n"] {
            frame(&mut payload, datagram.len());
            payload.extend_from_slice(datagram);
        }
        let mut transport = UdpTransport::new(receiver.local_addr().expect("addr").to_string());
        transport
            .deliver(&payload, Duration::from_secs(5))
            .expect("sent");
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).expect("first");
        assert_eq!(&buf[..n], b"a:1|c\nb:2|c\n");
        let n = receiver.recv(&mut buf).expect("second");
        assert_eq!(&buf[..n], b"c:3|c\n");
    }

    #[test]
    fn a_truncated_frame_yields_what_is_there() {
        let mut payload = Vec::new();
        frame(&mut payload, 10);
        payload.extend_from_slice(b"abc");
        assert_eq!(datagrams(&payload).collect::<Vec<_>>(), [&b"abc"[..]]);
        assert_eq!(datagrams(&[0, 0]).count(), 0);
    }
}
