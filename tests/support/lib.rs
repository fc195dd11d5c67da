//! Helpers for end-to-end tests: real `tunnel-relay` and `tunnel run` processes on loopback,
//! in-process relays and nodes, temporary directories, and process memory readings.
//!
//! The binaries come from the same target directory as the test executable; build them
//! first (`cargo build --bins`, which the test command in the README does).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Path of a workspace binary next to the running test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --bins` first (the README's test command does)",
        path.display()
    );
    path
}

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "tunnel-e2e-{label}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Fills `buf` with bytes from a simple generator: cheap, and different for every seed
/// (xorshift64; a zero seed stays zero).
pub fn fill(seed: &mut u64, buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let bytes = seed.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

/// A random room token long enough to be accepted.
pub fn token() -> String {
    tunnel_proto::room::generate_token(&mut rand::rngs::OsRng)
}

/// Command lines of running processes that contain `needle` (tunnel's own left out).
pub fn processes_with(needle: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(needle) && !c.contains("tunnel"))
        .collect()
}

/// Resident memory of a process in KiB (`VmRSS`), or its peak (`VmHWM`).
pub fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .and_then(|r| r.trim_start_matches(':').trim().strip_suffix("kB"))
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A child process killed (SIGKILL) on drop if still running.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait up to `within` for a clean exit; returns the exit code.
    pub fn terminate(&mut self, within: Duration) -> anyhow::Result<Option<i32>> {
        // The shell's own `kill`: no dependency on procps.
        Command::new("sh").args(["-c", &format!("kill -TERM {}", self.pid())]).status()?;
        self.wait_exit(within).with_context(|| format!("after SIGTERM to {}", self.name))
    }

    /// Waits up to `within` for the process to exit by itself; returns the exit code.
    pub fn wait_exit(&mut self, within: Duration) -> anyhow::Result<Option<i32>> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                bail!("{} did not exit within {within:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits for the line a server prints once it is ready and returns it; the rest of its
/// output keeps draining in a thread so the child never blocks on a full pipe.
fn wait_for_line(child: &mut Child, needle: &str, within: Duration) -> anyhow::Result<String> {
    let stdout = child.stdout.take().context("child stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let needle = needle.to_owned();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if !sent && line.contains(&needle) {
                let _ = tx.send(line);
                sent = true;
            }
        }
    });
    rx.recv_timeout(within).context("server did not become ready")
}

/// `tunnel-relay` as a process.
pub struct RelayProc {
    pub proc: Proc,
    pub url: String,
}

impl RelayProc {
    /// Starts on `addr` (use port 0 for any free port).
    pub fn start(addr: &str, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_in(&[], addr, extra)
    }

    /// Like `start`, run under `prefix` (e.g. `ip netns exec NAME`).
    pub fn start_in(prefix: &[String], addr: &str, extra: &[&str]) -> anyhow::Result<Self> {
        let mut command = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin("tunnel-relay"));
                c
            }
            None => Command::new(bin("tunnel-relay")),
        };
        let mut child = command
            .args(["--listen", addr])
            .args(extra)
            .env("TUNNEL_LOG", std::env::var("TUNNEL_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawn tunnel-relay")?;
        let line = wait_for_line(&mut child, "listening on", Duration::from_secs(10))?;
        let url = line.rsplit(' ').next().context("relay url")?.to_owned();
        Ok(Self { proc: Proc { child, name: "tunnel-relay".into() }, url })
    }

    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port in relay url")
    }
}

/// A `tunnel run` process with its own state and runtime directories.
pub struct NodeProc {
    pub proc: Proc,
    pub dir: TempDir,
    pub name: String,
}

impl NodeProc {
    pub fn start(relay_url: &str, room: &str, token: &str, name: &str, tags: &str) -> anyhow::Result<Self> {
        Self::start_with(relay_url, room, token, name, &[("TUNNEL_TAGS", tags)])
    }

    /// Like `start`, with extra environment variables.
    pub fn start_with(
        relay_url: &str,
        room: &str,
        token: &str,
        name: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::start_configured(relay_url, room, token, name, env, None)
    }

