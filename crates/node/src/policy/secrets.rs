//! What never leaves a node through the mesh, and what the mesh never rewrites.
//!
//! Three guards, each a list of path patterns (absolute; `*` and `?` match within one
//! component; a pattern covers its path and everything beneath it; `~` means every home on
//! the machine: `$HOME`, `/root` and `/home/*`):
//! - **own**: the node's state (key, audit log, backups) and runtime directories: never read
//!   nor written through the mesh, in any mode, `bypass` included.
//! - **secret**: SSH private keys and agent socket, the inventory's identity files, shadow
//!   files, host keys, the config file and `secret_paths`: never read through the mesh.
//! - **protected**: the config file, service units and the tunnel binary: never written through
//!   the mesh in `plan` or `edit`.
//!
//! A path is judged in its canonical form against the patterns, and against what the
//! patterns name on disk right now (canonicalized too, so a symlinked `~/.ssh` is caught); a
//! file with more than one link is compared by inode with every secret file (a hard link to a
//! key is the key). The local operator (the CLI over the control socket) is not limited here.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{Mode, Refusal};

/// `secret_paths` when the config file does not set it.
pub const DEFAULT_SECRET_PATHS: &[&str] = &[
    "~/.aws/credentials",
    "~/.config/gcloud",
    "~/.kube/config",
    "~/.docker/config.json",
    "~/.netrc",
    "~/.gnupg",
    "~/.password-store",
];

/// Most files looked at inside secret directories when checking for hard links.
const LINK_SCAN_MAX: usize = 20_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guard {
    Own,
    Secret,
    /// Secret and protected: the config file.
    Config,
    Protected,
    /// Process memory and environments (`/proc/*/mem`, `/proc/*/environ`, the node's own
    /// `/proc/PID`, `/dev/mem`): never read by file operations. Judged by pattern only (they are
    /// canonical as written), and not listed for command sandboxes (see `confine.rs`).
    Memory,
}

impl Guard {
    fn blocks_read(self) -> bool {
        matches!(self, Self::Own | Self::Secret | Self::Config | Self::Memory)
    }

    /// Read guards whose paths are worth looking up on disk (and keeping from commands).
    fn on_disk_read(self) -> bool {
        self.blocks_read() && self != Self::Memory
    }

    fn blocks_write(self, mode: Mode) -> bool {
        match self {
            Self::Own => true,
            Self::Config | Self::Protected => mode != Mode::Bypass,
            Self::Secret | Self::Memory => false,
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    /// Components after the root.
    pattern: Vec<String>,
    what: String,
    guard: Guard,
}

impl Rule {
    fn shown(&self) -> String {
        format!("/{}", self.pattern.join("/"))
    }

    /// Whether `path` (canonical) is this rule's path or beneath it.
    fn covers(&self, path: &Path) -> bool {
        let parts = names(path);
        if parts.len() < self.pattern.len() {
            return false;
        }
        self.pattern.iter().zip(&parts).enumerate().all(|(i, (pat, part))| {
            // A glob's public-key look-alikes (`id_ed25519.pub`) are not secrets.
            let public = i + 1 == self.pattern.len() && is_glob(pat) && part.ends_with(".pub");
            glob_match(pat.as_bytes(), part.as_bytes()) && !public
        })
    }

    /// The canonical paths this rule names on disk now.
    fn on_disk(&self) -> Vec<PathBuf> {
        let mut found = vec![PathBuf::from("/")];
        for (i, pat) in self.pattern.iter().enumerate() {
            let last = i + 1 == self.pattern.len();
            let mut next = Vec::new();
            for dir in &found {
                if !is_glob(pat) {
                    let p = dir.join(pat);
                    if p.symlink_metadata().is_ok() {
                        next.push(p);
                    }
                    continue;
                }
                let Ok(entries) = std::fs::read_dir(dir) else { continue };
                for e in entries.flatten() {
                    let name = e.file_name();
                    let Some(name) = name.to_str() else { continue };
                    if glob_match(pat.as_bytes(), name.as_bytes()) && !(last && name.ends_with(".pub")) {
                        next.push(dir.join(name));
                    }
                }
            }
            found = next;
        }
        found.into_iter().map(|p| std::fs::canonicalize(&p).unwrap_or(p)).collect()
    }
}

/// The names along a path, root and `.` left out.
fn names(path: &Path) -> Vec<&str> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => n.to_str(),
            _ => None,
        })
        .collect()
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?'])
}

