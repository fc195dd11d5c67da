//! In-process relays and nodes: real servers and real nodes on loopback, in the test's own
//! process, for tests that need to look inside (relay hooks) or move a lot of data.

use std::time::{Duration, Instant};

use anyhow::bail;
use tunnel_node::{Node, NodeConfig};
use tunnel_proto::SecretKey;

pub fn node_config(relay_url: &str, room: &str, token: &str, name: &str) -> NodeConfig {
    NodeConfig {
        relay_url: Some(relay_url.into()),
        room: room.into(),
        token: token.into(),
        access_token: None,
        relay_trust: Default::default(),
        fail_fast: true,
        runs_as: "embedded".into(),
        name: name.into(),
        tags: vec![],
        os: tunnel_node::detect_os(),
        secret: SecretKey::generate(&mut rand::rngs::OsRng),
        agent: true,
        state_dir: None,
        policy: Default::default(),
        ssh: tunnel_node::ssh::SshSettings::empty(),
        // In-process fleets of hundreds of nodes test what runs over paths, not paths: each
        // would open a socket and dial every peer it meets. Direct paths have their own tests
        // (crates/net/tests/direct.rs, tests/e2e/nat.rs) and the process tests use them.
        direct: tunnel_net::DirectConfig { mode: tunnel_net::DirectMode::RelayOnly, ..Default::default() },
    }
}

pub async fn start_node(relay_url: &str, room: &str, token: &str, name: &str) -> anyhow::Result<Node> {
    Ok(Node::start(node_config(relay_url, room, token, name)).await?)
}

/// Waits until `node` has a Hello from a peer named `name`.
pub async fn wait_named(node: &Node, name: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while !node.peers().iter().any(|p| p.name == name) {
        node.discover(Duration::from_millis(500)).await;
        if Instant::now() > deadline {
            bail!("{} did not see {name} within {within:?}", node.name());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Request/response round trips (`Ping`, 1 KiB) between two fresh in-process nodes through
/// `relay_url`, after `warmup` unmeasured ones; sorted.
pub async fn ping_round_trips(relay_url: &str, warmup: usize, rounds: usize) -> anyhow::Result<Vec<Duration>> {
    let t = crate::token();
    let a = start_node(relay_url, "bench", &t, "a").await?;
    let b = start_node(relay_url, "bench", &t, "b").await?;
    wait_named(&a, "b", Duration::from_secs(10)).await?;
    let peer = a.resolve("b")?;
    let payload = tunnel_proto::message::ByteBuf::from(vec![0x5a; 1024]);
    let ping = || tunnel_proto::message::Op::Ping { payload: payload.clone() };
    for _ in 0..warmup {
        a.request(peer, ping(), Duration::from_secs(5)).await?;
    }
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        a.request(peer, ping(), Duration::from_secs(5)).await?;
        times.push(started.elapsed());
    }
    a.shutdown().await;
    b.shutdown().await;
    times.sort();
    Ok(times)
}
