//! TCP streams and Unix datagram sockets over real sockets.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_lines_split_across_writes_and_connections_are_whole() {
    let toml = "backends = []\n[server]\nudp = []\ntcp = [\"127.0.0.1:0\"]\n";
    let agent = start(toml).await;
    let addr = agent.running.tcp_addrs()[0];
    let mut first = TcpStream::connect(addr).expect("connect");
    let mut second = TcpStream::connect(addr).expect("connect");
    first.write_all(b"tcp.hits:1|c\ntcp.hi").expect("write");
    first.flush().expect("flush");
    second.write_all(b"tcp.hits:10|c\r\n").expect("write");
    first.write_all(b"ts:2|c\n").expect("write");
    // An unterminated last line counts when the connection closes.
    first.write_all(b"tcp.hits:100|c").expect("write");
    drop(first);
    drop(second);
    agent.wait_lines(4).await;
    let record = agent.finish().await;
    // 1 + 10 + 2 (the line split across two writes) + 100 (the unterminated last line).
    assert_close(fig(metric(&record, "tcp.hits", "counter"), "count"), 113.0);
    assert_close(
        fig(metric(&record, "tcp.hits", "counter"), "rate"),
        113.0 / 10.0,
    );
    assert_eq!(record["internal"]["bad_lines"]["malformed"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_overlong_line_is_dropped_up_to_its_newline() {
    let toml =
        "backends = []\n[server]\nudp = []\ntcp = [\"127.0.0.1:0\"]\ntcp_max_line_bytes = 64\n";
    let agent = start(toml).await;
    let mut stream = TcpStream::connect(agent.running.tcp_addrs()[0]).expect("connect");
    let long = format!("{}:1|c", "x".repeat(500));
    stream
        .write_all(format!("ok:1|c\n{long}\nok:2|c\n").as_bytes())
        .expect("write");
    drop(stream);
    agent.wait_lines(3).await;
    let record = agent.finish().await;
    assert_close(fig(metric(&record, "ok", "counter"), "count"), 3.0);
    assert_eq!(record["internal"]["bad_lines"]["too_long"], 1);
    assert_eq!(record["metrics"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_data_sent_before_shutdown_is_in_the_final_record() {
    let toml = "backends = []\n[server]\nudp = []\ntcp = [\"127.0.0.1:0\"]\n";
    let agent = start(toml).await;
    let mut stream = TcpStream::connect(agent.running.tcp_addrs()[0]).expect("connect");
    stream.write_all(b"open:5|c\n").expect("write");
    agent.wait_lines(1).await;
    stream.write_all(b"open:7|c\n").expect("write");
    // The connection stays open: shutdown must still take what it already holds.
    let record = agent.finish().await;
    assert_close(fig(metric(&record, "open", "counter"), "count"), 12.0);
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_datagrams_are_received_and_the_socket_file_is_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tallyd.sock");
    // A stale socket file from an earlier run is replaced.
    drop(UnixDatagram::bind(&path).expect("stale socket"));
    let toml = format!(
        "backends = []\n[server]\nudp = []\nunix = [{:?}]\n",
        path.display().to_string()
    );
    let agent = start(&toml).await;
    // Anyone may send (write), whatever the umask: the default unix_mode is 0o722.
    let mode = std::fs::metadata(&path)
        .expect("socket file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o722);
    let client = UnixDatagram::unbound().expect("client");
    client.send_to(b"uds:3|c\nuds:4|c", &path).expect("send");
    client.send_to(b"uds.lat:5|ms", &path).expect("send");
    agent.wait_lines(3).await;
    let record = agent.finish().await;
    assert_close(fig(metric(&record, "uds", "counter"), "count"), 7.0);
    assert_eq!(record["internal"]["packets_received"], 2);
    assert!(!path.exists(), "socket file removed on stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_unix_datagram_keeps_its_whole_lines_and_counts_the_cut_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cut.sock");
    let toml = format!(
        "backends = []\n[server]\nudp = []\nunix = [{:?}]\nmax_datagram_bytes = 64\n",
        path.display().to_string()
    );
    let agent = start(&toml).await;
    let client = UnixDatagram::unbound().expect("client");
    // 70 bytes: the second line is cut at byte 64 (`...|#env:prod` would read `...|#env:p`).
    let datagram = format!("whole:1|c\n{}:1|c|#env:production", "n".repeat(40));
    assert!(datagram.len() > 64);
    client.send_to(datagram.as_bytes(), &path).expect("send");
    agent.wait_lines(2).await;
    let record = agent.finish().await;
    assert_close(fig(metric(&record, "whole", "counter"), "count"), 1.0);
    assert_eq!(record["metrics"].as_array().map(Vec::len), Some(1));
    assert_eq!(record["internal"]["bad_lines"]["too_long"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unterminated_tcp_line_at_shutdown_is_dropped_and_counted() {
    let toml = "backends = []\n[server]\nudp = []\ntcp = [\"127.0.0.1:0\"]\n";
    let agent = start(toml).await;
    let mut stream = TcpStream::connect(agent.running.tcp_addrs()[0]).expect("connect");
    stream.write_all(b"done:1|c\n").expect("write");
    agent.wait_lines(1).await;
    // Possibly cut mid-line (`@0.25` read as `@0.2`): not guessed at.
    stream.write_all(b"cut:1|ms|@0.2").expect("write");
    let record = agent.finish().await;
    assert_close(fig(metric(&record, "done", "counter"), "count"), 1.0);
    assert!(find(&record, "cut", "timer", &serde_json::json!({})).is_none());
    assert_eq!(record["internal"]["dropped_lines"], 1);
    drop(stream);
}
