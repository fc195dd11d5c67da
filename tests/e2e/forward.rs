//! Port forwarding through the mesh with real processes: a relay, an operator node and exit
//! nodes, real TCP services, curl, an sshd, and network namespaces for a LAN only one peer
//! reaches.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::Context;

use tunnel_tests::netns::Netns;
use tunnel_tests::sshd::{keygen, one_host_config, public_key, Sshd};
use tunnel_tests::tcp::{echo_round_trip, Servers};
use tunnel_tests::{token, NodeProc, RelayProc, TempDir};

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `tunnel forward ARGS --json` on `node`; the one forward it opened.
fn open(node: &NodeProc, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let mut all = vec!["forward"];
    all.extend_from_slice(args);
    all.push("--json");
    let o = node.cli(&all);
    anyhow::ensure!(o.status.success(), "tunnel {}: {}", all.join(" "), err(&o));
    let mut list: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout)?;
    anyhow::ensure!(list.len() == 1, "one forward expected: {list:?}");
    Ok(list.remove(0))
}

fn listen_addr(forward: &serde_json::Value) -> SocketAddr {
    forward["listen"].as_str().expect("listen").parse().expect("a socket address")
}

fn list(node: &NodeProc) -> anyhow::Result<Vec<serde_json::Value>> {
    let o = node.cli(&["forward", "list", "--json"]);
    anyhow::ensure!(o.status.success(), "forward list: {}", err(&o));
    Ok(serde_json::from_slice(&o.stdout)?)
}

/// `curl ARGS`, returning the body; fails with curl's own message.
fn curl(prefix: &[String], args: &[&str]) -> anyhow::Result<String> {
    let (program, rest) = match prefix.split_first() {
        Some((p, rest)) => (p.as_str(), rest.iter().map(String::as_str).chain(["curl"]).collect::<Vec<_>>()),
        None => ("curl", vec![]),
    };
    let o = Command::new(program).args(rest).args(["-sS", "--max-time", "20"]).args(args).output()?;
    anyhow::ensure!(o.status.success(), "curl {args:?}: exit {:?}: {}", o.status.code(), err(&o));
    Ok(out(&o))
}

