//! Running a command on an SSH host: output streamed as [`ExecEvent`]s with per-stream caps,
//! stdin forwarded, and a timeout or cancellation that signals the remote command and closes
//! its channel.

use std::time::{Duration, Instant};

use russh::{ChannelMsg, Sig};
use tokio::sync::mpsc;
use tunnel_proto::message::{cap_output, ByteBuf, ExecEvent, ExecExit};

use crate::{Pool, SshError};

/// A command for an SSH host.
#[derive(Debug)]
pub struct ExecRequest {
    /// The whole command line (see [`crate::quote::command_line`] for argv).
    pub command: String,
    pub timeout: Option<Duration>,
    /// Bytes of stdout, and separately of stderr, delivered before output is cut.
    pub output_cap: u64,
    /// Input for the command; `None` sends none (its stdin sees end of file).
    pub stdin: Option<mpsc::Receiver<Vec<u8>>>,
}

impl Pool {
    /// Runs `request` on host `name`. Output goes to `events`; the exit is returned (and not
    /// sent). Dropping the `events` receiver cancels the command.
    pub async fn exec(
        &self,
        name: &str,
        request: ExecRequest,
        events: &mpsc::Sender<ExecEvent>,
    ) -> Result<ExecExit, SshError> {
        let started = Instant::now();
        let mut lease = self.lease(name).await?;
        let channel = self.open(&mut lease, |s| async move { s.channel_open_session().await }).await?;
        let host = lease.host.name.clone();
        let channel_err = |e: russh::Error| SshError::Channel { host: host.clone(), reason: e.to_string() };
        channel.exec(true, request.command.as_bytes()).await.map_err(channel_err)?;
        let (mut read, write) = channel.split();
        let mut stdin = request.stdin;
        if stdin.is_none() {
            write.eof().await.map_err(channel_err)?;
        }
        let deadline = request.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut exit = ExecExit::default();
        let (mut out_sent, mut err_sent) = (0u64, 0u64);
        let mut finished = false;
        while !finished {
            tokio::select! {
                msg = read.wait() => match msg {
                    None | Some(ChannelMsg::Close) => finished = true,
                    Some(ChannelMsg::Data { data }) => {
                        exit.stdout_bytes += data.len() as u64;
                        let keep = cap_output(&mut out_sent, data.len(), request.output_cap, &mut exit.stdout_truncated);
                        if keep > 0 && events.send(ExecEvent::Stdout(ByteBuf(data[..keep].to_vec()))).await.is_err() {
                            exit.cancelled = true;
                            break;
                        }
                    }
                    Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                        exit.stderr_bytes += data.len() as u64;
                        let keep = cap_output(&mut err_sent, data.len(), request.output_cap, &mut exit.stderr_truncated);
                        if keep > 0 && events.send(ExecEvent::Stderr(ByteBuf(data[..keep].to_vec()))).await.is_err() {
                            exit.cancelled = true;
                            break;
                        }
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => exit.code = Some(exit_status as i32),
                    Some(ChannelMsg::ExitSignal { signal_name, .. }) => exit.signal = Some(signal_number(&signal_name)),
                    Some(ChannelMsg::Failure) => {
                        return Err(SshError::Channel { host: host.clone(), reason: "the host refused to run the command".into() });
                    }
                    Some(_) => {}
                },
                chunk = next_input(&mut stdin) => match chunk {
                    Some(bytes) => {
                        if write.data_bytes(bytes).await.is_err() {
                            stdin = None;
                        }
                    }
                    None => {
                        stdin = None;
                        let _ = write.eof().await;
                    }
                },
                _ = sleep_until(deadline) => {
                    exit.timed_out = true;
                    break;
                }
                _ = events.closed() => {
                    exit.cancelled = true;
                    break;
                }
            }
        }
        if exit.timed_out || exit.cancelled {
            // Ask the remote side to kill the command; closing the channel also hangs it up.
            let _ = write.signal(Sig::KILL).await;
            let _ = write.close().await;
        }
        if finished && exit.code.is_none() && exit.signal.is_none() {
            return Err(SshError::Channel {
                host: host.clone(),
                reason: "the session closed before the command's exit status arrived".into(),
            });
        }
        exit.duration_ms = started.elapsed().as_millis() as u64;
        Ok(exit)
    }
}

async fn next_input(stdin: &mut Option<mpsc::Receiver<Vec<u8>>>) -> Option<Vec<u8>> {
    match stdin {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// The POSIX number of a signal SSH names.
fn signal_number(sig: &Sig) -> i32 {
    match sig {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::USR1 => 10,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        Sig::TERM => 15,
        Sig::Custom(_) => 0,
    }
}
