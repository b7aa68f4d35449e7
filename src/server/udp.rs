//! UDP listeners: blocking threads, `udp_threads_per_socket` of them per socket, each
//! receiving up to `udp_batch` datagrams per system call (`recvmmsg`) and folding them into
//! the shards itself; optionally several `SO_REUSEPORT` sockets per address. A socket's
//! threads past the first stand by while it is light ([`Standby`]), so a lightly loaded
//! agent wakes one thread, not all. On stop each thread drains what the kernel already
//! holds before it exits.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use super::router::Router;
use crate::config::ServerConfig;
use crate::protocol::ParseError;

/// How often a blocked receive wakes up to look at the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// A receive that brings fewer datagrams than this fraction of a batch means the load is light.
const LIGHT_FRACTION: usize = 4;
/// The first wait after a light receive; it doubles up to the configured most.
const FIRST_WAIT: Duration = Duration::from_micros(100);
/// The longest a stopping listener keeps draining its socket.
pub(crate) const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Binds `udp_sockets_per_address` sockets to `addr` (all to the same port when it is 0).
///
/// # Errors
/// When a socket cannot be created, configured or bound.
pub fn bind(addr: SocketAddr, config: &ServerConfig) -> io::Result<Vec<UdpSocket>> {
    let reuse = config.udp_sockets_per_address > 1;
    let first = bind_one(addr, reuse, config.udp_recv_buffer_bytes)?;
    let bound = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..config.udp_sockets_per_address {
        sockets.push(bind_one(bound, reuse, config.udp_recv_buffer_bytes)?);
    }
    Ok(sockets)
}

fn bind_one(addr: SocketAddr, reuse_port: bool, recv_buffer: usize) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if recv_buffer > 0 && !force_recv_buffer(&socket, recv_buffer) {
        socket.set_recv_buffer_size(recv_buffer)?;
        let granted = socket.recv_buffer_size()?;
        if granted < recv_buffer {
            tracing::warn!(
                requested = recv_buffer,
                granted,
                "UDP receive buffer capped by net.core.rmem_max; raise it (or grant \
                 CAP_NET_ADMIN) so bursts are not dropped"
            );
        }
    }
    socket.bind(&addr.into())?;
    let socket: UdpSocket = socket.into();
    socket.set_read_timeout(Some(POLL))?;
    Ok(socket)
}

/// The datagrams the kernel dropped at one UDP socket before tallyd could read them (a full
/// receive buffer, mostly; also bad checksums), read from `SO_MEMINFO` once per flush. It holds
/// its own descriptor of the socket, so the last interval's drops can still be read after the
/// receive threads have stopped.
#[derive(Debug)]
pub struct KernelDrops {
    socket: UdpSocket,
    seen: u32,
}

impl KernelDrops {
    /// Starts counting at the socket's drops so far.
    ///
    /// # Errors
    /// When the descriptor cannot be duplicated or the kernel does not report drops.
    pub fn new(socket: &UdpSocket) -> io::Result<KernelDrops> {
        let socket = socket.try_clone()?;
        let seen = socket_drops(&socket)?;
        Ok(KernelDrops { socket, seen })
    }

    /// The drops since the last call (or since [`KernelDrops::new`]). The kernel's count is
    /// 32 bits and wraps; one interval never drops 2^32 datagrams.
    pub fn take(&mut self) -> u64 {
        match socket_drops(&self.socket) {
            Ok(now) => {
                let before = std::mem::replace(&mut self.seen, now);
                u64::from(now.wrapping_sub(before))
            }
            Err(_) => 0,
        }
    }
}

/// The socket's drop count from `SO_MEMINFO` (Linux 4.6 and later).
fn socket_drops(socket: &UdpSocket) -> io::Result<u32> {
    // Room for more fields than today's kernels report; the kernel writes what it has.
    let mut meminfo = [0u32; 16];
    let mut len = std::mem::size_of_val(&meminfo) as libc::socklen_t;
    // SAFETY: a plain getsockopt on a descriptor the socket owns, with a pointer to a local
    // array and its size in `len`, which the kernel lowers to what it wrote.
    let result = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            meminfo.as_mut_ptr().cast(),
            &raw mut len,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    let at = libc::SK_MEMINFO_DROPS as usize;
    if (len as usize) < (at + 1) * std::mem::size_of::<u32>() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the kernel does not report socket drops",
        ));
    }
    Ok(meminfo[at])
}

