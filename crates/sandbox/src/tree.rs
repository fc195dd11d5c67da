//! "Everything but these paths" as Landlock grants. Landlock only grants, and a grant on a
//! directory covers its whole subtree, so to keep `/home/u/.ssh/id_ed25519` out of a grant on
//! `/`, the grant goes instead to every sibling at each level of that path: `/bin`, `/etc`,
//! ..., `/home/v`, `/home/u/.bashrc`, ..., `/home/u/.ssh/known_hosts`. The directories on
//! the way (`/`, `/home`, `/home/u`, `/home/u/.ssh`) get no grant of their own.
//!
//! Entries are opened with `O_PATH | O_NOFOLLOW`, and symbolic links are given nothing: a path
//! through a link is judged by where it leads, which has its own grant (or not).

use std::fs::OpenOptions;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::Stamp;

/// Most entries one walk opens; past it the sandbox cannot be built (and the command does not
/// run), rather than leave part of the tree out.
const MAX_GRANTS: usize = 200_000;

/// One path to grant on, opened.
pub(crate) struct Grant {
    pub(crate) fd: OwnedFd,
    pub(crate) is_dir: bool,
}

/// Grants covering `roots` and everything beneath them except `except` (canonical paths).
/// A root that is itself excluded, or is missing, is left out. Stamps of what was looked at
/// are added to `stamps`.
pub(crate) fn grants(roots: &[PathBuf], except: &[PathBuf], stamps: &mut Vec<Stamp>) -> Result<Vec<Grant>, String> {
    let mut out = Vec::new();
    for root in roots {
        if except.iter().any(|e| root.starts_with(e)) {
            continue;
        }
        if except.iter().any(|e| e.starts_with(root)) {
            walk(root, except, &mut out, stamps)?;
        } else {
            stamps.push(Stamp::of(root));
            out.extend(open(root)?);
        }
    }
    Ok(out)
}

fn walk(dir: &Path, except: &[PathBuf], out: &mut Vec<Grant>, stamps: &mut Vec<Stamp>) -> Result<(), String> {
    // Stamped before listing: a change during the listing shows as a stale stamp next time.
    stamps.push(Stamp::of(dir));
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        // A directory we cannot list gets no grant: what is in it stays out of reach.
        Err(_) => return Ok(()),
    };
    for entry in entries {
        let Ok(entry) = entry else { continue };
        let path = entry.path();
        if except.contains(&path) {
            continue;
        }
        let holds_excluded = except.iter().any(|e| e.starts_with(&path));
        let is_real_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if holds_excluded && is_real_dir {
            walk(&path, except, out, stamps)?;
        } else if let Some(g) = open(&path)? {
            if out.len() >= MAX_GRANTS {
                return Err(format!("more than {MAX_GRANTS} paths beside the protected ones"));
            }
            out.push(g);
        }
    }
    Ok(())
}

/// Opens `path` for a rule; `None` for a symbolic link or a path that vanished.
fn open(path: &Path) -> Result<Option<Grant>, String> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let kind = file.metadata().map_err(|e| format!("{}: {e}", path.display()))?.file_type();
    if kind.is_symlink() {
        return Ok(None);
    }
    Ok(Some(Grant { fd: file.into(), is_dir: kind.is_dir() }))
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn siblings_at_every_level_and_nothing_on_the_way() {
        let root = std::env::temp_dir().join(format!("tunnel-tree-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["a/b/secret-dir", "a/c", "d"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in ["a/b/key", "a/b/open.txt", "a/top.txt", "d/x"] {
            std::fs::write(root.join(f), b"x").unwrap();
        }
        std::os::unix::fs::symlink(root.join("a/b/key"), root.join("a/link")).unwrap();
        let root = std::fs::canonicalize(&root).unwrap();
        let except = vec![root.join("a/b/key"), root.join("a/b/secret-dir")];
        let mut stamps = vec![];
        let got = grants(std::slice::from_ref(&root), &except, &mut stamps).unwrap();
        // What each grant's descriptor names.
        let path = |g: &Grant| std::fs::read_link(format!("/proc/self/fd/{}", g.fd.as_raw_fd())).unwrap();
        let mut paths: Vec<String> =
            got.iter().map(|g| path(g).strip_prefix(&root).unwrap().display().to_string()).collect();
        paths.sort();
        assert_eq!(paths, ["a/b/open.txt", "a/c", "a/top.txt", "d"]);
        assert!(got.iter().find(|g| path(g).ends_with("a/c")).unwrap().is_dir);
        assert!(grants(&[root.join("a/b/key")], &except, &mut vec![]).unwrap().is_empty(), "an excluded root");
        assert_eq!(grants(&[root.join("d")], &except, &mut vec![]).unwrap().len(), 1, "a root with nothing excluded");
        // The walked directories are stamped; a new entry in one of them makes its stamp stale.
        assert!(stamps.iter().all(Stamp::holds));
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(root.join("a/b/new"), b"x").unwrap();
        assert!(!stamps.iter().all(Stamp::holds));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
