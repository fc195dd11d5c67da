//! A 100 MiB stream through a real `tunnel-relay` process between two nodes, checked by
//! SHA-256, while a second stream on the same link keeps answering; memory stays bounded.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tunnel_proto::message::StreamKind;
use tunnel_tests::inproc::{start_node, wait_named};
use tunnel_tests::{memory_kib, run_async, token, RelayProc};

const TOTAL: u64 = 100 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// Deterministic bytes, produced a chunk at a time so the sender never holds the whole file.
fn chunk(index: u64) -> Vec<u8> {
    let mut x = index.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut bytes = vec![0u8; CHUNK];
    tunnel_tests::fill(&mut x, &mut bytes);
    bytes
}

#[test]
fn hundred_mib_stream_intact_while_another_stream_flows() -> anyhow::Result<()> {
    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let url = relay.url.clone();
    let relay_pid = relay.proc.pid();
    run_async(Duration::from_secs(240), async move {
        let t = token();
        let a = start_node(&url, "bulk", &t, "sender").await?;
        let b = start_node(&url, "bulk", &t, "echoer").await?;
        wait_named(&a, "echoer", Duration::from_secs(10)).await?;
        let peer = a.resolve("echoer")?;
        let hwm_before = memory_kib(std::process::id(), "VmHWM");

        // A message crosses first.
        let (_, _, rtt) = a.ping("echoer").await?;
        assert!(rtt < Duration::from_secs(1));

        // The bulk stream: b echoes every byte back; a hashes what it sent and what returned.
        let bulk = a.open_stream(peer, StreamKind::Echo).await?;
        let (mut reader, mut writer) = (bulk.reader, bulk.writer);
        let sender = tokio::spawn(async move {
            let mut sent = Sha256::new();
            for i in 0..TOTAL / CHUNK as u64 {
                let c = chunk(i);
                sent.update(&c);
                writer.write_all(&c).await?;
            }
            writer.finish().await?;
            anyhow::Ok(sent.finalize())
        });
        let receiver = tokio::spawn(async move {
            let mut got = Sha256::new();
            let mut n = 0u64;
            while let Some(bytes) = reader.read().await? {
                n += bytes.len() as u64;
                got.update(&bytes);
            }
            anyhow::Ok((got.finalize(), n))
        });

        // The second stream on the same link: small round trips all through the transfer.
        let side = a.open_stream(peer, StreamKind::Echo).await?;
        let (mut side_r, mut side_w) = (side.reader, side.writer);
        let mut rounds = 0u32;
        let mut worst = Duration::ZERO;
        let started = Instant::now();
        while !receiver.is_finished() && started.elapsed() < Duration::from_secs(200) {
            let t0 = Instant::now();
            side_w.write_all(&[rounds as u8; 1024]).await?;
            let mut back = 0;
            while back < 1024 {
                back += side_r.read().await?.expect("side stream open").len();
            }
            worst = worst.max(t0.elapsed());
            rounds += 1;
        }
        let sent = sender.await??;
        let (got, n) = receiver.await??;
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(n, TOTAL);
        assert_eq!(got, sent, "SHA-256 of the echoed 100 MiB differs");
        assert!(rounds >= 10, "the side stream made only {rounds} round trips during the transfer");
        assert!(worst < Duration::from_secs(2), "a side round trip took {worst:?}");
        side_w.finish().await?;

        let grew = memory_kib(std::process::id(), "VmHWM").saturating_sub(hwm_before);
        let relay_rss = memory_kib(relay_pid, "VmRSS");
        eprintln!(
            "100 MiB each way in {secs:.1} s ({:.0} MiB/s); {rounds} side round trips, worst {worst:?}; \
             both nodes' peak memory grew {} MiB; relay RSS {} MiB",
            200.0 / secs,
            grew / 1024,
            relay_rss / 1024
        );
        assert!(grew < 96 * 1024, "the nodes' peak memory grew {grew} KiB while moving 100 MiB");
        assert!(relay_rss < 64 * 1024, "relay RSS {relay_rss} KiB");
        a.shutdown().await;
        b.shutdown().await;
        Ok(())
    })
}
