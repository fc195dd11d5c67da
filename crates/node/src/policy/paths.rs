//! Canonical paths for policy checks: what a path really names once `..`, symlinks and
//! relative parts are resolved, so `/srv/app/../../etc`, a symlink out of an allowed root, and
//! `/srv/app-evil` (a sibling that shares a prefix) are all judged by where they lead.
//! Comparisons are by path components (`Path::starts_with`), never by string prefix.

use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathAccess {
    Read,
    Write,
}

/// The canonical form of `path`. It must be absolute. An existing path is fully resolved; a
/// path that does not exist yet (a file about to be written) resolves its parent directory,
/// and its last component must be a plain name.
pub fn canonical_target(path: impl AsRef<Path>) -> Result<PathBuf, String> {
    let p = path.as_ref();
    if std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).contains(&0) {
        return Err("contains a NUL byte".into());
    }
    if !p.is_absolute() {
        return Err("must be absolute".into());
    }
    match std::fs::canonicalize(p) {
        Ok(c) => Ok(c),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let name = match p.components().next_back() {
                Some(Component::Normal(n)) => n.to_owned(),
                _ => return Err("does not name a file".into()),
            };
            let parent = p.parent().ok_or("has no parent directory")?;
            let parent = std::fs::canonicalize(parent).map_err(|e| format!("parent directory: {e}"))?;
            Ok(parent.join(name))
        }
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_dots_symlinks_and_new_files() {
        let dir = std::env::temp_dir().join(format!("tunnel-paths-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("app/sub")).unwrap();
        std::fs::create_dir_all(dir.join("outside")).unwrap();
        let dir = std::fs::canonicalize(&dir).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.join("outside"), dir.join("app/escape")).unwrap();
        let s = |p: PathBuf| p.to_str().unwrap().to_owned();
        assert_eq!(canonical_target(s(dir.join("app/sub/../sub"))).unwrap(), dir.join("app/sub"));
        #[cfg(unix)]
        assert_eq!(canonical_target(s(dir.join("app/escape/new.txt"))).unwrap(), dir.join("outside/new.txt"));
        assert_eq!(canonical_target(s(dir.join("app/new.txt"))).unwrap(), dir.join("app/new.txt"));
        assert!(canonical_target("relative/path").unwrap_err().contains("absolute"));
        assert!(canonical_target("/tmp/a\0b").unwrap_err().contains("NUL"));
        assert!(canonical_target(s(dir.join("missing-dir/new.txt"))).is_err());
        assert!(!dir.join("app-evil").starts_with(dir.join("app")), "component-wise prefix");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