/// Fetches `url` until it answers (each try bounded to 5 s), for at most `within`.
fn fetch_until(url: &str, within: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + within;
    loop {
        match curl(&[], &["--max-time", "5", url]) {
            Ok(body) => return Ok(body),
            Err(e) if Instant::now() > deadline => return Err(e.context(format!("{url} did not answer in {within:?}"))),
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

/// A relay, an operator node `op` in plan mode (with `op_config`), and an exit node `exit` in
/// `exit_mode`.
fn mesh(
    exit_mode: &str,
    exit_config: Option<&str>,
    op_config: Option<&str>,
) -> anyhow::Result<(RelayProc, NodeProc, NodeProc)> {
    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let t = token();
    let exit = NodeProc::start_configured(&relay.url, "r", &t, "exit", &[("TUNNEL_MODE", exit_mode)], exit_config)?;
    let op = NodeProc::start_configured(&relay.url, "r", &t, "op", &[], op_config)?;
    op.wait_for_peers(&["exit"], Duration::from_secs(10))?;
    Ok((relay, op, exit))
}

#[test]
fn forwarded_connections_carry_bytes_intact_and_independently() -> anyhow::Result<()> {
    let servers = Servers::new();
    let (echo, source) = (servers.echo(), servers.source());
    let (_relay, op, _exit) = mesh("edit", None, None)?;
    let fwd = open(&op, &["exit", "-L", &format!("0:{echo}")])?;
    let at = listen_addr(&fwd);

    // 1 GiB each way through one forwarded connection.
    let (sent, back) = echo_round_trip(at, 1 << 30, 7).context("1 GiB through one connection")?;
    assert_eq!(sent, back, "SHA-256 of 1 GiB echoed through the forward differs");

    // 100 connections at once, each with its own bytes.
    let conns: Vec<_> =
        (0..100u64).map(|i| std::thread::spawn(move || echo_round_trip(at, 1 << 20, 1000 + i))).collect();
    for (i, c) in conns.into_iter().enumerate() {
        let (sent, back) = c.join().expect("client thread").with_context(|| format!("connection {i} of 100"))?;
        assert_eq!(sent, back, "connection {i} of 100 came back different");
    }
    let info = &list(&op)?[0];
    assert_eq!(info["total"], 101, "{info}");
    assert_eq!(info["active"], 0, "{info}");
    assert!(info["bytes_out"].as_u64().unwrap() >= (1 << 30) + 100 * (1 << 20), "{info}");
    assert_eq!(info["bytes_in"], info["bytes_out"], "{info}");

    // A client that stops reading stalls its own connection only.
    let src = listen_addr(&open(&op, &["exit", "-L", &format!("0:{source}")])?);
    let mut stalled = TcpStream::connect(src)?;
    let mut first = [0u8; 1];
    stalled.read_exact(&mut first)?;
    std::thread::sleep(Duration::from_secs(1)); // its buffers fill; its stream runs out of credit
    let readers: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || -> std::io::Result<u64> {
                let mut c = TcpStream::connect(src)?;
                c.set_read_timeout(Some(Duration::from_secs(30)))?;
                let mut buf = vec![0u8; 64 * 1024];
                let mut got = 0u64;
                while got < 64 << 20 {
                    got += c.read(&mut buf)? as u64;
                }
                Ok(got)
            })
        })
        .collect();
    for r in readers {
        let got = r.join().expect("reader thread").context("a reader beside the stalled connection")?;
        assert!(got >= 64 << 20);
    }
    stalled.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = vec![0u8; 1 << 20];
    stalled.read_exact(&mut buf).context("the stalled connection, read again")?; // still alive

    // Closing a forward frees its port at once and ends its connections.
    let mut idle = TcpStream::connect(at)?;
    idle.write_all(b"ping")?;
    let mut pong = [0u8; 4];
    idle.read_exact(&mut pong)?;
    assert_eq!(&pong, b"ping");
    let id = fwd["id"].to_string();
    let o = op.cli(&["forward", "close", &id]);
    assert!(o.status.success() && out(&o).contains("102 connections"), "{}{}", out(&o), err(&o));
    TcpListener::bind(at).map_err(|e| anyhow::anyhow!("port of the closed forward still taken: {e}"))?;
    idle.set_read_timeout(Some(Duration::from_secs(5)))?;
    let ended = matches!(idle.read(&mut pong), Ok(0) | Err(_));
    assert!(ended, "a connection of the closed forward still works");
    let o = op.cli(&["forward", "close", &id]);
    assert!(!o.status.success() && err(&o).contains(&format!("no forward {id}")), "{}", err(&o));
    Ok(())
}

#[test]
fn an_ai_client_opens_uses_and_closes_forwards_over_mcp() -> anyhow::Result<()> {
    let servers = Servers::new();
    let web = servers.http("through mcp\n");
    let (_relay, op, _exit) = mesh("edit", None, None)?;
    let mut env = NodeProc::env_of(op.dir.path());
    env.push(("WEB_ADDR".into(), web.to_string()));
    tunnel_tests::drive_mcp("forward", &env)?;
    assert!(list(&op)?.iter().all(|f| f["kind"] == "socks"), "only the forward left open remains");
    Ok(())
}

