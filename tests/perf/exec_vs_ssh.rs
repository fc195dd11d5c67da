//! `tunnel exec PEER -- true` against `ssh -o ControlMaster=auto ... HOST true` (OpenSSH's
//! fastest way to run repeated commands), side by side in one run on loopback.
//!
//! Both are timed the same way: a whole client process per call, from spawn to exit, so
//! each pays its own startup. The two alternate call by call so machine noise hits both.
//! Needs `sshd` (Debian: openssh-server). Run: `tests/perf/run_exec.sh`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tunnel_tests::{bin, token, NodeProc, RelayProc, TempDir};

const CALLS: usize = 1000;
const WARMUP: usize = 20;

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn keygen(path: &Path) -> anyhow::Result<()> {
    let ok = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(path).status()?.success();
    if !ok {
        bail!("ssh-keygen failed");
    }
    Ok(())
}

/// A private sshd on a free loopback port; killed on drop.
struct Sshd {
    child: std::process::Child,
    port: u16,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sshd(dir: &Path) -> anyhow::Result<Sshd> {
    let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("no sshd: install openssh-server")?;
    std::fs::create_dir_all("/run/sshd").ok(); // privilege separation directory
    keygen(&dir.join("host_key"))?;
    keygen(&dir.join("client_key"))?;
    std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys"))?;
    let port = free_port()?;
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\n\
         StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n",
        d = dir.display()
    );
    std::fs::write(dir.join("sshd_config"), config)?;
    let host_pub = std::fs::read_to_string(dir.join("host_key.pub"))?;
    std::fs::write(dir.join("known_hosts"), format!("[127.0.0.1]:{port} {host_pub}"))?;
    let child =
        Command::new(sshd).args(["-D", "-e", "-f"]).arg(dir.join("sshd_config")).stderr(Stdio::null()).spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("sshd did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Sshd { child, port })
}

fn ssh_command(dir: &Path, port: u16) -> Command {
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let mut c = Command::new("ssh");
    c.args([
        "-o",
        "ControlMaster=auto",
        "-o",
        "ControlPersist=60",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
    ])
    .arg("-o")
    .arg(format!("ControlPath={}/cm-%C", dir.display()))
    .arg("-o")
    .arg(format!("UserKnownHostsFile={}/known_hosts", dir.display()))
    .arg("-i")
    .arg(dir.join("client_key"))
    .args(["-p", &port.to_string(), &format!("{user}@127.0.0.1"), "true"])
    .stdin(Stdio::null())
    .stdout(Stdio::null());
    c
}

fn timed(mut c: Command) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let status = c.status()?;
    let took = t.elapsed();
    if !status.success() {
        bail!("{c:?} failed: {status}");
    }
    Ok(took)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let dir = TempDir::new("sshbench");
    let sshd = start_sshd(dir.path())?;
    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let t = token();
    let op = NodeProc::start(&relay.url, "bench", &t, "op", "")?;
    let _target = NodeProc::start(&relay.url, "bench", &t, "target", "")?;
    op.wait_for_peers(&["target"], Duration::from_secs(10))?;
    let tunnel = || {
        let mut c = Command::new(bin("tunnel"));
        c.args(["exec", "target", "--", "true"]).stdin(Stdio::null()).stdout(Stdio::null());
        let d = op.dir.path();
        c.env("TUNNEL_STATE_DIR", d.join("state")).env("TUNNEL_RUNTIME_DIR", d.join("run")).env("HOME", d);
        c
    };
    for _ in 0..WARMUP {
        timed(ssh_command(dir.path(), sshd.port))?;
        timed(tunnel())?;
    }
    let (mut ssh, mut tun) = (Vec::with_capacity(CALLS), Vec::with_capacity(CALLS));
    for _ in 0..CALLS {
        ssh.push(timed(ssh_command(dir.path(), sshd.port))?);
        tun.push(timed(tunnel())?);
    }
    ssh.sort();
    tun.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("exec round trip, `true`, {CALLS} calls each, alternating, loopback:");
    println!("  tunnel exec (via relay)     p50 {:>6.2} ms  p99 {:>6.2} ms", ms(pct(&tun, 0.5)), ms(pct(&tun, 0.99)));
    println!("  ssh ControlMaster=auto      p50 {:>6.2} ms  p99 {:>6.2} ms", ms(pct(&ssh, 0.5)), ms(pct(&ssh, 0.99)));
    let ratio = pct(&tun, 0.5).as_secs_f64() / pct(&ssh, 0.5).as_secs_f64();
    println!("  ratio tunnel/ssh p50 {ratio:.2}; target <= 0.50: {}", if ratio <= 0.5 { "MET" } else { "NOT MET" });
    let _ = Command::new("ssh")
        .args(["-O", "exit", "-o"])
        .arg(format!("ControlPath={}/cm-%C", dir.path().display()))
        .args(["-p", &sshd.port.to_string(), "127.0.0.1"])
        .stderr(Stdio::null())
        .status();
    Ok(())
}
