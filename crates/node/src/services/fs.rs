//! File operations for peers: stat, list, streamed reads, and atomic streamed writes.
//!
//! Every path is checked by policy on its canonical form. Writes go to a temporary file in
//! the target's directory and are renamed over the target once every byte arrived and was
//! synced, so a reader never sees half a file. The directory is opened once (without
//! following symlinks) and checked to be the directory policy approved; the temporary file
//! is created and renamed *relative to that handle*, so swapping a symlink into the path
//! during the write cannot redirect it. In edit mode, a file that is replaced is first copied
//! to `<state>/backups/`, listed in `<state>/backups/manifest.jsonl`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rustix::fs::{fchmod, openat, renameat, statat, unlinkat, AtFlags, FileType, Mode as FileMode, OFlags};
use tokio::io::AsyncWriteExt;
use tunnel_net::{Stream, StreamWriter};
use tunnel_proto::framing;
use tunnel_proto::message::{ByteBuf, FileEvent, FileKind, FileStat, PathBytes, ReadSpec, WriteSpec};

use crate::policy::{Mode, PathAccess};
use crate::services::exec::refuse;

const CHUNK: usize = 64 * 1024;

fn kind_of(ft: std::fs::FileType) -> FileKind {
    if ft.is_file() {
        FileKind::File
    } else if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_symlink() {
        FileKind::Symlink
    } else {
        FileKind::Other
    }
}

fn file_stat(name: PathBytes, m: &std::fs::Metadata) -> FileStat {
    FileStat {
        name,
        kind: kind_of(m.file_type()),
        size: m.len(),
        mode: m.permissions().mode() & 0o7777,
        mtime_ms: m.mtime() * 1000 + m.mtime_nsec() / 1_000_000,
    }
}

pub(crate) fn stat(path: &Path) -> Result<FileStat, String> {
    let m = std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(file_stat(PathBytes::from_path(path), &m))
}

/// At most `limit` entries, sorted by name; `truncated` says there were more.
pub(crate) fn list(path: &Path, limit: usize) -> Result<(Vec<FileStat>, bool), String> {
    let dir = std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut entries = Vec::new();
    let mut truncated = false;
    for entry in dir {
        let entry = entry.map_err(|e| e.to_string())?;
        if entries.len() == limit {
            truncated = true;
            break;
        }
        // Names that are not UTF-8 are shown lossily rather than skipped.
        let name = PathBytes(std::os::unix::ffi::OsStrExt::as_bytes(entry.file_name().as_os_str()).to_vec());
        if let Ok(m) = entry.metadata() {
            entries.push(file_stat(name, &m));
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((entries, truncated))
}

pub(crate) async fn send(writer: &mut StreamWriter, event: &FileEvent) -> bool {
    writer.write_all(&framing::encode(event)).await.is_ok()
}

/// Serves a read stream.
pub(crate) async fn serve_read(node: crate::Node, stream: Stream, spec: ReadSpec) {
    let Stream { peer, mut writer, .. } = stream;
    let detail = serde_json::json!({ "path": spec.path, "offset": spec.offset, "length": spec.length });
    let operator = node.is_operator(&peer, spec.request_id);
    let checked = node.policy_check(|p| {
        p.check_caller(&peer)?;
        p.check_file(spec.path.as_path(), PathAccess::Read, operator)
    });
    let path = match checked {
        Ok(p) => p,
        Err(refusal) => return refuse(&node, peer, "fs.read", refusal, detail, writer, FileEvent::Refused).await,
    };
    let opened = open_checked(&path).and_then(|(file, meta)| {
        // The file opened may not be the one judged: a hard link to a secret renamed over it.
        match node.policy_check(|p| if operator { Ok(()) } else { p.secrets.check_opened(&path, &meta) }) {
            Ok(()) => Ok((file, meta)),
            Err(refusal) => Err(refusal.to_string()),
        }
    });
    let started = Instant::now();
    let result = match opened {
        Ok((file, meta)) => read_to(&path, file, &meta, &spec, &mut writer).await.map(|bytes| (bytes, None)),
        Err(e) => Err(e),
    };
    conclude(&node, peer, "fs.read", detail, started, result, writer).await;
}

/// Audits how a transfer ended and tells the caller: `Done` with the bytes moved (and where
/// an overwritten file was saved), or `Failed`.
pub(crate) async fn conclude(
    node: &crate::Node,
    peer: tunnel_proto::NodeId,
    event: &str,
    detail: serde_json::Value,
    started: Instant,
    result: Result<(u64, Option<PathBuf>), String>,
    writer: StreamWriter,
) {
    let (decision, answer, bytes) = match result {
        Ok((bytes, backup)) => {
            ("allowed", FileEvent::Done { bytes, backup: backup.map(|b| b.display().to_string()) }, bytes)
        }
        Err(e) => ("failed", FileEvent::Failed(e), 0),
    };
    let outcome = crate::audit::Entry {
        bytes: Some(bytes),
        duration_ms: Some(started.elapsed().as_millis() as u64),
        ..Default::default()
    };
    node.audit_op(peer, event, decision, None, detail, Some(outcome));
    crate::services::exec::send_last(writer, &answer).await
}

/// The answer to a write whose request id already ran.
pub(crate) fn write_already_ran(request_id: u64) -> FileEvent {
    FileEvent::Failed(format!("request {request_id} already ran"))
}

/// Opens the approved canonical `path` for reading, and checks that what was opened is what
/// was approved: the last component is not followed if it became a symlink, and a directory
/// on the way swapped for a symlink since the check is seen in the descriptor's real path.
fn open_checked(path: &Path) -> Result<(File, std::fs::Metadata), String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    #[cfg(target_os = "linux")]
    {
        let actual = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).map_err(|e| e.to_string())?;
        if actual != path {
            return Err(format!("{} changed while being read (now {})", path.display(), actual.display()));
        }
    }
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    Ok((file, meta))
}