/// `*` (any run) and `?` (one byte) within one path component. Linear backtracking to the last
/// `*` only, so no pattern makes it slow.
fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        match pat.get(p) {
            Some(b'*') => {
                star = Some((p, i));
                p += 1;
            }
            Some(&c) if c == b'?' || c == s[i] => {
                p += 1;
                i += 1;
            }
            _ => match star {
                Some((sp, si)) => {
                    p = sp + 1;
                    i = si + 1;
                    star = Some((sp, si + 1));
                }
                None => return false,
            },
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// Where a node's secrets are, as its settings know them.
#[derive(Debug, Default, Clone)]
pub struct SecretSources {
    pub home: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub runtime_dir: Option<PathBuf>,
    pub config_file: Option<PathBuf>,
    /// `secret_paths` from the config file; `None` for [`DEFAULT_SECRET_PATHS`].
    pub secret_paths: Option<Vec<String>>,
}

/// How long what the patterns name on disk is reused. The patterns themselves are always
/// matched afresh; only a secret that appeared within this time at a path they do not name
/// (through a symlinked directory) could be missed, for this long.
const ON_DISK_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// Per rule, the canonical paths it named on disk, and when that was looked up.
type OnDisk = Arc<Vec<Vec<PathBuf>>>;

/// The node's secret and protected paths.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// Shared: every command's snapshot of the policy holds them.
    rules: Arc<Vec<Rule>>,
    homes: Vec<PathBuf>,
    on_disk: Arc<Mutex<Option<(Instant, OnDisk)>>>,
}

impl Secrets {
    /// The built-in list for a node with these sources. Bad `secret_paths` entries are errors.
    pub fn new(src: &SecretSources) -> Result<Self, String> {
        let mut homes: Vec<PathBuf> = src.home.iter().cloned().collect();
        homes.extend([PathBuf::from("/root"), PathBuf::from("/home/*")]);
        let mut me = Self { rules: Arc::default(), homes, on_disk: Arc::default() };
        let own = "the node's own state (its key, audit log and backups)";
        for dir in src.state_dir.iter().chain(&src.runtime_dir) {
            me.add(&dir.to_string_lossy(), own, Guard::Own)?;
        }
        if let Some(config) = &src.config_file {
            me.add(&config.to_string_lossy(), "the node's config file", Guard::Config)?;
        }
        me.add("~/.ssh/id_*", "an SSH private key", Guard::Secret)?;
        for f in ["/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/ssh/ssh_host_*_key"] {
            me.add(f, "a system secret", Guard::Secret)?;
        }
        let memory = "process memory or environment";
        let own_process = format!("/proc/{}", std::process::id());
        for p in ["/proc/*/environ", "/proc/*/mem", "/proc/*/task/*/environ", "/proc/*/task/*/mem", &own_process] {
            me.add(p, memory, Guard::Memory)?;
        }
        for p in ["/proc/kcore", "/dev/mem", "/dev/kmem", "/dev/port"] {
            me.add(p, memory, Guard::Secret)?;
        }
        if let Some(sock) = std::env::var_os("SSH_AUTH_SOCK").filter(|s| !s.is_empty()) {
            me.add(&sock.to_string_lossy(), "the SSH agent socket", Guard::Secret)?;
        }
        let configured = src.secret_paths.clone();
        let listed: Vec<String> =
            configured.unwrap_or_else(|| DEFAULT_SECRET_PATHS.iter().map(|s| s.to_string()).collect());
        for p in &listed {
            me.add(p, &format!("secret_paths lists {p}"), Guard::Secret)?;
        }
        let binary = std::env::current_exe().ok().and_then(|p| std::fs::canonicalize(p).ok());
        for p in binary.iter().map(|b| b.to_string_lossy().into_owned()).chain(
            [
                "/etc/systemd/system/tunnel*.service",
                "~/.config/systemd/user/tunnel*.service",
                "/Library/LaunchDaemons/dev.tunnel*.plist",
                "~/Library/LaunchAgents/dev.tunnel*.plist",
            ]
            .map(String::from),
        ) {
            me.add(&p, "the tunnel service and binary", Guard::Protected)?;
        }
        Ok(me)
    }

