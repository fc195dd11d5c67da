//! `tunnel cp`: files to and from peers, streamed (bounded memory at any size), atomic at the
//! destination (a temporary file renamed into place once every byte arrived), with progress
//! on a terminal.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnel_node::control::{read_frame, write_frame, ControlRequest, ControlResponse};
use tunnel_proto::message::{ByteBuf, FileEvent, FileKind, Op, ReadSpec, Reply, WriteSpec};

use crate::args::{CpArgs, Global};
use crate::remote::{client, request, split_remote};

const CHUNK: usize = 64 * 1024;

pub(crate) async fn run(global: Global, args: CpArgs) -> anyhow::Result<i32> {
    if args.recursive {
        bail!("copying directories (-r) is not available yet; copy files one by one");
    }
    match (split_remote(&args.src), split_remote(&args.dst)) {
        (Some((peer, path)), None) => download(&global, peer, path, Path::new(&args.dst)).await,
        (None, Some((peer, path))) => upload(&global, Path::new(&args.src), peer, path).await,
        (Some(_), Some(_)) => bail!("copying between two peers is not available yet; copy through this machine"),
        (None, None) => bail!("one side must be PEER:PATH"),
    }
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

async fn download(global: &Global, peer: &str, path: &str, dst: &Path) -> anyhow::Result<i32> {
    let name = Path::new(path).file_name().context("the remote path names no file")?;
    let dst: PathBuf = if dst.is_dir() { dst.join(name) } else { dst.to_owned() };
    let dir = dst.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_owned();
    let temp = dir.join(format!(
        ".{}.tunnel-{:016x}",
        dst.file_name().unwrap_or_default().to_string_lossy(),
        rand::random::<u64>()
    ));
    let spec = ReadSpec { request_id: rand::random(), path: path.to_owned(), offset: 0, length: None };
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

async fn upload(global: &Global, src: &Path, peer: &str, path: &str) -> anyhow::Result<i32> {
    let meta = std::fs::metadata(src).with_context(|| format!("reading {}", src.display()))?;
    if meta.is_dir() {
        bail!("{} is a directory; copying directories (-r) is not available yet", src.display());
    }
    let name = src.file_name().context("the local path names no file")?.to_string_lossy().into_owned();
    // A remote directory (or a path ending in '/') receives the file under its own name.
    let mut target = path.to_owned();
    let is_dir = path.ends_with('/')
        || matches!(
            request(global, peer, Op::Stat { path: path.to_owned() }).await,
            Ok(Reply::Stat(s)) if s.kind == FileKind::Dir
        );
    if is_dir {
        target = format!("{}/{name}", path.trim_end_matches('/'));
    }
    let spec = WriteSpec {
        request_id: rand::random(),
        path: target,
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
            write_frame(&mut wr, &ControlRequest::Input(ByteBuf(buf[..n].to_vec()))).await?;
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
