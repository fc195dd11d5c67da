//! Runners against a real OpenSSH sshd: an argv command gives the same result in a runner as
//! on an exec channel of its own, runners are reused, replaced when they misbehave or die,
//! give up their channel slots, kill what times out, and step aside for hosts that cannot
//! have one.

use std::process::Command;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tunnel_ssh::{ExecRequest, Inventory, Pool, PoolSettings, RemoteCommand};
use tunnel_tests::ssh_client::{host, run, run_request, settings, skip, Ran};
use tunnel_tests::sshd::{keygen, public_key, Sshd};
use tunnel_tests::{processes_with, TempDir};

fn argv(words: &[&str]) -> RemoteCommand {
    RemoteCommand::argv(words.iter().map(|w| w.to_string()).collect(), vec![], None).unwrap()
}

/// One sshd, whose authorized_keys line for the client key is `key_line` of it, and two
/// pools on it: one with runners (the default), one with exec channels only.
struct Setup {
    sshd: Sshd,
    runners: Pool,
    channels: Pool,
    _dir: TempDir,
}

fn setup(name: &str, key_line: impl Fn(String) -> String) -> Setup {
    let dir = TempDir::new(name);
    let key = keygen(dir.path(), "id_ed25519", "ed25519", "").unwrap();
    let sshd = Sshd::start(&[key_line(public_key(&key))]).unwrap();
    let make = |runners: bool| {
        let mut s = PoolSettings::new(settings(&dir, &[sshd.known_hosts_line()]));
        s.runners = runners;
        Pool::new(s, Inventory { hosts: vec![host("h", &sshd, Some(&key))], problems: vec![] })
    };
    let (runners, channels) = (make(true), make(false));
    Setup { sshd, runners, channels, _dir: dir }
}

/// The process id of the shell that ran a command: the runner's, when it ran in one.
async fn parent(pool: &Pool) -> String {
    run(pool, "h", argv(&["sh", "-c", "echo $PPID"]), None).await.unwrap().stdout
}

fn name_of(pid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{}/comm", pid.trim())).unwrap_or_default().trim().to_owned()
}

