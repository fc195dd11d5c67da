//! Files on SSH hosts over SFTP: streamed reads, and writes that land atomically (a temporary
//! file in the same directory, synced, then renamed over the target with OpenSSH's
//! `posix-rename@openssh.com`, so a reader never sees half a file).

use std::sync::Arc;

use futures_util::stream::{FuturesOrdered, StreamExt};

use russh_sftp::client::error::Error as SftpError;
use russh_sftp::client::RawSftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use tokio::sync::mpsc;
use tunnel_proto::message::{ByteBuf, FileEvent, FileKind, FileStat};

use crate::pool::Lease;
use crate::{Pool, SshError};

/// Bytes asked for in one SFTP read or sent in one write (OpenSSH serves up to 255 KiB; 32 KiB
/// is what every server accepts).
const CHUNK: usize = 32 * 1024;
/// SFTP requests kept in flight, so a transfer is not one round trip per chunk.
const IN_FLIGHT: usize = 32;

struct Sftp {
    raw: Arc<RawSftpSession>,
    posix_rename: bool,
    fsync: bool,
    _lease: Lease,
}

impl Pool {
    async fn sftp(&self, name: &str) -> Result<Sftp, SshError> {
        let mut lease = self.lease(name).await?;
        let host = lease.host.name.clone();
        let channel = self.open(&mut lease, |s| async move { s.channel_open_session().await }).await?;
        let err = |reason: String| SshError::Channel { host: host.clone(), reason };
        channel.request_subsystem(true, "sftp").await.map_err(|e| err(format!("sftp subsystem: {e}")))?;
        let raw = RawSftpSession::new(channel.into_stream());
        let version = raw.init().await.map_err(|e| err(format!("sftp: {e}")))?;
        Ok(Sftp {
            raw: Arc::new(raw),
            posix_rename: version.extensions.contains_key("posix-rename@openssh.com"),
            fsync: version.extensions.contains_key("fsync@openssh.com"),
            _lease: lease,
        })
    }

    /// Reads `path` on host `name` from `offset`, `length` bytes or to the end: a `Meta`, then
    /// `Data` chunks, sent to `events`. Returns the bytes read.
    pub async fn read_file(
        &self,
        name: &str,
        path: &str,
        offset: u64,
        length: Option<u64>,
        events: &mpsc::Sender<FileEvent>,
    ) -> Result<u64, SshError> {
        let sftp = self.sftp(name).await?;
        let ferr = |e: SftpError| SshError::File { host: name.to_owned(), path: path.to_owned(), reason: describe(e) };
        let attrs = sftp.raw.stat(path).await.map_err(ferr)?.attrs;
        let stat = file_stat(path, &attrs);
        if stat.kind != FileKind::File {
            return Err(SshError::File { host: name.into(), path: path.into(), reason: "not a regular file".into() });
        }
        let handle = sftp.raw.open(path, OpenFlags::READ, FileAttributes::default()).await.map_err(ferr)?.handle;
        let _ = events.send(FileEvent::Meta(stat)).await;
        let end = length.map(|l| offset.saturating_add(l));
        let mut next = offset;
        let mut pending = FuturesOrdered::new();
        let mut total = 0u64;
        let result = loop {
            while pending.len() < IN_FLIGHT && end.is_none_or(|e| next < e) {
                let len = end.map_or(CHUNK as u64, |e| (e - next).min(CHUNK as u64)) as u32;
                let (raw, h, at) = (sftp.raw.clone(), handle.clone(), next);
                pending.push_back(async move { (at, len, raw.read(h, at, len).await) });
                next += len as u64;
            }
            let Some((at, asked, reply)) = pending.next().await else { break Ok(total) };
            match reply {
                Ok(data) => {
                    let got = data.data.len() as u64;
                    total += got;
                    if got == 0 {
                        break Ok(total);
                    }
                    if got < asked as u64 {
                        // A short read: what was asked after it starts at the wrong place.
                        pending = FuturesOrdered::new();
                        next = at + got;
                    }
                    if events.send(FileEvent::Data(ByteBuf::from(data.data))).await.is_err() {
                        break Ok(total); // the caller went away
                    }
                }
                Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => break Ok(total),
                Err(e) => break Err(ferr(e)),
            }
        };
        let _ = sftp.raw.close(handle).await;
        result
    }

