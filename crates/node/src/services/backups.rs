//! The operator's side of edit-mode backups: list what was saved in `<state>/backups/`, and
//! put a saved copy back. Restoring is itself atomic (temp file + rename) and first backs up
//! the file it replaces, so a restore can be undone the same way.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupEntry {
    pub time_ms: u64,
    pub original: String,
    pub backup: String,
    pub bytes: u64,
    pub caller: String,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("no backup of {0}")]
    NotFound(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io { path: path.to_owned(), source }
}

/// Every backup, oldest first. No manifest means no backups.
pub fn list(state_dir: &Path) -> Result<Vec<BackupEntry>, BackupError> {
    let manifest = state_dir.join("backups/manifest.jsonl");
    let text = match std::fs::read_to_string(&manifest) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(io(&manifest)(e)),
    };
    Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

/// The backup `which` names: a backup file's path, or an original (its newest backup).
pub fn find(state_dir: &Path, which: &str) -> Result<BackupEntry, BackupError> {
    list(state_dir)?
        .into_iter()
        .rev()
        .find(|e| e.backup == which || e.original == which)
        .ok_or_else(|| BackupError::NotFound(which.to_owned()))
}

/// The SSH host and path of a backup taken on an `ssh:` host (its original is
/// `ssh:HOST:PATH`): those are restored by writing the copy back through the node.
pub fn ssh_original(entry: &BackupEntry) -> Option<(&str, &str)> {
    let rest = entry.original.strip_prefix("ssh:")?;
    rest.split_once(':')
}

/// Restores `which` on this machine: a backup file's path, or an original path (its newest
/// backup). Returns the entry restored.
pub fn restore(state_dir: &Path, which: &str) -> Result<BackupEntry, BackupError> {
    let entry = find(state_dir, which)?;
    let original = Path::new(&entry.original);
    let dir = original.parent().ok_or_else(|| BackupError::NotFound(entry.original.clone()))?;
    if original.exists() {
        save_current(state_dir, original)?;
    }
    let temp = dir.join(format!(
        ".{}.tunnel-restore-{:016x}",
        original.file_name().unwrap_or_default().to_string_lossy(),
        rand::random::<u64>()
    ));
    std::fs::copy(&entry.backup, &temp).map_err(io(&temp))?;
    std::fs::File::open(&temp).and_then(|f| f.sync_all()).map_err(io(&temp))?;
    std::fs::rename(&temp, original).map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        io(original)(e)
    })?;
    Ok(entry)
}

/// A fresh private directory under `root` for one backup, and the time it was made.
pub(crate) fn new_slot(root: &Path) -> std::io::Result<(PathBuf, u64)> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let slot = root.join(format!("{stamp}-{:08x}", rand::random::<u32>()));
    crate::identity::create_private_dir(&slot)?;
    Ok((slot, stamp))
}

/// Appends `entry` to `root/manifest.jsonl` (mode 0600).
pub(crate) fn record(root: &Path, entry: &BackupEntry) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let line = serde_json::to_string(entry).expect("entries serialize");
    let mut f = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(root.join("manifest.jsonl"))?;
    std::io::Write::write_all(&mut f, format!("{line}\n").as_bytes())
}

/// Backs up the file a restore is about to replace, listed like any other backup.
fn save_current(state_dir: &Path, original: &Path) -> Result<(), BackupError> {
    let root = state_dir.join("backups");
    let (slot, time_ms) = new_slot(&root).map_err(io(&root))?;
    let copy = slot.join(original.file_name().unwrap_or_default());
    let bytes = std::fs::copy(original, &copy).map_err(io(&copy))?;
    let entry = BackupEntry {
        time_ms,
        original: original.display().to_string(),
        backup: copy.display().to_string(),
        bytes,
        caller: "local restore".into(),
    };
    record(&root, &entry).map_err(io(&root))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_puts_the_old_file_back_and_can_be_undone() {
        let state = std::env::temp_dir().join(format!("tunnel-backups-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let target = state.join("work/app.conf");
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, b"v1").unwrap();
        save_current(&state, &target).unwrap();
        std::fs::write(&target, b"v2").unwrap();
        assert_eq!(list(&state).unwrap().len(), 1);
        let restored = restore(&state, target.to_str().unwrap()).unwrap();
        assert_eq!(restored.original, target.display().to_string());
        assert_eq!(std::fs::read(&target).unwrap(), b"v1");
        // The restore saved v2 first: restoring again (newest backup) brings v2 back.
        assert_eq!(list(&state).unwrap().len(), 2);
        restore(&state, target.to_str().unwrap()).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"v2");
        assert!(matches!(restore(&state, "/nowhere"), Err(BackupError::NotFound(_))));
        std::fs::remove_dir_all(&state).unwrap();
    }
}
