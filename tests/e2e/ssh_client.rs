//! tunnel-ssh against real OpenSSH servers: exec, SFTP, host key policy and authentication.

use std::time::Duration;

use tokio::sync::mpsc;
use tunnel_proto::message::FileEvent;
use tunnel_ssh::{ExecRequest, Host, Inventory, Pool, PoolSettings, SshError, StrictHostKeys};
use tunnel_tests::ssh_client::{host, pool, run, run_request, settings, skip};
use tunnel_tests::sshd::{keygen, public_key, Agent, Sshd};
use tunnel_tests::TempDir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_files_on_several_servers() {
    if skip() {
        return;
    }
    let dir = TempDir::new("ssh-exec");
    let key = keygen(dir.path(), "id_ed25519", "ed25519", "").unwrap();
    let servers: Vec<Sshd> = (0..3).map(|_| Sshd::start(&[public_key(&key)]).unwrap()).collect();
    let known: Vec<String> = servers.iter().map(Sshd::known_hosts_line).collect();
    let hosts: Vec<Host> = servers.iter().enumerate().map(|(i, s)| host(&format!("h{i}"), s, Some(&key))).collect();
    let pool = pool(settings(&dir, &known), hosts);

    for i in 0..3 {
        let ran = run(&pool, &format!("h{i}"), "echo out-$((40+2)); echo err >&2; exit 3", None).await.unwrap();
        assert_eq!(ran.stdout, "out-42\n");
        assert_eq!(ran.stderr, "err\n");
        assert_eq!(ran.exit.code, Some(3));
    }
    // argv quoting survives the remote shell, as a command line and in a runner.
    let argv: Vec<String> = ["printf", "%s|", "a b", "it's", "$HOME"].iter().map(|s| s.to_string()).collect();
    let command = tunnel_ssh::RemoteCommand::argv(argv, vec![], None).unwrap();
    assert_eq!(run(&pool, "h0", command.line().as_str(), None).await.unwrap().stdout, "a b|it's|$HOME|");
    assert_eq!(run(&pool, "h0", command, None).await.unwrap().stdout, "a b|it's|$HOME|");
    // A signal is reported as one.
    let killed = run(&pool, "h1", "kill -TERM $$", None).await.unwrap();
    assert_eq!((killed.exit.code, killed.exit.signal), (None, Some(15)), "{:?}", killed.exit);
    // A timeout ends the command and says so, in about the timeout.
    let started = std::time::Instant::now();
    let slow = run(&pool, "h2", "sleep 30", Some(Duration::from_millis(500))).await.unwrap();
    assert!(slow.exit.timed_out);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // Output past the cap is cut and flagged, and still counted.
    let req = ExecRequest { command: "head -c 100000 /dev/zero".into(), timeout: None, output_cap: 1000, stdin: None };
    let ran = run_request(&pool, "h0", req).await.unwrap();
    assert_eq!(ran.raw.0.len(), 1000);
    assert!(ran.exit.stdout_truncated && ran.exit.stdout_bytes == 100_000);
    // Stdin reaches the command.
    let (in_tx, in_rx) = mpsc::channel(8);
    in_tx.send(b"hello ".to_vec()).await.unwrap();
    in_tx.send(b"stdin".to_vec()).await.unwrap();
    drop(in_tx);
    let req = ExecRequest { command: "tr a-z A-Z".into(), timeout: None, output_cap: 100, stdin: Some(in_rx) };
    let ran = run_request(&pool, "h1", req).await.unwrap();
    assert_eq!(ran.exit.code, Some(0));
    assert_eq!(ran.raw.0, b"HELLO STDIN");
    // Sessions were reused: one per server for all of the above.
    assert_eq!(pool.open_sessions(), 3);
    for s in &servers {
        let accepted = s.log_text().matches("Accepted publickey").count();
        assert_eq!(accepted, 1, "one authentication per server, reused after");
    }

    // SFTP: a 3 MiB file written atomically, read back equal; mode kept; create_only refused.
    let target = dir.path().join("remote.bin");
    let data: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(&target, b"old").unwrap();
    std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let (in_tx, mut in_rx) = mpsc::channel(4);
    let feed = data.clone();
    tokio::spawn(async move {
        for chunk in feed.chunks(100_000) {
            in_tx.send(chunk.to_vec()).await.unwrap();
        }
    });
    let path = target.display().to_string();
    let n = pool.write_file("h0", &path, data.len() as u64, None, false, &mut in_rx).await.unwrap();
    assert_eq!(n, data.len() as u64);
    assert_eq!(std::fs::read(&target).unwrap(), data);
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&target).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o640);
    let (tx, mut rx) = mpsc::channel(64);
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut meta = None;
        while let Some(ev) = rx.recv().await {
            match ev {
                FileEvent::Meta(m) => meta = Some(m),
                FileEvent::Data(b) => got.extend(b.0),
                other => panic!("{other:?}"),
            }
        }
        (meta, got)
    });
    let n = pool.read_file("h1", &path, 0, None, &tx).await.unwrap();
    drop(tx);
    let (meta, got) = reader.await.unwrap();
    assert_eq!(n, data.len() as u64);
    assert_eq!(meta.unwrap().size, data.len() as u64);
    assert!(got == data, "read back differs");
    // A ranged read.
    let (tx, mut rx) = mpsc::channel(64);
    pool.read_file("h2", &path, 1000, Some(70_000), &tx).await.unwrap();
    drop(tx);
    let mut got = Vec::new();
    while let Some(ev) = rx.recv().await {
        if let FileEvent::Data(b) = ev {
            got.extend(b.0);
        }
    }
    assert!(got == data[1000..71_000]);
    // Short input replaces nothing; create_only refuses an existing file; missing files say so.
    let (in_tx, mut in_rx) = mpsc::channel(1);
    in_tx.send(vec![1, 2, 3]).await.unwrap();
    drop(in_tx);
    let err = pool.write_file("h0", &path, 10, None, false, &mut in_rx).await.unwrap_err();
    assert!(err.to_string().contains("3 of 10 bytes"), "{err}");
    assert_eq!(std::fs::read(&target).unwrap(), data);
    let (_tx, mut in_rx) = mpsc::channel(1);
    let err = pool.write_file("h0", &path, 0, None, true, &mut in_rx).await.unwrap_err();
    assert!(err.to_string().contains("exists"), "{err}");
    let (tx, _rx) = mpsc::channel(1);
    let err = pool.read_file("h0", "/nonexistent/file", 0, None, &tx).await.unwrap_err();
    assert!(err.to_string().contains("/nonexistent/file"), "{err}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tunnel-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    // An unknown host name is an error naming it.
    assert!(matches!(run(&pool, "nope", "true", None).await, Err(SshError::UnknownHost(h)) if h == "nope"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_keys_are_verified_before_any_credential() {
    if skip() {
        return;
    }
    let dir = TempDir::new("ssh-keys");
    let key = keygen(dir.path(), "id_ed25519", "ed25519", "").unwrap();
    let sshd = Sshd::start(&[public_key(&key)]).unwrap();

    // Unknown in strict mode: refused, with the fingerprint and how to trust it.
    let strict = pool(settings(&dir, &[]), vec![host("web", &sshd, Some(&key))]);
    let err = run(&strict, "web", "true", None).await.unwrap_err();
    let fingerprint = String::from_utf8(
        std::process::Command::new("ssh-keygen")
            .arg("-lf")
            .arg(sshd.host_key.with_extension("pub"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let fingerprint = fingerprint.split_whitespace().nth(1).unwrap().to_owned();
    assert!(matches!(err, SshError::HostKeyUnknown { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&fingerprint) && text.contains("ssh-keyscan -p") && text.contains("accept-new"), "{text}");
    assert!(!sshd.log_text().contains("userauth-request"), "no authentication may be attempted");

    // accept-new: trusted, recorded, and the recorded line works in strict mode afterwards.
    let mut s = settings(&dir, &[]);
    s.strict_host_keys = StrictHostKeys::AcceptNew;
    let recorded = s.record_to.clone();
    let tofu = pool(s, vec![host("web", &sshd, Some(&key))]);
    assert_eq!(run(&tofu, "web", "echo hi", None).await.unwrap().stdout, "hi\n");
    let file = std::fs::read_to_string(&recorded).unwrap();
    assert!(file.contains(&format!("[127.0.0.1]:{} ssh-ed25519 ", sshd.port)), "{file}");
    let kept = dir.path().join("recorded_known_hosts");
    std::fs::copy(&recorded, &kept).unwrap();
    let mut again = settings(&dir, &[]);
    again.known_hosts = vec![kept];
    let strict = pool(again, vec![host("web", &sshd, Some(&key))]);
    assert_eq!(run(&strict, "web", "echo ok", None).await.unwrap().stdout, "ok\n");

    // Hashed entries (ssh-keygen -H) are understood.
    let hashed = dir.path().join("hashed_known_hosts");
    std::fs::write(&hashed, sshd.known_hosts_line() + "\n").unwrap();
    assert!(std::process::Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&hashed)
        .output()
        .unwrap()
        .status
        .success());
    let text = std::fs::read_to_string(&hashed).unwrap();
    assert!(text.starts_with("|1|") && !text.contains("127.0.0.1"), "{text}");
    let mut s = settings(&dir, &[]);
    s.known_hosts = vec![hashed];
    let p = pool(s, vec![host("web", &sshd, Some(&key))]);
    assert_eq!(run(&p, "web", "echo hashed", None).await.unwrap().stdout, "hashed\n");

    // A changed key: refused loudly, even with accept-new, before any authentication.
    let other = keygen(dir.path(), "other_host", "ed25519", "").unwrap();
    let pub_other = public_key(&other);
    let mut w = pub_other.split_whitespace();
    let wrong = format!("[127.0.0.1]:{} {} {}", sshd.port, w.next().unwrap(), w.next().unwrap());
    let before = sshd.log_text().matches("userauth-request").count();
    let mut s = settings(&dir, &[wrong]);
    s.strict_host_keys = StrictHostKeys::AcceptNew;
    let changed = pool(s, vec![host("web", &sshd, Some(&key))]);
    let err = run(&changed, "web", "true", None).await.unwrap_err();
    assert!(matches!(err, SshError::HostKeyChanged { .. }), "{err}");
    assert!(err.to_string().contains("HOST KEY CHANGED") && err.to_string().contains(&fingerprint), "{err}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        sshd.log_text().matches("userauth-request").count(),
        before,
        "authentication attempted on a changed key"
    );

    // @revoked wins over a trusting line.
    let host_pub = public_key(&sshd.host_key);
    let mut w = host_pub.split_whitespace();
    let revoked = format!("@revoked * {} {}", w.next().unwrap(), w.next().unwrap());
    let p = pool(settings(&dir, &[revoked, sshd.known_hosts_line()]), vec![host("web", &sshd, Some(&key))]);
    let err = run(&p, "web", "true", None).await.unwrap_err();
    assert!(matches!(err, SshError::HostKeyRevoked { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_and_key_file_authentication() {
    if skip() {
        return;
    }
    let dir = TempDir::new("ssh-auth");
    let agent_key = keygen(dir.path(), "agent_ecdsa", "ecdsa", "").unwrap();
    let rsa_key = keygen(dir.path(), "id_rsa", "rsa", "").unwrap();
    let locked = keygen(dir.path(), "locked_ed25519", "ed25519", "s3cret phrase").unwrap();
    let stranger = keygen(dir.path(), "stranger", "ed25519", "").unwrap();
    let sshd = Sshd::start(&[public_key(&agent_key), public_key(&rsa_key), public_key(&locked)]).unwrap();
    let known = [sshd.known_hosts_line()];

    // The agent: no key files anywhere.
    let agent = Agent::start(&[&agent_key]).unwrap();
    let mut s = settings(&dir, &known);
    s.agent = Some(agent.socket.clone());
    let p = pool(s, vec![host("a", &sshd, None)]);
    assert_eq!(run(&p, "a", "echo agent", None).await.unwrap().stdout, "agent\n");

    // An RSA key file (rsa-sha2 signatures).
    let p = pool(settings(&dir, &known), vec![host("r", &sshd, Some(&rsa_key))]);
    assert_eq!(run(&p, "r", "echo rsa", None).await.unwrap().stdout, "rsa\n");

    // An encrypted key: without a passphrase the error says how to give one; with it, works.
    let p = pool(settings(&dir, &known), vec![host("l", &sshd, Some(&locked))]);
    let err = run(&p, "l", "true", None).await.unwrap_err();
    assert!(err.to_string().contains("passphrase_env"), "{err}");
    let passfile = dir.path().join("pass");
    std::fs::write(&passfile, "s3cret phrase\n").unwrap();
    let mut h = host("l", &sshd, Some(&locked));
    h.passphrase = Some(tunnel_ssh::inventory::Passphrase::File(passfile));
    let p = pool(settings(&dir, &known), vec![h]);
    assert_eq!(run(&p, "l", "echo unlocked", None).await.unwrap().stdout, "unlocked\n");

    // A key the server does not accept: the error lists what was tried.
    let p = pool(settings(&dir, &known), vec![host("s", &sshd, Some(&stranger))]);
    let err = run(&p, "s", "true", None).await.unwrap_err();
    assert!(matches!(err, SshError::Auth { .. }) && err.to_string().contains("stranger"), "{err}");

    // A closed port: a connect error naming the address, after the retries.
    let mut h = host("down", &sshd, Some(&rsa_key));
    h.port = tunnel_tests::sshd::free_port();
    let p = pool(settings(&dir, &known), vec![h]);
    let err = run(&p, "down", "true", None).await.unwrap_err();
    assert!(matches!(err, SshError::Connect { .. }) && err.to_string().contains("127.0.0.1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_close_and_connects_are_bounded() {
    if skip() {
        return;
    }
    let dir = TempDir::new("ssh-idle");
    let key = keygen(dir.path(), "id_ed25519", "ed25519", "").unwrap();
    let sshd = Sshd::start(&[public_key(&key)]).unwrap();
    let mut shared = PoolSettings::new(settings(&dir, &[sshd.known_hosts_line()]));
    // Long enough that no session idles out between two uses on a loaded machine.
    shared.idle_timeout = Duration::from_secs(2);
    shared.max_connecting = 1;
    let hosts: Vec<Host> = (0..4).map(|i| host(&format!("alias{i}"), &sshd, Some(&key))).collect();
    let pool = Pool::new(shared, Inventory { hosts, problems: vec![] });
    // Each inventory host has its own session, reused by every operation on it; handshakes
    // queue behind max_connecting.
    for _ in 0..2 {
        let runs = (0..4).map(|i| {
            let pool = pool.clone();
            async move { run(&pool, &format!("alias{i}"), "echo $((6*7))", None).await.unwrap().stdout }
        });
        let outs = futures_util::future::join_all(runs).await;
        assert!(outs.iter().all(|o| o == "42\n"), "{outs:?}");
    }
    assert_eq!(pool.open_sessions(), 4);
    assert_eq!(sshd.log_text().matches("Accepted publickey").count(), 4);
    // Idle past the timeout: closed, then reopened on the next use.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(pool.open_sessions(), 0, "the idle sessions were not closed");
    assert_eq!(run(&pool, "alias0", "echo again", None).await.unwrap().stdout, "again\n");
    assert_eq!(sshd.log_text().matches("Accepted publickey").count(), 5);

    // A host that accepts TCP but never speaks SSH: the connect timeout ends the wait.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut h = host("silent", &sshd, Some(&key));
    h.port = silent.local_addr().unwrap().port();
    let mut s = settings(&dir, &[]);
    s.connect_timeout = Duration::from_millis(500);
    let mut ps = PoolSettings::new(s);
    ps.connect_retries = 0;
    let p = Pool::new(ps, Inventory { hosts: vec![h], problems: vec![] });
    let started = std::time::Instant::now();
    let err = run(&p, "silent", "true", None).await.unwrap_err();
    assert!(matches!(err, SshError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tcpip_reaches_what_the_host_reaches() {
    if skip() {
        return;
    }
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = TempDir::new("ssh-tcpip");
    let key = keygen(dir.path(), "id_ed25519", "ed25519", "").unwrap();
    let sshd = Sshd::start(&[public_key(&key)]).unwrap();
    let p = pool(settings(&dir, &[sshd.known_hosts_line()]), vec![host("h", &sshd, Some(&key))]);
    // A service only the host is asked to reach: an echo server that upper-cases.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        socket.read_to_end(&mut buf).await.unwrap();
        socket.write_all(&buf.to_ascii_uppercase()).await.unwrap();
    });
    let mut tunnel = p.direct_tcpip("h", "127.0.0.1", port).await.unwrap();
    let payload: Vec<u8> = (0..300_000u32).map(|i| b"abcdefgh"[(i % 8) as usize]).collect();
    tunnel.stream.write_all(&payload).await.unwrap();
    tunnel.stream.shutdown().await.unwrap();
    let mut back = Vec::new();
    tunnel.stream.read_to_end(&mut back).await.unwrap();
    assert!(back == payload.to_ascii_uppercase(), "{} bytes back", back.len());
    server.await.unwrap();
    // A closed port is a clear error naming it.
    let closed = tunnel_tests::sshd::free_port();
    let err = p.direct_tcpip("h", "127.0.0.1", closed).await.err().expect("a closed port fails");
    assert!(err.to_string().contains(&format!("127.0.0.1:{closed}")), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_jump_goes_through_the_jump_host() {
    if skip() {
        return;
    }
    let dir = TempDir::new("ssh-jump");
    let key = keygen(dir.path(), "id_ed25519", "ed25519", "").unwrap();
    let bastion = Sshd::start(&[public_key(&key)]).unwrap();
    let inner = Sshd::start(&[public_key(&key)]).unwrap();
    let mut behind = host("inner", &inner, Some(&key));
    behind.proxy_jump = Some("bastion".into());
    let hosts = vec![host("bastion", &bastion, Some(&key)), behind];
    let p = pool(settings(&dir, &[bastion.known_hosts_line(), inner.known_hosts_line()]), hosts);
    assert_eq!(run(&p, "inner", "echo inside", None).await.unwrap().stdout, "inside\n");
    // The bastion opened the connection to the inner host for us.
    let log = bastion.log_text();
    assert!(log.contains(&format!("target 127.0.0.1 port {}", inner.port)), "no direct-tcpip on the bastion:\n{log}");
    // The inner host's key is still checked: a wrong one is refused through the jump too.
    let other = keygen(dir.path(), "other", "ed25519", "").unwrap();
    let wrong = public_key(&other);
    let mut w = wrong.split_whitespace();
    let wrong_line = format!("[127.0.0.1]:{} {} {}", inner.port, w.next().unwrap(), w.next().unwrap());
    let mut behind = host("inner", &inner, Some(&key));
    behind.proxy_jump = Some("bastion".into());
    let hosts = vec![host("bastion", &bastion, Some(&key)), behind];
    let p = pool(settings(&dir, &[bastion.known_hosts_line(), wrong_line]), hosts);
    let err = run(&p, "inner", "true", None).await.unwrap_err();
    assert!(matches!(err, SshError::HostKeyChanged { .. }), "{err}");
}
