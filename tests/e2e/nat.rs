//! Direct paths through real NATs: the lab of `support::natlab` (namespaces, nftables), real
//! `tunnel-relay` (with its STUN server) and `tunnel run` processes. Needs root; skips with a
//! message elsewhere, and fails instead of skipping under CI.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tunnel_tests::natlab::{NatKind, NatLab, Site, RELAY_IP};
use tunnel_tests::{token, NodeProc, RelayProc, TempDir};

fn lab() -> Option<NatLab> {
    if let Some(why) = NatLab::unavailable() {
        assert!(std::env::var_os("CI").is_none(), "CI must not skip the NAT lab: {why}");
        eprintln!("skipping the NAT lab: {why}");
        return None;
    }
    Some(NatLab::up().expect("NAT lab"))
}

struct Room {
    relay: RelayProc,
    token: String,
}

fn relay(lab: &NatLab) -> anyhow::Result<Room> {
    let relay = RelayProc::start_in(
        &lab.prefix("inet"),
        &format!("{RELAY_IP}:7000"),
        &["--stun-listen", &format!("{RELAY_IP}:3478")],
    )?;
    Ok(Room { relay, token: token() })
}

fn node(lab: &NatLab, room: &Room, host: &str) -> anyhow::Result<NodeProc> {
    NodeProc::start_in(&lab.prefix(host), &room.relay.url, "nat", &room.token, host, &[("TUNNEL_MODE", "edit")], None)
}

/// The peer entry `from` has for `name`.
fn peer(from: &NodeProc, name: &str) -> anyhow::Result<serde_json::Value> {
    from.peers()?.into_iter().find(|p| p["name"] == name).with_context(|| format!("{} does not list {name}", from.name))
}

