//! `tunnel demo`: a relay and three peers in one process, with nothing outside needed. It
//! shows them find each other, measure round trips, move data end-to-end encrypted, and
//! checks what the relay saw: never the data, never the room token.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tunnel_node::{Node, NodeConfig};
use tunnel_proto::message::StreamKind;
use tunnel_proto::SecretKey;
use tunnel_relay::{Intercept, Relay, RelayConfig};

const NAMES: [(&str, &str); 3] = [("alpha", "web,prod"), ("beta", "db,prod"), ("gamma", "edge")];
const STREAM_BYTES: usize = 4 * 1024 * 1024;

/// Counts what the relay receives and how often the secrets appear in it.
struct Watcher {
    needles: Vec<Vec<u8>>,
    bytes: AtomicU64,
    hits: AtomicU64,
}

impl Intercept for Watcher {
    fn received(&self, bytes: &[u8]) {
        self.bytes.fetch_add(bytes.len() as u64, Relaxed);
        for needle in &self.needles {
            let n = bytes.windows(needle.len()).filter(|w| w == needle).count();
            self.hits.fetch_add(n as u64, Relaxed);
        }
    }
}

pub(crate) async fn run() -> anyhow::Result<i32> {
    let token = tunnel_proto::room::generate_token(&mut rand::rngs::OsRng);
    let canary = format!("canary-{:016x}", rand::random::<u64>());
    let watcher = Arc::new(Watcher {
        needles: vec![canary.clone().into_bytes(), token.clone().into_bytes()],
        bytes: AtomicU64::new(0),
        hits: AtomicU64::new(0),
    });
    let relay =
        Relay::bind("127.0.0.1:0", RelayConfig { intercept: Some(watcher.clone()), ..RelayConfig::default() }).await?;
    outln!("tunnel demo\n");
    outln!("1. relay listening on {} (embedded; `tunnel-relay` is the same server)", relay.url());

    let mut nodes = Vec::new();
    for (name, tags) in NAMES {
        let node = Node::start(NodeConfig {
            relay_url: Some(relay.url()),
            room: "demo".into(),
            token: token.clone(),
            access_token: None,
            relay_trust: Default::default(),
            fail_fast: true,
            runs_as: "embedded".into(),
            name: name.into(),
            tags: tags.split(',').map(str::to_owned).collect(),
            os: tunnel_node::detect_os(),
            secret: SecretKey::generate(&mut rand::rngs::OsRng),
            agent: true,
            state_dir: None,
            policy: Default::default(),
            ssh: tunnel_node::ssh::SshSettings::empty(),
            direct: Default::default(),
        })
        .await
        .with_context(|| format!("starting peer {name}"))?;
        nodes.push(node);
    }
    outln!("2. three peers joined room \"demo\":");
    for n in &nodes {
        outln!("     {:<6} {}", n.name(), n.id());
    }

    let deadline = Instant::now() + Duration::from_secs(10);
    while !nodes.iter().all(|n| n.peers().iter().filter(|p| !p.name.is_empty()).count() == NAMES.len() - 1) {
        if Instant::now() > deadline {
            bail!("peers did not find each other within 10 s");
        }
        for n in &nodes {
            n.discover(Duration::from_secs(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    outln!("3. each found the others (Noise IKpsk2 sessions, Hello exchanged). alpha sees:");
    for p in nodes[0].peers() {
        outln!(
            "     {:<6} {}  tags={:<8} os={} {}  path={}",
            p.name,
            p.short_id,
            p.tags.join(","),
            p.os.family,
            p.os.arch,
            p.path
        );
    }

    outln!("4. round trips through the relay:");
    for target in ["beta", "gamma"] {
        let mut best = Duration::MAX;
        for _ in 0..20 {
            best = best.min(nodes[0].ping(target).await?.2);
        }
        outln!("     alpha -> {target:<5} {:>8.3} ms (best of 20)", best.as_secs_f64() * 1000.0);
    }

    let data: Vec<u8> = canary.as_bytes().iter().copied().cycle().take(STREAM_BYTES).collect();
    let beta = nodes[0].resolve("beta")?;
    let stream = nodes[0].open_stream(beta, StreamKind::Echo).await?;
    let (mut reader, mut writer) = (stream.reader, stream.writer);
    let started = Instant::now();
    let sent = data.clone();
    let send = tokio::spawn(async move {
        writer.write_all(&sent).await?;
        writer.finish().await
    });
    let echoed = reader.read_to_end(STREAM_BYTES * 2).await?;
    send.await??;
    let secs = started.elapsed().as_secs_f64();
    if echoed != data {
        bail!("the echo stream came back different");
    }
    outln!(
        "5. alpha streamed {} MiB to beta and back, intact, in {:.0} ms ({:.0} MiB/s each way)",
        STREAM_BYTES >> 20,
        secs * 1000.0,
        (STREAM_BYTES >> 20) as f64 / secs
    );

    let targets = nodes[0].select("all").await?;
    let spec = tunnel_proto::message::ExecSpec {
        request_id: 0,
        command: tunnel_proto::message::ExecCommand::Argv(vec!["uname".into(), "-sm".into()]),
        env: vec![],
        cwd: None,
        timeout_ms: None,
        output_cap: 4096,
        stdin: false,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let fleet = nodes[0].fleet(targets, tunnel_node::fleet::FleetOp::Exec(spec), Default::default(), tx);
    let collect = async {
        let mut results = Vec::new();
        while let Some(r) = rx.recv().await {
            results.push(r);
        }
        results
    };
    let ((), results) = tokio::join!(fleet, collect);
    let by = tunnel_node::fleet::reduce::GroupBy::Output;
    let reduced = tunnel_node::fleet::reduce::reduce(&results, &by, Default::default());
    outln!("6. alpha ran `uname -sm` on the fleet (`tunnel fleet exec all -- uname -sm`); the answers, grouped:");
    for g in &reduced.groups {
        outln!("     {} x {}: {} -> {}", g.count, g.status.as_str(), g.members, g.stdout.trim_end());
    }

    let m = relay.metrics();
    let hits = watcher.hits.load(Relaxed);
    outln!(
        "7. the relay forwarded {} frames ({:.1} MiB) and read {:.1} MiB in all;",
        m.frames_forwarded,
        m.bytes_forwarded as f64 / 1048576.0,
        watcher.bytes.load(Relaxed) as f64 / 1048576.0
    );
    outln!("   occurrences of the data's canary or the room token among them: {hits}");
    for n in &nodes {
        n.shutdown().await;
    }
    relay.shutdown().await;
    if hits > 0 {
        bail!("the relay saw plaintext: this is a bug");
    }
    outln!("\nAll good. Next: run `tunnel-relay`, then `tunnel run --relay ws://HOST:8080 --room NAME --token $(tunnel token)` on each machine.");
    Ok(0)
}