#[test]
fn bad_input_and_refusals_leave_nothing_open() -> anyhow::Result<()> {
    let servers = Servers::new();
    let (allowed, other) = (servers.http("allowed\n"), servers.http("other\n"));
    let config = format!("forward_allow = [\"127.0.0.1:{}\"]\n", allowed.port());
    let (_relay, op, exit) = mesh("plan", Some(&config), None)?;
    let fails = |args: &[&str], needle: &str| {
        let mut all = vec!["forward"];
        all.extend_from_slice(args);
        let o = op.cli(&all);
        assert!(!o.status.success(), "{all:?} succeeded: {}", out(&o));
        assert!(err(&o).contains(needle), "{all:?}: {} (wanted {needle:?})", err(&o));
    };
    let taken = TcpListener::bind("127.0.0.1:0")?;
    let taken_port = taken.local_addr()?.port().to_string();
    fails(&["exit", "-L", &format!("{taken_port}:{allowed}")], &format!("cannot listen on 127.0.0.1:{taken_port}"));
    fails(&["nobody", "-L", &format!("0:{allowed}")], "nobody");
    fails(&["exit", "-L", "8080:db"], "[BIND:]PORT:HOST:HOSTPORT");
    fails(&["exit", "-L", "0.0.0.0:0:db:80"], "--public");
    fails(&["exit"], "at least one of -L, -R or -D");
    fails(&["ssh:nope", "-R", "0:localhost:80"], "no peer announces an SSH host named \"nope\"");
    // The exit's plan mode forwards only where forward_allow says, and says so at once.
    fails(&["exit", "-L", &format!("0:{other}")], "forward_allow");
    // One bad spec among good ones opens none of them.
    fails(&["exit", "-L", &format!("0:{allowed}"), "-L", &format!("0:{other}")], "forward_allow");
    assert!(list(&op)?.is_empty(), "a failed open left a forward behind: {:?}", list(&op)?);

    let fwd = open(&op, &["exit", "-L", &format!("0:{allowed}")])?;
    // Ids do not skip: the failed opens took none; the good half of the refused batch
    // (opened, then closed by the CLI) took 1.
    assert_eq!(fwd["id"], 2, "{fwd}");
    assert_eq!(curl(&[], &[&format!("http://{}/", listen_addr(&fwd))])?, "allowed\n");
    // Through SOCKS the destination is only known per connection: refused per connection,
    // with SOCKS's own "not allowed" answer, and audited at the exit.
    let socks = listen_addr(&open(&op, &["exit", "-D", "0"])?);
    let proxy = format!("socks5h://{socks}");
    assert_eq!(curl(&[], &["--proxy", &proxy, &format!("http://{allowed}/")])?, "allowed\n");
    let refused = curl(&[], &["--proxy", &proxy, &format!("http://{other}/")]).unwrap_err().to_string();
    // curl's code 97 is a SOCKS failure; the reply code it prints, (2), is "not allowed".
    assert!(refused.contains("(97)") && refused.contains("(2)"), "{refused}");
    let audit = std::fs::read_to_string(exit.dir.path().join("state/audit.jsonl"))?;
    let refused_here = format!("127.0.0.1:{}", other.port());
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"forward.connect\"") && l.contains("\"refused\"") && l.contains(&refused_here)),
        "no refused forward.connect for {refused_here} in the exit's audit log"
    );
    assert!(audit.lines().any(|l| l.contains("\"forward.connect\"") && l.contains("\"allowed\"")));
    let socks_info = list(&op)?.into_iter().find(|f| f["kind"] == "socks").expect("the socks forward");
    assert_eq!(socks_info["errors"], 1, "{socks_info}");
    assert!(socks_info["last_error"].as_str().unwrap_or_default().contains("forward_allow"), "{socks_info}");
    drop(taken);
    Ok(())
}

#[test]
fn socks_needs_its_credentials() -> anyhow::Result<()> {
    let servers = Servers::new();
    let web = servers.http("hello\n");
    let (_relay, op, _exit) = mesh("edit", None, None)?;
    let dir = TempDir::new("socks-auth");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret-pass\n")?;
    let pw = pw.to_str().unwrap();
    let socks = listen_addr(&open(&op, &["exit", "-D", "0", "--socks-user", "alice", "--socks-password-file", pw])?);
    let url = format!("http://{web}/");
    assert_eq!(curl(&[], &["--proxy", &format!("socks5h://alice:s3cret-pass@{socks}"), &url])?, "hello\n");
    assert!(curl(&[], &["--proxy", &format!("socks5h://alice:wrong@{socks}"), &url]).is_err());
    assert!(curl(&[], &["--proxy", &format!("socks5h://{socks}"), &url]).is_err(), "no credentials accepted");
    let info = list(&op)?;
    assert!(!format!("{info:?}").contains("s3cret"), "the password shows in forward list");
    Ok(())
}

#[test]
fn a_foreground_forward_lives_with_its_command() -> anyhow::Result<()> {
    use std::io::BufRead;
    let servers = Servers::new();
    let web = servers.http("foreground\n");
    let (_relay, op, _exit) = mesh("edit", None, None)?;
    let start = || -> anyhow::Result<(tunnel_tests::Proc, serde_json::Value)> {
        let mut child = Command::new(tunnel_tests::bin("tunnel"))
            .args(["forward", "exit", "-L", &format!("0:{web}"), "--foreground", "--json"])
            .envs(NodeProc::env_of(op.dir.path()))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        let mut text = String::new();
        let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        for line in lines.by_ref() {
            let line = line?;
            text.push_str(&line);
            if line == "]" {
                break;
            }
        }
        let opened: Vec<serde_json::Value> = serde_json::from_str(&text)?;
        Ok((tunnel_tests::Proc { child, name: "tunnel forward --foreground".into() }, opened[0].clone()))
    };
    let (mut held, fwd) = start()?;
    assert_eq!(fwd["held"], true);
    assert_eq!(curl(&[], &[&format!("http://{}/", listen_addr(&fwd))])?, "foreground\n");
    held.kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !list(&op)?.is_empty() {
        assert!(Instant::now() < deadline, "the forward outlived its --foreground command");
        std::thread::sleep(Duration::from_millis(50));
    }
    TcpListener::bind(listen_addr(&fwd))?;

    // Closed from elsewhere, the foreground command ends and says why.
    let (mut held, fwd) = start()?;
    let o = op.cli(&["forward", "close", &fwd["id"].to_string()]);
    assert!(o.status.success(), "{}", err(&o));
    let code = held.wait_exit(Duration::from_secs(5))?;
    assert_eq!(code, Some(1), "the foreground command kept running after its forward closed");
    Ok(())
}

