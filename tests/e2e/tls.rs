//! TLS between nodes and relays: nodes join a `wss://` relay that a private CA vouches for;
//! every certificate problem is refused with its own message; a renewed certificate is
//! served to new connections after SIGHUP while old ones carry on; nothing secret or naming
//! crosses the relay's port in the clear. And MCP over HTTPS.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tunnel_tests::tls::Pki;
use tunnel_tests::{bin, token, NodeProc, RelayProc, TempDir};

fn tls_relay(cert: &std::path::Path, key: &std::path::Path, extra: &[&str]) -> anyhow::Result<RelayProc> {
    let mut args = vec!["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()];
    args.extend_from_slice(extra);
    RelayProc::start("127.0.0.1:0", &args)
}

/// `tunnel run` expected to fail on its first connection; its stderr.
fn run_refused(url: &str, env: &[(&str, &str)]) -> String {
    let dir = TempDir::new("tls-refused");
    let out = Command::new(bin("tunnel"))
        .args(["run", "--relay", url, "--room", "r", "--name", "refused"])
        .env("TUNNEL_TOKEN", token())
        .env_remove("TUNNEL_CONFIG")
        .envs(NodeProc::env_of(dir.path()))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run tunnel");
    assert!(!out.status.success(), "tunnel run against {url} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

#[test]
fn nodes_join_over_wss_with_a_private_ca() -> anyhow::Result<()> {
    let pki = Pki::new("join")?;
    let leaf = pki.leaf("relay", &["localhost", "127.0.0.1"], false)?;
    let relay = tls_relay(&leaf.cert, &leaf.key, &[])?;
    assert!(relay.url.starts_with("wss://127.0.0.1:"), "{}", relay.url);
    let by_name = format!("wss://localhost:{}", relay.port());
    let ca = pki.ca_path();
    let t = token();
    let a = NodeProc::start_with(&relay.url, "r", &t, "a", &[("TUNNEL_RELAY_CA", ca.to_str().unwrap())])?;
    // The config key and a pin on top of the chain, by name this time.
    let config = format!("relay_ca = {:?}\nrelay_pin = {:?}\n", ca.display().to_string(), leaf.pin);
    let b = NodeProc::start_configured(&by_name, "r", &t, "b", &[], Some(&config))?;
    a.wait_for_peers(&["b"], Duration::from_secs(10))?;
    let ping = a.cli(&["ping", "b", "-c", "2"]);
    assert!(ping.status.success(), "{}", String::from_utf8_lossy(&ping.stderr));
    let status = json(&b.cli(&["status", "--json"]));
    assert_eq!(status["relay"]["url"], by_name.as_str());
    assert_eq!(status["relay"]["connected"], true);
    assert_eq!(status["running"], true);
    Ok(())
}

#[test]
fn every_certificate_problem_is_refused_by_name() -> anyhow::Result<()> {
    let pki = Pki::new("problems")?;
    let stranger = Pki::new("stranger")?;
    let good = pki.leaf("good", &["localhost", "127.0.0.1"], false)?;
    let other_name = pki.leaf("other", &["other.test"], false)?;
    let expired = pki.leaf("expired", &["localhost", "127.0.0.1"], true)?;
    let ca = pki.ca_path();
    let ca = ca.to_str().unwrap();
    let wrong_ca = stranger.ca_path();

    let relay = tls_relay(&good.cert, &good.key, &[])?;
    let err = run_refused(&relay.url, &[("TUNNEL_RELAY_CA", wrong_ca.to_str().unwrap())]);
    assert!(err.contains("unknown issuer") && err.contains(&relay.url), "{err}");
    // The system's roots alone do not know a private CA either.
    let err = run_refused(&relay.url, &[]);
    assert!(err.contains("unknown issuer"), "{err}");
    let pin_of_other = other_name.pin.clone();
    let err = run_refused(&relay.url, &[("TUNNEL_RELAY_CA", ca), ("TUNNEL_RELAY_PIN", &pin_of_other)]);
    assert!(err.contains("pin does not match") && err.contains(&good.pin), "{err}");
    let err = run_refused(&relay.url, &[("TUNNEL_RELAY_CA", ca), ("TUNNEL_RELAY_PIN", "sha256/%%%")]);
    assert!(err.contains("relay_pin") && err.contains("base64"), "{err}");
    // Plain WebSocket to the TLS port.
    let err = run_refused(&relay.url.replace("wss://", "ws://"), &[]);
    assert!(err.contains("use a wss:// URL"), "{err}");

    let misnamed = tls_relay(&other_name.cert, &other_name.key, &[])?;
    let err = run_refused(&misnamed.url, &[("TUNNEL_RELAY_CA", ca)]);
    assert!(err.contains("name mismatch") && err.contains("127.0.0.1"), "{err}");

    let stale = tls_relay(&expired.cert, &expired.key, &[])?;
    let err = run_refused(&stale.url, &[("TUNNEL_RELAY_CA", ca)]);
    assert!(err.contains("expired"), "{err}");

    // wss:// against a plain relay.
    let plain = RelayProc::start("127.0.0.1:0", &[])?;
    let err = run_refused(&plain.url.replace("ws://", "wss://"), &[("TUNNEL_RELAY_CA", ca)]);
    assert!(err.contains("did not answer with TLS"), "{err}");

    // A CA file that is not PEM is a configuration error, named.
    let junk = pki.dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n")?;
    let err = run_refused(&relay.url, &[("TUNNEL_RELAY_CA", junk.to_str().unwrap())]);
    assert!(err.contains("junk.pem") && err.contains("PEM"), "{err}");
    Ok(())
}

#[test]
fn a_service_keeps_trying_and_status_says_why() -> anyhow::Result<()> {
    let pki = Pki::new("keep")?;
    let stranger = Pki::new("keep-stranger")?;
    let leaf = pki.leaf("relay", &["127.0.0.1"], false)?;
    let relay = tls_relay(&leaf.cert, &leaf.key, &[])?;
    let dir = TempDir::new("keep");
    let mut child = Command::new(bin("tunnel"))
        .args(["run", "--keep-trying", "--relay", &relay.url, "--room", "r", "--name", "patient"])
        .env("TUNNEL_TOKEN", token())
        .env("TUNNEL_RELAY_CA", stranger.ca_path())
        .env_remove("TUNNEL_CONFIG")
        .envs(NodeProc::env_of(dir.path()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let (status, text) = loop {
        let out = tunnel_tests::cli_in(dir.path(), &["status", "--json"]);
        if out.status.code() == Some(1) {
            let text = tunnel_tests::cli_in(dir.path(), &["status"]);
            break (json(&out), String::from_utf8_lossy(&text.stdout).into_owned());
        }
        assert!(Instant::now() < deadline, "status never reported the failing relay: {out:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status["relay"]["connected"], false, "{status}");
    let last = status["relay"]["last_error"].as_str().unwrap_or_default();
    assert!(last.contains("unknown issuer"), "{status}");
    assert_eq!(status["name"], "patient");
    assert_eq!(status["room"], "r");
    assert!(text.contains("NOT connected") && text.contains("unknown issuer"), "{text}");
    // With nothing running, status says so and exits 3.
    let none = tunnel_tests::cli_in(dir.path(), &["status"]);
    assert_eq!(none.status.code(), Some(3), "{none:?}");
    assert!(String::from_utf8_lossy(&none.stdout).contains("no node is running"), "{none:?}");
    Ok(())
}

#[test]
fn sighup_serves_a_renewed_certificate_to_new_connections_only() -> anyhow::Result<()> {
    let pki = Pki::new("rotate")?;
    let first = pki.leaf("first", &["127.0.0.1"], false)?;
    let second = pki.leaf("second", &["127.0.0.1"], false)?;
    let (cert, key) = (pki.dir.path().join("live.pem"), pki.dir.path().join("live.key"));
    std::fs::copy(&first.cert, &cert)?;
    std::fs::copy(&first.key, &key)?;
    let relay = tls_relay(&cert, &key, &[])?;
    let ca = pki.ca_path();
    let ca = ca.to_str().unwrap();
    let t = token();
    let old =
        NodeProc::start_with(&relay.url, "r", &t, "old", &[("TUNNEL_RELAY_CA", ca), ("TUNNEL_RELAY_PIN", &first.pin)])?;
    let since = json(&old.cli(&["status", "--json"]))["relay"]["since_unix"].clone();

    std::fs::copy(&second.cert, &cert)?;
    std::fs::copy(&second.key, &key)?;
    let hup = Command::new("kill").args(["-HUP", &relay.proc.pid().to_string()]).status()?;
    assert!(hup.success());
    // The reload happens as the relay handles the signal: retry the new node briefly.
    let mut attempts = 0;
    let new = loop {
        attempts += 1;
        match NodeProc::start_with(
            &relay.url,
            "r",
            &t,
            "new",
            &[("TUNNEL_RELAY_CA", ca), ("TUNNEL_RELAY_PIN", &second.pin)],
        ) {
            Ok(node) => break node,
            Err(e) if attempts < 10 => {
                eprintln!("not reloaded yet: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
    };
    let err = run_refused(&relay.url, &[("TUNNEL_RELAY_CA", ca), ("TUNNEL_RELAY_PIN", &first.pin)]);
    assert!(err.contains("pin does not match"), "{err}");
    // The old connection never dropped, and carries traffic to the new node.
    old.wait_for_peers(&["new"], Duration::from_secs(10))?;
    let ping = old.cli(&["ping", "new", "-c", "2"]);
    assert!(ping.status.success(), "{}", String::from_utf8_lossy(&ping.stderr));
    let after = json(&old.cli(&["status", "--json"]));
    assert_eq!(after["relay"]["connected"], true);
    assert_eq!(after["relay"]["since_unix"], since, "the old node reconnected: {after}");
    drop(new);
    Ok(())
}

/// A TCP relay of bytes in front of the real relay, keeping all it carries (both ways).
fn recording_proxy(upstream: u16) -> anyhow::Result<(u16, Arc<Mutex<Vec<u8>>>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().take(64).flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
            for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)] {
                let record = record.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n @ 1..) = from.read(&mut buf) {
                        record.lock().unwrap().extend_from_slice(&buf[..n]);
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    Ok((port, seen))
}

/// Runs two nodes and some traffic through a recording proxy; returns what it saw.
fn capture(relay: &RelayProc, scheme: &str, env: &[(&str, &str)], secrets: &Secrets) -> anyhow::Result<Vec<u8>> {
    let (port, seen) = recording_proxy(relay.port())?;
    let url = format!("{scheme}://localhost:{port}");
    let mut env = env.to_vec();
    env.push(("TUNNEL_ACCESS_TOKEN", &secrets.access));
    let a = NodeProc::start_with(&url, &secrets.room, &secrets.token, "alpha-node-name", &env)?;
    let b = NodeProc::start_with(&url, &secrets.room, &secrets.token, "bravo-node-name", &env)?;
    a.wait_for_peers(&["bravo-node-name"], Duration::from_secs(10))?;
    let out = a.cli(&["exec", "bravo-node-name", "--", "echo", "exec-marker-7f3a"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("exec-marker-7f3a"), "{out:?}");
    drop((a, b));
    let seen = seen.lock().unwrap().clone();
    Ok(seen)
}

struct Secrets {
    room: String,
    token: String,
    access: String,
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn the_relay_port_carries_no_token_and_no_name_in_the_clear() -> anyhow::Result<()> {
    let pki = Pki::new("capture")?;
    let leaf = pki.leaf("relay", &["localhost"], false)?;
    let secrets = Secrets { room: "room-name-c4b1".into(), token: token(), access: format!("access-{}", token()) };
    let access_file = pki.dir.path().join("access");
    std::fs::write(&access_file, &secrets.access)?;
    let access_flag = ["--access-token-file", access_file.to_str().unwrap()];
    let ca = pki.ca_path();

    let tls = tls_relay(&leaf.cert, &leaf.key, &access_flag)?;
    let seen = capture(&tls, "wss", &[("TUNNEL_RELAY_CA", ca.to_str().unwrap())], &secrets)?;
    assert!(seen.len() > 4096, "the proxy saw only {} bytes", seen.len());
    for needle in [
        secrets.token.as_str(),
        secrets.access.as_str(),
        secrets.room.as_str(),
        "alpha-node-name",
        "bravo-node-name",
        "exec-marker-7f3a",
        "tunnel-relay.v1",
        "Authorization",
    ] {
        assert!(!contains(&seen, needle), "{needle:?} crossed the relay's TLS port in the clear");
    }

    // The control: over plain ws:// the same capture shows the access token, so the check
    // above would have caught it.
    let plain = RelayProc::start("127.0.0.1:0", &access_flag)?;
    let seen = capture(&plain, "ws", &[], &secrets)?;
    assert!(contains(&seen, &secrets.access) && contains(&seen, "tunnel-relay.v1"));
    // Peer traffic stays end-to-end encrypted even then.
    for needle in [secrets.token.as_str(), "alpha-node-name", "exec-marker-7f3a"] {
        assert!(!contains(&seen, needle), "{needle:?} crossed plain ws:// in the clear");
    }
    Ok(())
}

#[test]
fn mcp_over_https() -> anyhow::Result<()> {
    let pki = Pki::new("mcp-https")?;
    let leaf = pki.leaf("mcp", &["localhost", "127.0.0.1"], false)?;
    let dir = TempDir::new("mcp-https");
    let mut child = Command::new(bin("tunnel"))
        .args(["mcp", "--transport", "http", "--listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(&leaf.cert)
        .arg("--tls-key")
        .arg(&leaf.key)
        .env("TUNNEL_MCP_TOKEN", "mcp-token-0123456789")
        .env_remove("TUNNEL_CONFIG")
        .envs(NodeProc::env_of(dir.path()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut line)?;
    let url = line.split_whitespace().last().unwrap_or_default().to_owned();
    assert!(url.starts_with("https://127.0.0.1:"), "{line}");
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-s", "-m", "10"])
            .args(args)
            .output()
            .expect("curl (tests/setup.sh installs it)");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let ca = pki.ca_path();
    let (code, body) = curl(&["--cacert", ca.to_str().unwrap(), "-w", " %{http_code}", &url]);
    assert_eq!(code, Some(0));
    assert!(body.ends_with(" 401") && body.contains("missing bearer token"), "{body}");
    // curl's own check fails without the CA: the server really is TLS with that certificate.
    let (code, _) = curl(&[&url]);
    assert_eq!(code, Some(60), "curl trusted an unknown CA?");
    let (_, body) = curl(&[&url.replace("https://", "http://")]);
    assert!(body.contains("serves HTTPS"), "{body}");
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}
