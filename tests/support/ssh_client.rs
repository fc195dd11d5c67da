//! A tunnel-ssh pool for tests against real sshd: hosts, settings and a command runner.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;
use tunnel_proto::message::{ExecEvent, ExecExit};
use tunnel_ssh::{
    ClientSettings, ExecRequest, Host, Inventory, Pool, PoolSettings, RemoteCommand, SshError, StrictHostKeys,
};

use crate::sshd::{unavailable, Sshd};
use crate::TempDir;

/// True, after saying why, when sshd cannot run here.
pub fn skip() -> bool {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return true;
    }
    false
}

pub fn user() -> String {
    std::env::var("USER").unwrap_or_else(|_| "root".into())
}

pub fn host(name: &str, sshd: &Sshd, key: Option<&PathBuf>) -> Host {
    let mut h = Host::new(name, "test");
    h.address = sshd.address.clone();
    h.port = sshd.port;
    h.user = Some(user());
    h.identity_files = key.into_iter().cloned().collect();
    h
}

pub fn settings(dir: &TempDir, known: &[String]) -> ClientSettings {
    let file = dir.path().join("known_hosts");
    std::fs::write(&file, known.join("\n") + "\n").unwrap();
    ClientSettings {
        known_hosts: vec![file.clone()],
        record_to: file,
        strict_host_keys: StrictHostKeys::Yes,
        connect_timeout: Duration::from_secs(10),
        agent: None,
        default_user: user(),
        default_identities: vec![],
    }
}

pub fn pool(settings: ClientSettings, hosts: Vec<Host>) -> Pool {
    Pool::new(PoolSettings::new(settings), Inventory { hosts, problems: vec![] })
}

#[derive(Debug)]
pub struct Ran {
    pub stdout: String,
    pub stderr: String,
    /// Exactly the bytes of each stream.
    pub raw: (Vec<u8>, Vec<u8>),
    pub exit: ExecExit,
}

/// Runs `command` on `host` without input, collecting its output.
pub async fn run(
    pool: &Pool,
    host: &str,
    command: impl Into<RemoteCommand>,
    timeout: Option<Duration>,
) -> Result<Ran, SshError> {
    run_request(pool, host, ExecRequest { command: command.into(), timeout, output_cap: 1 << 20, stdin: None }).await
}

/// Runs `request` on `host`, collecting its output.
pub async fn run_request(pool: &Pool, host: &str, request: ExecRequest) -> Result<Ran, SshError> {
    let (tx, mut rx) = mpsc::channel(64);
    let collect = async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Some(ev) = rx.recv().await {
            match ev {
                ExecEvent::Stdout(b) => out.extend(b.0),
                ExecEvent::Stderr(b) => err.extend(b.0),
                _ => {}
            }
        }
        (out, err)
    };
    let exec = async {
        let r = pool.exec(host, request, &tx).await;
        drop(tx);
        r
    };
    let (exit, (out, err)) = tokio::join!(exec, collect);
    Ok(Ran {
        stdout: String::from_utf8_lossy(&out).into(),
        stderr: String::from_utf8_lossy(&err).into(),
        exit: exit?,
        raw: (out, err),
    })
}