#[test]
fn a_forward_outlives_a_relay_outage() -> anyhow::Result<()> {
    let servers = Servers::new();
    let web = servers.http("still here\n");
    // `op` is the exit of its own remote forward: its plan mode allows loopback.
    // On the relay only: with a direct path the forward would (rightly) not notice the outage.
    let config = "forward_allow = [\"127.0.0.1:*\"]\ndirect = \"relay-only\"\n";
    let (mut relay, op, _exit) = mesh("edit", Some("direct = \"relay-only\"\n"), Some(config))?;
    let port = relay.port();
    let fwd = open(&op, &["exit", "-L", &format!("0:{web}")])?;
    let url = format!("http://{}/", listen_addr(&fwd));
    assert_eq!(curl(&[], &[&url])?, "still here\n");
    // A remote forward too: its listener is on the exit (here on this machine's loopback).
    let rev = open(&op, &["exit", "-R", &format!("0:{web}")])?;
    let rev_url = format!("http://{}/", listen_addr(&rev));
    assert_eq!(curl(&[], &[&rev_url])?, "still here\n");

    relay.proc.kill();
    // The listener stays; a connection now waits for the peer, then fails cleanly.
    let started = Instant::now();
    let during = curl(&[], &["--max-time", "60", &url]);
    assert!(during.is_err(), "answered with no relay: {during:?}");
    assert!(started.elapsed() < Duration::from_secs(45), "the failing connection hung for {:?}", started.elapsed());
    let info = list(&op)?.into_iter().find(|f| f["id"] == fwd["id"]).expect("the -L forward");
    assert_eq!(info["state"], "listening");
    assert!(info["errors"].as_u64() >= Some(1), "{info}");

    let _relay = RelayProc::start(&format!("127.0.0.1:{port}"), &[])?;
    // The nodes come back on their own; their reconnect backoff is capped at 30 s.
    assert_eq!(fetch_until(&url, Duration::from_secs(75))?, "still here\n");
    // The remote forward listens again on the same port by itself once the exit is back.
    let back = fetch_until(&rev_url, Duration::from_secs(45));
    assert_eq!(back.map_err(|e| e.context(format!("forwards: {:?}", list(&op))))?, "still here\n");
    let ids: Vec<_> = list(&op)?.iter().map(|f| f["id"].clone()).collect();
    assert_eq!(ids, [fwd["id"].clone(), rev["id"].clone()], "the same forwards carried on");
    Ok(())
}

#[test]
fn an_ssh_hosts_services_through_its_jump_peer() -> anyhow::Result<()> {
    if let Some(why) = tunnel_tests::sshd::unavailable() {
        eprintln!("SKIPPED: {why}");
        return Ok(());
    }
    let servers = Servers::new();
    let web = servers.http("behind ssh\n");
    let dir = TempDir::new("fwd-ssh");
    let key = keygen(dir.path(), "id_ed25519", "ed25519", "")?;
    let sshd = Sshd::start(&[public_key(&key)])?;
    let config = one_host_config(dir.path(), "h0", &sshd, &key)?;
    let (_relay, op, exit) = mesh("edit", Some(&config), None)?;

    let fwd = open(&op, &["ssh:h0", "-L", &format!("0:{web}")])?;
    assert_eq!(fwd["via"], "ssh:h0");
    assert_eq!(curl(&[], &[&format!("http://{}/", listen_addr(&fwd))])?, "behind ssh\n");
    let socks = listen_addr(&open(&op, &["ssh:h0", "-D", "0"])?);
    assert_eq!(curl(&[], &["--proxy", &format!("socks5h://{socks}"), &format!("http://{web}/")])?, "behind ssh\n");
    let (sent, back) =
        echo_round_trip(listen_addr(&open(&op, &["ssh:h0", "-L", &format!("0:{}", servers.echo())])?), 64 << 20, 3)?;
    assert_eq!(sent, back, "64 MiB through a direct-tcpip channel came back different");
    let audit = std::fs::read_to_string(exit.dir.path().join("state/audit.jsonl"))?;
    assert!(audit.lines().any(|l| l.contains("\"forward.connect\"") && l.contains("\"ssh_host\":\"h0\"")));
    Ok(())
}