    /// Like `start_with`, plus a config file (written mode 0600 where the node looks for it).
    pub fn start_configured(
        relay_url: &str,
        room: &str,
        token: &str,
        name: &str,
        env: &[(&str, &str)],
        config: Option<&str>,
    ) -> anyhow::Result<Self> {
        Self::start_in(&[], relay_url, room, token, name, env, config)
    }

    /// Like `start_configured`, run under `prefix` (e.g. `ip netns exec NAME`).
    pub fn start_in(
        prefix: &[String],
        relay_url: &str,
        room: &str,
        token: &str,
        name: &str,
        env: &[(&str, &str)],
        config: Option<&str>,
    ) -> anyhow::Result<Self> {
        let dir = Self::prepare_dir(name, config)?;
        Self::spawn(dir, prefix, &bin("tunnel"), relay_url, room, token, name, env)
    }

    /// Like `start_configured`, as the user `uid` (and group `uid`), its directory theirs.
    /// Needs root.
    pub fn start_as(
        uid: u32,
        relay_url: &str,
        room: &str,
        token: &str,
        name: &str,
        env: &[(&str, &str)],
        config: Option<&str>,
    ) -> anyhow::Result<Self> {
        let dir = Self::prepare_dir(name, config)?;
        let mut stack = vec![dir.path().to_owned()];
        while let Some(p) = stack.pop() {
            std::os::unix::fs::lchown(&p, Some(uid), Some(uid))?;
            if p.is_dir() {
                stack.extend(std::fs::read_dir(&p)?.map(|e| e.map(|e| e.path())).collect::<Result<Vec<_>, _>>()?);
            }
        }
        // A copy the user can run wherever the build tree is (CI's may sit under /root).
        let copy = dir.path().join("tunnel");
        std::fs::copy(bin("tunnel"), &copy)?;
        std::os::unix::fs::lchown(&copy, Some(uid), Some(uid))?;
        let prefix: Vec<String> = ["setpriv", &format!("--reuid={uid}"), &format!("--regid={uid}"), "--clear-groups"]
            .map(String::from)
            .into();
        Self::spawn(dir, &prefix, &copy, relay_url, room, token, name, env)
    }

    fn prepare_dir(name: &str, config: Option<&str>) -> anyhow::Result<TempDir> {
        let dir = TempDir::new(name);
        if let Some(text) = config {
            let path = dir.path().join("config/tunnel/config.toml");
            std::fs::create_dir_all(path.parent().unwrap())?;
            std::fs::write(&path, text)?;
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        }
        Ok(dir)
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn(
        dir: TempDir,
        prefix: &[String],
        program: &Path,
        relay_url: &str,
        room: &str,
        token: &str,
        name: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut command = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(program);
                c
            }
            None => Command::new(program),
        };
        let mut child = command
            .args(["run", "--relay", relay_url, "--room", room, "--name", name])
            .env("TUNNEL_TOKEN", token)
            .env_remove("TUNNEL_CONFIG")
            .envs(Self::env_of(dir.path()))
            .envs(env.iter().copied())
            .env("TUNNEL_LOG", std::env::var("TUNNEL_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawn tunnel run")?;
        wait_for_line(&mut child, "control socket", Duration::from_secs(15))?;
        Ok(Self { proc: Proc { child, name: format!("tunnel run ({name})") }, dir, name: name.into() })
    }

    /// Starts the node again in its own directory (same key, same state) once it stopped.
    pub fn restart(self, relay_url: &str, room: &str, token: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let Self { proc, dir, name } = self;
        drop(proc);
        Self::spawn(dir, &[], &bin("tunnel"), relay_url, room, token, &name, env)
    }

    pub fn env_of(dir: &Path) -> Vec<(String, String)> {
        vec![
            ("TUNNEL_STATE_DIR".into(), dir.join("state").display().to_string()),
            ("TUNNEL_RUNTIME_DIR".into(), dir.join("run").display().to_string()),
            ("XDG_CONFIG_HOME".into(), dir.join("config").display().to_string()),
            ("HOME".into(), dir.display().to_string()),
        ]
    }

