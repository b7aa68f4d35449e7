//! A line receiver on loopback TCP, as carbon's plaintext listener is: it accepts any number
//! of connections and hands every line it reads to a channel. It can be stopped (listener
//! and connections closed) and started again on the same port, for outage tests.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

/// A running line receiver.
pub struct LineSink {
    pub addr: SocketAddr,
    pub lines: Receiver<String>,
    tx: Sender<String>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LineSink {
    /// Listens on `addr` (`127.0.0.1:0` for any free port).
    pub fn start(addr: &str) -> LineSink {
        let (tx, lines) = crossbeam_channel::unbounded();
        let mut sink = LineSink {
            addr: addr.parse().expect("an address"),
            lines,
            tx,
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        };
        sink.listen(addr);
        sink
    }

    fn listen(&mut self, addr: &str) {
        let listener = TcpListener::bind(addr).expect("bind the sink");
        listener.set_nonblocking(true).expect("nonblocking");
        self.addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        self.stop = stop.clone();
        let tx = self.tx.clone();
        self.thread = Some(std::thread::spawn(move || {
            let mut readers = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (tx, stop) = (tx.clone(), stop.clone());
                        readers.push(std::thread::spawn(move || {
                            let _ = stream.set_nonblocking(false);
                            let _ = stream.set_read_timeout(Some(Duration::from_millis(20)));
                            let mut reader = BufReader::new(stream);
                            let mut line = String::new();
                            while !stop.load(Ordering::Relaxed) {
                                match reader.read_line(&mut line) {
                                    Ok(0) => break,
                                    Ok(_) if line.ends_with('\n') => {
                                        let _ = tx.send(line.trim_end().to_string());
                                        line.clear();
                                    }
                                    Ok(_) => {}
                                    Err(e)
                                        if matches!(
                                            e.kind(),
                                            std::io::ErrorKind::WouldBlock
                                                | std::io::ErrorKind::TimedOut
                                        ) => {}
                                    Err(_) => break,
                                }
                            }
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            drop(listener);
            for reader in readers {
                let _ = reader.join();
            }
        }));
    }

    /// Closes the listener and every connection.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Listens again on the same port.
    pub fn restart(&mut self) {
        let addr = self.addr.to_string();
        self.listen(&addr);
    }

    /// The next line, waiting at most `patience`.
    pub fn next(&self, patience: Duration) -> Option<String> {
        self.lines.recv_timeout(patience).ok()
    }
}

impl Drop for LineSink {
    fn drop(&mut self) {
        self.stop();
    }
}