async fn read_to(
    path: &Path,
    mut file: File,
    meta: &std::fs::Metadata,
    spec: &ReadSpec,
    writer: &mut StreamWriter,
) -> Result<u64, String> {
    if !send(writer, &FileEvent::Meta(file_stat(PathBytes::from_path(path), meta))).await {
        return Err("the reader went away".into());
    }
    file.seek(SeekFrom::Start(spec.offset)).map_err(|e| e.to_string())?;
    let mut left = spec.length.unwrap_or(u64::MAX);
    let mut sent = 0u64;
    let mut buf = vec![0u8; CHUNK];
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = file.read(&mut buf[..want]).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        if !send(writer, &FileEvent::Data(ByteBuf::copy_from(&buf[..n]))).await {
            return Err("the reader went away".into());
        }
        sent += n as u64;
        left -= n as u64;
    }
    Ok(sent)
}

/// Creates directory `target` (canonical, approved for writing) relative to its checked parent.
pub(crate) fn mkdir(target: &Path, mode: Option<u32>) -> Result<(), String> {
    let parent = target.parent().ok_or("no parent directory")?;
    let name = target.file_name().ok_or("no directory name")?;
    let dir = open_dir_checked(parent)?;
    match rustix::fs::mkdirat(&dir, name, FileMode::from_raw_mode(mode.unwrap_or(0o755))) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::EXIST) => match statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => Ok(()),
            _ => Err(format!("{} exists and is not a directory", target.display())),
        },
        Err(e) => Err(format!("{}: {e}", target.display())),
    }
}

