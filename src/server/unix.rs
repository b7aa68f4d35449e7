//! Unix datagram listeners: one blocking thread per socket path. A stale socket file left by
//! an earlier run is replaced; the file is removed again on stop, after the socket is drained.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::router::Router;
use super::udp::DRAIN_LIMIT;

const POLL: Duration = Duration::from_millis(50);

/// Binds a Unix datagram socket at `path`, replacing a stale socket file (never another kind
/// of file), and gives the file the permission bits `mode`: sending to a socket needs write
/// permission on its file, which the process's umask would otherwise take from other users.
///
/// # Errors
/// When the path holds something other than a socket, or binding or setting the mode fails.
pub fn bind(path: &Path, mode: u32) -> io::Result<UnixDatagram> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(_) => {}
    }
    let socket = UnixDatagram::bind(path)?;
    if let Err(e) = set_mode(path, mode) {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    socket.set_read_timeout(Some(POLL))?;
    Ok(socket)
}

/// Sets the permission bits of the socket file at `path` without following a symlink: in a
/// directory others may write to, the path could be swapped for a link between the bind and
/// this.
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: fchmodat(2) with a NUL-terminated path that outlives the call.
    let result = unsafe {
        libc::fchmodat(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            mode as libc::mode_t,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if result == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() != Some(libc::EOPNOTSUPP) {
        return Err(error);
    }
    // A C library without the flag (glibc before 2.32), or a symlink: set the mode only
    // on the socket itself.
    if std::fs::symlink_metadata(path)?.file_type().is_socket() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    } else {
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} is no longer the socket tallyd bound", path.display()),
        ))
    }
}

/// Starts the receive thread of one Unix datagram socket.
///
/// # Errors
/// When the thread cannot be spawned.
pub fn spawn_unix(
    name: String,
    socket: UnixDatagram,
    path: PathBuf,
    router: Router,
    stop: Arc<AtomicBool>,
    max_datagram: usize,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name)
        .spawn(move || run(socket, path, router, stop, max_datagram))
}

/// Receives one datagram; also says whether it was longer than `buf` (and so cut).
fn recv_whole(socket: &UnixDatagram, buf: &mut [u8]) -> io::Result<(usize, bool)> {
    use std::os::fd::AsRawFd;
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
    // With MSG_TRUNC the kernel returns the datagram's real length even when it is longer.
    let n = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_TRUNC,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    Ok((n.min(buf.len()), n > buf.len()))
}

fn run(
    socket: UnixDatagram,
    path: PathBuf,
    mut router: Router,
    stop: Arc<AtomicBool>,
    size: usize,
) {
    let mut buf = vec![0u8; size];
    let mut drain_deadline = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + DRAIN_LIMIT);
            if Instant::now() >= deadline || socket.set_nonblocking(true).is_err() {
                break;
            }
        }
        match recv_whole(&socket, &mut buf) {
            Ok((n, truncated)) => {
                super::udp::handle(&mut router, &buf[..n], truncated);
                router.try_flush();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                // Idle: whatever waited for a busy shard goes in now.
                router.flush();
                if drain_deadline.is_some() {
                    break;
                }
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "Unix datagram receive failed");
                std::thread::sleep(POLL);
            }
        }
    }
    drop(router);
    if let Err(e) = std::fs::remove_file(&path) {
        tracing::warn!(path = %path.display(), error = %e, "could not remove socket file");
    }
}
