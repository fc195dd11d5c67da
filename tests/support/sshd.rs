//! Real OpenSSH servers for tests: each `Sshd` runs `/usr/sbin/sshd -D` on a loopback port
//! (or an address in a test namespace) with its own host key, accepting one client key, and
//! logging at DEBUG1 so tests can see whether authentication was attempted.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::{Proc, TempDir};

pub const SSHD: &str = "/usr/sbin/sshd";

/// Why the SSH tests cannot run here, if they cannot.
/// A jump peer's `[ssh]` config: one inventory host `name` served by `sshd`, logged into with
/// `key` as the current user, its host key trusted through a known_hosts file in `dir`.
pub fn one_host_config(dir: &Path, name: &str, sshd: &Sshd, key: &Path) -> anyhow::Result<String> {
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let hosts = dir.join("hosts.toml");
    let (address, port, key) = (&sshd.address, sshd.port, key.display());
    std::fs::write(
        &hosts,
        format!("[[host]]\nname = \"{name}\"\naddress = \"{address}\"\nport = {port}\nuser = \"{user}\"\nidentity_file = \"{key}\"\n"),
    )?;
    let known = dir.join("known_hosts");
    std::fs::write(&known, sshd.known_hosts_line() + "\n")?;
    Ok(format!("[ssh]\nhosts_files = [\"{}\"]\nknown_hosts = [\"{}\"]\n", hosts.display(), known.display()))
}

/// Under CI (`CI` set) a missing tool is a failure, never a skip: CI installs them.
pub fn unavailable() -> Option<String> {
    let missing = if !Path::new(SSHD).exists() {
        Some(format!("{SSHD} is missing (apt-get install openssh-server)"))
    } else if Command::new("ssh-keygen").arg("-?").stderr(Stdio::null()).status().is_err() {
        Some("ssh-keygen is missing (apt-get install openssh-client)".into())
    } else {
        None
    };
    if let Some(why) = &missing {
        assert!(std::env::var_os("CI").is_none(), "CI must not skip SSH tests: {why}");
    }
    missing
}

/// Makes an unencrypted key pair (or encrypted with `passphrase`); returns the private key path.
pub fn keygen(dir: &Path, name: &str, kind: &str, passphrase: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", passphrase, "-C", name, "-f"])
        .arg(&path)
        .stdin(Stdio::null())
        .status()
        .context("ssh-keygen")?;
    if !status.success() {
        bail!("ssh-keygen -t {kind} failed");
    }
    Ok(path)
}

/// The public half of a key made by [`keygen`], as one `type base64 comment` line.
pub fn public_key(private: &Path) -> String {
    std::fs::read_to_string(private.with_extension("pub")).expect("public key file").trim().to_owned()
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

pub struct Sshd {
    pub port: u16,
    pub address: String,
    pub dir: TempDir,
    pub host_key: PathBuf,
    proc: Proc,
}

impl Sshd {
    /// Starts sshd on 127.0.0.1 accepting `client_keys` (public key lines).
    pub fn start(client_keys: &[String]) -> anyhow::Result<Self> {
        Self::start_at("127.0.0.1", free_port(), client_keys, None)
    }

    /// Starts sshd on `address:port`, inside network namespace `netns` if given.
    pub fn start_at(address: &str, port: u16, client_keys: &[String], netns: Option<&str>) -> anyhow::Result<Self> {
        Self::launch(&[address.to_owned()], port, client_keys, netns, "DEBUG1")
    }

    /// One sshd listening on every address in `addresses` (each `address:port` a separate
    /// endpoint for clients), logging only errors: for benchmarks.
    pub fn start_many(addresses: &[String], port: u16, client_keys: &[String]) -> anyhow::Result<Self> {
        Self::launch(addresses, port, client_keys, None, "ERROR")
    }

    fn launch(
        addresses: &[String],
        port: u16,
        client_keys: &[String],
        netns: Option<&str>,
        log_level: &str,
    ) -> anyhow::Result<Self> {
        let address = addresses.first().context("no address to listen on")?.clone();
        let listen: String = addresses.iter().map(|a| format!("ListenAddress {a}\n")).collect();
        let dir = TempDir::new("sshd");
        let host_key = keygen(dir.path(), "host_ed25519", "ed25519", "")?;
        let authorized = dir.path().join("authorized_keys");
        std::fs::write(&authorized, client_keys.join("\n") + "\n")?;
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\n{listen}HostKey {}\nPidFile {}/sshd.pid\n\
                 AuthorizedKeysFile {}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n\
                 Subsystem sftp internal-sftp\nLogLevel {log_level}\nMaxStartups 10000\nMaxSessions 10\n\
                 UseDNS no\n",
                host_key.display(),
                dir.path().display(),
                authorized.display()
            ),
        )?;
        // sshd's privilege separation directory; root makes it, others run unprivileged.
        let _ = std::fs::create_dir_all("/run/sshd");
        let log = dir.path().join("sshd.log");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, SSHD]);
                c
            }
            None => Command::new(SSHD),
        };
        cmd.arg("-D").arg("-f").arg(&config).arg("-E").arg(&log).stdin(Stdio::null());
        let child = cmd.spawn().context("start sshd")?;
        let proc = Proc { child, name: "sshd".into() };
        let sshd = Self { port, address, dir, host_key, proc };
        sshd.wait_listening(netns)?;
        Ok(sshd)
    }

    fn wait_listening(&self, netns: Option<&str>) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::fs::read_to_string(self.log()).is_ok_and(|l| l.contains("Server listening")) {
                return Ok(());
            }
            if netns.is_none() && std::net::TcpStream::connect((self.address.as_str(), self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("sshd did not start listening on {}:{}; log:\n{}", self.address, self.port, self.log_text())
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join("sshd.log")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// The `known_hosts` line that trusts this server.
    pub fn known_hosts_line(&self) -> String {
        let key = public_key(&self.host_key);
        let mut words = key.split_whitespace();
        let (kind, data) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
        let host = if self.port == 22 { self.address.clone() } else { format!("[{}]:{}", self.address, self.port) };
        format!("{host} {kind} {data}")
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

/// An `ssh-agent` holding some keys, stopped on drop.
pub struct Agent {
    pub socket: PathBuf,
    pid: u32,
    _dir: TempDir,
}

impl Agent {
    pub fn start(keys: &[&Path]) -> anyhow::Result<Self> {
        let dir = TempDir::new("agent");
        let socket = dir.path().join("agent.sock");
        let out = Command::new("ssh-agent").arg("-a").arg(&socket).arg("-s").output().context("ssh-agent")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let pid = text
            .split(';')
            .find_map(|part| part.trim().strip_prefix("SSH_AGENT_PID="))
            .and_then(|p| p.parse().ok())
            .context("ssh-agent printed no pid")?;
        let agent = Self { socket, pid, _dir: dir };
        for key in keys {
            let status = Command::new("ssh-add")
                .arg("-q")
                .arg(key)
                .env("SSH_AUTH_SOCK", &agent.socket)
                .stdin(Stdio::null())
                .status()?;
            if !status.success() {
                bail!("ssh-add {} failed", key.display());
            }
        }
        Ok(agent)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.pid.to_string()).status();
    }
}