/// Sets the receive buffer with `SO_RCVBUFFORCE`, which goes past `net.core.rmem_max` but
/// needs `CAP_NET_ADMIN`; false (and nothing changed) without it, so the caller falls back
/// to `SO_RCVBUF` within the cap.
fn force_recv_buffer(socket: &Socket, bytes: usize) -> bool {
    let Ok(value) = libc::c_int::try_from(bytes) else {
        return false;
    };
    // SAFETY: a plain setsockopt on a descriptor the socket owns, with a pointer to a local
    // c_int and its size.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    result == 0
}

/// Where one socket's receive threads past the first wait while the socket is light. The
/// first thread wakes them when a receive fills its whole batch; each goes back to waiting
/// when a receive of its own brings less than a quarter batch.
#[derive(Debug, Default)]
pub struct Standby {
    active: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Standby {
    /// The socket is busy: wakes the waiting threads (a lock only when they wait).
    fn wake(&self) {
        if !self.active.load(Ordering::Relaxed) {
            let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.active.store(true, Ordering::Relaxed);
            self.wake.notify_all();
        }
    }

    /// True while the threads past the first should receive.
    fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// The socket is light: the threads past the first wait again.
    fn rest(&self) {
        self.active.store(false, Ordering::Relaxed);
    }

    /// Waits up to `timeout` for [`Standby::wake`] unless already active; true when active.
    fn wait(&self, timeout: Duration) -> bool {
        let guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if !self.is_active() {
            let _ = self
                .wake
                .wait_timeout(guard, timeout)
                .unwrap_or_else(|p| p.into_inner());
        }
        self.is_active()
    }
}

/// A receive thread's place among its socket's threads.
#[derive(Debug, Clone)]
pub enum Role {
    /// Always receives, and wakes the others when the socket is busy.
    First(Arc<Standby>),
    /// Receives only while the socket is busy.
    Helper(Arc<Standby>),
}

/// Starts one receive thread of one socket.
///
/// # Errors
/// When the thread cannot be spawned.
pub fn spawn_udp(
    name: String,
    socket: UdpSocket,
    router: Router,
    stop: Arc<AtomicBool>,
    role: Role,
    config: &ServerConfig,
) -> io::Result<JoinHandle<()>> {
    let batch = config.udp_batch;
    let size = config.max_datagram_bytes;
    let buffer = socket2::SockRef::from(&socket).recv_buffer_size()?;
    let pacer = Pacer::new(batch, config.udp_coalesce.min(safe_wait(buffer)));
    std::thread::Builder::new()
        .name(name)
        .spawn(move || run(socket, router, stop, pacer, role, size))
}

/// The datagram rate a wait must survive: a burst this fast may start while the listener
/// waits.
const BURST_DATAGRAMS_PER_S: u64 = 100_000;
/// Roughly what one small datagram takes of a socket's receive buffer (payload and kernel
/// bookkeeping).
const DATAGRAM_FOOTPRINT: u64 = 2048;

/// The longest wait that a burst of [`BURST_DATAGRAMS_PER_S`] cannot overflow half of a
/// receive buffer of `buffer` bytes during. A 416 KiB buffer, what the kernel grants when
/// `net.core.rmem_max` is the usual 208 KiB, allows about 1 ms.
fn safe_wait(buffer: usize) -> Duration {
    let datagrams = buffer as u64 / DATAGRAM_FOOTPRINT / 2;
    Duration::from_micros(datagrams * 1_000_000 / BURST_DATAGRAMS_PER_S)
}

/// Under light load, waits a little between receives so that datagrams arrive in batches:
/// one wake-up per few milliseconds instead of one per datagram, which is most of the cost
/// of a lightly loaded agent. Under heavy load (receives fill their batch) the wait falls to
/// nothing. The kernel's receive buffer holds what arrives meanwhile.
#[derive(Debug)]
struct Pacer {
    batch: usize,
    most: Duration,
    wait: Duration,
}

impl Pacer {
    fn new(batch: usize, most: Duration) -> Pacer {
        Pacer {
            batch,
            most,
            wait: Duration::ZERO,
        }
    }

