//! SSH benchmarks. Run with `tests/perf/run_ssh.sh` (release build, raised file limit,
//! parallel-ssh, ansible-core and asyncssh installed), or
//! `cargo bench -p tunnel-tests --bench ssh -- [fanout|scale]`.
//!
//! - fanout: `uname -a` on 200 targets, 25 on each of 8 OpenSSH sshd processes; every tool,
//!   tunnel included, makes one connection per target (tunnel keeps a session per inventory
//!   host). tunnel (a `tunnel
//!   run` node whose inventory holds the 200, driven by `tunnel fleet exec ssh:all`), cold (a
//!   fresh node) and warm (the node's pool already holds the sessions), beside parallel-ssh,
//!   Ansible ad-hoc (`ansible all -m command`, pipelining on, no ControlMaster) and an asyncssh
//!   `asyncio.gather` script, each at its best concurrency of 8, 16, 32 and 64, in one run.
//!   Targets: cold within 5% of the best other tool; warm at least 10x faster than the best
//!   cold run of any tool. `fanout-tunnel` runs tunnel's part alone.
//! - scale: 10,000 targets served by an in-process russh fixture (tests/support/ssh_fixture.rs);
//!   tunnel's time and the node's peak RSS (target: under 1 GiB), beside asyncssh's.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tunnel_tests::sshd::{free_port, keygen, public_key, Sshd};
use tunnel_tests::{bin, memory_kib, token, NodeProc, RelayProc, TempDir};

const SERVERS: usize = 8;
const TARGETS_PER_SERVER: usize = 25;
const CONCURRENCIES: [usize; 4] = [8, 16, 32, 64];
/// Warm runs also try every target at once: with the sessions open, nothing queues on sshd.
const WARM_EXTRA: [usize; 2] = [128, 200];
const SCALE_TARGETS: usize = 10_000;
const SCALE_CONCURRENCY: usize = 512;
const SCALE_LISTENERS: usize = 100;

fn main() -> anyhow::Result<()> {
    let which: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let want = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    if want("fanout") {
        fanout(true)?;
    } else if which.iter().any(|w| w == "fanout-tunnel") {
        fanout(false)?; // tunnel alone, for a quick look
    }
    if want("scale") {
        scale()?;
    }
    Ok(())
}

/// The user every tool logs in as. As root, a system user `tunnelbench` whose shell is
/// `/bin/sh` and whose home is `/tmp`: a command's cost is then the SSH layer's, not the login
/// user's dotfiles (root's `.bashrc` here runs `pyenv init`, about 100 processes and 130 ms of
/// server CPU per command, for every tool alike).
fn user() -> String {
    static USER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    USER.get_or_init(|| {
        let me = std::env::var("USER").unwrap_or_else(|_| "root".into());
        if me != "root" {
            return me;
        }
        let exists = Command::new("id").arg("tunnelbench").stdout(Stdio::null()).stderr(Stdio::null()).status();
        if !exists.is_ok_and(|s| s.success()) {
            let made = Command::new("useradd")
                .args(["--system", "--no-create-home", "--home-dir", "/tmp", "--shell", "/bin/sh", "tunnelbench"])
                .status();
            if !made.is_ok_and(|s| s.success()) {
                eprintln!("cannot add the user tunnelbench; logging in as root (its dotfiles will be measured too)");
                return me;
            }
        }
        // `*`: no password can match, but the account is not locked (sshd refuses locked ones).
        let _ = Command::new("usermod").args(["-p", "*", "tunnelbench"]).status();
        "tunnelbench".into()
    })
    .clone()
}

/// The files every tool reads: targets, known_hosts, and each tool's inventory.
struct Targets {
    dir: TempDir,
    key: PathBuf,
    endpoints: Vec<(String, u16)>,
}

