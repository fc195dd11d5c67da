//! Plan mode against a determined member of the room: a table of escape attempts (options
//! that write or run programs in every spelling, argument confusion, caller environment,
//! symlinks and `/proc` paths to secrets, relative paths from a cwd), each run through the CLI,
//! the fleet and MCP against a node in `plan`, and the argument checks alone against an
//! `ssh:` host. Every row must be refused before running or run inside the kernel sandbox
//! without effect: its marker file never appears and no secret's bytes reach any output.

use std::path::PathBuf;
use std::time::Duration;

use tunnel_tests::sshd::{keygen, one_host_config, public_key, unavailable, Sshd};
use tunnel_tests::{drive_mcp, token, NodeProc, RelayProc, TempDir};

const KEY_CANARY: &str = "CANARY-SSH-PRIVATE-KEY-7f3a";
const STATE_CANARY: &str = "CANARY-NODE-STATE-91c2";

/// One attempt: argv with placeholders, caller env, cwd, and whether the argument checks
/// alone must refuse it (`false`: it may run, but only inside the sandbox).
struct Row {
    argv: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    cwd: Option<&'static str>,
    refused: bool,
}

const fn refused(argv: &'static [&'static str]) -> Row {
    Row { argv, env: &[], cwd: None, refused: true }
}

const fn contained(argv: &'static [&'static str]) -> Row {
    Row { argv, env: &[], cwd: None, refused: false }
}