/// Waits until no process has `pattern` in its command line.
fn gone(pattern: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if processes_with(pattern).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_gives_what_an_exec_channel_gives() {
    if skip() {
        return;
    }
    let s = setup("runner-same", |k| k);
    let (runners, channels) = (&s.runners, &s.channels);
    let with_env = RemoteCommand::argv(
        ["sh", "-c", "pwd; echo \"$X\"; echo to-err >&2"].map(String::from).to_vec(),
        vec![("X".into(), "v $w 'q'".into())],
        Some("/tmp".into()),
    )
    .unwrap();
    let cases = [
        argv(&["printf", "%s", "no newline at the end"]),
        argv(&["printf", "a\\000b\\377\\n\\n"]),
        argv(&["sh", "-c", "echo out; echo err >&2; exit 7"]),
        argv(&["seq", "1", "200000"]),
        argv(&["cat"]),
        argv(&["true"]),
        with_env,
    ];
    for case in cases {
        let a = run(runners, "h", case.clone(), None).await.unwrap();
        let b = run(channels, "h", case.clone(), None).await.unwrap();
        let outcome = |r: &Ran| (r.raw.clone(), r.exit.code, r.exit.signal, r.exit.stdout_bytes, r.exit.stderr_bytes);
        assert!(outcome(&a) == outcome(&b), "{case:?}: runner {:?} vs channel {:?}", a.exit, b.exit);
    }
    // The runner's commands are the children of one shell; an exec channel's, of sshd.
    let (a, b) = (parent(runners).await, parent(channels).await);
    assert_eq!(a, parent(runners).await, "the runner was not reused");
    assert_eq!((name_of(&a).as_str(), name_of(&b).as_str()), ("sh", "sshd"));

    // Output past the cap is cut alike, and counted whole.
    let capped = |pool: Pool| async move {
        let req = ExecRequest { command: argv(&["seq", "1", "100000"]), timeout: None, output_cap: 1000, stdin: None };
        let ran = run_request(&pool, "h", req).await.unwrap();
        (ran.raw.0, ran.exit.stdout_truncated, ran.exit.stdout_bytes)
    };
    let (a, b) = (capped(runners.clone()).await, capped(channels.clone()).await);
    assert_eq!(a, b);
    assert_eq!((a.0.len(), a.1), (1000, true));

    // No word of a command is read as runner script, however hostile.
    let hostile = ["') </dev/null & echo injected; ('", "\n; echo injected\n", "$(id)", "`id`", "*", ""];
    let mut words = vec!["printf", "%s|"];
    words.extend(hostile);
    let ran = run(runners, "h", argv(&words), None).await.unwrap();
    assert_eq!(ran.stdout, hostile.map(|w| format!("{w}|")).concat());
    assert_eq!(ran.exit.code, Some(0));

    // A missing program or directory fails alike (the wording is each shell's own).
    for case in [
        argv(&["no-such-program-here"]),
        RemoteCommand::argv(vec!["true".into()], vec![], Some("/no/such/dir".into())).unwrap(),
    ] {
        let a = run(runners, "h", case.clone(), None).await.unwrap();
        let b = run(channels, "h", case.clone(), None).await.unwrap();
        assert!(a.exit.code.is_some_and(|c| c != 0) && b.exit.code.is_some_and(|c| c != 0), "{a:?} {b:?}");
        assert!(!a.stderr.is_empty() && !b.stderr.is_empty());
    }
    // A death by signal: the exec channel names the signal; a runner gives the shell's 128+N.
    let killed = argv(&["sh", "-c", "kill -TERM $$"]);
    let a = run(runners, "h", killed.clone(), None).await.unwrap();
    let b = run(channels, "h", killed, None).await.unwrap();
    assert_eq!((a.exit.code, a.exit.signal), (Some(143), None));
    assert_eq!((b.exit.code, b.exit.signal), (None, Some(15)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_are_replaced_when_they_die_or_something_else_writes() {
    if skip() {
        return;
    }
    let s = setup("runner-replace", |k| k);
    let pool = &s.runners;

    // A runner killed while idle: the next command gets a new one and runs once.
    let first = parent(pool).await;
    let kill = format!("kill -9 {}", first.trim()); // the shell's own kill: no procps needed
    assert!(Command::new("sh").args(["-c", &kill]).status().unwrap().success());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = parent(pool).await;
    assert_ne!(first, second);

    // A background process that writes after its command ended: that output belongs to no
    // command, and the runner it wrote to is not used again.
    let ran =
        run(pool, "h", argv(&["sh", "-c", "(sleep 0.3; echo late; echo late >&2) & echo now"]), None).await.unwrap();
    assert_eq!((ran.stdout.as_str(), ran.exit.code), ("now\n", Some(0)));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let next = run(pool, "h", argv(&["sh", "-c", "echo next; echo $PPID"]), None).await.unwrap();
    assert_eq!(next.stdout.lines().next(), Some("next"));
    assert_eq!(next.stderr, "");
    assert_ne!(next.stdout.lines().nth(1).unwrap(), second.trim(), "the written-to runner was reused");

    // A timeout kills the command itself, not only the runner.
    let started = Instant::now();
    let slow = run(pool, "h", argv(&["sleep", "31.7"]), Some(Duration::from_millis(500))).await.unwrap();
    assert!(slow.exit.timed_out && started.elapsed() < Duration::from_secs(5), "{:?}", slow.exit);
    assert!(gone("sleep 31.7"), "the timed-out command is still running");
    // So does a caller that goes away.
    let (tx, rx) = mpsc::channel(8);
    let req = ExecRequest { command: argv(&["sleep", "32.3"]), timeout: None, output_cap: 1 << 20, stdin: None };
    let exec = tokio::spawn({
        let pool = pool.clone();
        async move { pool.exec("h", req, &tx).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(rx);
    assert!(exec.await.unwrap().unwrap().cancelled);
    assert!(gone("sleep 32.3"), "the cancelled command is still running");
    // And the host is still fine.
    assert_eq!(run(pool, "h", argv(&["echo", "ok"]), None).await.unwrap().stdout, "ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_runners_give_up_their_channel_slots() {
    if skip() {
        return;
    }
    let s = setup("runner-slots", |k| k);
    let pool = &s.runners;
    // Ten commands at once (OpenSSH's MaxSessions): ten runners; some stay, idle.
    let many = (0..10).map(|i| {
        let pool = pool.clone();
        async move { run(&pool, "h", argv(&["sh", "-c", &format!("sleep 0.3; echo {i}")]), None).await.unwrap() }
    });
    let outs = futures_util::future::join_all(many).await;
    for (i, ran) in outs.iter().enumerate() {
        assert_eq!(ran.stdout, format!("{i}\n"));
    }
    // Ten exec channels at once (input makes each its own channel) need every slot: the idle
    // runners close to make room, or this would wait forever.
    let channels = (0..10).map(|i| {
        let pool = pool.clone();
        async move {
            let (in_tx, in_rx) = mpsc::channel(1);
            in_tx.send(format!("in-{i}").into_bytes()).await.unwrap();
            drop(in_tx);
            let req = ExecRequest { command: argv(&["cat"]), timeout: None, output_cap: 1 << 20, stdin: Some(in_rx) };
            let ran = run_request(&pool, "h", req).await.unwrap();
            (ran.stdout, ran.exit.code)
        }
    });
    let all = tokio::time::timeout(Duration::from_secs(20), futures_util::future::join_all(channels))
        .await
        .expect("exec channels waited on idle runners' slots");
    for (i, out) in all.into_iter().enumerate() {
        assert_eq!(out, (format!("in-{i}"), Some(0)));
    }
    assert_eq!(s.sshd.log_text().matches("Accepted publickey").count(), 1, "one session for everything");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_cannot_have_a_runner_gets_exec_channels() {
    if skip() {
        return;
    }
    // A forced command that runs something else: no runner can start. One that runs only
    // what comes before `exec`: a runner greets, then ends before its first command.
    let forced = ["echo forced: $SSH_ORIGINAL_COMMAND", "eval \\\"${SSH_ORIGINAL_COMMAND%%exec*}\\\""];
    let expected = ["forced: uname\n", "Linux\n"];
    for (forced, expected) in forced.into_iter().zip(expected) {
        let s = setup("runner-forced", |k| format!("command=\"{forced}\" {k}"));
        let pool = &s.runners;
        for _ in 0..2 {
            let ran = run(pool, "h", argv(&["uname"]), None).await.unwrap();
            assert_eq!((ran.stdout.as_str(), ran.exit.code), (expected, Some(0)), "{forced}: {ran:?}");
        }
        // One attempt at a runner in the session, then exec channels only.
        let log = s.sshd.log_text();
        assert_eq!(log.matches("Starting session: forced-command").count(), 3, "{forced}: {log}");
    }
}