impl Targets {
    fn new(
        key_dir: TempDir,
        key: PathBuf,
        endpoints: Vec<(String, u16)>,
        host_key_line: impl Fn(&str, u16) -> String,
    ) -> anyhow::Result<Self> {
        let t = Self { dir: key_dir, key, endpoints };
        let p = |name: &str| t.dir.path().join(name);
        let lines = |f: &dyn Fn(usize, &str, u16) -> String| -> String {
            t.endpoints.iter().enumerate().map(|(i, (a, port))| f(i, a, *port) + "\n").collect()
        };
        std::fs::write(p("targets.txt"), lines(&|_, a, port| format!("{a} {port}")))?;
        // One line per endpoint: clients read the file per connection, and duplicates would
        // measure their known_hosts parsing instead of SSH.
        let mut known: Vec<String> = t.endpoints.iter().map(|(a, port)| host_key_line(a, *port)).collect();
        known.sort();
        known.dedup();
        std::fs::write(p("known_hosts"), known.join("\n") + "\n")?;
        std::fs::write(p("pssh_hosts"), lines(&|_, a, port| format!("{}@{a}:{port}", user())))?;
        let inventory = lines(&|i, a, port| {
            format!("t{i:05} ansible_host={a} ansible_port={port} ansible_user={} ansible_python_interpreter=/usr/bin/python3", user())
        });
        std::fs::write(p("inventory.ini"), format!("[targets]\n{inventory}"))?;
        let hosts = lines(&|i, a, port| {
            format!("[[host]]\nname = \"t{i:05}\"\naddress = \"{a}\"\nport = {port}\nuser = \"{}\"\nidentity_file = \"{}\"\n", user(), t.key.display())
        });
        std::fs::write(p("hosts.toml"), hosts)?;
        Ok(t)
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn node_config(&self, max_connecting: usize) -> String {
        format!(
            "[ssh]\nhosts_files = [\"{}\"]\nknown_hosts = [\"{}\"]\nmax_connecting = {max_connecting}\n",
            self.path("hosts.toml"),
            self.path("known_hosts")
        )
    }
}

fn timed(cmd: &mut Command) -> anyhow::Result<(Duration, Output)> {
    let started = Instant::now();
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("running {cmd:?}"))?;
    Ok((started.elapsed(), out))
}

fn pssh(t: &Targets, concurrency: usize) -> anyhow::Result<Duration> {
    let (took, out) = timed(
        Command::new("parallel-ssh")
            .args(["-h", &t.path("pssh_hosts"), "-p", &concurrency.to_string(), "-t", "120"])
            .args(["-O", "StrictHostKeyChecking=yes", "-O", &format!("UserKnownHostsFile={}", t.path("known_hosts"))])
            .args([
                "-O",
                &format!("IdentityFile={}", t.key.display()),
                "-O",
                "IdentitiesOnly=yes",
                "-O",
                "BatchMode=yes",
            ])
            .args(["-O", "ControlMaster=no", "uname", "-a"]),
    )?;
    let ok = String::from_utf8_lossy(&out.stdout).matches("[SUCCESS]").count();
    if ok != t.endpoints.len() {
        bail!("parallel-ssh: {ok} of {} succeeded: {}", t.endpoints.len(), String::from_utf8_lossy(&out.stdout));
    }
    Ok(took)
}

fn ansible(t: &Targets, concurrency: usize) -> anyhow::Result<Duration> {
    let home = TempDir::new("ansible-home");
    let ssh_args = format!(
        "-o ControlMaster=no -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} -o IdentitiesOnly=yes",
        t.path("known_hosts")
    );
    let (took, out) = timed(
        Command::new("ansible")
            .args(["all", "-i", &t.path("inventory.ini"), "-m", "command", "-a", "uname -a"])
            .args(["-f", &concurrency.to_string(), "--private-key", &t.key.display().to_string()])
            .env("ANSIBLE_HOME", home.path())
            .env("ANSIBLE_LOCAL_TEMP", home.path().join("tmp"))
            .env("ANSIBLE_SSH_ARGS", ssh_args)
            .env("ANSIBLE_PIPELINING", "True")
            .env("ANSIBLE_HOST_KEY_CHECKING", "True")
            .env("ANSIBLE_FORKS", concurrency.to_string()),
    )?;
    let ok = String::from_utf8_lossy(&out.stdout).matches("| CHANGED |").count();
    if ok != t.endpoints.len() {
        bail!("ansible: {ok} of {} succeeded:\n{}", t.endpoints.len(), String::from_utf8_lossy(&out.stdout));
    }
    Ok(took)
}

/// (time, peak RSS in KiB) of the asyncssh script.
fn asyncssh(t: &Targets, concurrency: usize) -> anyhow::Result<(Duration, u64)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("perf/asyncssh_fanout.py");
    let (_, out) = timed(
        Command::new("python3")
            .arg(script)
            .args([t.path("targets.txt"), t.path("known_hosts"), t.key.display().to_string(), user()])
            .arg(concurrency.to_string()),
    )?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("asyncssh script: {}", String::from_utf8_lossy(&out.stderr)))?;
    if report["ok"].as_u64() != Some(t.endpoints.len() as u64) {
        bail!("asyncssh: {report}");
    }
    Ok((
        Duration::from_secs_f64(report["seconds"].as_f64().unwrap_or(0.0)),
        report["max_rss_kib"].as_u64().unwrap_or(0),
    ))
}