#[test]
fn forwards_reach_a_network_only_the_peer_sees() -> anyhow::Result<()> {
    if let Some(why) = tunnel_tests::netns::unavailable() {
        eprintln!("SKIPPED: {why}");
        return Ok(());
    }
    // The exit peer lives in its own namespace with a web server on that namespace's
    // loopback, and a name only its /etc/hosts knows. It reaches the relay over a veth link.
    let n = 1 + rand::random::<u8>() % 250;
    let (host_side, lan_side) = (format!("10.211.{n}.1"), format!("10.211.{n}.2"));
    let lan = Netns::new("fwd")?;
    lan.link_to_host(&format!("{host_side}/24"), &format!("{lan_side}/24"))?;
    lan.hosts("127.0.0.1 localhost\n127.0.0.1 lanweb.internal\n")?;
    let www = TempDir::new("lan-www");
    std::fs::write(www.path().join("index.txt"), "only on the LAN\n")?;
    let web_port = "8000";
    let web = Command::new("ip")
        .args(["netns", "exec", &lan.name, "python3", "-m", "http.server", web_port, "--bind", "127.0.0.1"])
        .arg("--directory")
        .arg(www.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let _web = tunnel_tests::Proc { child: web, name: "http.server".into() };
    let relay = RelayProc::start(&format!("{host_side}:0"), &[])?;
    let t = token();
    let _gw = NodeProc::start_in(&lan.prefix(), &relay.url, "r", &t, "gw", &[("TUNNEL_MODE", "edit")], None)?;
    let config = "forward_allow = [\"127.0.0.1:*\"]\n";
    let op = NodeProc::start_configured(&relay.url, "r", &t, "op", &[], Some(config))?;
    op.wait_for_peers(&["gw"], Duration::from_secs(10))?;
    let url_here = format!("http://127.0.0.1:{web_port}/index.txt");
    let direct = curl(&[], &["--max-time", "2", &url_here]);
    assert!(!matches!(&direct, Ok(body) if body == "only on the LAN\n"), "the LAN server is reachable from here");

    // -L: listen here, connect from the peer's namespace.
    let fwd = open(&op, &["gw", "-L", &format!("0:127.0.0.1:{web_port}")])?;
    // The web server may still be starting: retry the fetch for a while.
    let url = format!("http://{}/index.txt", listen_addr(&fwd));
    assert_eq!(fetch_until(&url, Duration::from_secs(10))?, "only on the LAN\n");

    // -D: names resolve at the peer.
    let socks = listen_addr(&open(&op, &["gw", "-D", "0"])?);
    let got =
        curl(&[], &["--socks5-hostname", &socks.to_string(), &format!("http://lanweb.internal:{web_port}/index.txt")])?;
    assert_eq!(got, "only on the LAN\n");

    // -R: a server here, exposed on the peer's loopback (inside its namespace).
    let servers = Servers::new();
    let here = servers.http("from the operator\n");
    let rev = open(&op, &["gw", "-R", &format!("0:{here}")])?;
    assert_eq!(rev["kind"], "remote");
    let on_peer = listen_addr(&rev);
    let got = curl(&lan.prefix(), &[&format!("http://{on_peer}/")])?;
    assert_eq!(got, "from the operator\n");

    let all = list(&op)?;
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(all.iter().all(|f| f["total"].as_u64() >= Some(1) && f["state"] == "listening"), "{all:?}");
    // Closing the remote forward closes its listener on the peer.
    let o = op.cli(&["forward", "close", &rev["id"].to_string()]);
    assert!(o.status.success(), "{}", err(&o));
    let deadline = Instant::now() + Duration::from_secs(5);
    while curl(&lan.prefix(), &["--max-time", "2", &format!("http://{on_peer}/")]).is_ok() {
        assert!(Instant::now() < deadline, "the peer still listens after the remote forward closed");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
