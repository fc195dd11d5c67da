//! Port forwarding throughput: `iperf3` through `tunnel forward -L` over the relay path, beside
//! `ssh -L` (OpenSSH) with its default cipher and with `aes128-gcm@openssh.com`, single stream
//! and 8 parallel streams, in one run on this machine's loopback.
//!
//! The tunnel path is iperf3 -> operator node -> `tunnel-relay` -> exit node -> iperf3 server
//! (three processes of ours, Noise-encrypted end to end through the relay); OpenSSH's is
//! iperf3 -> ssh -> sshd -> iperf3 server. Each configuration runs ROUNDS times, alternating
//! tools, and the best round counts. Target: the relay path at least 0.5x `ssh -L` with the
//! default cipher. Run: `tests/perf/run_forward.sh` (needs iperf3 and openssh-server).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use tunnel_tests::sshd::{free_port, keygen, public_key, Sshd};
use tunnel_tests::{token, NodeProc, Proc, RelayProc, TempDir};

const SECONDS: &str = "5";
const ROUNDS: usize = 2;
const TARGET_RATIO: f64 = 0.5;

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

    // tunnel: an operator node forwarding to an exit node through a relay.
    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let t = token();
    let _exit = NodeProc::start_with(&relay.url, "r", &t, "exit", &[("TUNNEL_MODE", "edit")])?;
    let op = NodeProc::start(&relay.url, "r", &t, "op", "")?;
    op.wait_for_peers(&["exit"], Duration::from_secs(10))?;
    let o = op.cli(&["forward", "exit", "-L", &format!("0:127.0.0.1:{iperf_port}"), "--json"]);
    if !o.status.success() {
        bail!("tunnel forward: {}", String::from_utf8_lossy(&o.stderr));
    }
    let forwards: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let listen = forwards[0]["listen"].as_str().context("listen address")?;
    let tunnel_port: u16 = listen.rsplit(':').next().and_then(|p| p.parse().ok()).context("listen port")?;

    // OpenSSH: a private sshd and two `ssh -N -L` clients, one per cipher.
    let dir = TempDir::new("bench-forward");
    let key = keygen(dir.path(), "id_ed25519", "ed25519", "")?;
    let sshd = Sshd::start(&[public_key(&key)])?;
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, sshd.known_hosts_line() + "\n")?;
    let ssh_default = ssh_forward(&sshd, &key, &known, iperf_port, None)?;
    let ssh_gcm = ssh_forward(&sshd, &key, &known, iperf_port, Some("aes128-gcm@openssh.com"))?;

    let paths = [
        Path { name: "tunnel forward -L (relay)", port: tunnel_port },
        Path { name: "ssh -L (default cipher)", port: ssh_default.1 },
        Path { name: "ssh -L (aes128-gcm)", port: ssh_gcm.1 },
    ];
    println!("iperf3 -t {SECONDS} through each forward, best of {ROUNDS} rounds (Gbit/s, receiver side)");
    for streams in [1usize, 8] {
        let mut best = [0f64; 3];
        for _ in 0..ROUNDS {
            for (i, path) in paths.iter().enumerate() {
                best[i] = best[i].max(iperf(path.port, streams)?);
            }
        }
        for (path, gbps) in paths.iter().zip(best) {
            println!("  {streams} stream(s)  {:<28} {gbps:6.2}", path.name);
        }
        let ratio = best[0] / best[1];
        let verdict = if ratio >= TARGET_RATIO { "MET" } else { "NOT MET" };
        println!(
            "  {streams} stream(s)  tunnel / ssh default = {ratio:.2} (target >= {TARGET_RATIO}: {verdict}); \
             tunnel / ssh aes128-gcm = {:.2}",
            best[0] / best[2]
        );
    }
    Ok(())
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
fn iperf(port: u16, streams: usize) -> anyhow::Result<f64> {
    let mut last = String::new();
    for _ in 0..5 {
        let out = Command::new("iperf3")
            .args(["-c", "127.0.0.1", "-p", &port.to_string(), "-t", SECONDS, "-P", &streams.to_string(), "-J"])
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
