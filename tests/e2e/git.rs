//! `tunnel git` against a real repository and a bare remote, on a peer through a real relay:
//! structured status (branch, upstream, ahead/behind, files) and log, commit, push, fetch and
//! pull; plan mode allowing only the reading verbs; options that run programs refused.

use std::path::Path;
use std::process::Command;

use tunnel_tests::{NodeProc, TempDir};

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs git here (to build the fixture), failing loudly.
fn git(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git").arg("-C").arg(dir).args(args).output().expect("git runs");
    assert!(o.status.success(), "git {args:?}: {}", err(&o));
    out(&o)
}

fn tunnel_git(node: &NodeProc, repo: &Path, args: &[&str]) -> (std::process::Output, serde_json::Value) {
    let spec = format!("target:{}", repo.display());
    let o = node.cli(&[&["git", "--json", &spec], args].concat());
    let v = serde_json::from_str(&out(&o)).unwrap_or(serde_json::Value::Null);
    (o, v)
}

fn identity(dir: &Path) {
    git(dir, &["config", "user.name", "Tester"]);
    git(dir, &["config", "user.email", "tester@example.invalid"]);
}

#[test]
fn git_verbs_on_a_peer_with_structured_answers_and_plan_mode_reading_only() -> anyhow::Result<()> {
    if Command::new("git").arg("--version").output().is_err() {
        assert!(std::env::var("CI").is_err(), "git is missing (tests/setup.sh installs it)");
        eprintln!("SKIPPED: no git on this machine");
        return Ok(());
    }
    let (_relay, _t, op, target) = tunnel_tests::op_and_target("edit")?;
    let dir = TempDir::new("git");
    let (remote, work, other) = (dir.path().join("remote.git"), dir.path().join("work"), dir.path().join("other"));
    git(dir.path(), &["init", "-q", "--bare", "-b", "main", remote.to_str().unwrap()]);
    git(dir.path(), &["clone", "-q", remote.to_str().unwrap(), work.to_str().unwrap()]);
    identity(&work);
    git(&work, &["switch", "-q", "-c", "main"]);
    std::fs::write(work.join("app.txt"), "one\n")?;
    git(&work, &["add", "app.txt"]);
    git(&work, &["commit", "-qm", "first"]);
    git(&work, &["push", "-q", "-u", "origin", "main"]);

    // Status: clean, on main, tracking origin/main.
    let (o, s) = tunnel_git(&op, &work, &["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!((s["branch"].as_str(), s["upstream"].as_str()), (Some("main"), Some("origin/main")), "{s}");
    assert_eq!((s["ahead"].as_u64(), s["behind"].as_u64()), (Some(0), Some(0)));
    assert_eq!(s["files"], serde_json::json!([]));
    // A change and a new file.
    std::fs::write(work.join("app.txt"), "one\ntwo\n")?;
    std::fs::write(work.join("notes.txt"), "new\n")?;
    let (_, s) = tunnel_git(&op, &work, &["status"]);
    let files: Vec<(String, String)> = s["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["status"].as_str().unwrap().into(), f["path"].as_str().unwrap().into()))
        .collect();
    assert_eq!(files, [(".M".to_string(), "app.txt".to_string()), ("??".into(), "notes.txt".into())], "{s}");
    let (_, d) = tunnel_git(&op, &work, &["diff"]);
    assert!(d["text"].as_str().unwrap().contains("+two"), "{d}");

    // Commit and push from the peer; the remote has it.
    let (o, c) = tunnel_git(&op, &work, &["commit", "-am", "second: two"]);
    assert_eq!(o.status.code(), Some(0), "{}{c}", err(&o));
    let (_, s) = tunnel_git(&op, &work, &["status"]);
    assert_eq!(s["ahead"].as_u64(), Some(1), "{s}");
    let (o, p) = tunnel_git(&op, &work, &["push"]);
    assert_eq!(o.status.code(), Some(0), "{}{p}", err(&o));
    assert_eq!(git(&remote, &["log", "-1", "--format=%s"]).trim(), "second: two");
    let (_, l) = tunnel_git(&op, &work, &["log", "-n5"]);
    let subjects: Vec<&str> = l["commits"].as_array().unwrap().iter().map(|c| c["subject"].as_str().unwrap()).collect();
    assert_eq!(subjects, ["second: two", "first"], "{l}");
    let (o, sh) = tunnel_git(&op, &work, &["show", "--stat", "HEAD"]);
    assert!(o.status.success() && sh["text"].as_str().unwrap().contains("app.txt"), "{sh}");

    // Someone else pushes; fetch shows the peer behind, pull brings it in.
    git(dir.path(), &["clone", "-q", remote.to_str().unwrap(), other.to_str().unwrap()]);
    identity(&other);
    std::fs::write(other.join("other.txt"), "x\n")?;
    git(&other, &["add", "other.txt"]);
    git(&other, &["commit", "-qm", "third: from elsewhere"]);
    git(&other, &["push", "-q"]);
    let (o, _) = tunnel_git(&op, &work, &["fetch"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let (_, s) = tunnel_git(&op, &work, &["status"]);
    assert_eq!(s["behind"].as_u64(), Some(1), "{s}");
    let (o, _) = tunnel_git(&op, &work, &["pull", "--ff-only"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(work.join("other.txt").exists());

    // Options that run programs are refused before anything is sent.
    for args in [
        &["log", "-c", "core.pager=touch /tmp/x"][..],
        &["fetch", "--upload-pack=touch /tmp/x"],
        &["diff", "--ext-diff"],
    ] {
        let (o, _) = tunnel_git(&op, &work, args);
        assert!(!o.status.success() && err(&o).contains("refused"), "{args:?}: {}", err(&o));
    }

    // Plan mode: the reading verbs run, the writing ones are refused by the peer.
    assert!(target.cli(&["mode", "local", "plan"]).status.success());
    let (o, s) = tunnel_git(&op, &work, &["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(s["branch"], "main");
    let (o, l) = tunnel_git(&op, &work, &["log"]);
    assert!(o.status.success() && l["commits"].as_array().unwrap().len() == 3, "{l}");
    for verb in ["commit", "fetch", "push", "pull"] {
        let (o, _) = tunnel_git(&op, &work, &[verb]);
        assert!(!o.status.success() && err(&o).contains("refused"), "{verb} in plan: {}", err(&o));
    }
    Ok(())
}