const ROWS: &[Row] = &[
    // find: predicates that run, delete or write.
    refused(&["find", "{S}", "-exec", "touch", "{N}", ";"]),
    refused(&["find", "{S}", "-execdir", "touch", "{N}", ";"]),
    refused(&["find", "{S}", "-ok", "touch", "{N}", ";"]),
    refused(&["find", "{S}", "-fprint", "{N}"]),
    refused(&["find", "{S}", "-fprintf", "{N}", "%p"]),
    refused(&["find", "{S}", "-fls", "{N}"]),
    refused(&["find", "{S}/victim", "-delete"]),
    // sort: -o in every spelling, the compressor helper.
    refused(&["sort", "-o", "{N}", "/etc/hostname"]),
    refused(&["sort", "-o{N}", "/etc/hostname"]),
    refused(&["sort", "-uo", "{N}", "/etc/hostname"]),
    refused(&["sort", "-uo{N}", "/etc/hostname"]),
    refused(&["sort", "--output={N}", "/etc/hostname"]),
    refused(&["sort", "--outp={N}", "/etc/hostname"]),
    refused(&["sort", "--output", "{N}", "/etc/hostname"]),
    refused(&["sort", "/etc/hostname", "-o", "{N}"]),
    refused(&["sort", "--compress-program=touch", "/etc/hostname"]),
    refused(&["sort", "--compress=touch", "/etc/hostname"]),
    refused(&["sort", "-T", "{S}", "/etc/hostname"]),
    refused(&["sort", "--temp={S}", "/etc/hostname"]),
    // sed: in place, script files, w/e commands wherever the real script is.
    refused(&["sed", "-i", "s/a/b/", "{S}/victim"]),
    refused(&["sed", "-ibak", "s/a/b/", "{S}/victim"]),
    refused(&["sed", "-ni", "p", "{S}/victim"]),
    refused(&["sed", "--in-place=bak", "s/a/b/", "{S}/victim"]),
    refused(&["sed", "--in-pl", "s/a/b/", "{S}/victim"]),
    refused(&["sed", "-f", "{S}/script.sed", "/etc/hostname"]),
    refused(&["sed", "-n", "1w{N}", "/etc/hostname"]),
    refused(&["sed", "s/a/b/w{N}", "/etc/hostname"]),
    refused(&["sed", "1e touch {N}", "/etc/hostname"]),
    refused(&["sed", "-e", "p", "-e", "1w{N}", "/etc/hostname"]),
    refused(&["sed", "--expression=1w{N}", "/etc/hostname"]),
    refused(&["sed", "--expr", "1w{N}", "/etc/hostname"]),
    refused(&["sed", "-n", "--", "1w{N}", "/etc/hostname"]),
    refused(&["sed", "-s", "-E", "s|x|touch {N}|e", "/etc/hostname"]),
    refused(&["sed", "-l", "5", "1w{N}", "/etc/hostname"]),
    // awk: system(), pipes, redirection, program files, wherever the program text is.
    refused(&["awk", "BEGIN{system(\"touch {N}\")}"]),
    refused(&["awk", "-v", "x=1", "BEGIN{system(\"touch {N}\")}"]),
    refused(&["awk", "-F:", "BEGIN{system(\"touch {N}\")}"]),
    refused(&["awk", "-F", ":", "BEGIN{system(\"touch {N}\")}"]),
    refused(&["awk", "-f", "{S}/prog.awk"]),
    refused(&["awk", "--", "BEGIN{print 1 > \"{N}\"}"]),
    refused(&["awk", "BEGIN{print 1 | \"sh\"}"]),
    refused(&["awk", "BEGIN{\"touch {N}\" | getline x}"]),
    refused(&["awk", "-W", "exec", "{S}/prog.awk"]),
    refused(&["awk", "-e", "BEGIN{system(\"touch {N}\")}"]),
    // git: program-running options and config, writing options, abbreviations.
    refused(&["git", "-c", "core.pager=touch {N}", "log"]),
    refused(&["git", "--exec-path={S}", "log"]),
    refused(&["git", "--git-dir={S}", "log"]),
    refused(&["git", "log", "--output={N}"]),
    refused(&["git", "log", "--outp={N}"]),
    refused(&["git", "diff", "--ext-diff"]),
    refused(&["git", "show", "--textconv"]),
    refused(&["git", "grep", "-Otouch", "x"]),
    refused(&["git", "grep", "--open-files-in-pager=touch", "x"]),
    refused(&["git", "grep", "--open=touch", "x"]),
    refused(&["git", "config", "core.pager", "touch"]),
    // Wrappers, shells and writers.
    refused(&["env", "sh", "-c", "touch {N}"]),
    refused(&["env", "-S", "touch {N}"]),
    refused(&["env", "--split-string=touch {N}"]),
    refused(&["xargs", "touch", "{N}"]),
    refused(&["tee", "{N}"]),
    refused(&["bash", "-c", "touch {N}"]),
    refused(&["/bin/../bin/sh", "-c", "touch {N}"]),
    refused(&["egrep", "x", "/etc/hostname"]),
    // Programs with options that change the system or name helpers.
    refused(&["date", "-s", "2020-01-01"]),
    refused(&["date", "--se=2020-01-01"]),
    refused(&["hostname", "evil"]),
    refused(&["sysctl", "-w", "kernel.domainname=x"]),
    refused(&["sysctl", "kernel.domainname=x"]),
    refused(&["systemctl", "-t", "status", "stop", "ssh"]),
    refused(&["systemctl", "--type=service", "start", "x"]),
    refused(&["systemctl", "-H", "host", "status"]),
    refused(&["journalctl", "--vacuum-size=1"]),
    refused(&["journalctl", "--vac=1"]),
    refused(&["journalctl", "-n", "--cursor-file={N}"]),
    refused(&["dmesg", "-c"]),
    refused(&["dmesg", "--read-c"]),
    refused(&["uniq", "/etc/hostname", "{N}"]),
    refused(&["diff", "-l", "/etc/hostname", "/etc/hostname"]),
    refused(&["diff", "--pag", "/etc/hostname", "/etc/hostname"]),
    refused(&["file", "-C", "-m", "{S}/magic"]),
    refused(&["file", "--comp", "-m", "{S}/magic"]),
    refused(&["ip", "-batch", "{S}/cmds"]),
    refused(&["ip", "-b", "{S}/cmds"]),
    refused(&["ip", "link", "set", "lo", "down"]),
    refused(&["ss", "-K"]),
    refused(&["ss", "-D", "{N}"]),
    refused(&["getent", "-s", "evil", "passwd"]),
    // The environment is the node's.
    Row { argv: &["git", "log"], env: &[("PAGER", "touch {N}")], cwd: None, refused: true },
    Row { argv: &["git", "diff"], env: &[("GIT_EXTERNAL_DIFF", "touch {N}")], cwd: None, refused: true },
    Row { argv: &["cat", "/etc/hostname"], env: &[("LD_PRELOAD", "{S}/evil.so")], cwd: None, refused: true },
    Row { argv: &["sh", "-c", "true"], env: &[("BASH_ENV", "{S}/rc")], cwd: None, refused: true },
    Row { argv: &["date"], env: &[("PATH", "{S}")], cwd: None, refused: true },
    // Secrets: read through every way a path can lead to them; the sandbox keeps them out.
    contained(&["cat", "{K}"]),
    contained(&["cat", "{T}"]),
    contained(&["cat", "/proc/self/root{K}"]),
    contained(&["cat", "{S}/key-link"]),
    contained(&["head", "-c", "200", "{S}/state-link/canary"]),
    contained(&["grep", "-r", "CANARY", "{H}/.ssh"]),
    contained(&["sed", "-n", "p", "{K}"]),
    contained(&["awk", "{print}", "{T}"]),
    contained(&["sort", "{K}"]),
    contained(&["tail", "{S}/../state/canary"]),
    contained(&["head", "-c", "4096", "/proc/{P}/mem"]),
    contained(&["cat", "/proc/{P}/root{T}"]),
    Row { argv: &["cat", "id_ed25519"], env: &[], cwd: Some("{H}/.ssh"), refused: false },
    Row { argv: &["cat", "canary"], env: &[("LC_ALL", "C")], cwd: Some("{S}/../state"), refused: false },
];