    /// Writes `size` bytes from `input` to `path` on host `name`, atomically. `mode` `None`
    /// keeps an existing file's permissions (0644 for a new file).
    pub async fn write_file(
        &self,
        name: &str,
        path: &str,
        size: u64,
        mode: Option<u32>,
        create_only: bool,
        input: &mut mpsc::Receiver<Vec<u8>>,
    ) -> Result<u64, SshError> {
        let sftp = self.sftp(name).await?;
        let fail = |reason: String| SshError::File { host: name.to_owned(), path: path.to_owned(), reason };
        let ferr = |e: SftpError| fail(describe(e));
        let existing = match sftp.raw.stat(path).await {
            Ok(a) => Some(a.attrs),
            Err(SftpError::Status(s)) if s.status_code == StatusCode::NoSuchFile => None,
            Err(e) => return Err(ferr(e)),
        };
        if existing.is_some() && create_only {
            return Err(fail("exists, and the write may only create it".into()));
        }
        if existing.as_ref().is_some_and(|a| file_stat(path, a).kind != FileKind::File) {
            return Err(fail("exists and is not a regular file".into()));
        }
        let mode = mode.or_else(|| existing.as_ref().and_then(|a| a.permissions).map(|p| p & 0o7777)).unwrap_or(0o644);
        let (dir, base) = match path.rsplit_once('/') {
            Some((d, b)) => (if d.is_empty() { "/" } else { d }, b),
            None => (".", path),
        };
        let temp = format!("{}/.{base}.tunnel-{:016x}", dir.trim_end_matches('/'), rand::random::<u64>());
        let attrs = FileAttributes { permissions: Some(mode), ..FileAttributes::default() };
        let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUDE;
        let handle = sftp.raw.open(temp.clone(), flags, attrs).await.map_err(ferr)?.handle;
        let written = copy_in(&sftp, &handle, size, input).await;
        let closed = sftp.raw.close(handle).await;
        let outcome = match (written, closed) {
            (Ok(n), Ok(_)) => self.commit(&sftp, &temp, path, mode).await.map(|()| n).map_err(describe),
            (Err(why), _) => Err(why),
            (_, Err(e)) => Err(describe(e)),
        };
        if outcome.is_err() {
            let _ = sftp.raw.remove(temp).await;
        }
        outcome.map_err(fail)
    }

    async fn commit(&self, sftp: &Sftp, temp: &str, path: &str, mode: u32) -> Result<(), SftpError> {
        // The server applied its umask at creation; set the bits asked for.
        let attrs = FileAttributes { permissions: Some(mode), ..FileAttributes::default() };
        sftp.raw.setstat(temp, attrs).await?;
        if sftp.posix_rename {
            let mut data = Vec::new();
            for s in [temp, path] {
                data.extend_from_slice(&(s.len() as u32).to_be_bytes());
                data.extend_from_slice(s.as_bytes());
            }
            sftp.raw.extended("posix-rename@openssh.com", data).await?;
        } else {
            // Plain SFTP rename refuses to replace; this window is the best such a server allows.
            let _ = sftp.raw.remove(path).await;
            sftp.raw.rename(temp, path).await?;
        }
        Ok(())
    }
}

