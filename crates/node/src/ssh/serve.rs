//! Operations peers ask this node to run on its SSH hosts. This node's policy governs them
//! (it holds the keys and is the one acting), each is audited here, and the answers use the
//! same frames as local exec and file streams, so callers handle both alike.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tunnel_net::{Stream, StreamReader, StreamWriter};
use tunnel_proto::message::{ExecCommand, ExecEvent, ExecSpec, FileEvent, ReadSpec, WriteSpec};
use tunnel_ssh::{ExecRequest, RemoteCommand};

use crate::policy::{CommandLine, PathAccess, Refusal};
use crate::services::exec::{audit_detail, command_line, send};

/// Events buffered between the SSH channel and the peer stream.
const EVENTS: usize = 64;

pub(crate) fn pool_or_refuse(node: &crate::Node, host: &str) -> Result<tunnel_ssh::Pool, Refusal> {
    let pool = node.ssh_pool().ok_or_else(|| Refusal::new("this node has no SSH inventory"))?;
    if pool.inventory().get(host).is_none() {
        return Err(Refusal::new(format!("ssh host {host:?} is not in this node's inventory")));
    }
    Ok(pool)
}

/// What the host runs: argv words quoted so the host's shell rebuilds them as given; a shell
/// command goes to `/bin/sh -c`. In `plan` the command starts from an empty environment with
/// a trusted `PATH` (`env -i`), plus the locale and terminal variables the caller may set.
pub(crate) fn remote_command(spec: &ExecSpec, plan: bool) -> Result<RemoteCommand, String> {
    let argv = match &spec.command {
        ExecCommand::Argv(argv) => argv.clone(),
        ExecCommand::Shell(script) => vec!["/bin/sh".into(), "-c".into(), script.clone()],
    };
    if plan {
        let mut wrapped = vec!["/usr/bin/env".to_owned(), "-i".into(), format!("PATH={}", crate::policy::TRUSTED_PATH)];
        wrapped.extend(spec.env.iter().map(|(k, v)| format!("{k}={v}")));
        wrapped.extend(argv);
        return RemoteCommand::argv(wrapped, vec![], spec.cwd.clone());
    }
    RemoteCommand::argv(argv, spec.env.clone(), spec.cwd.clone())
}

/// Whether `peer` may run `spec` on `host` through this node: under plan mode (true) or not,
/// and the pool that reaches the host.
pub(crate) fn decide(
    node: &crate::Node,
    peer: tunnel_proto::NodeId,
    host: &str,
    spec: &ExecSpec,
) -> Result<(bool, tunnel_ssh::Pool), Refusal> {
    let cmd: CommandLine = command_line(&spec.command);
    let plan = node.policy_check(|p| {
        p.check_caller(&peer)?;
        p.check_remote_command(&cmd, spec.cwd.as_deref())?;
        crate::policy::check_env(p.mode, &spec.env)?;
        Ok(p.mode == crate::policy::Mode::Plan)
    })?;
    Ok((plan, pool_or_refuse(node, host)?))
}

pub(crate) async fn serve_exec(node: crate::Node, stream: Stream, host: String, spec: ExecSpec) {
    // The reader lives to the end: dropping it early would reset the stream under the answer.
    let Stream { peer, mut reader, mut writer, .. } = stream;
    let mut detail = audit_detail(&spec);
    detail["ssh_host"] = host.clone().into();
    if !node.begin_request(peer, spec.request_id) {
        return crate::services::exec::send_last(writer, &crate::services::exec::already_ran(spec.request_id)).await;
    }
    let (plan, pool) = match decide(&node, peer, &host, &spec) {
        Ok(found) => found,
        Err(refusal) => {
            return crate::services::exec::refuse(&node, peer, "ssh.exec", refusal, detail, writer, ExecEvent::Refused)
                .await
        }
    };
    let started = Instant::now();
    let outcome = match remote_command(&spec, plan) {
        Ok(command) => run(&pool, &host, &spec, command, &mut reader, &mut writer).await,
        Err(e) => Err(e),
    };
    crate::services::exec::conclude(&node, peer, "ssh.exec", detail, started, outcome, writer).await;
}

