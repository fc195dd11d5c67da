//! What an install or uninstall will do, decided before anything is touched: files to write
//! (with their modes), files and directories to remove, and commands to run, in order.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::ServiceError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFile {
    pub path: PathBuf,
    pub contents: Vec<u8>,
    pub mode: u32,
    /// What a dry run shows instead of the contents (a binary's size; a config with its
    /// secrets hidden); `None` shows the contents.
    pub shown: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub files: Vec<PlannedFile>,
    /// Removed after the stop commands ran (directories recursively).
    pub remove: Vec<PathBuf>,
    /// Run before anything is written or removed (stopping a running service).
    pub before: Vec<Vec<String>>,
    /// Run after (reload, enable, start).
    pub after: Vec<Vec<String>>,
    /// Advice printed at the end (lingering, where logs go).
    pub notes: Vec<String>,
}

impl Plan {
    /// Every file, removal and command, as `--dry-run` prints it.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for cmd in &self.before {
            out.push_str(&format!("run: {}\n", cmd.join(" ")));
        }
        for f in &self.files {
            out.push_str(&format!("write {} (mode {:04o})", f.path.display(), f.mode));
            let contents = String::from_utf8_lossy(&f.contents);
            let shown = f.shown.as_deref().unwrap_or(&contents);
            out.push_str(":\n");
            for line in shown.lines() {
                out.push_str(&format!("    {line}\n"));
            }
        }
        for p in &self.remove {
            out.push_str(&format!("remove {}\n", p.display()));
        }
        for cmd in &self.after {
            out.push_str(&format!("run: {}\n", cmd.join(" ")));
        }
        for note in &self.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        out
    }

    /// Carries the plan out. Files are written whole or not at all (a temporary file renamed
    /// into place). With `root`, every path is taken under it and no command runs (they are
    /// returned instead): a staged install, and how the tests check what would happen.
    pub fn apply(&self, root: Option<&Path>) -> Result<Vec<Vec<String>>, ServiceError> {
        let at = |p: &Path| match root {
            Some(r) => r.join(p.strip_prefix("/").unwrap_or(p)),
            None => p.to_owned(),
        };
        let mut skipped = Vec::new();
        let mut run = |cmds: &[Vec<String>], must: bool| -> Result<(), ServiceError> {
            for cmd in cmds {
                if root.is_some() {
                    skipped.push(cmd.clone());
                } else {
                    let result = run_command(cmd);
                    if must {
                        result?;
                    }
                }
            }
            Ok(())
        };
        // A service that is not running cannot be stopped; that is not an error.
        run(&self.before, false)?;
        for f in &self.files {
            write_file(&at(&f.path), &f.contents, f.mode)?;
        }
        for p in &self.remove {
            let path = at(p);
            let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            match removed {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(ServiceError::Remove { path, source: e });
                }
                _ => {}
            }
        }
        run(&self.after, true)?;
        Ok(skipped)
    }
}

/// Writes `contents` whole or not at all (a temporary file beside it, renamed into place),
/// creating the parent directories; the file gets `mode`.
pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), ServiceError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |source| ServiceError::Write { path: path.to_owned(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tunnel-{}", std::process::id()));
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp).map_err(err)?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    drop(file);
    let done = written
        .and_then(|()| {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = done {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}

fn run_command(cmd: &[String]) -> Result<(), ServiceError> {
    let Some((program, args)) = cmd.split_first() else { return Ok(()) };
    let command = cmd.join(" ");
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| ServiceError::Command { command: command.clone(), reason: e.to_string() })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(ServiceError::Command { command, reason: format!("{}: {}", out.status, stderr.trim()) })
}
