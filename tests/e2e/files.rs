//! Files through the mesh with real node processes: ls, info, cp both ways (1 GiB with bounded
//! memory), path rules on canonical paths, plan-mode refusals, backups, and who may change
//! a node's mode.

use std::time::Duration;

use sha2::{Digest, Sha256};
use tunnel_tests::{memory_kib, token, NodeProc, RelayProc, TempDir};

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn sha_file(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(h.finalize().to_vec())
}

/// A file of `mib` MiB of varied bytes, written in chunks.
fn make_file(path: &std::path::Path, mib: usize) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..mib {
        tunnel_tests::fill(&mut x, &mut chunk);
        f.write_all(&chunk)?;
    }
    Ok(())
}

#[test]
fn one_gib_each_way_with_bounded_memory() -> anyhow::Result<()> {
    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let t = token();
    let op = NodeProc::start(&relay.url, "r", &t, "op", "")?;
    let target = NodeProc::start_with(&relay.url, "r", &t, "target", &[("TUNNEL_MODE", "edit")])?;
    op.wait_for_peers(&["target"], Duration::from_secs(10))?;
    let work = TempDir::new("gib");
    let src = work.path().join("src.bin");
    make_file(&src, 1024)?;
    let want = sha_file(&src)?;

    let remote = work.path().join("remote.bin");
    let o = op.cli(&["cp", src.to_str().unwrap(), &format!("target:{}", remote.display())]);
    assert!(o.status.success(), "upload: {}", err(&o));
    assert_eq!(sha_file(&remote)?, want, "upload SHA-256");
    std::fs::remove_file(&src)?;

    let back = work.path().join("back.bin");
    let o = op.cli(&["cp", &format!("target:{}", remote.display()), back.to_str().unwrap()]);
    assert!(o.status.success(), "download: {}", err(&o));
    assert_eq!(sha_file(&back)?, want, "download SHA-256");

    for node in [&op, &target] {
        let peak = memory_kib(node.proc.pid(), "VmHWM");
        eprintln!("{} peak RSS {} MiB after 1 GiB each way", node.name, peak / 1024);
        assert!(peak < 160 * 1024, "{} peaked at {peak} KiB", node.name);
    }
    Ok(())
}