    /// Runs `tunnel ARGS` against this node's control socket.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli_in(self.dir.path(), args)
    }

    /// [`NodeProc::cli`] with arguments that need not be UTF-8 (file names).
    pub fn cli_os(&self, args: &[&std::ffi::OsStr]) -> Output {
        cli_in(self.dir.path(), args)
    }

    /// `tunnel peers --json`, parsed.
    pub fn peers(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let out = self.cli(&["peers", "--json"]);
        if !out.status.success() {
            bail!("tunnel peers failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Waits until this node lists peers with all of `names` (with their Hello received).
    pub fn wait_for_peers(&self, names: &[&str], within: Duration) -> anyhow::Result<Vec<serde_json::Value>> {
        let deadline = Instant::now() + within;
        loop {
            let peers = self.peers()?;
            let seen: Vec<&str> = peers.iter().filter_map(|p| p["name"].as_str()).collect();
            if names.iter().all(|n| seen.contains(n)) {
                return Ok(peers);
            }
            if Instant::now() > deadline {
                bail!("{} sees {seen:?}, not all of {names:?}, after {within:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs `tunnel ARGS` with state, runtime dir and config under `dir`.
pub fn cli_in<S: AsRef<std::ffi::OsStr>>(dir: &Path, args: &[S]) -> Output {
    Command::new(bin("tunnel"))
        .args(args)
        .envs(NodeProc::env_of(dir))
        .env_remove("TUNNEL_CONFIG")
        .env_remove("TUNNEL_TOKEN")
        .env_remove("TUNNEL_RELAY")
        .env_remove("TUNNEL_ROOM")
        .stdin(Stdio::null())
        .output()
        .expect("run tunnel")
}

/// A relay, an operator node `op` and a node `target` in `mode`, with `op` seeing `target`;
/// and the room's token.
pub fn op_and_target(mode: &str) -> anyhow::Result<(RelayProc, String, NodeProc, NodeProc)> {
    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let t = token();
    let op = NodeProc::start(&relay.url, "r", &t, "op", "")?;
    let target = NodeProc::start_with(&relay.url, "r", &t, "target", &[("TUNNEL_MODE", mode)])?;
    op.wait_for_peers(&["target"], Duration::from_secs(10))?;
    Ok((relay, t, op, target))
}

/// Whether this test process runs as root (its effective uid is 0).
pub fn running_as_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|u| u.split_whitespace().nth(1)) == Some("0")
}

/// Runs an async test body on a fresh multi-threaded runtime with a hard time limit.
pub fn run_async<F: std::future::Future<Output = anyhow::Result<()>>>(limit: Duration, f: F) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async { tokio::time::timeout(limit, f).await.context("test exceeded its time limit")? })
}

/// Runs one scenario of the MCP driver (`tests/mcp/drive.py`, the official Python SDK
/// against `tunnel mcp`); fails with its output unless every check held.
pub fn drive_mcp(scenario: &str, env: &[(String, String)]) -> anyhow::Result<String> {
    drive_client("python3", "drive.py", &[scenario], env)
        .context("the Python MCP SDK (install the client with `pip install mcp jsonschema`)")
}

/// Runs `PROGRAM tests/mcp/SCRIPT ARGS` (an MCP client driving `tunnel mcp`) with `env`; fails
/// with its output unless it printed `all checks passed`.
pub fn drive_client(program: &str, script: &str, args: &[&str], env: &[(String, String)]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("mcp").join(script))
        .args(args)
        .env("TUNNEL_BIN", bin("tunnel"))
        .env_remove("TUNNEL_CONFIG")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .with_context(|| format!("running {program}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !stdout.contains("all checks passed") {
        bail!("{script} {} failed ({}):\n{stdout}\n{stderr}", args.join(" "), out.status);
    }
    Ok(stdout)
}

pub mod inproc;
pub mod meddler;
pub mod natlab;
pub mod netns;
pub mod raw;
pub mod ssh_client;
pub mod ssh_fixture;
pub mod sshd;
pub mod tcp;
pub mod tls;
pub mod worker;