/// The request for the pool, and where the command's input goes if it takes any.
pub(crate) fn exec_request(
    spec: &ExecSpec,
    command: RemoteCommand,
    output_cap: u64,
) -> (ExecRequest, Option<mpsc::Sender<Vec<u8>>>) {
    let (stdin_tx, stdin_rx) = if spec.stdin {
        let (tx, rx) = mpsc::channel::<Vec<u8>>(8);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let timeout = spec.timeout_ms.map(Duration::from_millis);
    (ExecRequest { command, timeout, output_cap, stdin: stdin_rx }, stdin_tx)
}

/// Runs the command, forwarding stdin from the peer and output to it.
async fn run(
    pool: &tunnel_ssh::Pool,
    host: &str,
    spec: &ExecSpec,
    command: RemoteCommand,
    reader: &mut StreamReader,
    writer: &mut StreamWriter,
) -> Result<tunnel_proto::message::ExecExit, String> {
    let (events_tx, mut events_rx) = mpsc::channel(EVENTS);
    let (request, stdin_tx) = exec_request(spec, command, spec.output_cap);
    let exec = async {
        let exit = pool.exec(host, request, &events_tx).await;
        drop(events_tx);
        exit
    };
    // Output to the caller; if the caller is gone, dropping the receiver cancels the command.
    let output = async {
        while let Some(event) = events_rx.recv().await {
            if !send(writer, &event).await {
                return;
            }
        }
    };
    // Input from the caller, read to its end even when the command takes none; true if the
    // caller reset the stream (a cancel).
    let input = async move {
        let mut stdin_tx = stdin_tx;
        loop {
            match reader.read().await {
                Ok(Some(chunk)) => {
                    if let Some(tx) = &stdin_tx {
                        if tx.send(chunk.to_vec()).await.is_err() {
                            stdin_tx = None; // the command stopped reading
                        }
                    }
                }
                Ok(None) => {
                    drop(stdin_tx.take()); // end of input
                    return std::future::pending::<bool>().await;
                }
                Err(_) => return true,
            }
        }
    };
    let work = async { tokio::join!(exec, output).0 };
    tokio::select! {
        exit = work => exit.map_err(|e| e.to_string()),
        _ = input => Err("cancelled: the caller reset the stream".into()),
    }
}

/// Reads the regular file `path` on `host`, if there is one, into a new slot of this node's
/// backups, listed as `ssh:HOST:PATH` (what `tunnel backups restore` takes).
async fn back_up(
    pool: &tunnel_ssh::Pool,
    host: &str,
    path: &str,
    root: &std::path::Path,
    caller: &tunnel_proto::NodeId,
) -> Result<Option<std::path::PathBuf>, String> {
    use tokio::io::AsyncWriteExt;
    match pool.stat(host, path).await {
        Ok(st) if st.kind == tunnel_proto::message::FileKind::File => {}
        _ => return Ok(None), // nothing to keep (a missing file is the write's to report)
    }
    let (slot, time_ms) = crate::services::backups::new_slot(root).map_err(|e| e.to_string())?;
    let name = std::path::Path::new(path).file_name().unwrap_or(std::ffi::OsStr::new("file"));
    let copy = slot.join(name);
    let mut out = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&copy)
        .await
        .map_err(|e| e.to_string())?;
    let (tx, mut rx) = mpsc::channel(EVENTS);
    let read = async {
        let r = pool.read_file(host, path, 0, None, &tx).await;
        drop(tx);
        r
    };
    let save = async {
        while let Some(event) = rx.recv().await {
            if let FileEvent::Data(bytes) = event {
                out.write_all(&bytes).await?;
            }
        }
        out.sync_all().await
    };
    let (read, saved) = tokio::join!(read, save);
    let bytes = read.map_err(|e| e.to_string())?;
    saved.map_err(|e| e.to_string())?;
    let entry = crate::services::backups::BackupEntry {
        time_ms,
        original: format!("ssh:{host}:{path}"),
        backup: copy.display().to_string(),
        bytes,
        caller: caller.to_string(),
    };
    crate::services::backups::record(root, &entry).map_err(|e| e.to_string())?;
    Ok(Some(copy))
}

/// SFTP names files with UTF-8 strings here: a path that is not one cannot be asked for.
pub(crate) fn utf8_path(path: &tunnel_proto::message::PathBytes) -> Result<String, Refusal> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| Refusal::new(format!("{path}: not UTF-8, which SFTP through this node cannot name")))
}

