//! Real processes under real Landlock rulesets: what the kernel lets a confined command do.

#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tunnel_sandbox::{prepare, spawn, support, Shield, Spec, Support, Writes};

/// Skips (or, under CI, fails) where the kernel has no Landlock.
fn landlock() -> bool {
    if support() == Support::None {
        assert!(std::env::var("CI").is_err(), "CI machines must have Landlock: sandbox tests cannot be skipped");
        eprintln!("skipped: this kernel has no Landlock");
        return false;
    }
    true
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tunnel-sandbox-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::canonicalize(&d).unwrap()
}

fn real(p: &str) -> PathBuf {
    std::fs::canonicalize(p).unwrap()
}

fn run(spec: &Spec, program: &str, args: &[&str]) -> std::io::Result<Output> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    // As the node starts commands: from a thread confined for the purpose, or with a shield,
    // from a forked child that confines itself.
    spawn(prepare(spec).expect("sandbox builds"), cmd, |c| c, |mut c| c.output())
}

fn sh(spec: &Spec, script: &str) -> Output {
    run(spec, "/bin/sh", &["-c", script]).expect("sh starts")
}

#[test]
fn read_only_commands_cannot_write_execute_or_read_secrets() {
    if !landlock() {
        return;
    }
    let dir = scratch("plan");
    std::fs::write(dir.join("secret"), b"CANARY-SECRET").unwrap();
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    std::fs::write(dir.join("keys/k"), b"CANARY-KEY").unwrap();
    std::fs::write(dir.join("open"), b"fine").unwrap();
    std::os::unix::fs::symlink(dir.join("secret"), dir.join("link")).unwrap();
    let spec = Spec {
        unreadable: vec![dir.join("secret"), dir.join("keys")],
        writes: Writes::Nothing,
        exec_only: Some(vec![real("/bin/sh")]),
        isolate: true,
        ..Spec::default()
    };
    let d = dir.display();
    let out = sh(&spec, &format!("read x < {d}/open; echo \"$x\"; echo {d}/keys/*"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("fine\n{d}/keys/k\n"), "reads and listings work: {out:?}");
    for (what, script) in [
        ("a secret", format!("read x < {d}/secret; echo \"$x\"")),
        ("a secret through a symlink", format!("read x < {d}/link; echo \"$x\"")),
        ("a secret through /proc/self/root", format!("read x < /proc/self/root{d}/secret; echo \"$x\"")),
        ("a file in a secret directory", format!("read x < {d}/keys/k; echo \"$x\"")),
    ] {
        let out = sh(&spec, &script);
        let all = [out.stdout.clone(), out.stderr.clone()].concat();
        assert!(!String::from_utf8_lossy(&all).contains("CANARY"), "{what} was read: {out:?}");
    }
    let out = sh(&spec, &format!("echo x > {d}/new; mkdir {d}/newdir; echo done > /dev/null; true > {d}/open"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"), "{out:?}");
    let out = sh(&spec, "/bin/true; echo $?");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "126\n", "exec of another program is refused: {out:?}");
    assert!(!dir.join("new").exists() && !dir.join("newdir").exists());
    assert_eq!(std::fs::read(dir.join("open")).unwrap(), b"fine", "not truncated");
    // A ruleset is reused only while the directories it was computed from are unchanged: a
    // file made since in a directory beside a secret is readable at once.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(dir.join("fresh"), b"new").unwrap();
    let out = sh(&spec, &format!("read x < {d}/fresh; echo \"$x\""));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "new\n", "{out:?}");
    // Only the allowed program itself may start.
    let spec_cat = Spec { exec_only: Some(vec![real("/bin/cat")]), ..spec.clone() };
    assert!(run(&spec_cat, "/bin/sh", &["-c", "true"]).is_err(), "a program not allowed does not even start");
    let out = run(&spec_cat, "/bin/cat", &[&format!("{d}/open")]).unwrap();
    assert_eq!(out.stdout, b"fine");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn specs_taking_turns_each_keep_their_own_confinement() {
    if !landlock() {
        return;
    }
    let dir = scratch("turns");
    std::fs::write(dir.join("a"), b"CANARY-A").unwrap();
    std::fs::write(dir.join("b"), b"CANARY-B").unwrap();
    let keeping = |secret: &str| Spec {
        unreadable: vec![dir.join(secret)],
        writes: Writes::Nothing,
        exec_only: Some(vec![real("/bin/cat")]),
        isolate: true,
        ..Spec::default()
    };
    let read = |spec: &Spec, file: &str| {
        let out = run(spec, "/bin/cat", &[dir.join(file).to_str().unwrap()]).unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Rulesets are kept with the thread that applies them: a spec must never get another's.
    for _ in 0..3 {
        assert_eq!((read(&keeping("a"), "a"), read(&keeping("a"), "b")), (String::new(), "CANARY-B".into()));
        assert_eq!((read(&keeping("b"), "a"), read(&keeping("b"), "b")), ("CANARY-A".into(), String::new()));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_shield_hides_and_freezes_exactly_its_paths() {
    if !landlock() {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    if unsafe { libc::geteuid() } != 0 {
        assert!(std::env::var("CI").is_err(), "CI runs as root: the shield must be tested");
        eprintln!("skipped: shields need root");
        return;
    }
    let dir = scratch("edit");
    std::fs::create_dir_all(dir.join("state/run")).unwrap();
    std::fs::write(dir.join("state/audit.jsonl"), b"evidence").unwrap();
    std::fs::write(dir.join("state/node.key"), b"CANARY-KEY").unwrap();
    std::fs::write(dir.join("config.toml"), b"mode = \"edit\"").unwrap();
    let spec = Spec {
        writes: Writes::Anywhere,
        shield: Shield {
            hide: vec![dir.join("state"), dir.join("state/run")],
            read_only: vec![dir.join("config.toml"), dir.join("state/node.key")],
        },
        ..Spec::default()
    };
    let d = dir.display();
    let out = sh(
        &spec,
        &format!(
            "mkdir {d}/work && echo ok > {d}/work/file; echo new > {d}/fresh; echo bypass > {d}/config.toml; \
             mkdir {d}/other && ln {d}/work/file {d}/other/linked; \
             rm -f {d}/config.toml; : > {d}/state/audit.jsonl; rm -f {d}/state/audit.jsonl; cat {d}/state/node.key; \
             umount {d}/config.toml; umount -l {d}/state; echo again > {d}/config.toml; cat {d}/state/node.key"
        ),
    );
    assert_eq!(std::fs::read(dir.join("work/file")).unwrap(), b"ok\n", "beside protected paths: {out:?}");
    assert_eq!(std::fs::read(dir.join("fresh")).unwrap(), b"new\n", "in their directory: {out:?}");
    // Linking (and renaming) into another directory, which Landlock refuses unless granted
    // (git moves objects so): free where writes are.
    assert!(dir.join("other/linked").exists(), "a link across directories: {out:?}");
    assert_eq!(std::fs::read(dir.join("config.toml")).unwrap(), b"mode = \"edit\"");
    assert_eq!(std::fs::read(dir.join("state/audit.jsonl")).unwrap(), b"evidence");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("CANARY"), "the state is hidden: {out:?}");
    // Nothing leaked into the host's mounts.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&d.to_string()), "{mounts}");
    // edit_sandbox: only beneath its roots.
    let beneath = Spec {
        writes: Writes::Beneath { roots: vec![dir.join("work")], except: vec![dir.join("config.toml")] },
        ..Spec::default()
    };
    let out = sh(
        &beneath,
        &format!("echo a > {d}/work/in; echo b > {d}/outside; echo c > /dev/null; mkdir {d}/work/sub; mv {d}/work/in {d}/work/sub/in"),
    );
    assert!(dir.join("work/sub/in").exists(), "renamed across directories beneath the roots: {out:?}");
    assert!(!dir.join("outside").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_script_cannot_be_the_only_program() {
    if !landlock() {
        return;
    }
    let dir = scratch("script");
    let script = dir.join("s");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    let spec = Spec { exec_only: Some(vec![script.clone()]), ..Spec::default() };
    let err = prepare(&spec).unwrap_err().to_string();
    assert!(err.contains("script"), "{err}");
    assert!(Path::new(&script).exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_node_s_memory_is_out_of_reach() {
    if !landlock() {
        return;
    }
    let spec =
        Spec { writes: Writes::Nothing, exec_only: Some(vec![real("/bin/cat")]), isolate: true, ..Spec::default() };
    // As a node does at start: its memory holds its key.
    #[allow(unsafe_code)]
    // SAFETY: PR_SET_DUMPABLE takes a flag and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    let me = std::process::id();
    let out = run(&spec, "/bin/cat", &[&format!("/proc/{me}/mem")]).unwrap();
    assert!(out.stdout.is_empty() && !out.status.success(), "{out:?}");
}