    /// Adds an SSH identity file an inventory names.
    pub fn add_identity_file(&mut self, path: &Path) {
        let _ = self.add(&path.to_string_lossy(), "an SSH identity file the inventory names", Guard::Secret);
    }

    fn add(&mut self, pattern: &str, what: &str, guard: Guard) -> Result<(), String> {
        let expanded: Vec<String> = match pattern.strip_prefix("~/") {
            Some(rest) => self.homes.iter().map(|h| format!("{}/{rest}", h.display())).collect(),
            None => vec![pattern.to_owned()],
        };
        for p in expanded {
            let path = Path::new(&p);
            if !path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
                return Err(format!("secret path {pattern:?} must be absolute (or start with ~/) and have no `..`"));
            }
            // Canonical where it exists, so it compares with canonical paths.
            let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
            let components: Vec<String> = path
                .components()
                .filter_map(|c| match c {
                    Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
                    _ => None,
                })
                .collect();
            if components.is_empty() {
                return Err(format!("secret path {pattern:?} would cover everything"));
            }
            if !self.rules.iter().any(|r| r.pattern == components && r.guard == guard) {
                Arc::make_mut(&mut self.rules).push(Rule { pattern: components, what: what.to_owned(), guard });
                self.on_disk = Arc::default();
            }
        }
        Ok(())
    }

    fn refusal(rule: &Rule, path: &Path, verb: &str) -> Refusal {
        Refusal::new(format!(
            "{} is {} ({}); it is never {verb} through the mesh",
            path.display(),
            rule.what,
            rule.shown()
        ))
    }

    /// The first rule guarding `path` (canonical) against `blocks`, by pattern or by where its
    /// pattern leads on disk.
    fn guarding(&self, path: &Path, blocks: impl Fn(Guard) -> bool) -> Option<&Rule> {
        if let Some(rule) = self.rules.iter().filter(|r| blocks(r.guard)).find(|r| r.covers(path)) {
            return Some(rule);
        }
        let disk = self.disk();
        self.rules
            .iter()
            .zip(disk.iter())
            .filter(|(r, _)| blocks(r.guard))
            .find(|(_, found)| found.iter().any(|p| path.starts_with(p)))
            .map(|(r, _)| r)
    }

    /// What every rule names on disk (nothing for memory rules, matched by pattern only),
    /// looked up at most once per [`ON_DISK_FOR`].
    fn disk(&self) -> OnDisk {
        let mut cached = self.on_disk.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, found)) = cached.as_ref() {
            if at.elapsed() < ON_DISK_FOR {
                return found.clone();
            }
        }
        let found: OnDisk =
            Arc::new(self.rules.iter().map(|r| if r.guard == Guard::Memory { vec![] } else { r.on_disk() }).collect());
        *cached = Some((Instant::now(), found.clone()));
        found
    }

    /// Whether the paths on disk are at hand, so that asking for them now walks no directory.
    pub(crate) fn on_disk_is_fresh(&self) -> bool {
        let cached = self.on_disk.lock().unwrap_or_else(|e| e.into_inner());
        cached.as_ref().is_some_and(|(at, _)| at.elapsed() < ON_DISK_FOR)
    }

    /// Whether `path` (canonical) may be read through the mesh.
    pub fn check_read(&self, path: &Path) -> Result<(), Refusal> {
        if let Some(rule) = self.guarding(path, Guard::blocks_read) {
            return Err(Self::refusal(rule, path, "read"));
        }
        self.check_hard_link(path)
    }

    /// Whether `path` (canonical) may be written, renamed or deleted through the mesh in `mode`.
    pub fn check_write(&self, path: &Path, mode: Mode) -> Result<(), Refusal> {
        match self.guarding(path, |g| g.blocks_write(mode)) {
            Some(rule) => Err(Self::refusal(rule, path, "written")),
            None => Ok(()),
        }
    }

    /// A file with several links is compared by inode with every file the read guards name.
    fn check_hard_link(&self, path: &Path) -> Result<(), Refusal> {
        match std::fs::metadata(path) {
            Ok(meta) => self.check_opened(path, &meta),
            Err(_) => Ok(()),
        }
    }

    /// [`Secrets::check_read`]'s inode half for a file already open at `path` (its `meta` from
    /// the descriptor): the file swapped in since the check may be a hard link to a secret.
    pub fn check_opened(&self, path: &Path, meta: &std::fs::Metadata) -> Result<(), Refusal> {
        if !meta.is_file() || meta.nlink() < 2 {
            return Ok(());
        }
        let wanted = (meta.dev(), meta.ino());
        let mut seen = 0usize;
        let disk = self.disk();
        for (rule, found) in self.rules.iter().zip(disk.iter()).filter(|(r, _)| r.guard.on_disk_read()) {
            for root in found.iter().cloned() {
                let mut stack = vec![root];
                while let Some(p) = stack.pop() {
                    seen += 1;
                    if seen > LINK_SCAN_MAX {
                        return Ok(());
                    }
                    let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
                    if m.is_dir() {
                        stack.extend(std::fs::read_dir(&p).into_iter().flatten().flatten().map(|e| e.path()));
                    } else if (m.dev(), m.ino()) == wanted {
                        return Err(Refusal::new(format!(
                            "{} is a hard link to {}, {} ({}); it is never read through the mesh",
                            path.display(),
                            p.display(),
                            rule.what,
                            rule.shown()
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// What a sandboxed command must not read: every path the read guards name on disk now.
    pub fn unreadable(&self) -> Vec<PathBuf> {
        self.on_disk(Guard::on_disk_read)
    }

    /// What an `edit` command must not write: the own and protected paths on disk now, and
    /// where the missing ones would go (so they cannot be created either).
    pub fn unwritable(&self) -> Vec<PathBuf> {
        let mut out = self.on_disk(|g| g.blocks_write(Mode::Edit));
        for r in self.rules.iter().filter(|r| r.guard.blocks_write(Mode::Edit)) {
            if !r.pattern.iter().any(|c| is_glob(c)) {
                out.push(PathBuf::from(r.shown()));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The node's own state and runtime directories on disk: hidden from `edit` commands.
    pub fn own(&self) -> Vec<PathBuf> {
        self.on_disk(|g| g == Guard::Own)
    }

    /// The config file, service units and binary on disk: read-only to `edit` commands.
    pub fn read_only(&self) -> Vec<PathBuf> {
        self.on_disk(|g| matches!(g, Guard::Config | Guard::Protected))
    }

    fn on_disk(&self, blocks: impl Fn(Guard) -> bool) -> Vec<PathBuf> {
        let mut seen = HashSet::new();
        let disk = self.disk();
        self.rules
            .iter()
            .zip(disk.iter())
            .filter(|(r, _)| blocks(r.guard))
            .flat_map(|(_, found)| found.iter().cloned())
            .filter(|p| seen.insert(p.clone()))
            .collect()
    }

    /// The rules that apply on an SSH host: by pattern, with nothing there to look up.
    fn remote_rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(|r| matches!(r.guard, Guard::Secret | Guard::Memory))
    }

    /// For a recursive read on an SSH host: `path` (absolute) must neither hold a secret nor be
    /// inside one.
    pub fn check_remote_tree(&self, path: &Path) -> Result<(), Refusal> {
        let parts = names(path);
        for rule in self.remote_rules() {
            let holds = parts.len() <= rule.pattern.len()
                && parts.iter().zip(&rule.pattern).all(|(part, pat)| glob_match(pat.as_bytes(), part.as_bytes()));
            if holds || rule.covers(path) {
                return Err(Refusal::new(format!(
                    "a recursive read of {} would read {} ({}); it is never read through the mesh",
                    path.display(),
                    rule.what,
                    rule.shown()
                )));
            }
        }
        Ok(())
    }

    /// The check for a path on an SSH host: by pattern only (nothing there can be resolved
    /// from here), with `~` standing for `/root` and `/home/*`.
    pub fn check_remote_read(&self, path: &Path) -> Result<(), Refusal> {
        match self.remote_rules().find(|r| r.covers(path)) {
            Some(rule) => Err(Self::refusal(rule, path, "read")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        crate::test_dirs::scratch(&format!("secrets-{name}"))
    }

    #[test]
    fn globs_and_public_keys() {
        assert!(glob_match(b"id_*", b"id_ed25519"));
        assert!(glob_match(b"ssh_host_*_key", b"ssh_host_rsa_key"));
        assert!(!glob_match(b"ssh_host_*_key", b"ssh_host_rsa_key.pub"));
        assert!(glob_match(b"*", b"") && glob_match(b"a?c", b"abc") && !glob_match(b"a?c", b"ac"));
        assert!(glob_match(b"*.service", b"tunnel.service") && !glob_match(b"tunnel*", b"other"));
        let long = vec![b'a'; 255];
        assert!(!glob_match(b"*a*a*a*a*a*a*a*a*a*a*a*a*b", &long), "and quickly");
        let s = Secrets::new(&SecretSources { home: Some("/home/op".into()), ..Default::default() }).unwrap();
        assert!(s.check_remote_read(Path::new("/home/alice/.ssh/id_rsa")).is_err());
        assert!(s.check_remote_read(Path::new("/root/.ssh/id_ed25519")).is_err());
        assert!(s.check_remote_read(Path::new("/home/alice/.ssh/id_rsa.pub")).is_ok());
        assert!(s.check_remote_read(Path::new("/home/alice/.ssh/known_hosts")).is_ok());
        assert!(s.check_remote_read(Path::new("/etc/ssh/ssh_host_ed25519_key")).is_err());
        assert!(s.check_remote_read(Path::new("/home/bob/.gnupg/private-keys-v1.d/x.key")).is_err());
        let own = PathBuf::from(format!("/proc/{}/maps", std::process::id()));
        for memory in [Path::new("/proc/1/environ"), Path::new("/proc/42/task/43/mem"), &own, Path::new("/dev/mem")] {
            let err = s.check_read(memory).unwrap_err().to_string();
            assert!(err.contains("process memory"), "{err}");
        }
        assert!(s.check_read(Path::new("/proc/1/status")).is_ok());
        for tree in ["/", "/etc", "/home", "/home/alice", "/root/.ssh", "/etc/ssh", "/root/.gnupg/sub"] {
            assert!(s.check_remote_tree(Path::new(tree)).is_err(), "{tree}");
        }
        for tree in ["/var/log", "/etc/nginx", "/home/alice/src", "/srv"] {
            assert!(s.check_remote_tree(Path::new(tree)).is_ok(), "{tree}");
        }
        assert!(!s.unreadable().iter().any(|p| p.starts_with("/proc") && p != Path::new("/proc/kcore")));
        assert!(
            Secrets::new(&SecretSources { secret_paths: Some(vec!["rel/x".into()]), ..Default::default() }).is_err()
        );
    }

    #[test]
    fn state_dir_symlinks_and_hard_links() {
        let root = scratch("state");
        let state = root.join("state");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join("node.key"), b"k").unwrap();
        std::os::unix::fs::symlink(&state, root.join("via-link")).unwrap();
        std::fs::hard_link(state.join("node.key"), root.join("copy")).unwrap();
        std::fs::write(root.join("config.toml"), b"token").unwrap();
        let s = Secrets::new(&SecretSources {
            state_dir: Some(root.join("via-link")),
            config_file: Some(root.join("config.toml")),
            ..Default::default()
        })
        .unwrap();
        let err = s.check_read(&state.join("node.key")).unwrap_err().to_string();
        assert!(err.contains("the node's own state"), "{err}");
        let err = s.check_read(&root.join("copy")).unwrap_err().to_string();
        assert!(err.contains("hard link"), "{err}");
        assert!(s.check_write(&state.join("audit.jsonl"), Mode::Bypass).is_err());
        assert!(s.check_write(&root.join("config.toml"), Mode::Edit).is_err());
        assert!(s.check_write(&root.join("config.toml"), Mode::Bypass).is_ok());
        assert!(s.check_read(&root.join("config.toml")).is_err());
        std::fs::write(root.join("other"), b"x").unwrap();
        assert!(s.check_read(&root.join("other")).is_ok());
        assert!(s.unreadable().contains(&state));
        assert!(s.unwritable().contains(&root.join("config.toml")));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