pub(crate) async fn serve_read(node: crate::Node, stream: Stream, host: String, spec: ReadSpec) {
    let Stream { peer, mut writer, .. } = stream;
    let detail =
        serde_json::json!({ "ssh_host": host, "path": spec.path, "offset": spec.offset, "length": spec.length });
    let path = utf8_path(&spec.path);
    let checked = node.policy_check(|p| {
        p.check_caller(&peer)?;
        p.check_remote_path(path.as_ref().map_err(Clone::clone)?, PathAccess::Read)
    });
    let pool = match checked.and_then(|()| pool_or_refuse(&node, &host)) {
        Ok(pool) => pool,
        Err(refusal) => {
            return crate::services::exec::refuse(&node, peer, "ssh.read", refusal, detail, writer, FileEvent::Refused)
                .await
        }
    };
    let started = Instant::now();
    let (tx, mut rx) = mpsc::channel(EVENTS);
    let read = async {
        let path = path.as_deref().expect("checked above");
        let r = pool.read_file(&host, path, spec.offset, spec.length, &tx).await;
        drop(tx);
        r
    };
    let forward = async {
        let mut ok = true;
        while let Some(event) = rx.recv().await {
            if ok && !crate::services::fs::send(&mut writer, &event).await {
                ok = false; // keep draining so the reader ends; the caller is gone
            }
        }
    };
    let (result, ()) = tokio::join!(read, forward);
    let result = result.map(|bytes| (bytes, None)).map_err(|e| e.to_string());
    crate::services::fs::conclude(&node, peer, "ssh.read", detail, started, result, writer).await;
}

pub(crate) async fn serve_write(node: crate::Node, stream: Stream, host: String, spec: WriteSpec) {
    let Stream { peer, mut reader, writer, .. } = stream;
    let detail = serde_json::json!({
        "ssh_host": host, "path": spec.path, "size": spec.size, "mode": spec.mode, "create_only": spec.create_only,
    });
    if !node.begin_request(peer, spec.request_id) {
        return crate::services::exec::send_last(writer, &crate::services::fs::write_already_ran(spec.request_id))
            .await;
    }
    let path = utf8_path(&spec.path);
    let checked = node.policy_check(|p| {
        p.check_caller(&peer)?;
        p.check_write_size(spec.size)?;
        p.check_remote_path(path.as_ref().map_err(Clone::clone)?, PathAccess::Write)?;
        Ok(p.mode)
    });
    let (mode, pool) = match checked.and_then(|mode| Ok((mode, pool_or_refuse(&node, &host)?))) {
        Ok(found) => found,
        Err(refusal) => {
            return crate::services::exec::refuse(&node, peer, "ssh.write", refusal, detail, writer, FileEvent::Refused)
                .await
        }
    };
    let started = Instant::now();
    let path = path.as_deref().expect("checked above");
    // Edit mode keeps what an overwrite replaces, here, as it does for a peer's own files.
    let backups = (mode == crate::policy::Mode::Edit).then(|| node.state_dir().map(|d| d.join("backups"))).flatten();
    let backup = match backups {
        Some(root) if !spec.create_only => match back_up(&pool, &host, path, &root, &peer).await {
            Ok(saved) => saved,
            Err(e) => {
                let failed = Err(format!("backing up ssh:{host}:{path} before replacing it: {e}"));
                return crate::services::fs::conclude(&node, peer, "ssh.write", detail, started, failed, writer).await;
            }
        },
        _ => None,
    };
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(8);
    let feed = async move {
        loop {
            match reader.read().await {
                Ok(Some(chunk)) => {
                    if tx.send(chunk.to_vec()).await.is_err() {
                        return;
                    }
                }
                // The end of the input, or a reset: either way the write sees what arrived
                // and fails unless it is exactly the announced size.
                Ok(None) | Err(_) => return,
            }
        }
    };
    let write = pool.write_file(&host, path, spec.size, spec.mode, spec.create_only, &mut rx);
    // `feed` owns the sender: when it ends, the write sees the end of the input.
    let (result, ()) = tokio::join!(write, feed);
    let result = result.map(|bytes| (bytes, backup)).map_err(|e| e.to_string());
    crate::services::fs::conclude(&node, peer, "ssh.write", detail, started, result, writer).await;
}
