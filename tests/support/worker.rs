//! The Cloudflare Worker relay (`worker/`) under a bare `workerd`, as a child process: no
//! account, no network. Needs `npm ci` in `worker/` (the README's test command runs it).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use anyhow::{bail, Context};

/// `worker/` in this repository.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../worker")
}

fn workerd() -> PathBuf {
    dir().join("node_modules/@cloudflare/workerd-linux-64/bin/workerd")
}

/// Why the Worker cannot run here, if it cannot. Under CI this is a failure, never a skip.
pub fn unavailable() -> Option<String> {
    if workerd().exists() {
        return None;
    }
    let why = format!("{} is missing: run `npm ci` in worker/ (tests/setup.sh does)", workerd().display());
    assert!(std::env::var_os("CI").is_none(), "CI must not skip the Worker relay: {why}");
    Some(why)
}

/// Bundles `worker/src` into `worker/dist/index.js` once per test process (esbuild, ~10 ms),
/// so a test never runs a stale bundle.
fn bundle() -> anyhow::Result<()> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = Command::new(dir().join("node_modules/.bin/esbuild"))
                .args([
                    "src/index.ts",
                    "--bundle",
                    "--format=esm",
                    "--platform=neutral",
                    "--target=es2022",
                    "--external:cloudflare:*",
                    "--outfile=dist/index.js",
                    "--log-level=warning",
                ])
                .current_dir(dir())
                .output()
                .map_err(|e| format!("esbuild: {e}"))?;
            if !out.status.success() {
                return Err(format!("esbuild: {}", String::from_utf8_lossy(&out.stderr)));
            }
            Ok(())
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// A running Worker relay; killed on drop (state is in memory).
pub struct WorkerRelay {
    child: Child,
    pub port: u16,
    pub url: String,
}

impl WorkerRelay {
    /// Starts on a free loopback port. `env`: `TUNNEL_WORKER_*` settings (see relay.capnp).
    pub fn start(env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_on("127.0.0.1:0", env)
    }

    /// Starts on `addr` (a fixed port lets nodes find a restarted relay again).
    pub fn start_on(addr: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        bundle()?;
        let mut child = Command::new(workerd())
            .args(["serve", "relay.capnp", "--socket-addr", &format!("http={addr}"), "--control-fd=1"])
            .current_dir(dir())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawn workerd")?;
        // workerd reports `{"event":"listen","socket":"http","port":N}` once it listens.
        let mut line = String::new();
        let mut control = BufReader::new(child.stdout.take().context("workerd stdout")?);
        control.read_line(&mut line)?;
        // Keep reading: workerd reports more on that descriptor, and a closed pipe kills it.
        std::thread::spawn(move || std::io::copy(&mut control, &mut std::io::sink()));
        let port = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok());
        let Some(port) = port else {
            let _ = child.kill();
            bail!("workerd did not start: {line:?}");
        };
        Ok(Self { child, port, url: format!("ws://127.0.0.1:{port}") })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills it at once (SIGKILL: with sockets open, SIGTERM waits ~10 s to drain).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WorkerRelay {
    fn drop(&mut self) {
        self.kill();
    }
}
