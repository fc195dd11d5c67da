//! A node that talked to thousands of peers returns to its idle memory once they go quiet.
//!
//! The hub endpoint lives in this process, alone, under a counting allocator; the relay and the
//! spokes live in a child process (this test binary run again), so the bytes counted here are
//! the hub's own. The spokes come in waves of [`WAVE`] (a room of 10,000 costs 50 million
//! presence frames to assemble, which is not what this measures): each wave joins, the hub
//! talks to every spoke, waits until every actor is reaped with the wave still present, and the
//! wave leaves. `REAP_PEERS` sets how many spokes in all (10,000 by default).

#![allow(unsafe_code)] // the counting allocator below

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tunnel_net::{DirectConfig, DirectMode, Endpoint, EndpointConfig, NetEvent, Stream};
use tunnel_proto::message::{Hello, StreamKind};
use tunnel_proto::{RoomKeys, SecretKey};

/// Bytes allocated and not yet freed in this process.
static LIVE: AtomicUsize = AtomicUsize::new(0);

struct Counting;

// SAFETY: every call goes to `System` unchanged; the counter only observes sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Relaxed);
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
            LIVE.fetch_add(new_size, Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const TOKEN: &str = "reap-memory-test-token-0123456789";
const CHILD: &str = "TUNNEL_REAP_CHILD";
/// Spokes present at once.
const WAVE: usize = 1_000;

fn peers_wanted() -> usize {
    std::env::var("REAP_PEERS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000)
}

fn config(relay_url: String, name: &str, peer_idle: Duration) -> EndpointConfig {
    EndpointConfig {
        relay_url: Some(relay_url),
        access_token: None,
        room: RoomKeys::derive("reap", TOKEN).expect("room"),
        secret: SecretKey::generate(&mut rand::rngs::OsRng),
        hello: Hello::new(name),
        relay_trust: Default::default(),
        fail_fast: true,
        direct: DirectConfig { mode: DirectMode::RelayOnly, ..Default::default() },
        peer_idle,
    }
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Counted bytes once they stop moving (tasks finishing their last frees).
async fn settled_live() -> usize {
    let mut last = LIVE.load(Relaxed);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = LIVE.load(Relaxed);
        if now.abs_diff(last) < 16 << 10 {
            return now;
        }
        last = now;
    }
    last
}

/// Waits, at most `within`, until `done` holds.
async fn until(within: Duration, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A session and a stream with each peer, 64 at a time.
/// Opens an echo stream with every present peer and has each echo a greeting. The streams stay
/// open (so no actor is idle, and none reaped, however long the whole takes) until
/// [`finish_all`].
async fn talk_to_all(hub: &Endpoint) -> Vec<Stream> {
    let peers = hub.peers();
    let mut work = tokio::task::JoinSet::new();
    for chunk in peers.chunks(peers.len().div_ceil(64).max(1)) {
        let (hub, chunk) = (hub.clone(), chunk.to_vec());
        work.spawn(async move {
            let mut open = Vec::new();
            for peer in chunk {
                let mut stream = hub.open_stream(&peer, StreamKind::Echo).await.expect("open");
                stream.writer.write_all(b"hello").await.expect("write");
                let mut echoed = Vec::new();
                while echoed.len() < 5 {
                    echoed.extend_from_slice(&stream.reader.read().await.expect("read").expect("echo"));
                }
                assert_eq!(echoed, b"hello");
                open.push(stream);
            }
            open
        });
    }
    let mut open = Vec::new();
    while let Some(done) = work.join_next().await {
        open.extend(done.expect("talker"));
    }
    open
}

/// Ends the streams [`talk_to_all`] left open, both ways.
async fn finish_all(streams: Vec<Stream>) {
    for Stream { mut reader, writer, .. } in streams {
        writer.finish().await.expect("finish");
        assert!(reader.read_to_end(64).await.expect("read").is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_talked_to_thousands_of_peers_returns_to_its_idle_memory() {
    if std::env::var_os(CHILD).is_some() {
        return spokes().await; // this run is the child
    }
    let total = peers_wanted();
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "a_node_that_talked_to_thousands_of_peers_returns_to_its_idle_memory"])
        .args(["--nocapture", "--test-threads", "1"])
        .env(CHILD, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the spokes");
    let mut to_child = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut line_with = |prefix: &str| loop {
        let line = lines.next().expect("the spokes ended early").expect("read");
        // (libtest may print "test NAME ... " on the same line first.)
        if let Some(at) = line.find(prefix) {
            return line[at + prefix.len()..].trim().to_owned();
        }
    };
    let url = line_with("RELAY ");
    let (hub, mut events) = Endpoint::start(config(url, "hub", Duration::from_secs(1))).await.expect("hub");
    tokio::spawn(async move { while events.recv().await.is_some() {} });

    let started = Instant::now();
    let (mut idle, mut busiest, mut after, mut talked) = (0, 0, 0, 0);
    while talked < total {
        let wave = WAVE.min(total - talked);
        writeln!(to_child, "{wave}").expect("ask for a wave");
        line_with("READY");
        until(Duration::from_secs(60), "the wave present", || hub.peers().len() == wave).await;
        if talked == 0 {
            idle = settled_live().await;
        }
        let talking = talk_to_all(&hub).await;
        assert_eq!(hub.active_peers(), wave, "one actor per peer talked to");
        busiest = busiest.max(LIVE.load(Relaxed));
        finish_all(talking).await;
        // Quiet: every actor is reaped while the peers are still in the room.
        until(Duration::from_secs(60), "every actor reaped", || hub.active_peers() == 0).await;
        assert_eq!(hub.peers().len(), wave, "reaping forgets no peer");
        after = settled_live().await;
        talked += wave;
        writeln!(to_child, "leave").expect("ask the wave to leave");
        line_with("GONE");
        until(Duration::from_secs(30), "the wave gone", || hub.peers().is_empty()).await;
    }
    eprintln!(
        "reap: talked to {talked} peers in waves of {WAVE} in {:.1} s; hub heap with a wave present: \
         idle {:.2} MiB, talking {:.2} MiB ({:.1} KiB per peer), after the last reaping {:.2} MiB \
         ({} bytes more than idle)",
        started.elapsed().as_secs_f64(),
        mib(idle),
        mib(busiest),
        busiest.saturating_sub(idle) as f64 / 1024.0 / WAVE.min(total) as f64,
        mib(after),
        after as i64 - idle as i64,
    );
    assert!(busiest > idle + WAVE.min(total) * 1024, "talking must cost something, or this measures nothing");
    // Nothing that grows with the peers talked to: within 16 bytes a peer, 64 KiB at least.
    let slack = (total * 16).max(64 << 10);
    assert!(after <= idle + slack, "{:.2} MiB after reaping, idle was {:.2} MiB", mib(after), mib(idle));
    drop(to_child);
    let _ = child.wait();
}

/// The child (the same test, run again with `TUNNEL_REAP_CHILD` set): a relay, then waves of
/// spokes that echo every stream. Each line on stdin is the size of a wave to start, or `leave`
/// to stop the present one; stdin closed ends it.
async fn spokes() {
    let config_relay = tunnel_relay::RelayConfig { max_peers_per_room: WAVE + 8, ..Default::default() };
    let relay = tunnel_relay::Relay::bind("127.0.0.1:0", config_relay).await.expect("relay");
    let url = relay.url();
    say(&format!("RELAY {url}"));
    let (line_tx, mut line_rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            if line_tx.blocking_send(line.expect("stdin")).is_err() {
                break;
            }
        }
    });
    let mut wave = Vec::new();
    let mut named = 0;
    while let Some(line) = line_rx.recv().await {
        if line == "leave" {
            let leaving: Vec<Endpoint> = std::mem::take(&mut wave);
            leaving.iter().for_each(Endpoint::shutdown);
            futures_util::future::join_all(leaving.iter().map(Endpoint::closed)).await;
            say("GONE");
            continue;
        }
        let n: usize = line.parse().expect("a wave size");
        let mut starting = tokio::task::JoinSet::new();
        for _ in 0..n {
            named += 1;
            let (url, name) = (url.clone(), format!("s{named}"));
            starting.spawn(async move { Endpoint::start(config(url, &name, Duration::from_secs(600))).await });
        }
        while let Some(started) = starting.join_next().await {
            let (spoke, mut events) = started.expect("task").expect("spoke");
            tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    if let NetEvent::Stream(Stream { mut reader, mut writer, .. }) = event {
                        // Echoes as it comes, and ends when the hub ends its side.
                        tokio::spawn(async move {
                            while let Ok(Some(got)) = reader.read().await {
                                if writer.write_all(&got).await.is_err() {
                                    return;
                                }
                            }
                            let _ = writer.finish().await;
                        });
                    }
                }
            });
            wave.push(spoke);
        }
        say("READY");
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").expect("stdout");
    out.flush().expect("stdout");
}
