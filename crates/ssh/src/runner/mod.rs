//! Runners: a long-lived `/bin/sh` on a host's session that runs the argv commands sent to it.
//!
//! With an exec channel, every command costs the host a fork of sshd, the user's login shell
//! and then the command, and costs the client a channel open and close. A runner is started
//! once (the login shell `exec`s `/bin/sh -s`, so dotfiles run once and what they export is
//! inherited), and then each command costs one fork and the command's own exec: about a third
//! of the host CPU of an exec channel, and no channel round trips.
//!
//! Each command runs as `( LINE ) </dev/null &` and is waited for: a subshell, so nothing it
//! does changes the runner; stdin at end of file, as an exec channel with no input gives;
//! started in the login directory. LINE is built only from quoted argv words (see
//! [`crate::quote::RemoteCommand::exec_line`]), so nothing in a command can be read as runner
//! script. Output is framed by markers holding a random nonce fresh for each command (see
//! [`marks`]).
//!
//! A timeout or a caller that goes away kills the runner's whole process group (the runner
//! and every command it started) with `kill` on a channel of its own: sshd refuses SSH
//! `signal` requests on root logins, so they cannot be relied on.
//!
//! Differences from an exec channel, and what is done about them:
//! - A command killed by signal N reports exit status 128+N, as any shell reports it.
//! - A background process left holding stdout does not keep its command waiting (an exec
//!   channel waits for it). What it writes between commands is seen as stray, and the runner
//!   is closed instead of reused; what it writes during a later command on this runner cannot
//!   be told from that command's output, as in an interactive shell.
//! - A command with input, or a free-form command line, always gets an exec channel.
//! - `/bin/sh`, not the login shell, reads the quoted line: only the wording and status of a
//!   failed `cd` or a missing program can differ.
//! - A host whose login shell cannot start the runner (a forced command, a restricted shell)
//!   is remembered for the session and gets exec channels.

mod marks;

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::FutureExt;
use russh::client::Msg;
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::time::Instant as Deadline;

use crate::exec::{sleep_until, Sink};
use crate::quote::RemoteCommand;
use crate::{Pool, SshError};
use marks::Marks;

/// How long a starting runner has to greet.
const HELLO_WAIT: Duration = Duration::from_secs(10);
/// Output a login shell may print before the greeting (a chatty dotfile) that is skipped.
const HELLO_NOISE_MAX: usize = 64 * 1024;
/// How long a closing runner waits for the host to close the channel too.
const RETIRE_WAIT: Duration = Duration::from_secs(5);
/// How long killing a stopped command may take.
const KILL_WAIT: Duration = Duration::from_secs(10);

pub(crate) struct Runner {
    read: ChannelReadHalf,
    write: ChannelWriteHalf<Msg>,
    /// The runner shell's process id: sshd made it a session leader, so it is also the
    /// process group of everything the runner started.
    pid: u32,
    /// The channel's place among the session's channels, held while the runner lives.
    permit: OwnedSemaphorePermit,
}

/// Why a runner did not start.
pub(crate) enum StartError {
    /// The host's shell did not start one; exec channels it is.
    Unsupported(String),
    /// The channel failed.
    Channel(String),
}

/// How a command in a runner ended.
pub(crate) enum Ran {
    /// It exited; its status is in the sink. The runner comes back if it can be reused.
    Exited(Option<Runner>),
    /// The timeout or the caller stopped it (flagged in the sink); it must be killed.
    Stopped(Runner),
    /// The runner ended or misbehaved during the command; whether the command ran is unknown.
    Lost(String),
    /// The runner could not take the command (it was gone before starting it): it did not run.
    NotSent,
}

impl Runner {
    /// Starts a runner on a fresh session channel.
    pub(crate) async fn start(channel: Channel<Msg>, permit: OwnedSemaphorePermit) -> Result<Self, StartError> {
        let hello = format!("tunnel-runner-{}", nonce());
        let bootstrap = format!("echo {hello} $$; echo {hello} >&2; exec /bin/sh -s");
        channel.exec(true, bootstrap).await.map_err(|e| StartError::Channel(e.to_string()))?;
        let (read, write) = channel.split();
        let mut runner = Self { read, write, pid: 0, permit };
        let greeted = tokio::time::timeout(HELLO_WAIT, runner.greeting(&hello))
            .await
            .unwrap_or_else(|_| Err(format!("no greeting within {} s", HELLO_WAIT.as_secs())));
        match greeted {
            Ok(pid) => {
                runner.pid = pid;
                Ok(runner)
            }
            Err(why) => {
                runner.close();
                Err(StartError::Unsupported(why))
            }
        }
    }

