//! The node's persistent key: `<state>/node.key`, 32 raw bytes, mode 0600. A key file that
//! others can read is refused: whoever reads it can act as this node.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use tunnel_proto::SecretKey;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    #[error("key file {path} is readable by group or others (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("key file {path} is damaged: expected 32 bytes, found {len}")]
    Damaged { path: PathBuf, len: usize },
    #[error("cannot {action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> IdentityError + 'a {
    move |source| IdentityError::Io { action, path: path.to_owned(), source }
}

/// Loads `<state>/node.key`, making a new key (and the state directory, mode 0700) on first use.
pub fn load_or_create_identity(state_dir: &Path) -> Result<SecretKey, IdentityError> {
    let path = state_dir.join("node.key");
    match fs::read(&path) {
        Ok(bytes) => {
            let bytes = zeroize::Zeroizing::new(bytes);
            check_private(&path)?;
            let raw: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| IdentityError::Damaged { path: path.clone(), len: bytes.len() })?;
            Ok(SecretKey::from_bytes(raw))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(state_dir, &path),
        Err(e) => Err(io("read", &path)(e)),
    }
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), IdentityError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path).map_err(io("inspect", path))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::Permissions { path: path.to_owned(), mode });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &Path) -> Result<(), IdentityError> {
    Ok(())
}

fn create(state_dir: &Path, path: &Path) -> Result<SecretKey, IdentityError> {
    create_private_dir(state_dir).map_err(io("create", state_dir))?;
    let key = SecretKey::generate(&mut rand::rngs::OsRng);
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut file = opts.open(path).map_err(io("create", path))?;
    file.write_all(key.to_bytes().as_ref()).map_err(io("write", path))?;
    file.sync_all().map_err(io("write", path))?;
    Ok(key)
}

/// Creates `dir` (and parents) with mode 0700 where it does not exist yet.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tunnel-identity-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn created_once_then_reloaded() {
        let dir = tempdir("reload");
        let a = load_or_create_identity(&dir).unwrap();
        let b = load_or_create_identity(&dir).unwrap();
        assert_eq!(a.public(), b.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(dir.join("node.key")).unwrap().permissions().mode() & 0o777, 0o600);
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn readable_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempdir("perms");
        load_or_create_identity(&dir).unwrap();
        let path = dir.join("node.key");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create_identity(&dir).unwrap_err();
        assert!(matches!(err, IdentityError::Permissions { mode: 0o644, .. }), "{err}");
        assert!(err.to_string().contains("chmod 600"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn damaged_key_is_refused() {
        let dir = tempdir("damaged");
        create_private_dir(&dir).unwrap();
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        opts.open(dir.join("node.key")).unwrap().write_all(b"short").unwrap();
        assert!(matches!(load_or_create_identity(&dir), Err(IdentityError::Damaged { len: 5, .. })));
        fs::remove_dir_all(&dir).unwrap();
    }
}
