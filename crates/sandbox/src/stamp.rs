//! What a path was when something was computed from it (a ruleset's grants, a listing of
//! devices): its device, inode and modification time. While every stamp still holds, the same
//! result would be computed again. A directory's time changes when an entry appears or goes.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    path: PathBuf,
    id: Option<(u64, u64, i64, i64)>,
}

impl Stamp {
    /// `path` as it is now (a missing path is stamped missing).
    pub fn of(path: &Path) -> Self {
        let id = std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec()));
        Self { path: path.to_owned(), id }
    }

    /// Whether `path` is still as it was.
    pub fn holds(&self) -> bool {
        *self == Self::of(&self.path)
    }
}
