//! `tunnel cp`: files to and from peers, streamed (bounded memory at any size), atomic at the
//! destination (a temporary file renamed into place once every byte arrived), with progress
//! on a terminal.

use std::ffi::OsStr;
use std::io::{IsTerminal, Write};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnel_node::control::{read_frame, write_frame, ControlRequest, ControlResponse};
use tunnel_proto::message::{ByteBuf, FileEvent, FileKind, Op, PathBytes, ReadSpec, Reply, WriteSpec};

use crate::args::{CpArgs, Global};
use crate::remote::{client, request};
use tunnel_node::fleet::targets::split_remote_bytes;

const CHUNK: usize = 64 * 1024;

/// Most entries one remote directory may have in a recursive copy.
const LIST_LIMIT: u32 = 10_000;

pub(crate) async fn run(global: Global, args: CpArgs) -> anyhow::Result<i32> {
    // Either side may name a file that is not UTF-8: paths travel as bytes, as the shell gave them.
    let (src, dst) = (args.src.as_os_str(), args.dst.as_os_str());
    match (split_remote_bytes(src.as_bytes()), split_remote_bytes(dst.as_bytes())) {
        (Some((peer, path)), None) => {
            let path = PathBytes(path.to_vec());
            let is_dir = matches!(request(&global, peer, Op::Stat { path: path.clone() }).await, Ok(Reply::Stat(s)) if s.kind == FileKind::Dir);
            match (is_dir, args.recursive) {
                (true, true) => download_tree(&global, peer, &path, Path::new(dst)).await,
                (true, false) => bail!("{peer}:{path} is a directory: use -r"),
                (false, _) => download(&global, peer, &path, Path::new(dst)).await,
            }
        }
        (None, Some((peer, path))) => {
            let (src, path) = (Path::new(src), PathBytes(path.to_vec()));
            match (src.is_dir(), args.recursive) {
                (true, true) => upload_tree(&global, src, peer, &path).await,
                (true, false) => bail!("{} is a directory: use -r", src.display()),
                (false, _) => upload(&global, src, peer, &path).await,
            }
        }
        (Some(_), Some(_)) => bail!("copying between two peers is not available yet; copy through this machine"),
        (None, None) => bail!("one side must be PEER:PATH"),
    }
}

/// A name from a remote listing, checked before it becomes part of a local path: a peer must
/// not be able to write outside the destination (`..`, `/`). Any other bytes are a name.
fn safe_name(name: &[u8]) -> anyhow::Result<&OsStr> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
        bail!("refusing the remote entry name {:?}", PathBytes(name.to_vec()));
    }
    Ok(OsStr::from_bytes(name))
}

/// `dir/name`, as bytes.
fn child(dir: &[u8], name: &[u8]) -> PathBytes {
    PathBytes([dir, b"/", name].concat())
}

/// The path without trailing slashes (but `/` stays `/`).
fn trimmed(path: &PathBytes) -> PathBytes {
    let mut bytes = path.0.clone();
    while bytes.len() > 1 && bytes.ends_with(b"/") {
        bytes.pop();
    }
    PathBytes(bytes)
}

async fn download_tree(global: &Global, peer: &str, dir: &PathBytes, dst: &Path) -> anyhow::Result<i32> {
    let dir = trimmed(dir);
    let base = dir.as_path().file_name().context("the remote path names no directory")?;
    let root = if dst.is_dir() { dst.join(base) } else { dst.to_owned() };
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let mut pending = vec![(dir, root)];
    while let Some((remote, local)) = pending.pop() {
        let Reply::List { entries, truncated } =
            request(global, peer, Op::List { path: remote.clone(), limit: LIST_LIMIT }).await?
        else {
            bail!("unexpected answer listing {remote}")
        };
        if truncated {
            bail!("{peer}:{remote} has more than {LIST_LIMIT} entries; copy it in parts");
        }
        for e in entries {
            let name = safe_name(&e.name.0)?;
            let (r, l) = (child(&remote.0, &e.name.0), local.join(name));
            match e.kind {
                FileKind::Dir => {
                    std::fs::create_dir_all(&l).with_context(|| format!("creating {}", l.display()))?;
                    pending.push((r, l));
                }
                FileKind::File => {
                    let code = download(global, peer, &r, &l).await?;
                    if code != 0 {
                        return Ok(code);
                    }
                }
                FileKind::Symlink | FileKind::Other => {
                    eprintln!("tunnel: skipping {peer}:{r} (not a regular file or directory)")
                }
            }
        }
    }
    Ok(0)
}

