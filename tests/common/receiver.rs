//! A real HTTP endpoint for the HTTP backend's tests: a tiny_http server on loopback, in
//! the test process, that hands every request to a channel and answers with the statuses
//! it was given (then 200).
#![allow(dead_code)]

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver as ChannelRx;
use serde_json::Value;

use super::PATIENCE;

/// The longest a receiver runs, whatever the test does.
const LIFETIME: Duration = Duration::from_secs(120);

/// One request as the server saw it.
#[derive(Debug)]
pub struct Received {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    /// A header's value, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, gunzipped first when the request says it is gzip.
    pub fn json(&self) -> Value {
        let bytes = if self.header("Content-Encoding") == Some("gzip") {
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(&self.body[..])
                .read_to_end(&mut plain)
                .expect("the body gunzips");
            plain
        } else {
            self.body.clone()
        };
        serde_json::from_slice(&bytes).expect("the body is one JSON record")
    }
}

/// A running HTTP endpoint.
pub struct HttpReceiver {
    pub addr: SocketAddr,
    pub requests: ChannelRx<Received>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl HttpReceiver {
    /// Listens on `addr` (port 0 for any) and answers 200 to everything.
    pub fn start(addr: &str) -> HttpReceiver {
        HttpReceiver::answering(addr, Vec::new())
    }

    /// Listens on `addr`, answering the first requests with `statuses`, then 200.
    pub fn answering(addr: &str, statuses: Vec<u16>) -> HttpReceiver {
        let server = Arc::new(tiny_http::Server::http(addr).expect("receiver binds"));
        let addr = server.server_addr().to_ip().expect("an IP listen address");
        let (tx, requests) = crossbeam_channel::unbounded();
        let thread = {
            let server = server.clone();
            std::thread::spawn(move || serve(&server, statuses, &tx))
        };
        HttpReceiver {
            addr,
            requests,
            server,
            thread: Some(thread),
        }
    }

    /// `http://ADDR/ingest`
    pub fn url(&self) -> String {
        format!("http://{}/ingest", self.addr)
    }

    /// The next request; fails the test after [`PATIENCE`].
    pub fn next(&self) -> Received {
        self.requests
            .recv_timeout(PATIENCE)
            .expect("a request arrives")
    }
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(server: &tiny_http::Server, statuses: Vec<u16>, tx: &crossbeam_channel::Sender<Received>) {
    let mut statuses = statuses.into_iter();
    let stop_at = Instant::now() + LIFETIME;
    while let Some(left) = stop_at.checked_duration_since(Instant::now()) {
        // `unblock` (on drop) makes recv_timeout return Ok(None) at once.
        let mut request = match server.recv_timeout(left) {
            Ok(Some(request)) => request,
            Ok(None) | Err(_) => return,
        };
        let mut body = Vec::new();
        if request.as_reader().read_to_end(&mut body).is_err() {
            continue;
        }
        let received = Received {
            method: request.method().to_string(),
            url: request.url().to_string(),
            headers: request
                .headers()
                .iter()
                .map(|h| (h.field.to_string(), h.value.to_string()))
                .collect(),
            body,
        };
        let status = statuses.next().unwrap_or(200);
        // Record the request before answering, so a test that sees the answer's effect
        // also sees the request.
        let _ = tx.send(received);
        let _ = request.respond(tiny_http::Response::empty(status));
    }
}
