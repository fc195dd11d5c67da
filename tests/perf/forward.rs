//! Port forwarding throughput and path latency, direct and relayed, beside OpenSSH, in one
//! run on this machine's loopback:
//!
//! - `iperf3` through `tunnel forward -L` over a direct QUIC path, over the relay path, and
//!   through `ssh -L` with its default cipher and with `aes128-gcm@openssh.com`; 1 and 8
//!   streams. Each configuration runs ROUNDS times, alternating tools; the best round counts.
//!   Targets: direct >= 1.0x `ssh -L` (default cipher); relay >= 0.5x.
//! - The bytes the relay carried while 1 GB crossed the direct forward (target < 0.1%).
//! - `tunnel ping` round trips (p50) over the direct path and over the relay, beside a raw
//!   UDP ping-pong on the same loopback (the floor).
//!
//! The direct path is iperf3 -> operator node -> QUIC -> exit node -> iperf3 server; the relay
//! path adds `tunnel-relay` in the middle (nodes started with `--direct relay-only`); OpenSSH's
//! is iperf3 -> ssh -> sshd -> iperf3 server. Run: `tests/perf/run_forward.sh` (needs iperf3
//! and openssh-server).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use tunnel_tests::sshd::{free_port, keygen, public_key, Sshd};
use tunnel_tests::{token, NodeProc, Proc, RelayProc, TempDir};

const SECONDS: &str = "5";
const ROUNDS: usize = 2;
const TARGET_DIRECT: f64 = 1.0;
const TARGET_RELAY: f64 = 0.5;
const PINGS: usize = 200;

/// Something iperf3 can be pointed at: a forward's local port.
struct Path {
    name: &'static str,
    port: u16,
}

fn main() -> anyhow::Result<()> {
    for tool in ["iperf3", "ssh"] {
        if Command::new(tool).arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            bail!("{tool} is missing (apt-get install iperf3 openssh-client openssh-server)");
        }
    }
    let iperf_port = free_port();
    let _iperf = Proc {
        child: Command::new("iperf3")
            .args(["-s", "-B", "127.0.0.1", "-p", &iperf_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
        name: "iperf3 -s".into(),
    };

    // tunnel: an operator node forwarding to an exit node, one pair direct, one pair (in
    // another room) on the relay only.
    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let direct = Pair::start(&relay, "auto", iperf_port)?;
    let relayed = Pair::start(&relay, "relay-only", iperf_port)?;
    let took = direct.wait_direct()?;
    println!("direct path up {} ms after the first ping", took.as_millis());

    // OpenSSH: a private sshd and two `ssh -N -L` clients, one per cipher.
    let dir = TempDir::new("bench-forward");
    let key = keygen(dir.path(), "id_ed25519", "ed25519", "")?;
    let sshd = Sshd::start(&[public_key(&key)])?;
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, sshd.known_hosts_line() + "\n")?;
    let ssh_default = ssh_forward(&sshd, &key, &known, iperf_port, None)?;
    let ssh_gcm = ssh_forward(&sshd, &key, &known, iperf_port, Some("aes128-gcm@openssh.com"))?;

    let paths = [
        Path { name: "tunnel forward -L (direct)", port: direct.port },
        Path { name: "tunnel forward -L (relay)", port: relayed.port },
        Path { name: "ssh -L (default cipher)", port: ssh_default.1 },
        Path { name: "ssh -L (aes128-gcm)", port: ssh_gcm.1 },
    ];
    println!("iperf3 -t {SECONDS} through each forward, best of {ROUNDS} rounds (Gbit/s, receiver side)");
    for streams in [1usize, 8] {
        let mut best = [0f64; 4];
        for _ in 0..ROUNDS {
            for (i, path) in paths.iter().enumerate() {
                best[i] = best[i].max(iperf(path.port, &["-t", SECONDS], streams)?);
            }
        }
        for (path, gbps) in paths.iter().zip(best) {
            println!("  {streams} stream(s)  {:<28} {gbps:6.2}", path.name);
        }
        for (i, target) in [(0, TARGET_DIRECT), (1, TARGET_RELAY)] {
            let ratio = best[i] / best[2];
            let verdict = if ratio >= target { "MET" } else { "NOT MET" };
            println!(
                "  {streams} stream(s)  {} / ssh default = {ratio:.2} (target >= {target}: {verdict}); / ssh aes128-gcm = {:.2}",
                paths[i].name,
                best[i] / best[3]
            );
        }
        println!("  {streams} stream(s)  direct / relay = {:.2}", best[0] / best[1]);
    }

    // 1 GB over the direct forward: what did the relay carry meanwhile?
    let before = relay_bytes(&relay)?;
    iperf(direct.port, &["-n", "1G"], 1)?;
    let carried = relay_bytes(&relay)? - before;
    let share = carried as f64 / 1e9 * 100.0;
    let verdict = if share < 0.1 { "MET" } else { "NOT MET" };
    println!("relay bytes during a 1 GB direct transfer: {carried} ({share:.4}%, target < 0.1%: {verdict})");

    let raw = udp_floor()?;
    let via_direct = ping_p50(&direct.op, "exit")?;
    let via_relay = ping_p50(&relayed.op, "exit")?;
    println!("round trip p50 over {PINGS} pings: raw UDP ping-pong {:.3} ms; tunnel ping direct {via_direct:.3} ms; relay {via_relay:.3} ms", raw * 1000.0);
    println!(
        "  direct / relay = {:.2}; direct - raw UDP = {:.3} ms",
        via_direct / via_relay,
        via_direct - raw * 1000.0
    );
    Ok(())
}