async fn upload_tree(global: &Global, src: &Path, peer: &str, dest: &PathBytes) -> anyhow::Result<i32> {
    let dest = trimmed(dest);
    let dest_is_dir = matches!(request(global, peer, Op::Stat { path: dest.clone() }).await, Ok(Reply::Stat(s)) if s.kind == FileKind::Dir);
    let base = src.file_name().context("the local path names no directory")?;
    let root = if dest_is_dir { child(&dest.0, base.as_bytes()) } else { dest };
    let mut pending = vec![(src.to_owned(), root)];
    while let Some((local, remote)) = pending.pop() {
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&local)?.permissions()) & 0o7777;
        request(global, peer, Op::Mkdir { path: remote.clone(), mode: Some(mode) }).await?;
        let mut entries: Vec<_> = std::fs::read_dir(&local)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let (l, r) = (e.path(), child(&remote.0, e.file_name().as_bytes()));
            let kind = e.file_type()?;
            if kind.is_dir() {
                pending.push((l, r));
            } else if kind.is_file() {
                let code = send_file(global, &l, peer, &r).await?;
                if code != 0 {
                    return Ok(code);
                }
            } else {
                eprintln!("tunnel: skipping {} (not a regular file or directory)", l.display());
            }
        }
    }
    Ok(0)
}

struct Progress {
    name: String,
    total: u64,
    done: u64,
    started: Instant,
    shown: Instant,
    on: bool,
}

impl Progress {
    fn new(name: &str, total: u64) -> Self {
        let on = std::io::stderr().is_terminal() && total > 8 << 20;
        Self { name: name.to_owned(), total, done: 0, started: Instant::now(), shown: Instant::now(), on }
    }

    fn add(&mut self, n: usize) {
        self.done += n as u64;
        if self.on && (self.shown.elapsed().as_millis() > 200 || self.done == self.total) {
            self.shown = Instant::now();
            let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-3) / 1048576.0;
            eprint!(
                "\r{}  {:>3}%  {:.1}/{:.1} MiB  {rate:.0} MiB/s ",
                self.name,
                self.done * 100 / self.total.max(1),
                self.done as f64 / 1048576.0,
                self.total as f64 / 1048576.0
            );
            if self.done == self.total {
                eprintln!();
            }
        }
    }
}

