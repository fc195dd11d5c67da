//! Running a command on an SSH host: output streamed as [`ExecEvent`]s with per-stream caps,
//! stdin forwarded, and a timeout or cancellation that ends the remote command.
//!
//! An argv command without input runs in one of the host's runners (see [`crate::runner`]);
//! anything else, or every command when runners are off or the host cannot have one, gets
//! an exec channel of its own.

use std::time::{Duration, Instant};

use russh::{ChannelMsg, Sig};
use tokio::sync::mpsc;
use tokio::time::Instant as Deadline;
use tunnel_proto::message::{cap_output, ByteBuf, ExecEvent, ExecExit};

use crate::quote::RemoteCommand;
use crate::{Pool, SshError};

/// A command for an SSH host.
#[derive(Debug)]
pub struct ExecRequest {
    pub command: RemoteCommand,
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
        let deadline = request.timeout.map(|t| Deadline::now() + t);
        let mut sink = Sink::new(events, request.output_cap);
        let runnable = request.stdin.is_none() && self.settings().runners;
        let in_runner = match request.command.exec_line().filter(|_| runnable) {
            Some(line) => self.run_in_runner(name, &line, deadline, &mut sink).await?,
            None => false,
        };
        if !in_runner {
            self.exec_channel(name, &request.command.line(), request.stdin, deadline, &mut sink).await?;
        }
        let mut exit = sink.exit;
        exit.duration_ms = started.elapsed().as_millis() as u64;
        Ok(exit)
    }

    /// Runs `command` on an exec channel of its own.
    pub(crate) async fn exec_channel(
        &self,
        name: &str,
        command: &str,
        mut stdin: Option<mpsc::Receiver<Vec<u8>>>,
        deadline: Option<Deadline>,
        sink: &mut Sink<'_>,
    ) -> Result<(), SshError> {
        let mut lease = self.lease(name).await?;
        let channel = self.open(&mut lease, |s| async move { s.channel_open_session().await }).await?;
        let host = lease.host.name.clone();
        let channel_err = |e: russh::Error| SshError::Channel { host: host.clone(), reason: e.to_string() };
        channel.exec(true, command.as_bytes()).await.map_err(channel_err)?;
        let (mut read, write) = channel.split();
        if stdin.is_none() {
            write.eof().await.map_err(channel_err)?;
        }
        let mut finished = false;
        while !finished {
            tokio::select! {
                msg = read.wait() => match msg {
                    None | Some(ChannelMsg::Close) => finished = true,
                    Some(ChannelMsg::Data { data }) => {
                        if !sink.stdout(&data).await {
                            break;
                        }
                    }
                    Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                        if !sink.stderr(&data).await {
                            break;
                        }
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => sink.exit.code = Some(exit_status as i32),
                    Some(ChannelMsg::ExitSignal { signal_name, .. }) => sink.exit.signal = Some(signal_number(&signal_name)),
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
                    sink.exit.timed_out = true;
                    break;
                }
                _ = sink.closed() => {
                    sink.exit.cancelled = true;
                    break;
                }
            }
        }
        if sink.exit.timed_out || sink.exit.cancelled {
            // Ask the remote side to kill the command; closing the channel also hangs it up.
            let _ = write.signal(Sig::KILL).await;
            let _ = write.close().await;
        }
        if finished && sink.exit.code.is_none() && sink.exit.signal.is_none() {
            return Err(SshError::Channel {
                host: host.clone(),
                reason: "the session closed before the command's exit status arrived".into(),
            });
        }
        Ok(())
    }
}

/// Where a command's output goes: to the caller as events, each stream cut at the cap and
/// counted whole; and the exit being built.
pub(crate) struct Sink<'a> {
    events: &'a mpsc::Sender<ExecEvent>,
    cap: u64,
    pub(crate) exit: ExecExit,
    out_sent: u64,
    err_sent: u64,
}

impl<'a> Sink<'a> {
    pub(crate) fn new(events: &'a mpsc::Sender<ExecEvent>, cap: u64) -> Self {
        Self { events, cap, exit: ExecExit::default(), out_sent: 0, err_sent: 0 }
    }

    /// Passes on stdout bytes; false (and the exit marked cancelled) when the caller is gone.
    pub(crate) async fn stdout(&mut self, data: &[u8]) -> bool {
        self.exit.stdout_bytes += data.len() as u64;
        let keep = cap_output(&mut self.out_sent, data.len(), self.cap, &mut self.exit.stdout_truncated);
        keep == 0 || self.send(ExecEvent::Stdout(ByteBuf::copy_from(&data[..keep]))).await
    }

    /// Like [`Sink::stdout`], for stderr.
    pub(crate) async fn stderr(&mut self, data: &[u8]) -> bool {
        self.exit.stderr_bytes += data.len() as u64;
        let keep = cap_output(&mut self.err_sent, data.len(), self.cap, &mut self.exit.stderr_truncated);
        keep == 0 || self.send(ExecEvent::Stderr(ByteBuf::copy_from(&data[..keep]))).await
    }

    async fn send(&mut self, event: ExecEvent) -> bool {
        let sent = self.events.send(event).await.is_ok();
        self.exit.cancelled |= !sent;
        sent
    }

    /// Resolves when the caller stops listening.
    pub(crate) async fn closed(&self) {
        self.events.closed().await
    }
}

async fn next_input(stdin: &mut Option<mpsc::Receiver<Vec<u8>>>) -> Option<Vec<u8>> {
    match stdin {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

pub(crate) async fn sleep_until(at: Option<Deadline>) {
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