/// A fresh node holding the inventory, beside its relay.
fn tunnel_node(t: &Targets, max_connecting: usize) -> anyhow::Result<(RelayProc, NodeProc)> {
    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let node = NodeProc::start_configured(
        &relay.url,
        "bench",
        &token(),
        "jump",
        &[("TUNNEL_MODE", "edit")],
        Some(&t.node_config(max_connecting)),
    )?;
    Ok((relay, node))
}

/// `tunnel fleet exec ssh:all -- uname -a` through `node`: time and targets ok.
fn tunnel_fleet(node: &NodeProc, concurrency: usize) -> anyhow::Result<(Duration, u64)> {
    let (took, out) = timed(
        Command::new(bin("tunnel"))
            .args(["fleet", "exec", "ssh:all", "--json", "--concurrency", &concurrency.to_string(), "--timeout", "300"])
            .args(["--", "uname", "-a"])
            .envs(NodeProc::env_of(node.dir.path())),
    )?;
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("tunnel fleet: {}", String::from_utf8_lossy(&out.stderr)))?;
    let ok = doc["reduction"]["by_status"]["ok"].as_u64().unwrap_or(0);
    if let Some(failed) = doc["targets"].as_array().and_then(|ts| ts.iter().find(|t| t["status"] != "ok")) {
        eprintln!("tunnel: {} not ok: {} {}", failed["name"], failed["status"], failed["error"]);
    }
    Ok((took, ok))
}

fn fanout(with_others: bool) -> anyhow::Result<()> {
    let dir = TempDir::new("ssh-bench");
    let key = keygen(dir.path(), "id_ed25519", "ed25519", "")?;
    let mut servers = Vec::new();
    let mut endpoints = Vec::new();
    for _ in 0..SERVERS {
        let sshd = Sshd::start_many(&["127.0.0.1".into()], free_port(), &[public_key(&key)])?;
        endpoints.extend((0..TARGETS_PER_SERVER).map(|_| ("127.0.0.1".to_owned(), sshd.port)));
        servers.push(sshd);
    }
    let host_keys: Vec<(u16, String)> = servers.iter().map(|s| (s.port, public_key(&s.host_key))).collect();
    let line = |a: &str, port: u16| {
        let k = &host_keys.iter().find(|(p, _)| *p == port).expect("a server per port").1;
        let mut w = k.split_whitespace();
        format!("[{a}]:{port} {} {}", w.next().unwrap_or_default(), w.next().unwrap_or_default())
    };
    let t = Targets::new(dir, key, endpoints, line)?;
    println!(
        "fan-out: uname -a on {} targets ({SERVERS} sshd x {TARGETS_PER_SERVER} targets), 2 cores",
        t.endpoints.len()
    );
    println!("{:<12} {:>11} {:>11} {:>11} {:>11}", "tool", "c=8", "c=16", "c=32", "c=64");
    let mut best_other = (Duration::MAX, String::new());
    let row = |name: &str, times: Vec<Duration>| {
        let cells: Vec<String> = times.iter().map(|d| format!("{:>10.2}s", d.as_secs_f64())).collect();
        println!("{name:<12} {}", cells.join(" "));
        times.into_iter().zip(CONCURRENCIES).min().expect("some runs")
    };
    for (name, run) in [
        ("parallel-ssh", &pssh as &dyn Fn(&Targets, usize) -> anyhow::Result<Duration>),
        ("ansible", &ansible),
        ("asyncssh", &|t: &Targets, c| asyncssh(t, c).map(|r| r.0)),
    ] {
        if !with_others {
            break;
        }
        let times = CONCURRENCIES.iter().map(|c| run(&t, *c)).collect::<anyhow::Result<Vec<_>>>()?;
        let (best, at) = row(name, times);
        if best < best_other.0 {
            best_other = (best, format!("{name} at concurrency {at}"));
        }
    }
    let mut cold = Vec::new();
    let mut warm = (Duration::MAX, 0);
    for c in CONCURRENCIES {
        let (_relay, node) = tunnel_node(&t, c)?;
        let (took, ok) = tunnel_fleet(&node, c)?;
        if ok != t.endpoints.len() as u64 {
            bail!("tunnel cold at {c}: {ok} of {} ok", t.endpoints.len());
        }
        cold.push(took);
        let warm_at: Vec<usize> = if c == *CONCURRENCIES.last().expect("some") {
            [c].into_iter().chain(WARM_EXTRA).collect()
        } else {
            vec![c]
        };
        for wc in warm_at {
            for _ in 0..3 {
                let (took, ok) = tunnel_fleet(&node, wc)?;
                if ok != t.endpoints.len() as u64 {
                    bail!("tunnel warm at {wc}: {ok} ok");
                }
                if took < warm.0 {
                    warm = (took, wc);
                }
            }
        }
    }
    let (tunnel_cold, at) = row("tunnel cold", cold);
    let (warm, warm_at) = warm;
    println!(
        "{:<12} {:>10.2}s (best of 3 at each concurrency, and 128 and 200; best at {warm_at})",
        "tunnel warm",
        warm.as_secs_f64()
    );
    let cold_ratio = tunnel_cold.as_secs_f64() / best_other.0.as_secs_f64();
    let warm_speedup = best_other.0.min(tunnel_cold).as_secs_f64() / warm.as_secs_f64();
    let warm_vs_others = best_other.0.as_secs_f64() / warm.as_secs_f64();
    println!("best other cold: {:.2}s ({})", best_other.0.as_secs_f64(), best_other.1);
    println!(
        "tunnel cold (concurrency {at}) / best other cold = {cold_ratio:.2} (target <= 1.05): {}",
        if cold_ratio <= 1.05 { "MET" } else { "NOT MET" }
    );
    println!(
        "best cold of any tool / tunnel warm = {warm_speedup:.1}x (target >= 10x): {}; best other tool's cold / tunnel warm = {warm_vs_others:.1}x",
        if warm_speedup >= 10.0 { "MET" } else { "NOT MET" }
    );
    Ok(())
}