/// The words of `row` with its placeholders filled in.
struct Fill {
    scratch: PathBuf,
    home: PathBuf,
    state: PathBuf,
    pid: u32,
}

impl Fill {
    fn word(&self, i: usize, w: &str) -> String {
        w.replace("{S}", &self.scratch.display().to_string())
            .replace("{N}", &self.marker(i).display().to_string())
            .replace("{K}", &self.home.join(".ssh/id_ed25519").display().to_string())
            .replace("{T}", &self.state.join("canary").display().to_string())
            .replace("{H}", &self.home.display().to_string())
            .replace("{P}", &self.pid.to_string())
    }

    fn marker(&self, i: usize) -> PathBuf {
        self.scratch.join(format!("marker-{i}"))
    }

    fn argv(&self, i: usize, row: &Row) -> Vec<String> {
        row.argv.iter().map(|w| self.word(i, w)).collect()
    }

    fn env(&self, i: usize, row: &Row) -> Vec<(String, String)> {
        row.env.iter().map(|(k, v)| (k.to_string(), self.word(i, v))).collect()
    }

    fn as_json(&self) -> String {
        let rows: Vec<serde_json::Value> = ROWS
            .iter()
            .enumerate()
            .map(|(i, r)| {
                serde_json::json!({
                    "argv": self.argv(i, r),
                    "env": self.env(i, r).into_iter().collect::<std::collections::BTreeMap<_, _>>(),
                    "cwd": r.cwd.map(|c| self.word(i, c)),
                })
            })
            .collect();
        serde_json::Value::Array(rows).to_string()
    }
}

/// The target node's secrets and the scratch files the rows name.
fn plant(target: &NodeProc) -> Fill {
    let home = target.dir.path().to_owned();
    let scratch = home.join("scratch");
    let state = home.join("state");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(home.join(".ssh/id_ed25519"), KEY_CANARY).unwrap();
    std::fs::write(state.join("canary"), STATE_CANARY).unwrap();
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::write(scratch.join("victim"), "abc\n").unwrap();
    std::fs::write(scratch.join("script.sed"), "1w marker\n").unwrap();
    std::fs::write(scratch.join("prog.awk"), "BEGIN{system(\"id\")}\n").unwrap();
    std::os::unix::fs::symlink(home.join(".ssh/id_ed25519"), scratch.join("key-link")).unwrap();
    std::os::unix::fs::symlink(&state, scratch.join("state-link")).unwrap();
    Fill { scratch, home, state, pid: target.proc.pid() }
}

