//! Foundation benchmarks. Run with `tests/perf/run.sh` (it raises the file limit and builds
//! the release relay), or `cargo bench -p tunnel-tests --bench mesh -- [rtt|memory|forward]`.
//!
//! - rtt: request/response between two peers through the relay on loopback, 1 KiB payloads,
//!   10,000 round trips, next to a raw TCP 1 KiB ping-pong on the same loopback (the floor).
//! - memory: RSS per idle connected peer of a `tunnel-relay` process at 1,000 and 10,000 peers.
//! - forward: messages per second through one relay with 100 sender/receiver pairs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tunnel_proto::relay::RelayFrame;
use tunnel_proto::RoomKeys;
use tunnel_relay::{Relay, RelayConfig};
use tunnel_tests::inproc::ping_round_trips;
use tunnel_tests::{memory_kib, raw, RelayProc};

const RTT_ROUNDS: usize = 10_000;
const RTT_TARGET_P50: Duration = Duration::from_micros(300);
const MEMORY_TARGET_KIB: f64 = 16.0;

fn main() -> anyhow::Result<()> {
    let which: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let want = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    if want("rtt") {
        rt.block_on(rtt())?;
    }
    if want("memory") {
        rt.block_on(memory())?;
    }
    if want("forward") {
        rt.block_on(forward())?;
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn rtt() -> anyhow::Result<()> {
    // The floor: 1 KiB ping-pong over a raw loopback TCP connection.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let echo = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        s.set_nodelay(true)?;
        let mut buf = [0u8; 1024];
        loop {
            if s.read_exact(&mut buf).await.is_err() {
                return anyhow::Ok(());
            }
            s.write_all(&buf).await?;
        }
    });
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut buf = [7u8; 1024];
    let mut floor = Vec::with_capacity(RTT_ROUNDS);
    for _ in 0..RTT_ROUNDS {
        let t = Instant::now();
        tcp.write_all(&buf).await?;
        tcp.read_exact(&mut buf).await?;
        floor.push(t.elapsed());
    }
    drop(tcp);
    echo.await??;

    let relay = Relay::bind("127.0.0.1:0", RelayConfig::default()).await?;
    let mesh = ping_round_trips(&relay.url(), 500, RTT_ROUNDS).await?;
    floor.sort();
    let (p50, p99) = (percentile(&mesh, 0.5), percentile(&mesh, 0.99));
    println!("rtt: request/response, 1 KiB payload, {RTT_ROUNDS} round trips, loopback");
    println!(
        "  tunnel via relay   p50 {:>7.1} us  p99 {:>7.1} us   (encrypted, 2 hops through the relay)",
        micros(p50),
        micros(p99)
    );
    println!(
        "  raw TCP ping-pong  p50 {:>7.1} us  p99 {:>7.1} us   (floor: 1 hop, no crypto)",
        micros(percentile(&floor, 0.5)),
        micros(percentile(&floor, 0.99))
    );
    println!(
        "  ratio tunnel/TCP p50 {:.2}; target p50 < {} us: {} (p50/target {:.2})",
        p50.as_secs_f64() / percentile(&floor, 0.5).as_secs_f64(),
        RTT_TARGET_P50.as_micros(),
        if p50 < RTT_TARGET_P50 { "MET" } else { "NOT MET" },
        p50.as_secs_f64() / RTT_TARGET_P50.as_secs_f64()
    );
    Ok(())
}

async fn memory() -> anyhow::Result<()> {
    let relay = RelayProc::start("127.0.0.1:0", &["--max-connections", "20000"])?;
    let pid = relay.proc.pid();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = memory_kib(pid, "VmRSS");
    println!("memory: tunnel-relay RSS with idle joined peers (100 per room); idle relay {base} KiB");
    let mut conns = Vec::new();
    for target in [1_000usize, 10_000] {
        while conns.len() < target {
            let room = RoomKeys::derive(&format!("room-{}", conns.len() / 100), "bench-token-0123456789")?.room_id;
            let (ws, _) = raw::joined(&relay.url, room)
                .await
                .with_context(|| format!("peer {} (raise ulimit -n?)", conns.len()))?;
            conns.push(ws);
        }
        // Presence frames settle, then the peers sit idle.
        for ws in conns.iter_mut() {
            while let Ok(Some(_)) = tokio::time::timeout(Duration::from_micros(1), ws.next()).await {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = memory_kib(pid, "VmRSS");
        let per_peer = (rss - base) as f64 / target as f64;
        println!(
            "  {target:>6} peers: RSS {rss:>7} KiB, {per_peer:>5.1} KiB per idle peer; target <= {MEMORY_TARGET_KIB} KiB: {} (ratio {:.2})",
            if per_peer <= MEMORY_TARGET_KIB { "MET" } else { "NOT MET" },
            per_peer / MEMORY_TARGET_KIB
        );
    }
    Ok(())
}

async fn forward() -> anyhow::Result<()> {
    const PAIRS: usize = 100;
    const PAYLOAD: usize = 256;
    const SECONDS: u64 = 5;
    let relay = Relay::bind("127.0.0.1:0", RelayConfig::default()).await?;
    let room = RoomKeys::derive("forward", "bench-token-0123456789")?.room_id;
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..PAIRS {
        let (sender, _) = raw::joined(&relay.url(), room).await?;
        let (receiver, receiver_key) = raw::joined(&relay.url(), room).await?;
        let to = receiver_key.public();
        let (mut rx_sink, mut rx_stream) = receiver.split();
        let got = received.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(Message::Binary(b))) = rx_stream.next().await {
                if b.first() == Some(&0x07) {
                    got.fetch_add(1, Relaxed);
                }
            }
            let _ = rx_sink.close().await;
        }));
        let stop = stop.clone();
        let (mut tx_sink, mut tx_stream) = sender.split();
        tasks.push(tokio::spawn(async move {
            let frame = RelayFrame::Send { to, payload: vec![1; PAYLOAD] }.encode();
            // Drain Dropped notices so the sender's own mailbox never fills.
            let drain = tokio::spawn(async move { while tx_stream.next().await.is_some() {} });
            while !stop.load(Relaxed) {
                for _ in 0..32 {
                    let _ = tx_sink.feed(Message::Binary(frame.clone())).await;
                }
                let _ = tx_sink.flush().await;
            }
            drain.abort();
        }));
    }
    let before = received.load(Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(SECONDS)).await;
    let count = received.load(Relaxed) - before;
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Relaxed);
    let m = relay.metrics();
    println!(
        "forward: {PAIRS} sender/receiver pairs, {PAYLOAD}-byte payloads, {SECONDS} s: {:.0} messages/s delivered ({:.1} MiB/s); relay dropped {} (mailboxes full)",
        count as f64 / secs,
        count as f64 * PAYLOAD as f64 / secs / 1048576.0,
        m.frames_dropped
    );
    for t in tasks {
        t.abort();
    }
    Ok(())
}