/// An operator node and an exit node in their own room, with a forward from `op` to the
/// iperf3 server through `exit`.
struct Pair {
    op: NodeProc,
    _exit: NodeProc,
    port: u16,
}

impl Pair {
    fn start(relay: &RelayProc, direct: &str, iperf_port: u16) -> anyhow::Result<Self> {
        let (t, room) = (token(), format!("bench-{direct}"));
        let env = [("TUNNEL_DIRECT", direct)];
        let exit = NodeProc::start_with(&relay.url, &room, &t, "exit", &[("TUNNEL_MODE", "edit"), env[0]])?;
        let op = NodeProc::start_with(&relay.url, &room, &t, "op", &env)?;
        op.wait_for_peers(&["exit"], Duration::from_secs(10))?;
        let o = op.cli(&["forward", "exit", "-L", &format!("0:127.0.0.1:{iperf_port}"), "--json"]);
        if !o.status.success() {
            bail!("tunnel forward: {}", String::from_utf8_lossy(&o.stderr));
        }
        let forwards: serde_json::Value = serde_json::from_slice(&o.stdout)?;
        let listen = forwards[0]["listen"].as_str().context("listen address")?;
        let port = listen.rsplit(':').next().and_then(|p| p.parse().ok()).context("listen port")?;
        Ok(Self { op, _exit: exit, port })
    }

    fn wait_direct(&self) -> anyhow::Result<Duration> {
        let start = std::time::Instant::now();
        self.op.cli(&["ping", "exit", "-c", "1"]);
        while start.elapsed() < Duration::from_secs(10) {
            if self.op.peers()?.iter().any(|p| p["name"] == "exit" && p["path"] == "direct") {
                return Ok(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("no direct path between the benchmark's nodes")
    }
}

/// `tunnel_relay_bytes_forwarded_total` from the relay's /metrics.
fn relay_bytes(relay: &RelayProc) -> anyhow::Result<u64> {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", relay.port()))?;
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    tcp.read_to_string(&mut text)?;
    text.lines()
        .find_map(|l| l.strip_prefix("tunnel_relay_bytes_forwarded_total "))
        .and_then(|v| v.trim().parse().ok())
        .context("no bytes_forwarded_total in /metrics")
}

/// p50 of `tunnel ping` round trips, in ms.
fn ping_p50(op: &NodeProc, peer: &str) -> anyhow::Result<f64> {
    let o = op.cli(&["ping", peer, "-c", &PINGS.to_string()]);
    let mut times: Vec<f64> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split("time=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect();
    if times.len() < PINGS / 2 {
        bail!("tunnel ping {peer}: {}", String::from_utf8_lossy(&o.stderr));
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// p50 of a raw UDP ping-pong between two sockets on loopback, in seconds: the floor.
fn udp_floor() -> anyhow::Result<f64> {
    let echo = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let to = echo.local_addr()?;
    echo.set_read_timeout(Some(Duration::from_secs(2)))?;
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        for _ in 0..PINGS {
            let Ok((n, from)) = echo.recv_from(&mut buf) else { return };
            let _ = echo.send_to(&buf[..n], from);
        }
    });
    let client = std::net::UdpSocket::bind("127.0.0.1:0")?;
    client.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut times = Vec::with_capacity(PINGS);
    let mut buf = [0u8; 64];
    for i in 0..PINGS {
        let start = std::time::Instant::now();
        client.send_to(&(i as u64).to_le_bytes(), to)?;
        client.recv_from(&mut buf)?;
        times.push(start.elapsed().as_secs_f64());
    }
    let _ = server.join();
    times.sort_by(f64::total_cmp);
    Ok(times[PINGS / 2])
}

/// `ssh -N -L PORT:127.0.0.1:TO` to the private sshd, ready when its port accepts.
fn ssh_forward(
    sshd: &Sshd,
    key: &std::path::Path,
    known: &std::path::Path,
    to: u16,
    cipher: Option<&str>,
) -> anyhow::Result<(Proc, u16)> {
    let port = free_port();
    let mut cmd = Command::new("ssh");
    cmd.args(["-N", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-i"])
        .arg(key)
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known.display()))
        .args(["-o", "StrictHostKeyChecking=yes", "-p", &sshd.port.to_string()])
        .args(["-L", &format!("127.0.0.1:{port}:127.0.0.1:{to}")]);
    if let Some(c) = cipher {
        cmd.args(["-c", c]);
    }
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let child: Child = cmd.arg(format!("{user}@{}", sshd.address)).stdin(Stdio::null()).spawn()?;
    let proc = Proc { child, name: format!("ssh -L ({})", cipher.unwrap_or("default")) };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok((proc, port));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("ssh -L did not open port {port}")
}

/// One iperf3 run (client to server, `streams` parallel); the receiver's Gbit/s. The server
/// takes one test at a time and needs a moment between tests: a "busy" answer is retried.
fn iperf(port: u16, length: &[&str], streams: usize) -> anyhow::Result<f64> {
    let mut last = String::new();
    for _ in 0..5 {
        let out = Command::new("iperf3")
            .args(["-c", "127.0.0.1", "-p", &port.to_string(), "-P", &streams.to_string(), "-J"])
            .args(length)
            .output()?;
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 -J output")?;
        match report["error"].as_str() {
            Some(e) => last = e.to_owned(),
            None => {
                let sum = &report["end"]["sum_received"]["bits_per_second"];
                return Ok(sum.as_f64().context("no sum_received in iperf3's report")? / 1e9);
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    bail!("iperf3 through port {port}: {last}")
}