/// Serves a write stream.
pub(crate) async fn serve_write(node: crate::Node, stream: Stream, spec: WriteSpec) {
    let Stream { peer, mut reader, writer, .. } = stream;
    let detail =
        serde_json::json!({ "path": spec.path, "size": spec.size, "mode": spec.mode, "create_only": spec.create_only });
    if !node.begin_request(peer, spec.request_id) {
        return crate::services::exec::send_last(writer, &write_already_ran(spec.request_id)).await;
    }
    let operator = node.is_operator(&peer, spec.request_id);
    let checked = node.policy_check(|p| {
        p.check_caller(&peer)?;
        p.check_write_size(spec.size)?;
        Ok((p.check_file(spec.path.as_path(), PathAccess::Write, operator)?, p.mode))
    });
    let (target, mode) = match checked {
        Ok(t) => t,
        Err(refusal) => return refuse(&node, peer, "fs.write", refusal, detail, writer, FileEvent::Refused).await,
    };
    let started = Instant::now();
    let backups = (mode == Mode::Edit).then(|| node.state_dir().map(|d| d.join("backups"))).flatten();
    let result = write_from(&target, &spec, &mut reader, backups.as_deref(), &peer).await;
    conclude(&node, peer, "fs.write", detail, started, result, writer).await;
}

/// Opens `dir` without following symlinks and checks it is still the directory `expected`.
fn open_dir_checked(expected: &Path) -> Result<OwnedFd, String> {
    let fd = rustix::fs::open(expected, OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, FileMode::empty())
        .map_err(|e| format!("{}: {e}", expected.display()))?;
    #[cfg(target_os = "linux")]
    {
        let actual = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|e| e.to_string())?;
        if actual != expected {
            return Err(format!("{} changed while being written (now {})", expected.display(), actual.display()));
        }
    }
    Ok(fd)
}

async fn write_from(
    target: &Path,
    spec: &WriteSpec,
    reader: &mut tunnel_net::StreamReader,
    backups: Option<&Path>,
    caller: &tunnel_proto::NodeId,
) -> Result<(u64, Option<PathBuf>), String> {
    let parent = target.parent().ok_or("no parent directory")?;
    let name = target.file_name().ok_or("no file name")?.to_owned();
    let dir = open_dir_checked(parent)?;
    let existing = statat(&dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW).ok();
    if spec.create_only && existing.is_some() {
        return Err(format!("{} exists (create_only)", target.display()));
    }
    if existing.is_some_and(|st| FileType::from_raw_mode(st.st_mode) != FileType::RegularFile) {
        return Err(format!("{} exists and is not a regular file", target.display()));
    }
    let temp = format!(".{}.tunnel-{:016x}", name.to_string_lossy(), rand::random::<u64>());
    let fd = openat(
        &dir,
        temp.as_str(),
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        FileMode::from_raw_mode(0o600),
    )
    .map_err(|e| format!("creating a temporary file in {}: {e}", parent.display()))?;
    let cleanup = |e: String| {
        let _ = unlinkat(&dir, temp.as_str(), AtFlags::empty());
        e
    };
    let mut file = tokio::fs::File::from_std(File::from(fd));
    let mut got = 0u64;
    loop {
        match reader.read().await {
            Ok(Some(chunk)) => {
                got += chunk.len() as u64;
                if got > spec.size {
                    return Err(cleanup(format!("more than the announced {} bytes arrived", spec.size)));
                }
                file.write_all(&chunk).await.map_err(|e| cleanup(format!("writing: {e}")))?;
            }
            Ok(None) => break,
            Err(e) => return Err(cleanup(format!("the upload stopped: {e}"))),
        }
    }
    if got != spec.size {
        return Err(cleanup(format!("{got} of {} bytes arrived", spec.size)));
    }
    file.sync_all().await.map_err(|e| cleanup(format!("syncing: {e}")))?;
    let mode = spec.mode.unwrap_or_else(|| existing.map_or(0o644, |st| st.st_mode & 0o7777));
    let file = file.into_std().await;
    fchmod(&file, FileMode::from_raw_mode(mode)).map_err(|e| cleanup(format!("setting the mode: {e}")))?;
    drop(file);
    let backup = match (existing, backups) {
        (Some(_), Some(root)) => Some(
            back_up(&dir, &name, target, root, caller)
                .map_err(|e| cleanup(format!("backing up {}: {e}", target.display())))?,
        ),
        _ => None,
    };
    if spec.create_only {
        // Fails if the name appeared since the check; never replaces.
        rustix::fs::renameat_with(&dir, temp.as_str(), &dir, name.as_os_str(), rustix::fs::RenameFlags::NOREPLACE)
            .map_err(|e| cleanup(format!("{} exists (create_only): {e}", target.display())))?;
    } else {
        renameat(&dir, temp.as_str(), &dir, name.as_os_str())
            .map_err(|e| cleanup(format!("replacing {}: {e}", target.display())))?;
    }
    Ok((got, backup))
}