/// Says hello (a session makes both sides offer their candidates), then waits until `from`
/// reaches `to` directly; returns how long that took and the path's address.
fn go_direct(from: &NodeProc, to: &NodeProc, within: Duration) -> anyhow::Result<(Duration, String)> {
    from.wait_for_peers(&[&to.name], Duration::from_secs(10))?;
    let start = Instant::now();
    let o = from.cli(&["ping", &to.name, "-c", "1"]);
    if !o.status.success() {
        bail!("ping {}: {}", to.name, String::from_utf8_lossy(&o.stderr));
    }
    while start.elapsed() < within {
        let p = peer(from, &to.name)?;
        if p["path"] == "direct" {
            return Ok((start.elapsed(), p["addr"].as_str().unwrap_or_default().to_owned()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{} is not direct to {} after {within:?}: {}", from.name, to.name, peer(from, &to.name)?)
}

/// `exec` and a 10 MB file both ways between the two nodes, byte-exact.
fn exercise(a: &NodeProc, b: &NodeProc, work: &Path) -> anyhow::Result<()> {
    let o = a.cli(&["exec", &b.name, "--", "echo", "hello from b"]);
    if !o.status.success() || String::from_utf8_lossy(&o.stdout).trim() != "hello from b" {
        bail!("exec: {} {}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    }
    let src = work.join(format!("src-{}", b.name));
    let mut seed = 0x5eed_u64 ^ rand::random::<u64>();
    let mut data = vec![0u8; 10 << 20];
    tunnel_tests::fill(&mut seed, &mut data);
    std::fs::write(&src, &data)?;
    let remote = work.join(format!("remote-{}", b.name));
    let back = work.join(format!("back-{}", b.name));
    for (from, to) in [
        (src.display().to_string(), format!("{}:{}", b.name, remote.display())),
        (format!("{}:{}", b.name, remote.display()), back.display().to_string()),
    ] {
        let o = a.cli(&["cp", &from, &to]);
        if !o.status.success() {
            bail!("cp {from} {to}: {}", String::from_utf8_lossy(&o.stderr));
        }
    }
    if std::fs::read(&back)? != data || std::fs::read(&remote)? != data {
        bail!("10 MB file changed on the way");
    }
    Ok(())
}

/// Every pair of NAT kinds: direct within 5 s where the research says a punch works, the
/// relay where it cannot; exec and a 10 MB file intact either way.
#[test]
fn every_pair_of_nat_kinds_goes_direct_where_punchable_and_works_either_way() {
    let Some(lab) = lab() else { return };
    let room = relay(&lab).unwrap();
    let work = TempDir::new("nat-matrix");
    let mut failures = Vec::new();
    let mut report = Vec::new();
    for (i, &ka) in NatKind::ALL.iter().enumerate() {
        for &kb in &NatKind::ALL[i..] {
            lab.set_nat(Site::A, ka).unwrap();
            lab.set_nat(Site::B, kb).unwrap();
            let a = node(&lab, &room, "lan-a").unwrap();
            let b = node(&lab, &room, "lan-b").unwrap();
            let expect = NatKind::punchable(ka, kb);
            let outcome = go_direct(&a, &b, Duration::from_secs(5));
            let cell = match (&outcome, expect) {
                (Ok((took, addr)), true) => {
                    let public = addr.starts_with("203.0.113.") || ka == NatKind::None || kb == NatKind::None;
                    if !public {
                        failures.push(format!("{ka:?} x {kb:?}: direct over {addr}, not the public side"));
                    }
                    format!("direct in {} ms via {addr}", took.as_millis())
                }
                (Err(e), true) => {
                    failures.push(format!("{ka:?} x {kb:?}: expected direct: {e:#}"));
                    "FAILED".into()
                }
                (Ok((_, addr)), false) => {
                    failures.push(format!("{ka:?} x {kb:?}: direct via {addr}, which should be impossible"));
                    "IMPOSSIBLE".into()
                }
                (Err(_), false) => "relay".into(),
            };
            if let Err(e) = exercise(&a, &b, work.path()) {
                failures.push(format!("{ka:?} x {kb:?}: {e:#}"));
            }
            report.push(format!("{ka:?} x {kb:?}: {cell}"));
            drop((a, b));
        }
    }
    eprintln!("NAT matrix:\n  {}", report.join("\n  "));
    assert!(failures.is_empty(), "NAT matrix failures:\n{}", failures.join("\n"));
}

/// Two peers behind one NAT reach each other over the LAN, not through the NAT (which, like
/// most, does not hairpin).
#[test]
fn peers_behind_the_same_nat_go_direct_over_the_lan() {
    let Some(lab) = lab() else { return };
    let room = relay(&lab).unwrap();
    let a = node(&lab, &room, "lan-a").unwrap();
    let a2 = node(&lab, &room, "lan-a2").unwrap();
    let (_, addr) = go_direct(&a, &a2, Duration::from_secs(5)).unwrap();
    assert!(addr.starts_with("192.168.1.11:"), "same-site path over the LAN: {addr}");
}

/// Once direct: the relay can die and the path keeps working; a cut of the path while a
/// transfer is in flight falls back (to the relay, restarted) and loses nothing; when the
/// path heals, direct again.
#[test]
fn a_direct_path_outlives_the_relay_and_survives_a_cut_mid_transfer() {
    let Some(lab) = lab() else { return };
    let mut room = relay(&lab).unwrap();
    let a = node(&lab, &room, "lan-a").unwrap();
    let b = node(&lab, &room, "lan-b").unwrap();
    go_direct(&a, &b, Duration::from_secs(5)).unwrap();
    let work = TempDir::new("nat-cut");

    room.relay.proc.kill();
    exercise(&a, &b, work.path()).expect("exec and files over the direct path with the relay dead");
    assert_eq!(peer(&a, "lan-b").unwrap()["path"], "direct");

    // The relay comes back (same address); the nodes rejoin it.
    room.relay = RelayProc::start_in(
        &lab.prefix("inet"),
        &format!("{RELAY_IP}:7000"),
        &["--stun-listen", &format!("{RELAY_IP}:3478")],
    )
    .unwrap();
    let rejoined = Instant::now();
    while a.cli(&["status", "--json"]).status.code() != Some(0) {
        assert!(rejoined.elapsed() < Duration::from_secs(40), "a never rejoined the relay");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(peer(&a, "lan-b").unwrap()["path"], "direct", "the relay's return leaves the direct path alone");

    // Cut the path, then move 40 MB: the copy starts into the dead path, must fall back to
    // the relay and arrive whole.
    lab.cut(true).unwrap();
    let mut seed = 77u64;
    let mut data = vec![0u8; 40 << 20];
    tunnel_tests::fill(&mut seed, &mut data);
    let src = work.path().join("cut-src");
    std::fs::write(&src, &data).unwrap();
    let remote = work.path().join("cut-remote");
    let o = a.cli(&["cp", src.to_str().unwrap(), &format!("lan-b:{}", remote.display())]);
    assert!(o.status.success(), "cp across the cut: {}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(&remote).unwrap() == data, "40 MB intact across the cut");
    assert_eq!(peer(&a, "lan-b").unwrap()["path"], "relay", "on the relay while cut");

    lab.cut(false).unwrap();
    let healed = Instant::now();
    while peer(&a, "lan-b").unwrap()["path"] != "direct" {
        assert!(healed.elapsed() < Duration::from_secs(40), "not direct again after the cut healed");
        std::thread::sleep(Duration::from_millis(100));
    }
    exercise(&a, &b, work.path()).expect("exec and files after the path healed");
}

/// How many times `node` audited losing its direct path to `peer`.
fn paths_lost(node: &NodeProc, peer: &str) -> usize {
    let tail = node.cli(&["audit", "tail", "-n", "500", "--json"]);
    String::from_utf8_lossy(&tail.stdout).lines().filter(|l| l.contains("path.direct_down") && l.contains(peer)).count()
}

/// Routers that forget an idle UDP mapping after 3 s: the path's keepalives hold it through
/// a long idle spell (the path never drops). Then one NAT rebinds (symmetric: the next packet
/// leaves from a new public port): work goes on without an error, over the relay or a migrated
/// path, and the peers are direct again.
#[test]
fn keepalives_hold_nat_mappings_and_a_rebinding_nat_loses_nothing() {
    let Some(lab) = lab() else { return };
    lab.set_nat(Site::A, NatKind::Symmetric).unwrap();
    lab.set_nat(Site::B, NatKind::FullCone).unwrap();
    lab.udp_timeout(3).unwrap();
    let room = relay(&lab).unwrap();
    let a = node(&lab, &room, "lan-a").unwrap();
    let b = node(&lab, &room, "lan-b").unwrap();
    let (_, addr) = go_direct(&a, &b, Duration::from_secs(5)).unwrap();

    std::thread::sleep(Duration::from_secs(12));
    let p = peer(&a, "lan-b").unwrap();
    assert_eq!((p["path"].as_str(), p["addr"].as_str()), (Some("direct"), Some(addr.as_str())), "{p}");
    assert_eq!(paths_lost(&a, "lan-b") + paths_lost(&b, "lan-a"), 0, "the path dropped while idle");

    let seen = peer(&b, "lan-a").unwrap()["addr"].clone();
    lab.rebind(Site::A).unwrap();
    let work = TempDir::new("nat-rebind");
    exercise(&a, &b, work.path()).expect("exec and files across the rebinding");
    let rebound = Instant::now();
    while peer(&a, "lan-b").unwrap()["path"] != "direct" || peer(&b, "lan-a").unwrap()["path"] != "direct" {
        assert!(rebound.elapsed() < Duration::from_secs(30), "not direct again after the NAT rebound");
        std::thread::sleep(Duration::from_millis(100));
    }
    exercise(&a, &b, work.path()).expect("exec and files after the rebinding");
    let now = peer(&b, "lan-a").unwrap()["addr"].clone();
    assert_ne!(now, seen, "the NAT did not rebind: lan-b still sees lan-a at {now}");
}

/// A path that loses 5% of its packets (both ways, at random) stays direct, and exec and files
/// cross it intact; at 30% the work still completes, over whichever path serves.
#[test]
fn a_lossy_path_loses_nothing() {
    let Some(lab) = lab() else { return };
    let room = relay(&lab).unwrap();
    let a = node(&lab, &room, "lan-a").unwrap();
    let b = node(&lab, &room, "lan-b").unwrap();
    go_direct(&a, &b, Duration::from_secs(5)).unwrap();
    let work = TempDir::new("nat-lossy");

    lab.lossy(5).unwrap();
    let started = Instant::now();
    exercise(&a, &b, work.path()).expect("exec and files over a path losing 5%");
    eprintln!("lossy 5%: exec and 10 MB both ways in {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(peer(&a, "lan-b").unwrap()["path"], "direct", "5% loss must not cost the direct path");
    assert_eq!(paths_lost(&a, "lan-b") + paths_lost(&b, "lan-a"), 0, "the path dropped under 5% loss");

    lab.lossy(15).unwrap();
    let started = Instant::now();
    exercise(&a, &b, work.path()).expect("exec and files over a path losing 15%");
    eprintln!(
        "lossy 15%: exec and 10 MB both ways in {:.1} s, now on {}",
        started.elapsed().as_secs_f64(),
        peer(&a, "lan-b").unwrap()["path"]
    );
    lab.lossy(0).unwrap();
}
