//! Three `tunnel run` nodes in a room on the Cloudflare Worker relay (`worker/` under a bare
//! workerd): everything works through it, the room survives the Durable Object hibernating
//! and workerd restarting, and nothing the Worker was given holds the room's token, its name
//! or any plaintext. Nodes run relay-only, so every byte crosses the Worker.

use std::time::{Duration, Instant};

use anyhow::bail;
use tunnel_tests::sshd::free_port;
use tunnel_tests::tcp::{echo_round_trip, Servers};
use tunnel_tests::worker::{self, WorkerRelay};
use tunnel_tests::{token, NodeProc, TempDir};

/// Plaintext that crosses the room in commands, output and files; never the Worker.
const MARKER: &str = "plaintext-marker-7d1c5e";

fn ok(o: std::process::Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// exec, 10 MB both ways, a forward and a fleet exec: all through the Worker.
fn exercise(a: &NodeProc, work: &std::path::Path, echo: std::net::SocketAddr) -> anyhow::Result<()> {
    let out = ok(a.cli(&["exec", "b", "--", "echo", MARKER]));
    assert_eq!(out.trim(), MARKER);
    let mut seed = rand::random::<u64>() | 1;
    let mut data = vec![0u8; 10 << 20];
    tunnel_tests::fill(&mut seed, &mut data);
    data[..MARKER.len()].copy_from_slice(MARKER.as_bytes());
    let (src, remote, back) = (work.join("src"), work.join("remote"), work.join("back"));
    std::fs::write(&src, &data)?;
    ok(a.cli(&["cp", src.to_str().unwrap(), &format!("b:{}", remote.display())]));
    ok(a.cli(&["cp", &format!("b:{}", remote.display()), back.to_str().unwrap()]));
    if std::fs::read(&remote)? != data || std::fs::read(&back)? != data {
        bail!("10 MB changed on the way");
    }
    let forwards: serde_json::Value =
        serde_json::from_str(&ok(a.cli(&["forward", "c", "-L", &format!("0:{echo}"), "--json"])))?;
    let listen: std::net::SocketAddr = forwards[0]["listen"].as_str().unwrap_or_default().parse()?;
    let (sent, got) = echo_round_trip(listen, 2 << 20, 9)?;
    assert_eq!(sent, got, "the forward changed the bytes");
    ok(a.cli(&["forward", "close", &forwards[0]["id"].to_string()]));
    let fleet = ok(a.cli(&["fleet", "exec", "b,c", "--", "echo", MARKER]));
    assert!(fleet.starts_with("2 targets: 2 ok"), "{fleet}");
    Ok(())
}

fn signal(nodes: &[&NodeProc], which: &str) {
    for node in nodes {
        let status = std::process::Command::new("kill").args([which, &node.proc.pid().to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill {which} {}", node.name);
    }
}

fn wait_for(node: &NodeProc, names: &[&str], within: Duration) {
    node.wait_for_peers(names, within).unwrap_or_else(|e| panic!("{} does not see {names:?}: {e:#}", node.name));
}

#[test]
fn three_nodes_work_through_the_worker_across_hibernation_and_a_restart() {
    if let Some(why) = worker::unavailable() {
        eprintln!("skipping: {why}");
        return;
    }
    let port = free_port();
    let mut relay = WorkerRelay::start_on(&format!("127.0.0.1:{port}"), &[]).unwrap();
    let servers = Servers::new();
    let (tap, seen) = servers.ws_tap(([127, 0, 0, 1], port).into());
    let echo = servers.echo();
    let (room, t) = (format!("worker-room-{}", rand::random::<u32>()), token());
    let env = [("TUNNEL_DIRECT", "relay-only"), ("TUNNEL_MODE", "edit")];
    let url = format!("ws://{tap}");
    let a = NodeProc::start_with(&url, &room, &t, "a", &env).unwrap();
    let b = NodeProc::start_with(&url, &room, &t, "b", &env).unwrap();
    let c = NodeProc::start_with(&url, &room, &t, "c", &env).unwrap();
    wait_for(&a, &["b", "c"], Duration::from_secs(15));
    let peers = ok(a.cli(&["peers"]));
    for name in ["b", "c"] {
        let line = peers.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_default();
        assert!(line.contains("relay"), "{name} over the Worker: {peers}");
    }
    let work = TempDir::new("worker-relay");
    exercise(&a, work.path(), echo).expect("through the Worker");

    // Idle past workerd's hibernation delay (about 10 s; the object was seen rebuilt after
    // 12 s): the object is evicted with its fields, and routing must come back from the
    // sockets' attachments. The nodes are stopped meanwhile, or their relay pings (every 15 s
    // each) would keep waking it; their connections stay open.
    let nodes = [&a, &b, &c];
    signal(&nodes, "-STOP");
    std::thread::sleep(Duration::from_secs(16));
    signal(&nodes, "-CONT");
    exercise(&a, work.path(), echo).expect("after hibernation");

    // workerd dies (its state was in memory) and comes back on the same port.
    relay.kill();
    let down = Instant::now();
    relay = WorkerRelay::start_on(&format!("127.0.0.1:{port}"), &[]).unwrap();
    let gone = || a.peers().map(|p| p.is_empty()).unwrap_or(true);
    while !gone() && down.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for(&a, &["b", "c"], Duration::from_secs(40));
    wait_for(&b, &["a", "c"], Duration::from_secs(40));
    exercise(&a, work.path(), echo).expect("after workerd restarted");
    drop(relay);

    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() > 30 << 20, "the tap saw the traffic ({} bytes)", seen.len());
    for (what, secret) in [("token", t.as_str()), ("room name", room.as_str()), ("plaintext", MARKER)] {
        assert!(!seen.windows(secret.len()).any(|w| w == secret.as_bytes()), "the Worker was given the {what}");
    }
}