/// What no output may hold: the canaries, and the room token (the node's environment).
fn leaks(text: &str, token: &str) -> Option<&'static str> {
    [(KEY_CANARY, "the SSH key"), (STATE_CANARY, "the node's state"), (token, "the room token")]
        .into_iter()
        .find(|(needle, _)| text.contains(needle))
        .map(|(_, what)| what)
}

fn check_row(fill: &Fill, i: usize, path: &str, refused_text: bool, output: &str, token: &str) {
    let row = &ROWS[i];
    let argv = fill.argv(i, row);
    assert!(!fill.marker(i).exists(), "{path} row {i} {argv:?}: the marker appeared; output: {output}");
    assert_eq!(
        std::fs::read_to_string(fill.scratch.join("victim")).unwrap(),
        "abc\n",
        "{path} row {i}: victim changed"
    );
    if let Some(what) = leaks(output, token) {
        panic!("{path} row {i} {argv:?}: {what} leaked: {output}");
    }
    if row.refused {
        assert!(refused_text, "{path} row {i} {argv:?} must be refused before running: {output}");
    }
}

#[test]
fn escape_attempts_through_cli_fleet_and_mcp() -> anyhow::Result<()> {
    assert!(ROWS.len() >= 60, "the table keeps at least 60 rows");
    let (_relay, t, op, target) = tunnel_tests::op_and_target("plan")?;
    let fill = plant(&target);
    let info = op.cli(&["info", "target"]);
    let info = String::from_utf8_lossy(&info.stdout).into_owned();
    assert!(info.contains("sandbox: landlock"), "this machine confines plan-mode commands: {info}");

    for (i, row) in ROWS.iter().enumerate() {
        let mut args: Vec<String> = vec!["exec".into(), "target".into()];
        for (k, v) in fill.env(i, row) {
            args.extend(["--env".into(), format!("{k}={v}")]);
        }
        if let Some(cwd) = row.cwd {
            args.extend(["--cwd".into(), fill.word(i, cwd)]);
        }
        args.push("--".into());
        args.extend(fill.argv(i, row));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = op.cli(&args);
        let output = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        let was_refused = o.status.code() == Some(126) && output.contains("refused by policy");
        check_row(&fill, i, "cli", was_refused, &output, &t);

        let mut fleet = vec!["fleet", "exec", "target", "--json"];
        fleet.extend(args[2..].iter().copied());
        let o = op.cli(&fleet);
        let output = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        check_row(&fill, i, "fleet", output.contains("\"refused\""), &output, &t);
    }

    // A raw disk holds every secret on it: block devices are out of reach.
    let disk = std::fs::read_dir("/dev")?
        .flatten()
        .map(|e| e.path())
        .find(|p| std::fs::metadata(p).is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type())));
    if let Some(disk) = disk {
        let o = op.cli(&["exec", "target", "--", "head", "-c", "512", &disk.display().to_string()]);
        let e = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.stdout.is_empty() && e.contains("Permission denied"), "{}: {e}", disk.display());
        let o = op.cli(&["cp", &format!("target:{}", disk.display()), "/dev/null"]);
        assert!(!o.status.success(), "{o:?}");
    }
    let mut env = NodeProc::env_of(op.dir.path());
    env.push(("ESCAPE_ROWS".into(), fill.as_json()));
    let report = drive_mcp("escapes", &env)?;
    let mut seen = 0;
    for line in report.lines().filter_map(|l| l.strip_prefix("row ")) {
        let (i, rest) = line.split_once(' ').expect("row N JSON");
        let i: usize = i.parse()?;
        let result: serde_json::Value = serde_json::from_str(rest)?;
        let text = result.to_string();
        let was_refused = result["is_error"] == true && text.contains("refused by policy");
        check_row(&fill, i, "mcp", was_refused, &text, &t);
        seen += 1;
    }
    assert_eq!(seen, ROWS.len(), "MCP ran every row: {report}");
    Ok(())
}