    /// Waits for `hello PID` on stdout and `hello` on stderr, skipping what a login shell
    /// printed first; the runner's process id.
    async fn greeting(&mut self, hello: &str) -> Result<u32, String> {
        let (out_hello, err_hello) = (format!("{hello} "), format!("{hello}\n"));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        loop {
            // The rest of the stdout greeting's line: the pid.
            let pid_text = memchr::memmem::find(&out, out_hello.as_bytes()).and_then(|at| {
                let rest = &out[at + out_hello.len()..];
                memchr::memchr(b'\n', rest).map(|end| String::from_utf8_lossy(&rest[..end]).into_owned())
            });
            if let Some(text) = pid_text.filter(|_| memchr::memmem::find(&err, err_hello.as_bytes()).is_some()) {
                return text
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|&pid| pid > 1)
                    .ok_or_else(|| format!("the runner's greeting had no process id but {text:?}"));
            }
            let (seen, data) = match self.read.wait().await {
                Some(ChannelMsg::Data { data }) => (&mut out, data),
                Some(ChannelMsg::ExtendedData { data, ext: 1 }) => (&mut err, data),
                Some(ChannelMsg::Failure) => return Err("the host refused the runner's command".into()),
                Some(ChannelMsg::ExitStatus { exit_status }) => {
                    return Err(format!("the runner's shell exited with status {exit_status}"))
                }
                None | Some(ChannelMsg::Eof | ChannelMsg::Close) => return Err("the runner's shell ended".into()),
                Some(_) => continue,
            };
            seen.extend_from_slice(&data);
            if seen.len() > HELLO_NOISE_MAX + out_hello.len() + 16 {
                return Err(format!("more than {HELLO_NOISE_MAX} bytes came before the runner's greeting"));
            }
        }
    }

    /// Whether nothing came from the runner while it was idle: it is alive and no background
    /// process is writing to it.
    pub(crate) fn quiet(&mut self) -> bool {
        while let Some(msg) = self.read.wait().now_or_never() {
            match msg {
                Some(ChannelMsg::WindowAdjusted { .. } | ChannelMsg::Success) => continue,
                _ => return false,
            }
        }
        true
    }

    /// Runs the command `line` (see [`crate::quote::RemoteCommand::exec_line`]).
    pub(crate) async fn run(mut self, line: &str, deadline: Option<Deadline>, sink: &mut Sink<'_>) -> Ran {
        let n = nonce();
        let script = format!(
            "printf '%s\\n' {n}; printf '%s\\n' {n} >&2; ( {line} ) </dev/null & p=$!; wait $p; s=$?; \
             printf '\\n%s %d\\n' {n} $s; printf '\\n%s\\n' {n} >&2\n"
        );
        if let Err(e) = self.write.data_bytes(script.into_bytes()).await {
            tracing::debug!(error = %e, "cannot send a command to a runner");
            self.close();
            return Ran::NotSent;
        }
        let (mut out, mut err) = (Marks::new(&n), Marks::new(&n));
        let mut bytes = Vec::new();
        while !(out.done() && err.done()) {
            tokio::select! {
                msg = self.read.wait() => {
                    bytes.clear();
                    let delivered = match msg {
                        Some(ChannelMsg::Data { data }) => {
                            out.feed(&data, &mut bytes);
                            bytes.is_empty() || sink.stdout(&bytes).await
                        }
                        Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                            err.feed(&data, &mut bytes);
                            bytes.is_empty() || sink.stderr(&bytes).await
                        }
                        Some(ChannelMsg::WindowAdjusted { .. } | ChannelMsg::Success) => true,
                        _ if !out.started() => {
                            // It ended before its marker for this command: it never started it.
                            self.close();
                            return Ran::NotSent;
                        }
                        _ => {
                            self.close();
                            return Ran::Lost("the runner ended before the command finished".into());
                        }
                    };
                    if !delivered {
                        return Ran::Stopped(self);
                    }
                }
                _ = sleep_until(deadline) => {
                    sink.exit.timed_out = true;
                    return Ran::Stopped(self);
                }
                _ = sink.closed() => {
                    sink.exit.cancelled = true;
                    return Ran::Stopped(self);
                }
            }
        }
        let Some(code) = out.trailer().and_then(|t| t.trim().parse::<i32>().ok()) else {
            self.close();
            return Ran::Lost("the runner's report of the exit status was malformed".into());
        };
        sink.exit.code = Some(code);
        if out.stray + err.stray > 0 {
            tracing::debug!(stray = out.stray + err.stray, "output outside a command's markers; closing the runner");
            self.close();
            return Ran::Exited(None);
        }
        Ran::Exited(Some(self))
    }

    /// Ends the runner in the background: its shell sees end of input and exits, and its slot
    /// is freed once the host has closed the channel too (so the host agrees it is free).
    pub(crate) fn close(self) {
        tokio::spawn(self.retire());
    }

    /// Like [`Runner::close`], waited for.
    pub(crate) async fn retire(mut self) {
        let _ = self.write.eof().await;
        let _ = self.write.close().await;
        let closed = async { while !matches!(self.read.wait().await, None | Some(ChannelMsg::Close)) {} };
        let _ = tokio::time::timeout(RETIRE_WAIT, closed).await;
        drop(self.permit);
    }
}

