//! Putting tunnel into service: `tunnel install` / `uninstall` and `tunnel-relay install`
//! plan, stage (`--root`) and dry-run; the units pass `systemd-analyze verify`; the plists
//! parse; the unit's own command line runs a node that `tunnel status` finds.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tunnel_service::{Hardening, Scope, ServiceSpec};
use tunnel_tests::tls::Pki;
use tunnel_tests::{bin, token, RelayProc, TempDir};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `program ARGS` with `HOME` (and nothing else of the caller's tunnel settings) in `home`.
fn run_in(home: &Path, program: &str, args: &[&str]) -> Output {
    Command::new(bin(program))
        .args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_RUNTIME_DIR", home.join("run"))
        .env_remove("TUNNEL_CONFIG")
        .env_remove("TUNNEL_STATE_DIR")
        .env_remove("TUNNEL_RUNTIME_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("run")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o7777
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `systemd-analyze verify` on a unit: no complaint at all. In CI a missing tool fails.
fn verify_unit(unit: &Path) {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "systemd-analyze is missing in CI (tests/setup.sh installs systemd)");
        eprintln!("SKIP unit verification: systemd-analyze is not installed");
        return;
    }
    let out = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(unit).output().expect("systemd-analyze");
    assert!(out.status.success() && out.stderr.is_empty(), "{}: {}", unit.display(), stderr(&out));
}

/// A temporary HOME with a staging root and a room token file in it; the token.
fn scene(label: &str) -> anyhow::Result<(TempDir, PathBuf, PathBuf, String)> {
    let home = TempDir::new(label);
    let root = home.path().join("root");
    let token_file = home.path().join("token");
    let secret = token();
    std::fs::write(&token_file, format!("{secret}\n"))?;
    Ok((home, root, token_file, secret))
}

#[test]
fn dry_run_shows_every_file_and_command_and_changes_nothing() -> anyhow::Result<()> {
    let (home, _, token_file, secret) = scene("deploy-dry")?;
    let out = run_in(
        home.path(),
        "tunnel",
        &[
            "install",
            "--user",
            "--relay",
            "wss://relay.test",
            "--room",
            "ops",
            "--token-file",
            token_file.to_str().unwrap(),
            "--tags",
            "web,prod",
            "--dry-run",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let config = home.path().join(".config/tunnel/config.toml");
    let unit = home.path().join(".config/systemd/user/tunnel.service");
    for needle in [
        "dry run: nothing is changed".to_owned(),
        format!("write {} (mode 0600)", config.display()),
        "relay = \"wss://relay.test\"".into(),
        "token = (hidden)".into(),
        format!("write {} (mode 0644)", unit.display()),
        format!(
            "ExecStart={}/.local/bin/tunnel run --keep-trying --config {}",
            home.path().display(),
            config.display()
        ),
        format!("write {}/.local/bin/tunnel (mode 0755)", home.path().display()),
        "run: systemctl --user daemon-reload".into(),
        "run: systemctl --user enable --now tunnel.service".into(),
        "loginctl enable-linger".into(),
    ] {
        assert!(text.contains(&needle), "missing {needle:?} in:\n{text}");
    }
    assert!(!text.contains(&secret), "the dry run printed the token");
    let written: Vec<PathBuf> = files_under(home.path()).into_iter().filter(|p| !p.ends_with("token")).collect();
    assert!(written.is_empty(), "a dry run wrote {written:?}");
    Ok(())
}

#[test]
fn install_stages_config_binary_and_unit_and_uninstall_takes_them_away() -> anyhow::Result<()> {
    let (home, root, token_file, secret) = scene("deploy-stage")?;
    let prefix = home.path().join("prefix");
    let install = |extra: &[&str]| {
        let mut args = vec!["install", "--root", root.to_str().unwrap(), "--prefix", prefix.to_str().unwrap()];
        args.extend_from_slice(extra);
        run_in(home.path(), "tunnel", &args)
    };
    // Nothing to join: a clear refusal, nothing written.
    let out = install(&[]);
    assert!(!out.status.success() && stderr(&out).contains("no relay given"), "{}", stderr(&out));
    assert!(!root.exists());

    let out = install(&[
        "--relay",
        "wss://relay.test",
        "--room",
        "ops",
        "--token-file",
        token_file.to_str().unwrap(),
        "--mode",
        "edit",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("staged; not run: systemctl enable --now tunnel.service"), "{}", stdout(&out));
    let config = root.join("etc/tunnel/config.toml");
    let unit = root.join("etc/systemd/system/tunnel.service");
    let binary = root.join(prefix.strip_prefix("/")?).join("tunnel");
    assert_eq!(mode(&config), 0o600);
    assert_eq!(mode(&unit), 0o644);
    assert_eq!(mode(&binary), 0o755);
    assert_eq!(std::fs::read(&binary)?, std::fs::read(bin("tunnel"))?);
    let text = std::fs::read_to_string(&config)?;
    for line in [
        format!("token = \"{secret}\""),
        "room = \"ops\"".into(),
        "state_dir = \"/var/lib/tunnel\"".into(),
        "runtime_dir = \"/run/tunnel\"".into(),
        "mode = \"edit\"".into(),
    ] {
        assert!(text.contains(&line), "{line:?} not in {text}");
    }
    let unit_text = std::fs::read_to_string(&unit)?;
    assert!(!unit_text.contains(&secret), "the token is in the unit");
    assert!(unit_text.contains(&format!(
        "ExecStart={} run --keep-trying --config /etc/tunnel/config.toml",
        prefix.join("tunnel").display()
    )));

    // Installing again with other settings merges into the config, keeping comments.
    std::fs::write(&config, format!("# mine\n{text}"))?;
    let out = install(&["--tags", "web,db"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let merged = std::fs::read_to_string(&config)?;
    assert!(
        merged.starts_with("# mine\n") && merged.contains("tags = [\"web\", \"db\"]") && merged.contains(&secret),
        "{merged}"
    );

    let uninstall = |extra: &[&str]| {
        let mut args = vec!["uninstall", "--root", root.to_str().unwrap()];
        args.extend_from_slice(extra);
        run_in(home.path(), "tunnel", &args)
    };
    std::fs::create_dir_all(root.join("var/lib/tunnel"))?;
    std::fs::write(root.join("var/lib/tunnel/node.key"), "k")?;
    let out = uninstall(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("staged; not run: systemctl disable --now tunnel.service"), "{}", stdout(&out));
    assert!(!unit.exists() && config.exists() && root.join("var/lib/tunnel/node.key").exists());
    // --purge asks; with no terminal it refuses unless --yes.
    let out = uninstall(&["--purge"]);
    assert!(!out.status.success() && stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert!(config.exists());
    let out = uninstall(&["--purge", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!config.exists() && !root.join("var/lib/tunnel").exists());
    Ok(())
}

#[test]
fn generated_units_pass_systemd_analyze_verify() -> anyhow::Result<()> {
    let (home, root, token_file, _) = scene("deploy-verify")?;
    // The unit must name a binary that exists for verify: the one under test.
    let prefix = bin("tunnel").parent().unwrap().to_owned();
    let prefix = prefix.to_str().unwrap();
    let node = run_in(
        home.path(),
        "tunnel",
        &[
            "install",
            "--root",
            root.to_str().unwrap(),
            "--prefix",
            prefix,
            "--relay",
            "wss://r.test",
            "--room",
            "o",
            "--token-file",
            token_file.to_str().unwrap(),
        ],
    );
    assert!(node.status.success(), "{}", stderr(&node));
    verify_unit(&root.join("etc/systemd/system/tunnel.service"));

    let pki = Pki::new("deploy-verify")?;
    let leaf = pki.leaf("relay", &["relay.test"], false)?;
    let access = home.path().join("access");
    let access_token = format!("relay-access-{}", token());
    std::fs::write(&access, &access_token)?;
    let relay = run_in(
        home.path(),
        "tunnel-relay",
        &[
            "install",
            "--root",
            root.to_str().unwrap(),
            "--prefix",
            prefix,
            "--listen",
            "0.0.0.0:8443",
            "--tls-cert",
            leaf.cert.to_str().unwrap(),
            "--tls-key",
            leaf.key.to_str().unwrap(),
            "--access-token-file",
            access.to_str().unwrap(),
        ],
    );
    assert!(relay.status.success(), "{}", stderr(&relay));
    let unit = root.join("etc/systemd/system/tunnel-relay.service");
    verify_unit(&unit);
    let text = std::fs::read_to_string(&unit)?;
    assert!(!text.contains(&access_token), "the access token is in the unit");
    assert!(
        text.contains("--access-token-file /etc/tunnel/relay-access-token")
            && text.contains("ExecReload=/bin/kill -HUP $MAINPID"),
        "{text}"
    );
    assert!(
        text.contains("ProtectSystem=strict") && text.contains("CapabilityBoundingSet=CAP_NET_BIND_SERVICE"),
        "{text}"
    );
    let kept = root.join("etc/tunnel/relay-access-token");
    assert_eq!(mode(&kept), 0o600);
    assert_eq!(std::fs::read_to_string(&kept)?.trim(), access_token);
    // A key that does not match the certificate is refused before anything is written.
    let other = pki.leaf("other", &["relay.test"], false)?;
    let bad = run_in(
        home.path(),
        "tunnel-relay",
        &[
            "install",
            "--root",
            root.to_str().unwrap(),
            "--tls-cert",
            leaf.cert.to_str().unwrap(),
            "--tls-key",
            other.key.to_str().unwrap(),
        ],
    );
    assert!(!bad.status.success() && stderr(&bad).contains("do not make a usable pair"), "{}", stderr(&bad));
    Ok(())
}

#[test]
fn launchd_plists_parse_and_hold_what_launchd_needs() -> anyhow::Result<()> {
    for (scope, hardening, args) in [
        (Scope::System, Hardening::Node, vec!["run", "--keep-trying", "--config", "/etc/tunnel/config.toml"]),
        (Scope::User, Hardening::Relay, vec!["--listen", "0.0.0.0:443", "--tls-cert", "/a & b/<c>.pem"]),
    ] {
        let spec = ServiceSpec {
            name: "tunnel".into(),
            description: "d".into(),
            program: "/usr/local/bin/tunnel".into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            scope,
            hardening,
            log_file: Some("/var/log/tunnel.log".into()),
        };
        let plist = tunnel_service::plist(&spec);
        let parsed = Command::new("python3")
            .args(["-c", "import json, plistlib, sys; print(json.dumps(plistlib.loads(sys.stdin.buffer.read())))"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(plist.as_bytes())?;
                child.wait_with_output()
            })?;
        assert!(parsed.status.success(), "plist does not parse: {}\n{plist}", stderr(&parsed));
        let doc: serde_json::Value = serde_json::from_slice(&parsed.stdout)?;
        assert_eq!(doc["Label"], "dev.tunnel.tunnel");
        let mut argv = vec!["/usr/local/bin/tunnel"];
        argv.extend(args.iter().copied());
        assert_eq!(doc["ProgramArguments"], serde_json::json!(argv));
        assert_eq!(doc["RunAtLoad"], true);
        assert_eq!(doc["KeepAlive"], true);
        assert_eq!(doc["EnvironmentVariables"]["TUNNEL_SERVICE"], "launchd");
        assert_eq!(doc["StandardErrorPath"], "/var/log/tunnel.log");
    }
    Ok(())
}

/// The unit's ExecStart, run as systemd would (with its Environment=), joins the room and is
/// found by `tunnel status`.
#[test]
fn the_units_command_line_runs_a_node_that_status_finds() -> anyhow::Result<()> {
    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let (home, _, token_file, _) = scene("deploy-run")?;
    let prefix = bin("tunnel").parent().unwrap().to_owned();
    // The same install, its files written where a real one puts them (a real one would
    // also run systemctl --user, which needs a user session this machine may not have).
    let out = run_in(
        home.path(),
        "tunnel",
        &[
            "install",
            "--user",
            "--root",
            "/",
            "--prefix",
            prefix.to_str().unwrap(),
            "--relay",
            &relay.url,
            "--room",
            "svc",
            "--token-file",
            token_file.to_str().unwrap(),
            "--name",
            "svc-node",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let unit = std::fs::read_to_string(home.path().join(".config/systemd/user/tunnel.service"))?;
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
    let env = unit.lines().find_map(|l| l.strip_prefix("Environment=")).expect("Environment");
    let argv: Vec<&str> = exec.split(' ').collect();
    let (key, value) = env.split_once('=').unwrap();
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .env(key, value)
        .env("HOME", home.path())
        .env("XDG_RUNTIME_DIR", home.path().join("run"))
        .env_remove("TUNNEL_CONFIG")
        .env_remove("TUNNEL_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        let out = run_in(home.path(), "tunnel", &["status", "--json"]);
        if out.status.success() {
            break serde_json::from_slice::<serde_json::Value>(&out.stdout)?;
        }
        assert!(Instant::now() < deadline, "the service's node never answered: {}{}", stdout(&out), stderr(&out));
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status["runs_as"], "systemd service", "{status}");
    assert_eq!(status["name"], "svc-node");
    assert_eq!(status["room"], "svc");
    assert_eq!(status["relay"]["connected"], true);
    assert_eq!(status["service"]["unit"], "tunnel (user)", "{status}");
    Ok(())
}

/// Every client's config, in a temporary HOME with other servers and comments in it:
/// `tunnel install-mcp` adds, is idempotent, backs up, shows a diff in a dry run, removes,
/// and leaves malformed files untouched.
#[test]
fn install_mcp_merges_into_every_clients_config() -> anyhow::Result<()> {
    let home = TempDir::new("install-mcp");
    let h = home.path();
    let tunnel = std::fs::canonicalize(bin("tunnel"))?.display().to_string();
    // (client, config path, fixture with another server, a fragment that must survive)
    let json_other =
        "{\n  \"theme\": \"dark\",\n  \"mcpServers\": {\n    \"other\": {\"command\": \"other-mcp\"}\n  }\n}\n";
    let clients: Vec<(&str, PathBuf, String, &str)> = vec![
        ("claude-desktop", h.join(".config/Claude/claude_desktop_config.json"), json_other.into(), "other-mcp"),
        ("claude-code", h.join(".claude.json"), json_other.into(), "other-mcp"),
        ("cursor", h.join(".cursor/mcp.json"), json_other.into(), "other-mcp"),
        (
            "vscode",
            h.join(".config/Code/User/mcp.json"),
            "{\n  // mine\n  \"servers\": {\n    \"other\": {\"type\": \"stdio\", \"command\": \"other-mcp\"}, // keep\n  },\n}\n".into(),
            "// keep",
        ),
        ("windsurf", h.join(".codeium/windsurf/mcp_config.json"), json_other.into(), "other-mcp"),
        (
            "zed",
            h.join(".config/zed/settings.json"),
            "// Zed settings\n{\n  \"vim_mode\": true, // yes\n  \"context_servers\": {}\n}\n".into(),
            "// yes",
        ),
        ("codex", h.join(".codex/config.toml"), "# codex\nmodel = \"o3\"\n\n[mcp_servers.other]\ncommand = \"other-mcp\"\n".into(), "# codex"),
        ("gemini", h.join(".gemini/settings.json"), json_other.into(), "other-mcp"),
        (
            "cline",
            h.join(".config/Code/User/globalStorage/saoudrizwan.claude-dev/settings/cline_mcp_settings.json"),
            json_other.into(),
            "other-mcp",
        ),
        ("continue", h.join(".continue/config.yaml"), "name: mine # keep\nmcpServers:\n  - name: other\n    command: other-mcp\n".into(), "# keep"),
        ("goose", h.join(".config/goose/config.yaml"), "# goose\nextensions:\n  developer:\n    enabled: true\n    type: builtin\n".into(), "# goose"),
    ];
    let run = |args: &[&str]| {
        Command::new(bin("tunnel"))
            .args(args)
            .env("HOME", h)
            .env("XDG_CONFIG_HOME", h.join(".config"))
            .env("PATH", "/usr/bin:/bin")
            .env_remove("CODEX_HOME")
            .env_remove("TUNNEL_CONFIG")
            .stdin(Stdio::null())
            .output()
            .expect("run tunnel")
    };
    for (client, path, fixture, keep) in &clients {
        std::fs::create_dir_all(path.parent().unwrap())?;
        std::fs::write(path, fixture)?;
        let dry = run(&["install-mcp", client, "--dry-run"]);
        assert!(dry.status.success(), "{client}: {}", stderr(&dry));
        assert!(stdout(&dry).contains("\n+") && stdout(&dry).contains(&tunnel), "{client}: {}", stdout(&dry));
        assert_eq!(&std::fs::read_to_string(path)?, fixture, "{client}: a dry run wrote");

        let add = run(&["install-mcp", client]);
        assert!(add.status.success(), "{client}: {}", stderr(&add));
        let text = std::fs::read_to_string(path)?;
        assert!(text.contains(&tunnel) && text.contains("mcp") && text.contains(keep), "{client}: {text}");
        if text.contains("other-mcp") || fixture.contains("other-mcp") {
            assert!(text.contains("other-mcp"), "{client} lost the other server: {text}");
        }
        let mut backup = path.as_os_str().to_owned();
        backup.push(".tunnel-backup");
        assert_eq!(&std::fs::read_to_string(&backup)?, fixture, "{client}: backup");
        if fixture == json_other {
            let doc: serde_json::Value = serde_json::from_str(&text)?;
            assert_eq!(doc["mcpServers"]["tunnel"]["command"], tunnel.as_str(), "{client}");
            assert_eq!(doc["mcpServers"]["tunnel"]["args"], serde_json::json!(["mcp"]), "{client}");
            assert_eq!(doc["mcpServers"]["other"]["command"], "other-mcp");
            assert_eq!(doc["theme"], "dark");
            assert!(doc["mcpServers"]["tunnel"].get("env").is_none(), "{client}: settings embedded unasked");
        }
        let again = run(&["install-mcp", client]);
        assert!(again.status.success() && stdout(&again).contains("nothing to do"), "{client}: {}", stdout(&again));
        assert_eq!(std::fs::read_to_string(path)?, text, "{client}: not idempotent");

        let list = stdout(&run(&["install-mcp", "--list"]));
        let row = list
            .lines()
            .find(|l| l.starts_with(client) && l.split_whitespace().next() == Some(client))
            .unwrap_or_default();
        assert!(row.split_whitespace().nth(2) == Some("yes"), "{client}: {list}");

        let removed = run(&["install-mcp", client, "--uninstall"]);
        assert!(removed.status.success(), "{client}: {}", stderr(&removed));
        let after = std::fs::read_to_string(path)?;
        assert!(!after.contains(&tunnel) && after.contains(keep), "{client}: {after}");
        let list = stdout(&run(&["install-mcp", "--list"]));
        let row = list.lines().find(|l| l.split_whitespace().next() == Some(client)).unwrap_or_default();
        assert!(row.split_whitespace().nth(2) == Some("no"), "{client}: {list}");
    }

    // Malformed files are reported and left untouched.
    for (client, path, broken) in [
        ("cursor", h.join(".cursor/mcp.json"), "{\"mcpServers\": {"),
        ("codex", h.join(".codex/config.toml"), "[mcp_servers\n"),
        ("goose", h.join(".config/goose/config.yaml"), "extensions: [unclosed\n"),
    ] {
        std::fs::write(&path, broken)?;
        let out = run(&["install-mcp", client]);
        assert!(!out.status.success() && stderr(&out).contains("left untouched"), "{client}: {}", stderr(&out));
        assert_eq!(std::fs::read_to_string(&path)?, broken);
    }

    // Settings go into a client's config only when asked.
    let token_value = token();
    let config = h.join("tunnel.toml");
    std::fs::write(&config, format!("relay = \"wss://r.test\"\nroom = \"ops\"\ntoken = \"{token_value}\"\n"))?;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600))?;
    let gemini = h.join(".gemini/settings.json");
    std::fs::remove_file(&gemini)?;
    let out =
        run(&["--config", config.to_str().unwrap(), "install-mcp", "gemini", "--embed-settings", "--tools", "core"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&gemini)?)?;
    assert_eq!(doc["mcpServers"]["tunnel"]["env"]["TUNNEL_TOKEN"], token_value.as_str());
    assert_eq!(doc["mcpServers"]["tunnel"]["args"][0], "mcp");
    assert!(doc["mcpServers"]["tunnel"]["args"].as_array().unwrap().iter().any(|a| a == "core"));
    assert_eq!(mode(&gemini), 0o600, "a new client config holding a token must be private");
    // Claude Code's own CLI is used when it is on PATH (a stand-in here that records its argv).
    let bin_dir = h.join("bin");
    std::fs::create_dir_all(&bin_dir)?;
    let claude = bin_dir.join("claude");
    std::fs::write(&claude, format!("#!/bin/sh\nprintf '%s\\n' \"$@\" > {}/claude-args\n", h.display()))?;
    std::fs::set_permissions(&claude, std::fs::Permissions::from_mode(0o755))?;
    let with_claude = Command::new(bin("tunnel"))
        .args(["install-mcp", "claude-code", "--tools", "core,fleet"])
        .env("HOME", h)
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
        .env_remove("TUNNEL_CONFIG")
        .output()?;
    assert!(with_claude.status.success(), "{}", stderr(&with_claude));
    let argv = std::fs::read_to_string(h.join("claude-args"))?;
    let argv: Vec<&str> = argv.lines().collect();
    assert_eq!(
        argv,
        ["mcp", "add", "--scope", "user", "tunnel", "--", tunnel.as_str(), "mcp", "--tools", "core,fleet"]
    );
    let unknown = run(&["install-mcp", "notepad"]);
    assert!(!unknown.status.success() && stderr(&unknown).contains("unknown client"), "{}", stderr(&unknown));
    Ok(())
}

/// Logs to a file or journald carry no terminal colors; `TUNNEL_LOG_FORMAT=json` gives one JSON
/// object per line. Both binaries share the set-up.
#[test]
fn logs_off_a_terminal_are_plain_or_json() -> anyhow::Result<()> {
    let dir = TempDir::new("logs");
    let run_briefly = |format: Option<&str>| -> anyhow::Result<String> {
        let mut cmd = Command::new(bin("tunnel"));
        cmd.args(["run", "--keep-trying", "--relay", "ws://127.0.0.1:9", "--room", "r", "--name", "logger"])
            .env("TUNNEL_TOKEN", token())
            .env("TUNNEL_LOG", "info")
            .env_remove("TUNNEL_CONFIG")
            .envs(tunnel_tests::NodeProc::env_of(dir.path()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        match format {
            Some(f) => cmd.env("TUNNEL_LOG_FORMAT", f),
            None => cmd.env_remove("TUNNEL_LOG_FORMAT"),
        };
        let mut child = cmd.spawn()?;
        std::thread::sleep(Duration::from_millis(1500));
        let _ = child.kill();
        let out = child.wait_with_output()?;
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let plain = run_briefly(None)?;
    assert!(plain.contains("relay") && !plain.contains('\u{1b}'), "{plain:?}");
    let json = run_briefly(Some("json"))?;
    let lines: Vec<&str> = json.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    Ok(())
}