/// Copies exactly `size` bytes from `input` into the open handle, with writes in flight.
async fn copy_in(sftp: &Sftp, handle: &str, size: u64, input: &mut mpsc::Receiver<Vec<u8>>) -> Result<u64, String> {
    let mut offset = 0u64;
    let mut pending = FuturesOrdered::new();
    loop {
        let chunk = input.recv().await;
        let done = chunk.is_none();
        for piece in chunk.unwrap_or_default().chunks(CHUNK) {
            if offset + piece.len() as u64 > size {
                return Err(format!("more than the announced {size} bytes arrived"));
            }
            let raw = sftp.raw.clone();
            let (h, at, data) = (handle.to_owned(), offset, piece.to_vec());
            pending.push_back(async move { raw.write(h, at, data).await });
            offset += piece.len() as u64;
            while pending.len() >= IN_FLIGHT {
                pending.next().await.expect("non-empty").map_err(describe)?;
            }
        }
        if done {
            break;
        }
    }
    while let Some(w) = pending.next().await {
        w.map_err(describe)?;
    }
    if offset != size {
        return Err(format!("the input ended after {offset} of {size} bytes; nothing was replaced"));
    }
    if sftp.fsync {
        sftp.raw.fsync(handle).await.map_err(|e| format!("fsync: {}", describe(e)))?;
    }
    Ok(offset)
}

impl Pool {
    /// What `path` on host `name` is (symlinks not followed).
    pub async fn stat(&self, name: &str, path: &str) -> Result<FileStat, SshError> {
        let sftp = self.sftp(name).await?;
        let attrs = sftp.raw.lstat(path).await.map_err(|e| file_error(name, path, e))?.attrs;
        Ok(file_stat(path, &attrs))
    }

    /// At most `limit` entries of directory `path` on host `name`, sorted by name, without
    /// `.` and `..`; `true` when there were more.
    pub async fn list(&self, name: &str, path: &str, limit: usize) -> Result<(Vec<FileStat>, bool), SshError> {
        let sftp = self.sftp(name).await?;
        let ferr = |e| file_error(name, path, e);
        let handle = sftp.raw.opendir(path).await.map_err(ferr)?.handle;
        let mut entries = Vec::new();
        let mut truncated = false;
        let read = loop {
            match sftp.raw.readdir(handle.clone()).await {
                Ok(batch) => {
                    for f in batch.files.into_iter().filter(|f| f.filename != "." && f.filename != "..") {
                        if entries.len() == limit {
                            truncated = true;
                            continue;
                        }
                        entries.push(file_stat(&f.filename, &f.attrs));
                    }
                }
                Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => break Ok(()),
                Err(e) => break Err(ferr(e)),
            }
        };
        let _ = sftp.raw.close(handle).await;
        read?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((entries, truncated))
    }

    /// Creates directory `path` on host `name` (its parent must exist); an existing directory
    /// is fine, anything else there is an error.
    pub async fn mkdir(&self, name: &str, path: &str, mode: Option<u32>) -> Result<(), SshError> {
        let sftp = self.sftp(name).await?;
        let attrs = FileAttributes { permissions: Some(mode.unwrap_or(0o755)), ..FileAttributes::default() };
        match sftp.raw.mkdir(path, attrs).await {
            Ok(_) => Ok(()),
            Err(e) => match sftp.raw.lstat(path).await {
                Ok(a) if file_stat(path, &a.attrs).kind == FileKind::Dir => Ok(()),
                Ok(_) => Err(SshError::File {
                    host: name.into(),
                    path: path.into(),
                    reason: "exists and is not a directory".into(),
                }),
                Err(_) => Err(file_error(name, path, e)),
            },
        }
    }
}

fn file_error(host: &str, path: &str, e: SftpError) -> SshError {
    SshError::File { host: host.to_owned(), path: path.to_owned(), reason: describe(e) }
}

fn file_stat(path: &str, a: &FileAttributes) -> FileStat {
    let perms = a.permissions.unwrap_or(0);
    let kind = match perms & 0o170000 {
        0o100000 => FileKind::File,
        0o040000 => FileKind::Dir,
        0o120000 => FileKind::Symlink,
        _ => FileKind::Other,
    };
    FileStat {
        name: path.into(),
        kind,
        size: a.size.unwrap_or(0),
        mode: perms & 0o7777,
        mtime_ms: a.mtime.map_or(0, |t| t as i64 * 1000),
    }
}

fn describe(e: SftpError) -> String {
    match e {
        SftpError::Status(s) if !s.error_message.is_empty() => s.error_message,
        SftpError::Status(s) => s.status_code.to_string(),
        other => other.to_string(),
    }
}
