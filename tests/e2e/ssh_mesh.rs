//! The agentless arm through the mesh, with real processes: a jump node whose inventory
//! names real sshd servers, and an operator node that reaches them only through it with
//! `tunnel exec`, `tunnel fleet`, `tunnel cp` and `tunnel ssh hosts`.

use std::time::Duration;

use tunnel_tests::netns::Netns;
use tunnel_tests::sshd::{keygen, public_key, unavailable, Sshd};
use tunnel_tests::{token, NodeProc, RelayProc, TempDir};

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn user() -> String {
    std::env::var("USER").unwrap_or_else(|_| "root".into())
}

/// A jump node in `mode` whose hosts.toml lists `servers` (tagged `web`, the first also `db`).
fn jump_config(dir: &TempDir, servers: &[Sshd], key: &std::path::Path) -> String {
    let mut hosts = String::new();
    for (i, s) in servers.iter().enumerate() {
        let tags = if i == 0 { r#"["web", "db"]"# } else { r#"["web"]"# };
        hosts.push_str(&format!(
            "[[host]]\nname = \"h{i}\"\naddress = \"{}\"\nport = {}\nuser = \"{}\"\nidentity_file = \"{}\"\ntags = {tags}\n\n",
            s.address,
            s.port,
            user(),
            key.display()
        ));
    }
    let hosts_file = dir.path().join("hosts.toml");
    std::fs::write(&hosts_file, hosts).unwrap();
    let known = dir.path().join("known_hosts");
    let lines: Vec<String> = servers.iter().map(Sshd::known_hosts_line).collect();
    std::fs::write(&known, lines.join("\n") + "\n").unwrap();
    format!("[ssh]\nhosts_files = [\"{}\"]\nknown_hosts = [\"{}\"]\n", hosts_file.display(), known.display())
}

/// Two sshd hosts, a relay, a jump peer in edit mode that reaches them, and an operator peer.
struct JumpRoom {
    dir: TempDir,
    servers: Vec<Sshd>,
    relay: RelayProc,
    token: String,
    jump: NodeProc,
    op: NodeProc,
}

impl JumpRoom {
    fn start(label: &str) -> anyhow::Result<Self> {
        let dir = TempDir::new(label);
        let key = keygen(dir.path(), "id_ed25519", "ed25519", "")?;
        let servers: Vec<Sshd> = (0..2).map(|_| Sshd::start(&[public_key(&key)])).collect::<Result<_, _>>()?;
        let relay = RelayProc::start("127.0.0.1:0", &[])?;
        let token = token();
        let config = jump_config(&dir, &servers, &key);
        let env = [("TUNNEL_MODE", "edit")];
        let jump = NodeProc::start_configured(&relay.url, "r", &token, "jump", &env, Some(&config))?;
        let op = NodeProc::start(&relay.url, "r", &token, "op", "")?;
        op.wait_for_peers(&["jump"], Duration::from_secs(10))?;
        Ok(Self { dir, servers, relay, token, jump, op })
    }
}

#[test]
fn operators_reach_ssh_hosts_through_a_jump_peer() -> anyhow::Result<()> {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return Ok(());
    }
    let JumpRoom { dir, servers, relay: _relay, token: _t, jump, op } = JumpRoom::start("ssh-mesh")?;

    // The operator sees the hosts by name and tag, through the jump peer, without addresses.
    let o = op.cli(&["ssh", "hosts", "--json"]);
    assert!(o.status.success(), "{}", err(&o));
    let list: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let hosts = list["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 2, "{list}");
    assert_eq!(hosts[0]["name"], "h0");
    assert_eq!(hosts[0]["via"], "jump");
    assert_eq!(hosts[0]["tags"], serde_json::json!(["db", "web"]));
    assert!(hosts[0]["address"].is_null(), "peers never learn addresses: {list}");
    let o = jump.cli(&["ssh", "hosts"]);
    assert!(out(&o).contains(&format!("127.0.0.1:{}", servers[1].port)), "{}", out(&o));

    // exec: output, exit code and argv kept whole.
    let o = op.cli(&["exec", "ssh:h0", "--", "uname", "-a"]);
    let local = std::process::Command::new("uname").arg("-a").output()?;
    assert_eq!((o.status.code(), out(&o)), (Some(0), out(&local)), "{}", err(&o));
    let o = op.cli(&["exec", "ssh:h1", "--shell", "echo to-err >&2; exit 4"]);
    assert_eq!((o.status.code(), err(&o).contains("to-err")), (Some(4), true), "{}", err(&o));
    let o = op.cli(&["exec", "ssh:h1", "--", "printf", "%s|", "a b", "$HOME", "it's"]);
    assert_eq!(out(&o), "a b|$HOME|it's|");
    // Without input (stdin is /dev/null here), commands run in the host's runner, one shell
    // for all of them.
    let parents: Vec<String> =
        (0..2).map(|_| out(&op.cli(&["exec", "ssh:h1", "--", "sh", "-c", "echo $PPID"]))).collect();
    assert_eq!(parents[0], parents[1]);
    let o = op.cli(&["exec", "ssh:nope", "--", "true"]);
    assert!(
        o.status.code() != Some(0) && err(&o).contains("no peer announces an SSH host named \"nope\""),
        "{}",
        err(&o)
    );

    // git on an SSH host, read into structure like on a peer.
    let repo = dir.path().join("repo");
    let made = std::process::Command::new("git").args(["init", "-q", "-b", "main"]).arg(&repo).status()?;
    assert!(made.success());
    std::fs::write(repo.join("new.txt"), "x")?;
    let repo_on_h0 = format!("ssh:h0:{}", repo.display());
    let o = op.cli(&["git", "--json", &repo_on_h0, "status"]);
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_eq!(status["branch"], "main", "{}{}", out(&o), err(&o));
    assert_eq!(status["files"][0]["path"], "new.txt", "{status}");

    // fleet: tags select hosts, mixed with peers; the answer is grouped.
    let o = op.cli(&["fleet", "exec", "ssh:tag:web,jump", "--json", "--", "uname", "-s"]);
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let groups = report["reduction"]["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{report}");
    assert_eq!(groups[0]["count"], 3);
    assert_eq!(groups[0]["members"], "jump, ssh:h[0-1]");

    // mapreduce over SSH hosts and a peer: maps and reduces run there.
    let words = dir.path().join("words.txt");
    std::fs::write(&words, "b a c a\nc a\nb d\n".repeat(50))?;
    let map = "tr -s ' ' '\\n' | awk 'NF { print $1 \"\\t\" 1 }'";
    let reduce = "awk -F '\\t' '{ c[$1] += $2 } END { for (k in c) print k \"\\t\" c[k] }' | sort";
    let o = op.cli(&[
        "mapreduce",
        "ssh:all,jump",
        "--input",
        words.to_str().unwrap(),
        "--map",
        map,
        "--reduce",
        reduce,
        "--partitions",
        "6",
        "--reducers",
        "2",
    ]);
    assert!(o.status.success(), "{}", err(&o));
    let text = out(&o);
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    assert_eq!(lines, ["a\t150", "b\t100", "c\t100", "d\t50"], "{}", out(&o));
    let audit = std::fs::read_to_string(jump.dir.path().join("state/audit.jsonl"))?;
    let on_hosts = |what: &str| audit.lines().filter(|l| l.contains("\"ssh.exec\"") && l.contains(what)).count();
    assert!(on_hosts("tr -s") >= 1 && on_hosts("sort") >= 1, "maps and reduces did not run on the SSH hosts");

    // fleet read and write on SSH hosts (the jump node is in edit mode).
    let shared = dir.path().join("shared.conf");
    std::fs::write(dir.path().join("local.conf"), "v=2\n")?;
    let o = op.cli(&[
        "fleet",
        "write",
        "ssh:all",
        dir.path().join("local.conf").to_str().unwrap(),
        shared.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    let o = op.cli(&["fleet", "read", "ssh:all", shared.to_str().unwrap(), "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let groups = doc["reduction"]["groups"].as_array().unwrap();
    assert_eq!(
        (groups.len(), groups[0]["count"].as_u64(), groups[0]["stdout"].as_str()),
        (1, Some(2), Some("v=2\n")),
        "{doc}"
    );

    // cp both ways, through SFTP on the host.
    let remote = dir.path().join("remote.txt");
    let local_src = dir.path().join("up.txt");
    std::fs::write(&local_src, "uploaded through the mesh\n")?;
    let dst = format!("ssh:h1:{}", remote.display());
    let o = op.cli(&["cp", local_src.to_str().unwrap(), &dst]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(std::fs::read_to_string(&remote)?, "uploaded through the mesh\n");
    let back = dir.path().join("back.txt");
    let o = op.cli(&["cp", &format!("ssh:h0:{}", remote.display()), back.to_str().unwrap()]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(std::fs::read_to_string(&back)?, "uploaded through the mesh\n");
    // Overwriting in edit mode keeps the old file in the jump node's backups, restorable there.
    std::fs::write(&local_src, "second version\n")?;
    let o = op.cli(&["cp", local_src.to_str().unwrap(), &dst]);
    assert!(o.status.success() && err(&o).contains("backed up on ssh:h1"), "{}", err(&o));
    assert_eq!(std::fs::read_to_string(&remote)?, "second version\n");
    let listed = out(&jump.cli(&["backups", "list", "--json"]));
    let original = format!("ssh:h1:{}", remote.display());
    let entry: serde_json::Value = serde_json::from_str(listed.lines().last().unwrap_or("{}"))?;
    assert_eq!(entry["original"], original.as_str(), "{listed}");
    assert_eq!(std::fs::read_to_string(entry["backup"].as_str().unwrap())?, "uploaded through the mesh\n");
    let o = jump.cli(&["backups", "restore", &original]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(std::fs::read_to_string(&remote)?, "uploaded through the mesh\n", "restored on the host");

    // ls, info and a recursive copy both ways, as on a peer (stat, list and mkdir over SFTP).
    let o = op.cli(&["ls", &format!("ssh:h0:{}", dir.path().display())]);
    assert!(o.status.success() && out(&o).contains(" remote.txt\n"), "{}{}", out(&o), err(&o));
    let o = op.cli(&["info", "ssh:h1", "--json"]);
    assert!(o.status.success(), "{}", err(&o));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let uname = |flag: &str| String::from_utf8(std::process::Command::new("uname").arg(flag).output().unwrap().stdout);
    assert_eq!(info["hostname"].as_str().map(str::to_owned), Some(uname("-n")?.trim().to_owned()), "{info}");
    assert_eq!(info["os"]["kernel"].as_str().map(str::to_owned), Some(uname("-r")?.trim().to_owned()), "{info}");
    assert_eq!(info["mode"], "edit", "the jump node's mode governs its hosts: {info}");
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sub"))?;
    std::fs::write(tree.join("a.txt"), "a\n")?;
    std::fs::write(tree.join("sub/b.txt"), "b\n")?;
    let landing = dir.path().join("landing");
    std::fs::create_dir(&landing)?;
    let o = op.cli(&["cp", "-r", tree.to_str().unwrap(), &format!("ssh:h1:{}", landing.display())]);
    assert!(o.status.success(), "cp -r to an SSH host: {}", err(&o));
    assert_eq!(std::fs::read_to_string(landing.join("tree/sub/b.txt"))?, "b\n");
    let again = dir.path().join("again");
    let o = op.cli(&["cp", "-r", &format!("ssh:h0:{}", landing.join("tree").display()), again.to_str().unwrap()]);
    assert!(o.status.success(), "cp -r from an SSH host: {}", err(&o));
    assert_eq!(std::fs::read_to_string(again.join("a.txt"))?, "a\n");
    assert_eq!(std::fs::read_to_string(again.join("sub/b.txt"))?, "b\n");
    // -R through an SSH host: the host listens (tcpip-forward), and what connects there is
    // carried back to a service only the operator reaches; closing frees the port.
    let servers = tunnel_tests::tcp::Servers::new();
    let web = servers.http("from the operator's side\n");
    // (The operator is the exit of its own -R: its plan mode would refuse the destination.)
    assert!(op.cli(&["mode", "local", "edit"]).status.success());
    let o = op.cli(&["forward", "ssh:h0", "-R", &format!("0:{web}"), "--json"]);
    assert!(o.status.success(), "-R via an SSH host: {}", err(&o));
    let fwd: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let listen: std::net::SocketAddr = fwd[0]["listen"].as_str().unwrap().parse()?;
    let get = || -> std::io::Result<String> {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(listen)?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        conn.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer)?;
        Ok(answer)
    };
    for _ in 0..3 {
        assert!(get()?.ends_with("from the operator's side\n"), "through the SSH host's listener");
    }
    let o = op.cli(&["forward", "close", &fwd[0]["id"].to_string()]);
    assert!(o.status.success(), "{}", err(&o));
    let freed = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        std::net::TcpStream::connect(listen).is_err()
    });
    assert!(freed, "the SSH host still listens on {listen} after the forward closed");
    let audit = std::fs::read_to_string(jump.dir.path().join("state/audit.jsonl"))?;
    assert!(audit.contains("\"ssh.listen\""), "the jump node audited the listener");
    let o = op.cli(&["mode", "ssh:h0", "plan"]);
    assert!(!o.status.success() && err(&o).contains("jump node's governs it"), "{}", err(&o));

    // An AI client over MCP: ssh_hosts, and ssh: targets in exec, fleet_exec and read_file.
    let mut env = NodeProc::env_of(op.dir.path());
    env.push(("SSH_FILE".into(), remote.display().to_string()));
    std::fs::write(&remote, "on the ssh host\n")?;
    tunnel_tests::drive_mcp("ssh", &env)?;

    // The jump node audited every operation on its hosts.
    let audit = std::fs::read_to_string(jump.dir.path().join("state/audit.jsonl"))?;
    for event in ["\"ssh.exec\"", "\"ssh.write\"", "\"ssh.read\"", "\"ssh.list\"", "\"ssh.info\"", "\"ssh.mkdir\""] {
        assert!(audit.contains(event), "no {event} in the audit log");
    }
    assert!(audit.contains("\"ssh_host\":\"h0\""));

    // The inventory reloads when its file changes, without a restart: a host renamed (the
    // operator hears of it), a bad entry reported as a problem, the rest loaded.
    let hosts_file = dir.path().join("hosts.toml");
    let edited = std::fs::read_to_string(&hosts_file)?.replace("name = \"h1\"", "name = \"h9\"");
    std::fs::write(&hosts_file, edited + "[[host]]\nname = \"broken\"\nprot = 22\n")?;
    let started = std::time::Instant::now();
    loop {
        let list: serde_json::Value = serde_json::from_slice(&op.cli(&["ssh", "hosts", "--json"]).stdout)?;
        let names: Vec<&str> = list["hosts"].as_array().unwrap().iter().filter_map(|h| h["name"].as_str()).collect();
        if names == ["h0", "h9"] {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "the operator still sees {names:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let o = op.cli(&["exec", "ssh:h9", "--", "echo", "renamed"]);
    assert_eq!((o.status.code(), out(&o).as_str()), (Some(0), "renamed\n"), "{}", err(&o));
    let o = op.cli(&["exec", "ssh:h1", "--", "true"]);
    assert!(err(&o).contains("no peer announces an SSH host named \"h1\""), "{}", err(&o));
    let own: serde_json::Value = serde_json::from_slice(&jump.cli(&["ssh", "hosts", "--json"]).stdout)?;
    assert!(
        own["problems"].to_string().contains("hosts.toml:19: unknown field `prot`"),
        "the bad entry is reported: {own}"
    );
    // SIGHUP reloads too, and never stops the node.
    std::process::Command::new("kill").args(["-HUP", &jump.proc.pid().to_string()]).status()?;
    std::thread::sleep(Duration::from_millis(500));
    let o = op.cli(&["exec", "ssh:h9", "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "after SIGHUP: {}", err(&o));
    let dst = format!("ssh:h9:{}", remote.display());

    // Plan mode on the jump node: read-only argv runs; shells and writes are refused.
    let o = jump.cli(&["mode", "local", "plan"]);
    assert!(o.status.success(), "{}", err(&o));
    let o = op.cli(&["exec", "ssh:h0", "--", "uname", "-s"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let o = op.cli(&["exec", "ssh:h0", "--shell", "touch /tmp/x"]);
    assert!(o.status.code() != Some(0) && err(&o).contains("mode plan does not allow shell"), "{}", err(&o));
    let o = op.cli(&["exec", "ssh:h0", "--", "rm", "-f", "/tmp/x"]);
    assert!(err(&o).contains("read-only system programs on SSH hosts"), "{}", err(&o));
    // git is not run on SSH hosts in plan mode: their repositories' config cannot be checked
    // for programs first, as it is on peers.
    for verb in ["status", "commit"] {
        let o = op.cli(&["git", &repo_on_h0, verb]);
        assert!(!o.status.success() && err(&o).contains("does not run git on SSH hosts"), "{verb}: {}", err(&o));
    }
    let o = op.cli(&["cp", local_src.to_str().unwrap(), &dst]);
    assert!(o.status.code() != Some(0) && err(&o).contains("mode plan does not allow writes"), "{}", err(&o));
    let o = op.cli(&["ls", &format!("ssh:h0:{}", dir.path().display())]);
    assert!(o.status.success(), "plan still lists: {}", err(&o));
    let o = op.cli(&["cp", "-r", tree.to_str().unwrap(), &format!("ssh:h0:{}", landing.display())]);
    assert!(o.status.code() != Some(0) && err(&o).contains("mode plan does not allow writes"), "{}", err(&o));
    // Disabled refuses everything.
    let o = jump.cli(&["mode", "local", "disabled"]);
    assert!(o.status.success(), "{}", err(&o));
    let o = op.cli(&["exec", "ssh:h0", "--", "uname"]);
    assert!(err(&o).contains("disabled"), "{}", err(&o));
    let audit = std::fs::read_to_string(jump.dir.path().join("state/audit.jsonl"))?;
    assert!(audit.lines().any(|l| l.contains("\"ssh.exec\"") && l.contains("\"refused\"")));
    Ok(())
}

/// Processes whose command line has `needle` (test commands run on the SSH hosts, which are
/// this machine's sshd).
fn running(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).replace('\0', " ").contains(needle))
        .count()
}

fn gone(needle: &str) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while running(needle) > 0 {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Jobs on SSH hosts are kept by the jump peer: detached or after `--job-after`, followed,
/// waited for and cancelled (the command on the host stopped) by id from the operator, and
/// reported `lost` when the jump peer restarts under them.
#[test]
fn jobs_on_ssh_hosts_are_kept_by_the_jump_peer() -> anyhow::Result<()> {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return Ok(());
    }
    let JumpRoom { dir: _dir, servers: _servers, relay, token: t, jump, op } = JumpRoom::start("ssh-jobs")?;
    let env = [("TUNNEL_MODE", "edit")];
    let detach = |host: &str, script: &str| {
        let o = op.cli(&["exec", "--detach", host, "--shell", script]);
        assert_eq!(o.status.code(), Some(0), "exec --detach {host}: {}", err(&o));
        let id = out(&o).trim().to_owned();
        assert!(id.split('@').next().unwrap_or_default().parse::<u64>().is_ok(), "job id {id:?}");
        id
    };
    let listed = |id: &str| -> serde_json::Value {
        let o = op.cli(&["jobs", "jump", "--json"]);
        out(&o)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|j| j["id"] == id)
            .unwrap_or_default()
    };

    // Detached at once, followed by its id to the end, its exit code kept.
    let id = detach("ssh:h0", "echo start; sleep 1; echo done; exit 3");
    // The jump peer keeps it.
    let j = listed(&id);
    assert_eq!((j["state"].as_str(), j["target"].as_str()), (Some("running"), Some("ssh:h0")), "{j}");
    assert!(j["command"].as_str().unwrap_or_default().starts_with("ssh:h0: "), "{j}");
    let o = op.cli(&["jobs", "wait", &id, "--timeout", "20"]);
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    let o = op.cli(&["jobs", "logs", &id]);
    assert_eq!(out(&o), "start\ndone\n", "{}", err(&o));

    // --job-after: output streams, then the command goes on as a job; a quick one leaves none.
    let o = op.cli(&["exec", "--job-after", "1", "ssh:h1", "--shell", "echo before; sleep 2; echo after"]);
    assert_eq!((o.status.code(), out(&o).lines().next()), (Some(0), Some("before")), "{}", err(&o));
    let later = out(&o).lines().last().unwrap_or_default().to_owned();
    let o = op.cli(&["jobs", "logs", "--follow", &later]);
    assert_eq!(out(&o), "before\nafter\n", "{}", err(&o));
    let o = op.cli(&["exec", "--job-after", "5", "ssh:h1", "--shell", "echo quick; exit 4"]);
    assert_eq!((o.status.code(), out(&o).as_str()), (Some(4), "quick\n"), "{}", err(&o));

    // Cancel stops the command on the host.
    let id = detach("ssh:h0", "sleep 300; echo cancel-marker-7331");
    assert!(running("cancel-marker-7331") > 0, "the job runs on the host");
    let o = op.cli(&["jobs", "cancel", &id]);
    assert!(o.status.success() && out(&o).contains("cancelled"), "{}{}", out(&o), err(&o));
    assert!(gone("cancel-marker-7331"), "cancel stopped the command on the host");
    let o = jump.cli(&["audit", "tail", "-n", "50", "--event", "job."]);
    assert!(out(&o).contains("job.start") && out(&o).contains("job.end"), "{}", out(&o));

    // The jump peer restarts under a running job: the job is lost, with what it wrote kept.
    let id = detach("ssh:h1", "echo partial; sleep 300; echo lost-marker-7332");
    std::thread::sleep(Duration::from_millis(500));
    let jump = jump.restart(&relay.url, "r", &t, &env)?;
    op.wait_for_peers(&["jump"], Duration::from_secs(15))?;
    let j = listed(&id);
    assert_eq!(j["state"], "lost", "{j}");
    assert!(j["reason"].as_str().unwrap_or_default().contains("SSH channel"), "{j}");
    // (A runner holds a line's last newline until it knows no end marker follows.)
    let o = op.cli(&["jobs", "logs", &id]);
    assert_eq!(out(&o).trim_end(), "partial", "{}", err(&o));
    // (The host hangs up a command whose channel closed, at its next write at the latest.)
    let _ = std::process::Command::new("pkill").args(["-f", "lost-marker-7332"]).status();

    // Delegated tasks run a peer's agent: an SSH host has none, and says so.
    let o = op.cli(&["task", "ssh:h0", "do something"]);
    assert!(!o.status.success() && err(&o).contains("an SSH host runs none of ours"), "{}", err(&o));
    drop(jump);
    Ok(())
}

#[test]
fn a_lan_is_reached_only_through_its_jump_peer() -> anyhow::Result<()> {
    if let Some(why) = unavailable().or_else(tunnel_tests::netns::unavailable) {
        eprintln!("SKIPPED: {why}");
        return Ok(());
    }
    // The LAN: an sshd in its own namespace, linked only to this (the jump peer's) namespace.
    // The controller: another namespace that reaches the relay here, and nothing else.
    let n = 1 + rand::random::<u8>() % 250;
    let (lan_host, ctl_side) = (format!("10.201.{n}.2"), format!("10.202.{n}.1"));
    let lan = Netns::new("lan")?;
    lan.link_to_host(&format!("10.201.{n}.1/24"), &format!("{lan_host}/24"))?;
    let ctl = Netns::new("ctl")?;
    ctl.link_to_host(&format!("{ctl_side}/24"), &format!("10.202.{n}.2/24"))?;
    let dir = TempDir::new("ssh-lan");
    let key = keygen(dir.path(), "id_ed25519", "ed25519", "")?;
    let sshd = Sshd::start_at(&lan_host, 22, &[public_key(&key)], Some(&lan.name))?;

    let relay = RelayProc::start(&format!("{ctl_side}:0"), &[])?;
    let t = token();
    let config = jump_config(&dir, std::slice::from_ref(&sshd), &key);
    let _jump = NodeProc::start_configured(&relay.url, "r", &t, "jump", &[("TUNNEL_MODE", "edit")], Some(&config))?;
    let op = NodeProc::start_in(&ctl.prefix(), &relay.url, "r", &t, "op", &[], None)?;
    op.wait_for_peers(&["jump"], Duration::from_secs(10))?;

    // The controller has no way to the LAN host by itself.
    let route = std::process::Command::new("ip")
        .args(["netns", "exec", &ctl.name, "ip", "route", "get", &lan_host])
        .output()?;
    assert!(!route.status.success(), "the controller can route to the LAN: {}", out(&route));

    // Through the mesh it runs there: the command sees the LAN host's own address.
    let o = op.cli(&["exec", "ssh:h0", "--", "ip", "-o", "-4", "addr", "show"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(out(&o).contains(&lan_host), "not run on the LAN host: {}", out(&o));
    let o = op.cli(&["fleet", "exec", "ssh:tag:web", "--", "cat", "/proc/sys/kernel/ostype"]);
    assert!(o.status.success() && out(&o).contains("ssh:h0"), "{}{}", out(&o), err(&o));
    Ok(())
}