async fn download(global: &Global, peer: &str, path: &PathBytes, dst: &Path) -> anyhow::Result<i32> {
    let name = path.as_path().file_name().context("the remote path names no file")?;
    let dst: PathBuf = if dst.is_dir() { dst.join(name) } else { dst.to_owned() };
    let dir = dst.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_owned();
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(dst.file_name().unwrap_or_default());
    temp_name.push(format!(".tunnel-{:016x}", rand::random::<u64>()));
    let temp = dir.join(temp_name);
    let spec = ReadSpec { request_id: rand::random(), path: path.clone(), offset: 0, length: None };
    let path = path.display();
    let path = path.as_str();
    let (mut rd, mut wr) = client(global).await?.into_split();
    write_frame(&mut wr, &ControlRequest::Read { target: peer.to_owned(), spec }).await?;
    let mut file = None;
    let mut progress = Progress::new(path, 0);
    let mut meta_size = 0;
    let result = async {
        loop {
            let Some(resp) = read_frame::<ControlResponse, _>(&mut rd).await? else {
                bail!("the node closed the connection")
            };
            match resp {
                ControlResponse::File(FileEvent::Meta(m)) => {
                    meta_size = m.size;
                    progress = Progress::new(path, m.size);
                    let f = tokio::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&temp)
                        .await
                        .with_context(|| format!("creating {}", temp.display()))?;
                    file = Some((f, m.mode));
                }
                ControlResponse::File(FileEvent::Data(b)) => {
                    let (f, _) = file.as_mut().context("data before the file's description")?;
                    f.write_all(&b.0).await?;
                    progress.add(b.0.len());
                }
                ControlResponse::File(FileEvent::Done { bytes, .. }) => {
                    let (f, mode) = file.take().context("no file arrived")?;
                    if bytes != meta_size {
                        bail!("{path} changed size while being read ({bytes} of {meta_size} bytes)");
                    }
                    f.sync_all().await?;
                    drop(f);
                    std::fs::set_permissions(&temp, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
                    std::fs::rename(&temp, &dst)
                        .with_context(|| format!("moving the file into place at {}", dst.display()))?;
                    return Ok(0);
                }
                ControlResponse::File(FileEvent::Refused(why)) => {
                    eprintln!("tunnel: {why}");
                    return Ok(126);
                }
                ControlResponse::File(FileEvent::Failed(why)) | ControlResponse::Error(why) => bail!(why),
                other => bail!("unexpected answer from the node: {other:?}"),
            }
        }
    }
    .await;
    if !matches!(result, Ok(0)) {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

async fn upload(global: &Global, src: &Path, peer: &str, path: &PathBytes) -> anyhow::Result<i32> {
    let name = src.file_name().context("the local path names no file")?;
    // A remote directory (or a path ending in '/') receives the file under its own name.
    let is_dir = path.0.ends_with(b"/")
        || matches!(
            request(global, peer, Op::Stat { path: path.clone() }).await,
            Ok(Reply::Stat(s)) if s.kind == FileKind::Dir
        );
    let target = if is_dir { child(&trimmed(path).0, name.as_bytes()) } else { path.clone() };
    send_file(global, src, peer, &target).await
}

/// Uploads one local file to exactly `target` on the peer.
pub(crate) async fn send_file(global: &Global, src: &Path, peer: &str, target: &PathBytes) -> anyhow::Result<i32> {
    let meta = std::fs::metadata(src).with_context(|| format!("reading {}", src.display()))?;
    let name = src.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let spec = WriteSpec {
        request_id: rand::random(),
        path: target.clone(),
        size: meta.len(),
        mode: Some(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777),
        create_only: false,
    };
    let (mut rd, mut wr) = client(global).await?.into_split();
    write_frame(&mut wr, &ControlRequest::Write { target: peer.to_owned(), spec }).await?;
    let mut input = tokio::fs::File::open(src).await?;
    let mut progress = Progress::new(&name, meta.len());
    let sender = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = input.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            write_frame(&mut wr, &ControlRequest::Input(ByteBuf::copy_from(&buf[..n]))).await?;
            progress.add(n);
        }
        write_frame(&mut wr, &ControlRequest::InputEnd).await?;
        anyhow::Ok(())
    };
    let answer = async { read_frame::<ControlResponse, _>(&mut rd).await };
    tokio::pin!(answer);
    let response = tokio::select! {
        sent = sender => match sent {
            Ok(()) => answer.await?,
            // The node may have answered (a refusal) and closed before all was sent: report
            // its answer, not the write error it caused.
            Err(e) => match answer.await {
                Ok(Some(resp)) => Some(resp),
                _ => return Err(e),
            },
        },
        early = &mut answer => early?,
    };
    match response {
        Some(ControlResponse::File(FileEvent::Done { backup, .. })) => {
            if let Some(b) = backup {
                eprintln!("tunnel: the previous file was backed up on {peer} at {b}");
            }
            std::io::stdout().flush()?;
            Ok(0)
        }
        Some(ControlResponse::File(FileEvent::Refused(why))) => {
            eprintln!("tunnel: {why}");
            Ok(126)
        }
        Some(ControlResponse::File(FileEvent::Failed(why)) | ControlResponse::Error(why)) => bail!(why),
        Some(other) => bail!("unexpected answer from the node: {other:?}"),
        None => bail!("the node closed the connection"),
    }
}

#[cfg(test)]
mod tests {
    use super::safe_name;
    use std::os::unix::ffi::OsStrExt as _;

    #[test]
    fn remote_names_cannot_climb_out_of_the_destination() {
        assert_eq!(safe_name(b"notes.txt").unwrap(), "notes.txt");
        assert_eq!(safe_name(b"..hidden").unwrap(), "..hidden");
        assert_eq!(safe_name(b"caf\xe9").unwrap().as_bytes(), b"caf\xe9", "any other bytes are a name");
        for bad in [&b""[..], b".", b"..", b"../etc", b"a/b", b"/etc", b"a\0b"] {
            assert!(safe_name(bad).is_err(), "{bad:?}");
        }
    }
}