impl Pool {
    /// Runs `line` in one of `name`'s runners, starting one if none is idle. `Ok(false)` when
    /// it did not run (the host gets no runner, or the runner could not take the command):
    /// give it an exec channel. An error means the command may have run.
    pub(crate) async fn run_in_runner(
        &self,
        name: &str,
        line: &str,
        deadline: Option<Deadline>,
        sink: &mut Sink<'_>,
    ) -> Result<bool, SshError> {
        let host = self.host(name)?;
        let conn = self.conn(&host, 0).await?;
        if conn.no_runners.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let (runner, conn, fresh) = match conn.idle_runner() {
            Some(runner) => (runner, conn, false),
            None => {
                let mut lease = self.lease_host(host, 0).await?;
                let channel = self.open(&mut lease, |s| async move { s.channel_open_session().await }).await?;
                match Runner::start(channel, lease.take_permit()).await {
                    Ok(runner) => (runner, lease.conn.clone(), true),
                    Err(StartError::Unsupported(why)) => {
                        tracing::debug!(host = name, %why, "no runner on this host; its commands get exec channels");
                        lease.conn.no_runners.store(true, Ordering::Relaxed);
                        return Ok(false);
                    }
                    Err(StartError::Channel(why)) => {
                        return Err(SshError::Channel {
                            host: name.into(),
                            reason: format!("cannot start a runner: {why}"),
                        })
                    }
                }
            }
        };
        match runner.run(line, deadline, sink).await {
            Ran::Exited(Some(runner)) => conn.park(runner),
            Ran::Exited(None) => {}
            Ran::Stopped(runner) => self.kill(name, runner).await,
            Ran::Lost(why) => return Err(SshError::Channel { host: name.into(), reason: why }),
            Ran::NotSent => {
                if fresh {
                    // A runner that greets but cannot take a command (no /bin/sh?) never will.
                    tracing::debug!(host = name, "a new runner could not take a command; exec channels it is");
                    conn.no_runners.store(true, Ordering::Relaxed);
                }
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Kills `runner`'s process group (its command and anything that started) from a channel
    /// of its own, then closes it.
    async fn kill(&self, name: &str, runner: Runner) {
        let group = format!("-{}", runner.pid);
        let kill = RemoteCommand::Argv {
            argv: vec!["kill".into(), "-KILL".into(), "--".into(), group],
            env: vec![],
            cwd: None,
        };
        let (events, _listening) = mpsc::channel(4);
        let mut sink = Sink::new(&events, 4096);
        let killed =
            tokio::time::timeout(KILL_WAIT, self.exec_channel(name, &kill.line(), None, None, &mut sink)).await;
        if !matches!(killed, Ok(Ok(()))) || sink.exit.code != Some(0) {
            tracing::warn!(host = name, pid = runner.pid, ?killed, exit = ?sink.exit.code, "could not kill a stopped command's runner");
        }
        runner.close();
    }
}

/// 128 random bits in hex: unguessable by anything that did not see the script.
fn nonce() -> String {
    format!("{:032x}", rand::random::<u128>())
}
