//! The Cloudflare Worker relay (`worker/` under a bare workerd) beside `tunnel-relay`, in one
//! run on this machine's loopback. Run: `tests/perf/run_worker.sh`.
//!
//! - rtt: request/response between two in-process nodes through each relay, 1 KiB payloads,
//!   p50 and p99 over 2,000 round trips.
//! - throughput: one client sends 64 KiB frames to another for 3 s; what arrives, in MiB/s.
//! - memory: RSS per idle joined connection at 1,000 connections (10 rooms of 100).
//!
//! Both relays run as their own processes. Ratios are Worker / tunnel-relay.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tunnel_proto::relay::RelayFrame;
use tunnel_proto::RoomKeys;
use tunnel_tests::inproc::ping_round_trips;
use tunnel_tests::worker::{self, WorkerRelay};
use tunnel_tests::{memory_kib, raw, RelayProc};

const ROUNDS: usize = 2_000;
const FRAME: usize = 64 * 1024;
const SECONDS: u64 = 3;
const CONNECTIONS: usize = 1_000;

fn main() -> anyhow::Result<()> {
    if let Some(why) = worker::unavailable() {
        anyhow::bail!("the Worker relay cannot run: {why}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let rust = RelayProc::start("127.0.0.1:0", &["--max-connections", "20000"])?;
        let worker = WorkerRelay::start(&[])?;
        let relays =
            [("tunnel-relay", rust.url.clone(), rust.proc.pid()), ("worker", worker.url.clone(), worker.pid())];

        println!("rtt: request/response between two nodes, 1 KiB, {ROUNDS} round trips (us)");
        let mut p50s = vec![];
        for (name, url, _) in &relays {
            let (p50, p99) = rtt(url).await?;
            println!("  {name:<13} p50 {p50:>7.1}  p99 {p99:>7.1}");
            p50s.push(p50);
        }
        println!("  worker / tunnel-relay p50 = {:.2}", p50s[1] / p50s[0]);

        println!("throughput: 64 KiB frames, one sender to one receiver, {SECONDS} s (MiB/s received)");
        let mut rates = vec![];
        for (name, url, _) in &relays {
            let rate = throughput(url).await?;
            println!("  {name:<13} {rate:>7.1}");
            rates.push(rate);
        }
        println!("  worker / tunnel-relay = {:.2}", rates[1] / rates[0]);

        println!("memory: RSS per idle joined connection at {CONNECTIONS} connections (KiB)");
        let mut per = vec![];
        for (name, url, pid) in &relays {
            let kib = memory(url, *pid).await?;
            println!("  {name:<13} {kib:>7.1}");
            per.push(kib);
        }
        println!("  worker / tunnel-relay = {:.2}", per[1] / per[0]);
        anyhow::Ok(())
    })
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn rtt(url: &str) -> anyhow::Result<(f64, f64)> {
    let times = ping_round_trips(url, 200, ROUNDS).await?;
    let at = |p: f64| micros(times[((times.len() - 1) as f64 * p).round() as usize]);
    Ok((at(0.5), at(0.99)))
}

async fn throughput(url: &str) -> anyhow::Result<f64> {
    let room = RoomKeys::derive("throughput", "bench-token-0123456789")?.room_id;
    let (sender, _) = raw::joined(url, room).await?;
    let (receiver, receiver_key) = raw::joined(url, room).await?;
    let received = Arc::new(AtomicU64::new(0));
    let got = received.clone();
    let (_rx_sink, mut rx) = receiver.split();
    let reader = tokio::spawn(async move {
        while let Some(Ok(Message::Binary(b))) = rx.next().await {
            if b.first() == Some(&0x07) {
                got.fetch_add(b.len() as u64, Relaxed);
            }
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let (mut tx, mut tx_in) = sender.split();
    let drain = tokio::spawn(async move { while tx_in.next().await.is_some() {} });
    let frame = RelayFrame::Send { to: receiver_key.public(), payload: vec![1; FRAME] }.encode();
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Relaxed) {
                if tx.send(Message::Binary(frame.clone())).await.is_err() {
                    break;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (before, started) = (received.load(Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs(SECONDS)).await;
    let bytes = received.load(Relaxed) - before;
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Relaxed);
    let _ = writer.await;
    reader.abort();
    drain.abort();
    Ok(bytes as f64 / secs / (1024.0 * 1024.0))
}

async fn memory(url: &str, pid: u32) -> anyhow::Result<f64> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = memory_kib(pid, "VmRSS");
    let mut conns = Vec::with_capacity(CONNECTIONS);
    while conns.len() < CONNECTIONS {
        let room = RoomKeys::derive(&format!("room-{}", conns.len() / 100), "bench-token-0123456789")?.room_id;
        conns.push(raw::joined(url, room).await?.0);
    }
    for ws in conns.iter_mut() {
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_micros(1), ws.next()).await {}
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = memory_kib(pid, "VmRSS");
    Ok((rss.saturating_sub(base)) as f64 / CONNECTIONS as f64)
}
