//! `tunnel exec PEER -- PROG ARGS...` and `tunnel exec PEER --shell 'STRING'`.
//!
//! Output streams as it is produced; stdin is forwarded when it is neither a terminal nor
//! `/dev/null`; the exit code is the remote command's (128 + signal if it was killed, 124 on
//! timeout, 126 when policy refused it, 127 when it could not run). Interrupting tunnel
//! cancels the command.

use std::io::{IsTerminal, Write};

use anyhow::bail;
use tokio::io::AsyncReadExt;
use tunnel_node::control::{read_frame, write_frame, ControlRequest, ControlResponse};
use tunnel_proto::job::JobStart;
use tunnel_proto::message::{ByteBuf, ExecCommand, ExecEvent, ExecSpec};

use crate::args::{ExecArgs, Global};

/// The command from `--shell STRING` or an argv after `--` (exactly one of them).
pub(crate) fn command_of(shell: Option<String>, argv: Vec<String>, usage: &str) -> anyhow::Result<ExecCommand> {
    match (shell, argv.is_empty()) {
        (Some(script), true) => Ok(ExecCommand::Shell(script)),
        (None, false) => Ok(ExecCommand::Argv(argv)),
        (Some(_), false) => bail!("give either --shell 'STRING' or an argv after --, not both"),
        (None, true) => bail!("no command: use `{usage} -- PROG ARGS...` or `--shell 'STRING'`"),
    }
}

/// `--env KEY=VALUE` flags as pairs.
pub(crate) fn env_of(flags: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    flags
        .iter()
        .map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| anyhow::anyhow!("--env takes KEY=VALUE"))
}

/// A `--timeout` in seconds as milliseconds.
pub(crate) fn millis_of(secs: f64) -> anyhow::Result<u64> {
    if !(secs > 0.0 && secs.is_finite()) {
        bail!("--timeout must be a positive number of seconds");
    }
    Ok((secs * 1000.0) as u64)
}

/// Whether stdin is `/dev/null`: forwarding it would only send end of file, and a command
/// without input can run in an SSH host's runner.
fn stdin_is_null() -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    match (std::fs::metadata("/dev/stdin"), std::fs::metadata("/dev/null")) {
        (Ok(stdin), Ok(null)) => stdin.file_type().is_char_device() && stdin.rdev() == null.rdev(),
        _ => false,
    }
}

pub(crate) async fn run(global: Global, args: ExecArgs) -> anyhow::Result<i32> {
    let command = command_of(args.shell, args.argv, "tunnel exec PEER")?;
    let env = env_of(&args.env)?;
    let timeout_ms = args.timeout.map(millis_of).transpose()?;
    let forward_stdin = !std::io::stdin().is_terminal() && !stdin_is_null();
    let spec = ExecSpec {
        request_id: rand::random(),
        command,
        env,
        cwd: args.cwd,
        timeout_ms,
        output_cap: args.max_output.unwrap_or(u64::MAX),
        stdin: forward_stdin,
    };
    let job_after = match (args.detach, args.job_after) {
        (true, _) => Some(0),
        (false, Some(secs)) => {
            Some(millis_of(secs).map_err(|_| anyhow::anyhow!("--job-after must be a positive number of seconds"))?)
        }
        (false, None) => None,
    };
    let request = match job_after {
        Some(after_ms) => {
            let job = JobStart { after_ms, label: args.peer.clone() };
            ControlRequest::ExecJob { target: args.peer, spec, job }
        }
        None => ControlRequest::Exec { target: args.peer, spec },
    };
    let client = global.control().await?;
    let (mut rd, mut wr) = client.into_split();
    write_frame(&mut wr, &request).await?;
    // The connection stays open until the answer: closing it would cancel the command.
    let (_input, _open) = if forward_stdin {
        (Some(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(forward_input(wr)))), None)
    } else {
        (None, Some(wr))
    };
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr());
    // Whether stdout ends a line: a job's id goes on a line of its own.
    let mut line_ended = true;
    loop {
        let Some(resp) = read_frame::<ControlResponse, _>(&mut rd).await? else {
            bail!("the node closed the connection before the command finished");
        };
        match resp {
            ControlResponse::Exec(ExecEvent::Stdout(b)) => {
                out.write_all(&b.0).and_then(|()| out.flush()).map_err(|_| crate::StdoutClosed)?;
                line_ended = b.0.last().map_or(line_ended, |&last| last == b'\n');
            }
            ControlResponse::Exec(ExecEvent::Stderr(b)) => {
                err.write_all(&b.0)?;
            }
            ControlResponse::Exec(ExecEvent::Refused(why)) => {
                eprintln!("tunnel: {why}");
                return Ok(126);
            }
            ControlResponse::Exec(ExecEvent::Failed(why)) => {
                eprintln!("tunnel: {why}");
                return Ok(127);
            }
            ControlResponse::Exec(ExecEvent::Exit(exit)) => {
                if exit.stdout_truncated || exit.stderr_truncated {
                    eprintln!("tunnel: output truncated at --max-output");
                }
                if exit.timed_out {
                    eprintln!("tunnel: timed out; the command and everything it started were killed");
                    return Ok(124);
                }
                return Ok(match (exit.code, exit.signal) {
                    (Some(code), _) => code,
                    (None, Some(sig)) => 128 + sig,
                    (None, None) => 1,
                });
            }
            ControlResponse::Exec(ExecEvent::Detached(job)) => {
                let id = job.reference();
                if !line_ended {
                    outln!();
                }
                if !args.detach {
                    eprintln!("tunnel: still running; it goes on as job {id} (`tunnel jobs logs -f {id}`)");
                }
                outln!("{id}");
                return Ok(0);
            }
            ControlResponse::Error(e) => bail!(e),
            other => bail!("unexpected answer from the node: {other:?}"),
        }
    }
}

/// Sends this process's stdin to the node, then its end, and keeps the connection open.
async fn forward_input<W: tokio::io::AsyncWrite + Unpin>(mut wr: W) {
    let mut input = tokio::io::stdin();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match input.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if write_frame(&mut wr, &ControlRequest::Input(ByteBuf::copy_from(&buf[..n]))).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = write_frame(&mut wr, &ControlRequest::InputEnd).await;
    std::future::pending::<()>().await;
}