    /// How long to wait after a receive of `n` datagrams: longer while receives bring less
    /// than a quarter batch, shorter once one fills the whole batch (more may be waiting).
    fn after(&mut self, n: usize) -> Duration {
        if n >= self.batch {
            self.wait /= 2;
            if self.wait < FIRST_WAIT {
                self.wait = Duration::ZERO;
            }
        } else if n * LIGHT_FRACTION < self.batch {
            self.wait = (self.wait * 2).clamp(FIRST_WAIT, self.most.max(FIRST_WAIT));
        }
        self.wait.min(self.most)
    }
}

fn run(
    socket: UdpSocket,
    mut router: Router,
    stop: Arc<AtomicBool>,
    mut pacer: Pacer,
    role: Role,
    size: usize,
) {
    let mut receiver = MultiRecv::new(pacer.batch, size);
    let fd = socket.as_raw_fd();
    let mut drain_deadline = None;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if stopping {
            // A sender that never stops must not hold the shutdown forever.
            let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + DRAIN_LIMIT);
            if Instant::now() >= deadline {
                return;
            }
        }
        if let Role::Helper(standby) = &role
            && !stopping
            && !standby.is_active()
        {
            // Light: whatever waited for a busy shard goes in, then wait to be woken.
            router.flush();
            standby.wait(POLL);
            continue;
        }
        // While running, block for the first datagram (up to POLL); once stopping, take only
        // what is already queued.
        let flags = if stopping {
            libc::MSG_DONTWAIT
        } else {
            libc::MSG_WAITFORONE
        };
        match receiver.recv(fd, flags) {
            Ok(n) => {
                for i in 0..n {
                    let (packet, truncated) = receiver.packet(i);
                    handle(&mut router, packet, truncated);
                }
                // A busy shard's samples wait for the next cycle rather than stall this one.
                router.try_flush();
                match &role {
                    Role::First(standby) if n >= pacer.batch => standby.wake(),
                    Role::Helper(standby) if n * LIGHT_FRACTION < pacer.batch => {
                        standby.rest();
                        continue;
                    }
                    _ => {}
                }
                let wait = pacer.after(n);
                if !wait.is_zero() && !stopping {
                    std::thread::sleep(wait);
                }
            }
            Err(e) if is_transient(&e) => {
                // Idle: whatever waited for a busy shard goes in now.
                router.flush();
                if stopping {
                    return;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "UDP receive failed");
                std::thread::sleep(POLL);
            }
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Handles a datagram; a truncated one keeps its complete lines and counts the cut one.
pub(super) fn handle(router: &mut Router, packet: &[u8], truncated: bool) {
    if !truncated {
        router.handle_packet(packet);
        return;
    }
    let complete = packet
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(&packet[..0], |at| &packet[..at]);
    router.handle_packet(complete);
    router.reject_line(ParseError::TooLong);
}

/// Buffers for one `recvmmsg` call: `batch` messages of `size` bytes each, `stride` bytes
/// apart (see [`stride`]).
struct MultiRecv {
    buffers: Vec<u8>,
    size: usize,
    stride: usize,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers inside point into `buffers`/`iovecs`, which the struct owns and
// never reallocates after construction.
unsafe impl Send for MultiRecv {}

/// The distance between two messages' buffers: `size` rounded up to a cache line, plus one
/// more line. A datagram is mostly far shorter than its buffer, and buffers a power of two
/// apart (64 KiB, say) would start every datagram in the same cache sets, so that a batch
/// of them evicts itself from L1 and L2 before it is parsed; the extra line makes
/// consecutive buffers start in consecutive sets.
fn stride(size: usize) -> usize {
    size.next_multiple_of(64) + 64
}

impl MultiRecv {
    fn new(batch: usize, size: usize) -> MultiRecv {
        let stride = stride(size);
        let mut buffers = vec![0u8; batch * stride];
        let mut iovecs: Vec<libc::iovec> = buffers
            .chunks_exact_mut(stride)
            .map(|chunk| libc::iovec {
                iov_base: chunk.as_mut_ptr().cast(),
                iov_len: size,
            })
            .collect();
        let headers = iovecs
            .iter_mut()
            .map(|iov| {
                // SAFETY: mmsghdr is plain old data; all-zero is a valid empty header.
                let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
                header.msg_hdr.msg_iov = iov;
                header.msg_hdr.msg_iovlen = 1;
                header
            })
            .collect();
        MultiRecv {
            buffers,
            size,
            stride,
            iovecs,
            headers,
        }
    }

    /// Receives up to `batch` datagrams; returns how many.
    fn recv(&mut self, fd: i32, flags: i32) -> io::Result<usize> {
        for header in &mut self.headers {
            header.msg_len = 0;
            header.msg_hdr.msg_flags = 0;
        }
        // SAFETY: `headers` holds `headers.len()` initialized mmsghdr whose iovecs point
        // into `buffers` with their true lengths; both outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                self.headers.len() as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        debug_assert_eq!(self.iovecs.len(), self.headers.len());
        Ok(n as usize)
    }

    /// The `i`-th received datagram and whether the kernel truncated it.
    fn packet(&self, i: usize) -> (&[u8], bool) {
        let header = &self.headers[i];
        let len = (header.msg_len as usize).min(self.size);
        let truncated = header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        (
            &self.buffers[i * self.stride..i * self.stride + len],
            truncated,
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn helper_threads_wait_until_the_first_thread_wakes_them() {
        let standby = Arc::new(Standby::default());
        assert!(!standby.wait(Duration::from_millis(1)), "light until woken");
        let waiter = {
            let standby = standby.clone();
            std::thread::spawn(move || standby.wait(Duration::from_secs(10)))
        };
        std::thread::sleep(Duration::from_millis(5));
        standby.wake();
        assert!(waiter.join().expect("waiter ends"), "woken, not timed out");
        assert!(standby.wait(Duration::from_secs(10)), "stays active");
        standby.rest();
        assert!(!standby.is_active());
    }

    use super::*;

    #[test]
    fn kernel_drops_count_what_a_full_receive_buffer_refused() {
        let receiver = bind_one("127.0.0.1:0".parse().expect("addr"), false, 0).expect("bind");
        socket2::SockRef::from(&receiver)
            .set_recv_buffer_size(4096)
            .expect("a small buffer");
        let mut drops = KernelDrops::new(&receiver).expect("SO_MEMINFO");
        let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let target = receiver.local_addr().expect("addr");
        let sent = 500u64;
        for _ in 0..sent {
            sender.send_to(&[b'x'; 512], target).expect("send");
        }
        // Read what the kernel kept; a datagram still on its way shows up within moments.
        receiver.set_nonblocking(true).expect("nonblocking");
        let (mut received, mut dropped) = (0u64, 0u64);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 1024];
        while received + dropped < sent && Instant::now() < deadline {
            while receiver.recv(&mut buf).is_ok() {
                received += 1;
            }
            dropped += drops.take();
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(dropped > 0, "a 4 KiB buffer cannot hold 500 datagrams");
        assert!(received > 0, "the buffer held some");
        assert_eq!(received + dropped, sent);
        assert_eq!(drops.take(), 0, "each drop is counted once");
    }

    #[test]
    fn light_receives_lengthen_the_wait_up_to_the_most() {
        let mut pacer = Pacer::new(256, Duration::from_millis(5));
        let waits: Vec<Duration> = (0..8).map(|_| pacer.after(3)).collect();
        assert_eq!(waits[0], FIRST_WAIT);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(waits[7], Duration::from_millis(5));
    }

    #[test]
    fn full_batches_bring_the_wait_down_to_nothing() {
        let mut pacer = Pacer::new(256, Duration::from_millis(5));
        for _ in 0..8 {
            pacer.after(1);
        }
        // A receive between a quarter and a whole batch keeps the wait as it is.
        assert_eq!(pacer.after(100), Duration::from_millis(5));
        let mut steps = 0;
        while !pacer.after(256).is_zero() {
            steps += 1;
            assert!(steps < 16, "the wait never fell to zero");
        }
    }

    #[test]
    fn waiting_can_be_turned_off() {
        let mut pacer = Pacer::new(256, Duration::ZERO);
        assert!((0..8).all(|_| pacer.after(1).is_zero()));
    }

    #[test]
    fn a_batch_of_buffers_starts_in_different_cache_sets() {
        // 128 KiB spans every set of a 2 MiB, 16-way L2 with 64-byte lines.
        const SET_SPAN: usize = 128 * 1024;
        for size in [65_535, 65_536, 8_192, 1_500] {
            let stride = stride(size);
            assert!(stride >= size && stride.is_multiple_of(64), "{size}");
            let sets: std::collections::HashSet<usize> =
                (0..256).map(|i| i * stride % SET_SPAN / 64).collect();
            assert!(sets.len() >= 128, "{size}: {} distinct sets", sets.len());
        }
        let receiver = MultiRecv::new(4, 65_535);
        assert_eq!(receiver.buffers.len(), 4 * stride(65_535));
    }

    #[test]
    fn the_wait_fits_the_receive_buffer() {
        // The usual kernel default (208 KiB) allows about half a millisecond.
        assert_eq!(safe_wait(212_992), Duration::from_micros(520));
        // A 16 MiB buffer (8 MiB requested; Linux doubles it) allows 40 ms.
        assert_eq!(safe_wait(16 << 20), Duration::from_micros(40_960));
        assert!(safe_wait(0).is_zero());
    }
}