#[test]
fn paths_are_checked_where_they_lead() -> anyhow::Result<()> {
    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let t = token();
    let root = TempDir::new("roots");
    let r = std::fs::canonicalize(root.path())?;
    for d in ["app", "app-evil", "secret"] {
        std::fs::create_dir_all(r.join(d))?;
    }
    std::fs::write(r.join("secret/keep.txt"), b"untouched")?;
    std::fs::write(r.join("app-evil/keep.txt"), b"untouched too")?;
    std::os::unix::fs::symlink(r.join("secret"), r.join("app/link"))?;
    let config = format!("mode = \"edit\"\nallow_paths = [\"{}\"]\n", r.join("app").display());
    let op = NodeProc::start(&relay.url, "r", &t, "op", "")?;
    let _target = NodeProc::start_configured(&relay.url, "r", &t, "target", &[], Some(&config))?;
    op.wait_for_peers(&["target"], Duration::from_secs(10))?;
    let local = root.path().join("payload.txt");
    std::fs::write(&local, b"evil")?;

    let o = op.cli(&["cp", local.to_str().unwrap(), &format!("target:{}", r.join("app/ok.txt").display())]);
    assert!(o.status.success(), "inside the root: {}", err(&o));
    assert_eq!(std::fs::read(r.join("app/ok.txt"))?, b"evil");
    for escape in ["app/../secret/keep.txt", "app/link/keep.txt", "app-evil/keep.txt", "secret/keep.txt"] {
        let dest = format!("target:{}/{escape}", r.display());
        let o = op.cli(&["cp", local.to_str().unwrap(), &dest]);
        assert_eq!(
            o.status.code(),
            Some(126),
            "{escape} must be refused: stdout {:?} stderr {:?}; secret now {:?}; target log {:?}",
            out(&o),
            err(&o),
            std::fs::read_to_string(r.join("secret/keep.txt")),
            std::fs::read_dir(r.join("app")).map(|d| d.map(|e| e.unwrap().file_name()).collect::<Vec<_>>())
        );
        assert!(err(&o).contains("outside allow_paths"), "{escape}: {}", err(&o));
        let o = op.cli(&["cp", &dest, root.path().join("stolen").to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(126), "reading {escape} must be refused too");
    }
    let o = op.cli(&["ls", &format!("target:{}", r.join("app/link").display())]);
    assert!(!o.status.success() && err(&o).contains("outside allow_paths"), "{}", err(&o));
    assert_eq!(std::fs::read(r.join("secret/keep.txt"))?, b"untouched");
    assert_eq!(std::fs::read(r.join("app-evil/keep.txt"))?, b"untouched too");
    assert!(!root.path().join("stolen").exists());
    Ok(())
}

#[test]
fn plan_refuses_writes_edit_backs_up_and_only_admins_change_modes() -> anyhow::Result<()> {
    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let t = token();
    let op = NodeProc::start(&relay.url, "r", &t, "op", "")?;
    let admin = NodeProc::start(&relay.url, "r", &t, "admin", "")?;
    let admin_id = out(&admin.cli(&["id"])).trim().to_owned();
    let target =
        NodeProc::start_configured(&relay.url, "r", &t, "target", &[], Some(&format!("admins = [\"{admin_id}\"]\n")))?;
    op.wait_for_peers(&["target"], Duration::from_secs(10))?;
    admin.wait_for_peers(&["target"], Duration::from_secs(10))?;
    let work = TempDir::new("modes");
    let file = work.path().join("config.txt");
    std::fs::write(&file, b"version 1")?;
    let local = work.path().join("new.txt");
    std::fs::write(&local, b"version 2")?;
    let dest = format!("target:{}", file.display());

    // plan (the default): reading is fine, writing is refused with the rule named.
    let o = op.cli(&["info", "target"]);
    assert!(out(&o).contains("mode     plan"), "{}", out(&o));
    let o = op.cli(&["cp", local.to_str().unwrap(), &dest]);
    assert_eq!(o.status.code(), Some(126));
    assert!(err(&o).contains("refused by policy: mode plan does not allow writes"), "{}", err(&o));
    assert_eq!(std::fs::read(&file)?, b"version 1");

    // A non-admin cannot change the mode; the refusal is audited. The admin can.
    let o = op.cli(&["mode", "target", "edit"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("not an admin"), "{}", err(&o));
    let o = admin.cli(&["mode", "target", "edit"]);
    assert!(o.status.success(), "{}", err(&o));
    // Peers see the new mode at once (a fresh Hello), not at the next rekey.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while op.peers()?.iter().find(|p| p["name"] == "target").map(|p| p["mode"].clone()) != Some("edit".into()) {
        assert!(std::time::Instant::now() < deadline, "op still shows the old mode: {:?}", op.peers()?);
        std::thread::sleep(Duration::from_millis(50));
    }
    let tail = out(&target.cli(&["audit", "tail", "-n", "100", "--json"]));
    let modes: Vec<serde_json::Value> = tail
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["event"] == "mode.set")
        .collect();
    assert_eq!(modes.len(), 2, "{tail}");
    assert_eq!(modes[0]["decision"], "refused");
    assert_eq!(modes[1]["decision"], "allowed");

    // The target's log, read from elsewhere: its admin may, anyone else is refused (audited).
    let remote = admin.cli(&["audit", "tail", "target", "--event", "mode.", "--json"]);
    assert!(remote.status.success(), "{}", err(&remote));
    let decisions: Vec<serde_json::Value> = out(&remote)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["decision"].clone())
        .collect();
    assert_eq!(decisions, ["refused", "allowed"], "{}", out(&remote));
    let o = op.cli(&["audit", "tail", "target"]);
    assert!(!o.status.success() && err(&o).contains("may not read this node's audit log"), "{}", err(&o));
    let reads = out(&target.cli(&["audit", "tail", "--event", "audit.read", "--json"]));
    let reads: Vec<serde_json::Value> = reads.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(reads.iter().map(|r| r["decision"].as_str().unwrap()).collect::<Vec<_>>(), ["allowed", "refused"]);

    // edit: the write goes through and the old file is backed up with a manifest entry.
    let o = op.cli(&["cp", local.to_str().unwrap(), &dest]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(std::fs::read(&file)?, b"version 2");
    let manifest = std::fs::read_to_string(target.dir.path().join("state/backups/manifest.jsonl"))?;
    let entry: serde_json::Value = serde_json::from_str(manifest.lines().next().unwrap())?;
    assert_eq!(entry["original"], file.display().to_string());
    assert_eq!(std::fs::read(entry["backup"].as_str().unwrap())?, b"version 1");
    assert!(target.cli(&["audit", "verify"]).status.success());

    // The operator on the target can put the old file back.
    let listed = out(&target.cli(&["backups", "list"]));
    assert!(listed.contains(&file.display().to_string()), "{listed}");
    let o = target.cli(&["backups", "restore", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(std::fs::read(&file)?, b"version 1");
    Ok(())
}

#[test]
fn directories_copy_recursively_both_ways() -> anyhow::Result<()> {
    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let t = token();
    let op = NodeProc::start(&relay.url, "r", &t, "op", "")?;
    let _target = NodeProc::start_with(&relay.url, "r", &t, "target", &[("TUNNEL_MODE", "edit")])?;
    op.wait_for_peers(&["target"], Duration::from_secs(10))?;
    let work = TempDir::new("tree");
    let src = work.path().join("site");
    std::fs::create_dir_all(src.join("css/deep"))?;
    std::fs::write(src.join("index.html"), b"<h1>hi</h1>")?;
    std::fs::write(src.join("css/main.css"), b"body{}")?;
    make_file(&src.join("css/deep/blob.bin"), 3)?;
    // A name that is not UTF-8 (Latin-1 and a stray byte), in a directory that is not either.
    use std::os::unix::ffi::OsStrExt as _;
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9-\xff.bin");
    std::fs::create_dir(src.join(std::ffi::OsStr::from_bytes(b"d\xfcr")))?;
    std::fs::write(src.join(odd), b"odd bytes")?;
    std::fs::write(src.join(std::ffi::OsStr::from_bytes(b"d\xfcr")).join(odd), b"deeper")?;
    std::fs::create_dir(work.path().join("remote"))?;

    let o = op.cli(&["cp", src.to_str().unwrap(), &format!("target:{}", work.path().join("remote").display())]);
    assert_eq!(o.status.code(), Some(1), "a directory without -r is refused");
    assert!(err(&o).contains("use -r"), "{}", err(&o));
    let o = op.cli(&["cp", "-r", src.to_str().unwrap(), &format!("target:{}", work.path().join("remote").display())]);
    assert!(o.status.success(), "upload: {}", err(&o));
    let up = work.path().join("remote/site");
    for f in ["index.html", "css/main.css", "css/deep/blob.bin"] {
        assert_eq!(sha_file(&up.join(f))?, sha_file(&src.join(f))?, "{f}");
    }
    let deeper = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(b"d\xfcr")).join(odd);
    assert_eq!(std::fs::read(up.join(odd))?, b"odd bytes", "a name that is not UTF-8 arrives under its own bytes");
    assert_eq!(std::fs::read(up.join(&deeper))?, b"deeper");
    // Listed (shown escaped), and targeted by its real bytes.
    let o = op.cli(&["ls", &format!("target:{}", up.display())]);
    assert!(out(&o).contains("caf\\xe9-\\xff.bin"), "{}", out(&o));
    let mut remote = format!("target:{}/", up.display()).into_bytes();
    remote.extend_from_slice(odd.as_bytes());
    let single = work.path().join("single.bin");
    let o = op.cli_os(&[std::ffi::OsStr::new("cp"), std::ffi::OsStr::from_bytes(&remote), single.as_os_str()]);
    assert!(o.status.success(), "cp of one odd name: {}", err(&o));
    assert_eq!(std::fs::read(&single)?, b"odd bytes");

    let back = work.path().join("back");
    let o = op.cli(&["cp", "-r", &format!("target:{}", up.display()), back.to_str().unwrap()]);
    assert!(o.status.success(), "download: {}", err(&o));
    for f in ["index.html", "css/main.css", "css/deep/blob.bin"] {
        assert_eq!(sha_file(&back.join(f))?, sha_file(&src.join(f))?, "{f}");
    }
    assert_eq!(std::fs::read(back.join(odd))?, b"odd bytes", "and comes back under them");
    assert_eq!(std::fs::read(back.join(&deeper))?, b"deeper");
    Ok(())
}

/// The control-socket operations behind the CLI, with the options the CLI does not expose:
/// partial reads, create-only writes, bounded listings.
#[test]
fn partial_reads_create_only_writes_and_bounded_lists() -> anyhow::Result<()> {
    use tunnel_node::control::{read_frame, write_frame, ControlClient, ControlRequest, ControlResponse};
    use tunnel_proto::message::{ByteBuf, FileEvent, Op, ReadSpec, Reply, WriteSpec};

    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let t = token();
    let op = NodeProc::start(&relay.url, "r", &t, "op", "")?;
    let _target = NodeProc::start_with(&relay.url, "r", &t, "target", &[("TUNNEL_MODE", "edit")])?;
    op.wait_for_peers(&["target"], Duration::from_secs(10))?;
    let work = TempDir::new("ops");
    let file = work.path().join("alphabet.txt");
    std::fs::write(&file, b"abcdefghijklmnopqrstuvwxyz")?;
    for i in 0..5 {
        std::fs::write(work.path().join(format!("f{i}")), b"x")?;
    }
    let socket = op.dir.path().join("run/tunnel.sock");
    tunnel_tests::run_async(Duration::from_secs(30), async move {
        // Read 10 bytes from offset 5.
        let (mut rd, mut wr) = ControlClient::connect(&socket).await?.into_split();
        let spec = ReadSpec { request_id: 1, path: file.display().to_string().into(), offset: 5, length: Some(10) };
        write_frame(&mut wr, &ControlRequest::Read { target: "target".into(), spec }).await?;
        let mut got = Vec::new();
        loop {
            match read_frame::<ControlResponse, _>(&mut rd).await?.expect("an answer") {
                ControlResponse::File(FileEvent::Meta(m)) => assert_eq!(m.size, 26),
                ControlResponse::File(FileEvent::Data(b)) => got.extend_from_slice(&b.0),
                ControlResponse::File(FileEvent::Done { bytes, .. }) => {
                    assert_eq!(bytes, 10);
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, b"fghijklmno");

        // create_only refuses to replace an existing file, and leaves it alone.
        let (mut rd, mut wr) = ControlClient::connect(&socket).await?.into_split();
        let spec = WriteSpec {
            request_id: 2,
            path: file.display().to_string().into(),
            size: 3,
            mode: None,
            create_only: true,
        };
        write_frame(&mut wr, &ControlRequest::Write { target: "target".into(), spec }).await?;
        // The node may answer (and close) before all input is sent; the answer is what counts.
        let _ = write_frame(&mut wr, &ControlRequest::Input(ByteBuf::copy_from(b"new"))).await;
        let _ = write_frame(&mut wr, &ControlRequest::InputEnd).await;
        match read_frame::<ControlResponse, _>(&mut rd).await?.expect("an answer") {
            ControlResponse::File(FileEvent::Failed(why)) => assert!(why.contains("create_only"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read(&file)?, b"abcdefghijklmnopqrstuvwxyz");

        // A listing stops at its limit and says so.
        let mut c = ControlClient::connect(&socket).await?;
        let op_list = Op::List { path: work.path().display().to_string().into(), limit: 2 };
        match c.request(&ControlRequest::Request { target: "target".into(), op: op_list }).await? {
            ControlResponse::Reply(Reply::List { entries, truncated }) => {
                assert_eq!(entries.len(), 2);
                assert!(truncated);
            }
            other => panic!("{other:?}"),
        }
        Ok(())
    })
}
