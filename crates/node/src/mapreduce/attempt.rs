//! One attempt: a shell command on one target with a piece of input on its stdin.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tunnel_proto::message::{ExecCommand, ExecEvent, ExecSpec, MAX_CHUNK};

use crate::Node;

/// Waited beyond the command's own timeout for the target's report of it.
const GRACE: Duration = Duration::from_secs(5);

pub(super) struct Output {
    pub(super) stdout: Vec<u8>,
    /// Everything the command printed, including what the cap cut.
    pub(super) stdout_bytes: u64,
    pub(super) truncated: bool,
}

pub(super) struct Failure {
    pub(super) cause: String,
    /// The target is gone or silent: give it no more work.
    pub(super) lost: bool,
}

impl Failure {
    fn of(cause: impl Into<String>, lost: bool) -> Self {
        Self { cause: cause.into(), lost }
    }
}

pub(super) async fn run(
    node: &Node,
    peer: crate::Dest,
    command: &str,
    input: Bytes,
    timeout: Duration,
    cap: u64,
) -> Result<Output, Failure> {
    let spec = ExecSpec {
        request_id: rand::random(),
        command: ExecCommand::Shell(command.to_owned()),
        env: vec![],
        cwd: None,
        timeout_ms: Some(timeout.as_millis() as u64),
        output_cap: cap,
        stdin: true,
    };
    let (stdin_tx, stdin_rx) = mpsc::channel(4);
    let feed = async move {
        let mut at = 0;
        while at < input.len() {
            let end = (at + MAX_CHUNK).min(input.len());
            if stdin_tx.send(input.slice(at..end).to_vec()).await.is_err() {
                return;
            }
            at = end;
        }
    };
    let work = async {
        let (ran, ()) = tokio::join!(node.exec_gathered(peer, spec, Some(stdin_rx), STDERR_KEPT), feed);
        ran
    };
    let Ok(ran) = tokio::time::timeout(timeout + GRACE, work).await else {
        return Err(Failure::of(format!("no answer within {} s", (timeout + GRACE).as_secs()), true));
    };
    let (stdout, stderr, last) = match ran {
        Ok(g) => (g.stdout, g.stderr, g.last),
        Err(e) => return Err(Failure::of(e.to_string(), true)),
    };
    let stderr_line = || {
        let text = String::from_utf8_lossy(&stderr);
        text.lines().rev().find(|l| !l.trim().is_empty()).map(|l| format!(": {}", l.trim())).unwrap_or_default()
    };
    match last {
        Some(ExecEvent::Exit(exit)) if exit.timed_out => {
            Err(Failure::of(format!("timed out after {} s", timeout.as_secs_f64()), false))
        }
        Some(ExecEvent::Exit(exit)) if exit.code == Some(0) => {
            Ok(Output { stdout, stdout_bytes: exit.stdout_bytes, truncated: exit.stdout_truncated })
        }
        Some(ExecEvent::Exit(exit)) => {
            let how = match (exit.code, exit.signal) {
                (Some(code), _) => format!("exit code {code}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                (None, None) => "ended without an exit code".into(),
            };
            Err(Failure::of(format!("{how}{}", stderr_line()), false))
        }
        Some(ExecEvent::Refused(why)) => Err(Failure::of(why, false)),
        Some(ExecEvent::Failed(why)) => Err(Failure::of(format!("could not run: {why}"), false)),
        _ => Err(Failure::of("the exec stream ended without an outcome", true)),
    }
}

/// Bytes of a failed command's stderr kept to explain the failure.
const STDERR_KEPT: usize = 64 * 1024;