#[test]
fn escape_attempts_on_an_ssh_host_meet_the_argument_checks() -> anyhow::Result<()> {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return Ok(());
    }
    let dir = TempDir::new("plan-escape-ssh");
    let key = keygen(dir.path(), "id_ed25519", "ed25519", "")?;
    let sshd = Sshd::start(&[public_key(&key)])?;
    let config = one_host_config(dir.path(), "h", &sshd, &key)?;
    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let t = token();
    let jump = NodeProc::start_configured(&relay.url, "r", &t, "jump", &[("TUNNEL_MODE", "plan")], Some(&config))?;
    let op = NodeProc::start(&relay.url, "r", &t, "op", "")?;
    op.wait_for_peers(&["jump"], Duration::from_secs(10))?;
    // The host is this machine: its scratch is the jump's, so markers are visible here.
    let fill = plant(&jump);
    let ok = op.cli(&["exec", "ssh:h", "--", "uname", "-s"]);
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "Linux", "{}", String::from_utf8_lossy(&ok.stderr));
    let env = op.cli(&["exec", "ssh:h", "--", "env"]);
    let env = String::from_utf8_lossy(&env.stdout).into_owned();
    assert!(!env.contains("HOME=") && env.contains("PATH=/usr/local/sbin"), "a minimal environment there: {env}");
    for (i, row) in ROWS.iter().enumerate().filter(|(_, r)| r.refused) {
        let mut args: Vec<String> = vec!["exec".into(), "ssh:h".into()];
        for (k, v) in fill.env(i, row) {
            args.extend(["--env".into(), format!("{k}={v}")]);
        }
        args.push("--".into());
        args.extend(fill.argv(i, row));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = op.cli(&args);
        let output = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        check_row(&fill, i, "ssh", o.status.code() == Some(126) && output.contains("refused by policy"), &output, &t);
    }
    // Arguments naming a secret there are refused too (nothing there can be sandboxed),
    // relative ones and recursive reads over one included.
    for (cwd, argv) in [
        (None, &["cat", "/etc/shadow"][..]),
        (None, &["cat", "/root/.ssh/id_ed25519"]),
        (None, &["cat", "/home/someone/.aws/credentials"]),
        (None, &["cat", ".ssh/id_ed25519"]),
        (None, &["cat", "/proc/1/environ"]),
        (Some("/etc/ssh"), &["cat", "ssh_host_ed25519_key"]),
        (Some("/home/x/y"), &["cat", "../../../etc/shadow"]),
        (None, &["grep", "-r", "root", "/etc"]),
        (None, &["grep", "-R", "PRIVATE", "/root"]),
        (None, &["grep", "--recursive", "-e", "x"]),
        (Some("/"), &["grep", "-rl", "x", "."]),
        (None, &["grep", "-d", "recurse", "x", "/home"]),
        (None, &["diff", "-r", "/root/.ssh", "/tmp"]),
    ] {
        let mut args = vec!["exec", "ssh:h"];
        if let Some(cwd) = cwd {
            args.extend(["--cwd", cwd]);
        }
        args.push("--");
        args.extend(argv);
        let o = op.cli(&args);
        let e = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.code() == Some(126) && e.contains("never read through the mesh"), "{argv:?}: {e}");
    }
    let o = op.cli(&["exec", "ssh:h", "--", "grep", "-r", "-c", ".", "/etc/hostname"]);
    assert_eq!(o.status.code(), Some(0), "a recursive read of a tree with no secret runs: {o:?}");
    Ok(())
}