fn scale() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let dir = TempDir::new("ssh-scale");
    let key = keygen(dir.path(), "id_ed25519", "ed25519", "")?;
    let host_key_path = keygen(dir.path(), "fixture_host", "ed25519", "")?;
    let host_key = russh::keys::load_secret_key(&host_key_path, None)?;
    // 100 listening addresses, 100 targets on each: every target is still its own session
    // (tunnel keeps one per inventory host), and the fixture stays under the file limit.
    let port = free_port();
    let addresses: Vec<String> = (0..SCALE_LISTENERS).map(|i| format!("127.2.0.{}", i + 1)).collect();
    let endpoints: Vec<(String, u16)> =
        (0..SCALE_TARGETS).map(|i| (addresses[i % SCALE_LISTENERS].clone(), port)).collect();
    let _servers = rt.block_on(async {
        let mut listeners = Vec::new();
        for a in &addresses {
            let bound = tokio::net::TcpListener::bind((a.as_str(), port)).await;
            listeners.push(bound.with_context(|| format!("bind {a}:{port}"))?);
        }
        anyhow::Ok(tunnel_tests::ssh_fixture::serve(host_key, listeners))
    })?;
    let fixture_key = public_key(&host_key_path);
    let mut w = fixture_key.split_whitespace();
    let (kind, data) = (w.next().unwrap_or_default().to_owned(), w.next().unwrap_or_default().to_owned());
    let t = Targets::new(dir, key, endpoints, |a, p| format!("[{a}]:{p} {kind} {data}"))?;
    println!("scale: uname on {SCALE_TARGETS} targets (in-process russh fixture), concurrency {SCALE_CONCURRENCY}");
    let (_relay, node) = tunnel_node(&t, SCALE_CONCURRENCY)?;
    let before = memory_kib(node.proc.pid(), "VmRSS");
    let (took, ok) = tunnel_fleet(&node, SCALE_CONCURRENCY)?;
    let peak = memory_kib(node.proc.pid(), "VmHWM");
    let (warm, _) = tunnel_fleet(&node, SCALE_CONCURRENCY)?;
    println!(
        "tunnel:   {ok} ok in {:.2}s (warm again: {:.2}s); node RSS {} MiB at start, peak {} MiB (target < 1024 MiB): {}",
        took.as_secs_f64(),
        warm.as_secs_f64(),
        before / 1024,
        peak / 1024,
        if peak < 1 << 20 && ok == SCALE_TARGETS as u64 { "MET" } else { "NOT MET" }
    );
    drop(node);
    match asyncssh(&t, SCALE_CONCURRENCY) {
        Ok((took, rss)) => {
            println!("asyncssh: {SCALE_TARGETS} ok in {:.2}s; peak RSS {} MiB", took.as_secs_f64(), rss / 1024)
        }
        Err(e) => println!("asyncssh: {e}"),
    }
    Ok(())
}