/// Copies the file about to be replaced into the backups directory and lists it.
fn back_up(
    dir: &OwnedFd,
    name: &std::ffi::OsStr,
    target: &Path,
    root: &Path,
    caller: &tunnel_proto::NodeId,
) -> Result<PathBuf, String> {
    let fd = openat(dir, name, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, FileMode::empty())
        .map_err(|e| e.to_string())?;
    let mut original = File::from(fd);
    let (slot, time_ms) = crate::services::backups::new_slot(root).map_err(|e| e.to_string())?;
    let copy = slot.join(name);
    let mut out =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&copy).map_err(|e| e.to_string())?;
    let bytes = std::io::copy(&mut original, &mut out).map_err(|e| e.to_string())?;
    out.sync_all().map_err(|e| e.to_string())?;
    let entry = crate::services::backups::BackupEntry {
        time_ms,
        original: target.display().to_string(),
        backup: copy.display().to_string(),
        bytes,
        caller: caller.to_string(),
    };
    crate::services::backups::record(root, &entry).map_err(|e| e.to_string())?;
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        crate::test_dirs::scratch(&format!("fs-{name}"))
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_after_the_check_is_refused() {
        let root = scratch("swap");
        std::fs::create_dir_all(root.join("approved")).unwrap();
        std::fs::create_dir_all(root.join("elsewhere/inner")).unwrap();
        let approved = root.join("approved");
        assert!(open_dir_checked(&approved).is_ok());
        // The approved directory itself becomes a symlink.
        std::fs::rename(&approved, root.join("approved.old")).unwrap();
        std::os::unix::fs::symlink(root.join("elsewhere"), &approved).unwrap();
        assert!(open_dir_checked(&approved).is_err(), "the last component must not be followed");
        // A parent of the approved directory becomes a symlink to a look-alike tree.
        std::fs::create_dir_all(root.join("p/inner")).unwrap();
        let nested = root.join("p/inner");
        assert!(open_dir_checked(&nested).is_ok());
        std::fs::rename(root.join("p"), root.join("p.old")).unwrap();
        std::os::unix::fs::symlink(root.join("elsewhere"), root.join("p")).unwrap();
        let err = open_dir_checked(&nested).unwrap_err();
        assert!(err.contains("changed while being written"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_read_whose_directory_became_a_symlink_after_the_check_is_refused() {
        let root = scratch("read-swap");
        std::fs::create_dir_all(root.join("approved")).unwrap();
        std::fs::write(root.join("approved/f"), b"public").unwrap();
        std::fs::create_dir_all(root.join("secret")).unwrap();
        std::fs::write(root.join("secret/f"), b"CANARY").unwrap();
        let checked = root.join("approved/f");
        assert!(open_checked(&checked).is_ok());
        std::fs::rename(root.join("approved"), root.join("approved.old")).unwrap();
        std::os::unix::fs::symlink(root.join("secret"), root.join("approved")).unwrap();
        let err = open_checked(&checked).unwrap_err();
        assert!(err.contains("changed while being read"), "{err}");
        std::fs::remove_file(root.join("approved")).unwrap();
        std::os::unix::fs::symlink(root.join("secret/f"), root.join("approved")).unwrap();
        assert!(open_checked(&root.join("approved")).is_err(), "the last component is never followed");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn mkdir_is_idempotent_and_refuses_files() {
        let root = scratch("mkdir");
        mkdir(&root.join("d"), None).unwrap();
        mkdir(&root.join("d"), None).unwrap();
        std::fs::write(root.join("f"), b"x").unwrap();
        assert!(mkdir(&root.join("f"), None).unwrap_err().contains("not a directory"));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