/// Every way a file leaves a node (cp, ls, fleet read, mapreduce input, MCP read_file,
/// list_dir and fleet_read) refuses the secret list; the local operator is not held to it.
#[test]
fn secrets_never_leave_through_file_operations() -> anyhow::Result<()> {
    let (_relay, t, op, target) = tunnel_tests::op_and_target("bypass")?;
    let fill = plant(&target);
    let key = fill.home.join(".ssh/id_ed25519");
    let node_key = fill.state.join("node.key");
    let hard_link = fill.scratch.join("innocent.txt");
    std::fs::hard_link(&key, &hard_link)?;
    let dest = TempDir::new("secret-dest");
    let secret_paths: Vec<PathBuf> = vec![
        key.clone(),
        node_key.clone(),
        fill.state.join("canary"),
        fill.scratch.join("key-link"),
        fill.scratch.join("state-link/canary"),
        PathBuf::from(format!("/proc/self/root{}", key.display())),
        hard_link.clone(),
        PathBuf::from("/etc/shadow"),
        PathBuf::from(format!("/proc/{}/environ", target.proc.pid())),
        PathBuf::from(format!("/proc/{}/mem", target.proc.pid())),
        PathBuf::from("/proc/1/environ"),
    ];
    for path in &secret_paths {
        let p = path.display().to_string();
        let o = op.cli(&["cp", &format!("target:{p}"), &dest.path().join("got").display().to_string()]);
        let e = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success() && e.contains("never read through the mesh"), "cp {p}: {e}");
        assert!(!dest.path().join("got").exists());
        let o = op.cli(&["fleet", "read", "target", &p, "--json"]);
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(text.contains("refused") && leaks(&text, &t).is_none(), "fleet read {p}: {text}");
        let o = op.cli(&["mapreduce", "target", "--input", &format!("target:{p}"), "--map", "cat", "--reduce", "cat"]);
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(!o.status.success() && leaks(&text, &t).is_none(), "mapreduce input {p}: {text}");
    }
    // A directory swapped back and forth for a symlink to the keys while reads go on: whatever
    // is judged at the check, the bytes sent are never the key's.
    let swap = fill.scratch.join("swap");
    let parked = fill.scratch.join("swap-parked");
    std::fs::create_dir_all(&swap)?;
    std::fs::write(swap.join("id_ed25519"), "public")?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (swap, parked, keys, stop) = (swap.clone(), parked.clone(), fill.home.join(".ssh"), stop.clone());
        std::thread::spawn(move || {
            for _ in 0..100_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                std::fs::rename(&swap, &parked).unwrap();
                std::os::unix::fs::symlink(&keys, &swap).unwrap();
                std::thread::sleep(Duration::from_micros(300));
                std::fs::remove_file(&swap).unwrap();
                std::fs::rename(&parked, &swap).unwrap();
                std::thread::sleep(Duration::from_micros(300));
            }
        })
    };
    let got = dest.path().join("swapped");
    let mut served = 0;
    for _ in 0..60 {
        let _ = std::fs::remove_file(&got);
        let o = op.cli(&["cp", &format!("target:{}/id_ed25519", swap.display()), &got.display().to_string()]);
        if o.status.success() {
            assert_eq!(std::fs::read_to_string(&got)?, "public", "a swap let the key through");
            served += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    swapper.join().expect("swapper");
    eprintln!("swap race: {served} of 60 reads served the public file, the rest refused");
    // Listing the state directory, and writing into it even in bypass.
    let o = op.cli(&["ls", &format!("target:{}", fill.state.display())]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("never read through the mesh"), "{o:?}");
    let evil = dest.path().join("evil");
    std::fs::write(&evil, "x")?;
    let audit = fill.state.join("audit.jsonl");
    let before = std::fs::read(&audit)?;
    let o = op.cli(&["cp", &evil.display().to_string(), &format!("target:{}", audit.display())]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("never written through the mesh"), "{o:?}");
    assert!(std::fs::read(&audit)?.starts_with(&before), "the audit log was not replaced");
    // The operator on the target machine itself reads its own files.
    let got = dest.path().join("mine");
    let o = target.cli(&["cp", &format!("local:{}", key.display()), &got.display().to_string()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(&got)?, KEY_CANARY);
    // MCP on the operator's machine, to the target and to `local` (an agent is no operator).
    let mut env = NodeProc::env_of(op.dir.path());
    let paths: Vec<String> = secret_paths.iter().map(|p| p.display().to_string()).collect();
    env.push(("SECRET_PATHS".into(), serde_json::to_string(&paths)?));
    env.push(("SECRET_DIR".into(), fill.state.display().to_string()));
    let report = drive_mcp("secrets", &env)?;
    assert!(leaks(&report, &t).is_none(), "{report}");
    let mcp_local = {
        let mut env = NodeProc::env_of(target.dir.path());
        env.push(("SECRET_PATHS".into(), serde_json::to_string(&[key.display().to_string()])?));
        env.push(("SECRET_DIR".into(), fill.state.display().to_string()));
        env.push(("SECRET_TARGET".into(), "local".into()));
        drive_mcp("secrets", &env)?
    };
    assert!(leaks(&mcp_local, &t).is_none(), "{mcp_local}");
    Ok(())
}

/// A member with `edit` rights cannot rewrite the node's policy or evidence: not through file
/// writes, fleet writes or MCP, and not through commands (the kernel refuses them); other writes
/// work. With `edit_sandbox`, commands write only beneath its roots.
#[test]
fn policy_and_evidence_are_not_writable_through_the_mesh() -> anyhow::Result<()> {
    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let t = token();
    let op = NodeProc::start(&relay.url, "r", &t, "op", "")?;
    let target = NodeProc::start_configured(&relay.url, "r", &t, "target", &[], Some("mode = \"edit\"\n"))?;
    let boxed_config = "mode = \"edit\"\nedit_sandbox = [\"/tmp/tunnel-edit-sandbox-root\"]\n";
    let _ = std::fs::remove_dir_all("/tmp/tunnel-edit-sandbox-root");
    std::fs::create_dir_all("/tmp/tunnel-edit-sandbox-root")?;
    let _boxed = NodeProc::start_configured(&relay.url, "r", &t, "boxed", &[], Some(boxed_config))?;
    op.wait_for_peers(&["target", "boxed"], Duration::from_secs(10))?;
    let home = target.dir.path();
    let config = home.join("config/tunnel/config.toml");
    let state = home.join("state");
    let audit = state.join("audit.jsonl");
    let key = std::fs::read(state.join("node.key"))?;
    let audit_before = std::fs::read(&audit)?;
    let evil = home.join("evil.toml");
    std::fs::write(&evil, "mode = \"bypass\"\n")?;
    let evil_s = evil.display().to_string();

    for dest in [&config, &audit, &state.join("node.key")] {
        let d = format!("target:{}", dest.display());
        let o = op.cli(&["cp", &evil_s, &d]);
        let e = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success() && e.contains("never written through the mesh"), "cp to {d}: {e}");
        let o = op.cli(&["fleet", "write", "target", &evil_s, &dest.display().to_string(), "--json"]);
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(text.contains("refused") && text.contains("never written"), "fleet write to {d}: {text}");
    }
    let c = config.display();
    let s = state.display();
    for script in [
        format!("echo 'mode = \"bypass\"' >> {c}"),
        format!("cp {evil_s} {c}"),
        format!("mv {c} {c}.old; cp {evil_s} {c}"),
        format!(": > {s}/audit.jsonl"),
        format!("rm -f {s}/audit.jsonl"),
        format!("mv {s} {s}.old"),
        format!("cat {s}/node.key; cp {s}/node.key {}/stolen", home.display()),
    ] {
        let o = op.cli(&["exec", "target", "--shell", &script]);
        assert!(!o.stdout.windows(key.len()).any(|w| w == key.as_slice()), "{script}: the key was read");
        assert_eq!(std::fs::read_to_string(&config)?, "mode = \"edit\"\n", "{script}: config changed");
        assert!(std::fs::read(&audit)?.starts_with(&audit_before), "{script}: audit log rewritten");
        assert!(!home.join("stolen").exists(), "{script}");
    }
    // A command cannot act as the node's local operator: its control socket is hidden.
    let tunnel = tunnel_tests::bin("tunnel").display().to_string();
    let run_dir = home.join("run").display().to_string();
    let o = op.cli(&[
        "exec",
        "target",
        "--env",
        &format!("TUNNEL_RUNTIME_DIR={run_dir}"),
        "--",
        &tunnel,
        "mode",
        "local",
        "bypass",
    ]);
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success() && e.contains("no tunnel node is running here"), "the control socket is hidden: {e}");
    let info = String::from_utf8_lossy(&op.cli(&["info", "target"]).stdout).into_owned();
    assert!(info.lines().any(|l| l == "mode     edit"), "the mode did not change: {info}");
    assert!(info.contains("edit commands shielded"), "{info}");
    // Everything else is writable in edit mode.
    let o =
        op.cli(&["exec", "target", "--shell", &format!("mkdir -p {0}/work && echo ok > {0}/work/f", home.display())]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(home.join("work/f"))?, "ok\n");
    // Caller variables that make programs run what they name are refused in edit.
    let o = op.cli(&["exec", "target", "--env", "LD_PRELOAD=/tmp/evil.so", "--", "true"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("LD_PRELOAD"), "{o:?}");
    // edit_sandbox: writes only beneath its roots.
    let o = op.cli(&[
        "exec",
        "boxed",
        "--shell",
        "echo in > /tmp/tunnel-edit-sandbox-root/in; echo out > /tmp/tunnel-edit-sandbox-outside",
    ]);
    assert!(std::path::Path::new("/tmp/tunnel-edit-sandbox-root/in").exists(), "{o:?}");
    assert!(!std::path::Path::new("/tmp/tunnel-edit-sandbox-outside").exists(), "{o:?}");
    std::fs::remove_dir_all("/tmp/tunnel-edit-sandbox-root")?;
    // MCP's write_file is held to the same rule.
    let mut env = NodeProc::env_of(op.dir.path());
    env.push(("SECRET_PATHS".into(), "[]".into()));
    env.push(("SECRET_DIR".into(), state.display().to_string()));
    env.push(("PROTECTED_PATHS".into(), serde_json::to_string(&[config.display().to_string()])?));
    drive_mcp("secrets", &env)?;
    assert_eq!(std::fs::read_to_string(&config)?, "mode = \"edit\"\n");
    Ok(())
}

/// The same shield on a node that does not run as root: its `edit` commands get a user
/// namespace of their own (mapping only the node's uid) with the same mounts.
#[test]
fn edit_on_a_node_not_running_as_root_is_shielded_too() -> anyhow::Result<()> {
    if !tunnel_tests::running_as_root() {
        eprintln!("SKIPPED: starting a node as another user needs root");
        return Ok(());
    }
    const NOBODY: u32 = 65534;
    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let t = token();
    let op = NodeProc::start(&relay.url, "r", &t, "op", "")?;
    let target = NodeProc::start_as(NOBODY, &relay.url, "r", &t, "target", &[], Some("mode = \"edit\"\n"))?;
    op.wait_for_peers(&["target"], Duration::from_secs(10))?;
    let info = String::from_utf8_lossy(&op.cli(&["info", "target"]).stdout).into_owned();
    assert!(info.contains("edit commands shielded"), "{info}");
    let home = target.dir.path();
    let config = home.join("config/tunnel/config.toml");
    let key = std::fs::read(home.join("state/node.key"))?;
    let (c, h) = (config.display(), home.display());
    let script = format!(
        "echo 'mode = \"bypass\"' > {c}; rm -f {c}; cat {h}/state/node.key; mkdir {h}/work && echo ok > {h}/work/f; id -u"
    );
    let o = op.cli(&["exec", "target", "--shell", &script]);
    assert!(String::from_utf8_lossy(&o.stdout).ends_with("65534\n"), "runs as the node's user: {o:?}");
    assert!(!o.stdout.windows(key.len()).any(|w| w == key.as_slice()), "the key was read");
    assert_eq!(std::fs::read_to_string(&config)?, "mode = \"edit\"\n");
    assert_eq!(std::fs::read_to_string(home.join("work/f"))?, "ok\n", "{o:?}");
    // The node's own copy of the binary, which its user can run.
    let tunnel = home.join("tunnel").display().to_string();
    let run_dir = format!("TUNNEL_RUNTIME_DIR={}", home.join("run").display());
    let o = op.cli(&["exec", "target", "--env", &run_dir, "--", &tunnel, "mode", "local", "bypass"]);
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    let hidden = e.contains("no tunnel node is running here") || e.contains("Permission denied");
    assert!(!o.status.success() && hidden, "the control socket is hidden: {e}");
    let info = String::from_utf8_lossy(&op.cli(&["info", "target"]).stdout).into_owned();
    assert!(info.lines().any(|l| l == "mode     edit"), "the mode did not change: {info}");
    Ok(())
}
