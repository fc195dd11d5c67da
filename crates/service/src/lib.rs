//! tunnel-service: puts `tunnel run` and `tunnel-relay` into service.
//!
//! ```text
//!   ServiceSpec ──render──> systemd unit | launchd plist
//!        │
//!        └──plan──> Plan { files (path, contents, mode), commands } ──apply | print (--dry-run)
//! ```
//!
//! Everything is decided in [`Plan`] before anything is touched, so `--dry-run` shows exactly
//! what an install would do, and tests check plans without a service manager.
#![forbid(unsafe_code)]

mod launchd;
mod plan;
mod systemd;

use std::path::PathBuf;

pub use launchd::plist;
pub use plan::{write_file, Plan, PlannedFile};
pub use systemd::unit;

/// System-wide (root; boot) or per-user (the user's service manager; login, or lingering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    System,
    User,
}

/// Which service manager to write for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Systemd,
    Launchd,
}

impl Manager {
    /// This machine's.
    pub fn native() -> Self {
        if cfg!(target_os = "macos") {
            Self::Launchd
        } else {
            Self::Systemd
        }
    }
}

/// How much a unit may be locked down without breaking what the program is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hardening {
    /// The node: it runs commands and (in edit mode) writes files for the fleet, so only what
    /// costs those nothing.
    Node,
    /// The relay: it only moves ciphertext, so it gets a read-only system and no privileges.
    Relay,
}

/// One service.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// `tunnel` or `tunnel-relay`: the unit's name and the launchd label's last part.
    pub name: String,
    pub description: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub scope: Scope,
    pub hardening: Hardening,
    /// Where its logs go under launchd (systemd uses the journal).
    pub log_file: Option<PathBuf>,
}

impl ServiceSpec {
    /// The launchd label.
    pub fn label(&self) -> String {
        format!("dev.tunnel.{}", self.name)
    }

    /// Where the unit or plist goes, under `home` for user services.
    pub fn unit_path(&self, manager: Manager, home: &std::path::Path) -> PathBuf {
        match (manager, self.scope) {
            (Manager::Systemd, Scope::System) => PathBuf::from(format!("/etc/systemd/system/{}.service", self.name)),
            (Manager::Systemd, Scope::User) => home.join(format!(".config/systemd/user/{}.service", self.name)),
            (Manager::Launchd, Scope::System) => {
                PathBuf::from(format!("/Library/LaunchDaemons/{}.plist", self.label()))
            }
            (Manager::Launchd, Scope::User) => home.join(format!("Library/LaunchAgents/{}.plist", self.label())),
        }
    }

    /// The unit or plist text.
    pub fn render(&self, manager: Manager) -> String {
        match manager {
            Manager::Systemd => unit(self),
            Manager::Launchd => plist(self),
        }
    }

    /// The unit (or plist) file and the commands that start it, added to `plan`.
    pub fn add_to(&self, plan: &mut Plan, manager: Manager, home: &std::path::Path) {
        let path = self.unit_path(manager, home);
        plan.files.push(PlannedFile {
            path: path.clone(),
            contents: self.render(manager).into_bytes(),
            mode: 0o644,
            shown: None,
        });
        plan.after = self.start_commands(manager, &path);
    }

    /// Stopping the service, removing its file, and telling the manager.
    pub fn removal(&self, manager: Manager, home: &std::path::Path) -> Plan {
        let path = self.unit_path(manager, home);
        Plan {
            before: self.stop_commands(manager, &path),
            remove: vec![path],
            after: self.after_removal(manager),
            ..Plan::default()
        }
    }

    /// Commands that load and start the service once its file is in place.
    fn start_commands(&self, manager: Manager, unit_path: &std::path::Path) -> Vec<Vec<String>> {
        match manager {
            Manager::Systemd => {
                vec![self.systemctl(&["daemon-reload"]), self.systemctl(&["enable", "--now", &self.unit()])]
            }
            Manager::Launchd => vec![self.launchctl("bootstrap", unit_path)],
        }
    }

    /// Commands that stop and unload the service (before its file is removed).
    fn stop_commands(&self, manager: Manager, unit_path: &std::path::Path) -> Vec<Vec<String>> {
        match manager {
            Manager::Systemd => vec![self.systemctl(&["disable", "--now", &self.unit()])],
            Manager::Launchd => vec![self.launchctl("bootout", unit_path)],
        }
    }

    /// Reload the manager's view after a unit file went away.
    fn after_removal(&self, manager: Manager) -> Vec<Vec<String>> {
        match manager {
            Manager::Systemd => vec![self.systemctl(&["daemon-reload"])],
            Manager::Launchd => vec![],
        }
    }

    fn unit(&self) -> String {
        format!("{}.service", self.name)
    }

    /// `systemctl [--user] WORDS`.
    fn systemctl(&self, words: &[&str]) -> Vec<String> {
        let user = (self.scope == Scope::User).then_some("--user");
        std::iter::once("systemctl").chain(user).chain(words.iter().copied()).map(str::to_owned).collect()
    }

    /// `launchctl VERB DOMAIN PLIST`: the system domain, or the user's GUI domain.
    fn launchctl(&self, verb: &str, plist: &std::path::Path) -> Vec<String> {
        let domain = match self.scope {
            Scope::System => "system".to_owned(),
            Scope::User => gui_domain(),
        };
        vec!["launchctl".into(), verb.into(), domain, plist.display().to_string()]
    }
}

/// launchd's domain for the current user's agents.
fn gui_domain() -> String {
    format!("gui/{}", rustix::process::getuid().as_raw())
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot remove {path}: {source}")]
    Remove { path: PathBuf, source: std::io::Error },
    #[error("`{command}` failed: {reason}")]
    Command { command: String, reason: String },
    #[error("a system service needs root: run with sudo, or pass --user for a service of your own")]
    NeedsRoot,
    #[error("HOME is not set")]
    NoHome,
    #[error("cannot read the {what} file {path}: {source}")]
    ReadSecret { what: String, path: PathBuf, source: std::io::Error },
    #[error("the {what} file {path} must hold the {what} alone, on one line")]
    BadSecret { what: String, path: PathBuf },
}

/// The user's home directory, where user services and their files go.
pub fn home() -> Result<PathBuf, ServiceError> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from).ok_or(ServiceError::NoHome)
}

/// A secret (a token) from a file of its own: trimmed, one line, not empty. Secrets come from
/// files so they never sit on a command line.
pub fn read_secret(path: &std::path::Path, what: &str) -> Result<String, ServiceError> {
    let text = std::fs::read_to_string(path).map_err(|source| ServiceError::ReadSecret {
        what: what.to_owned(),
        path: path.to_owned(),
        source,
    })?;
    let secret = text.trim();
    if secret.is_empty() || secret.contains('\n') {
        return Err(ServiceError::BadSecret { what: what.to_owned(), path: path.to_owned() });
    }
    Ok(secret.to_owned())
}

/// The scope asked for; a system one needs root unless it is only staged under a directory.
pub fn scope(user: bool, staged: bool) -> Result<Scope, ServiceError> {
    if user {
        return Ok(Scope::User);
    }
    if !staged && !rustix::process::geteuid().is_root() {
        return Err(ServiceError::NeedsRoot);
    }
    Ok(Scope::System)
}

/// Prints the plan (`dry_run`) or carries it out, under `root` when staging. Returns what to
/// tell the person.
pub fn execute(plan: &Plan, dry_run: bool, root: Option<&std::path::Path>) -> Result<String, ServiceError> {
    if dry_run {
        return Ok(format!("dry run: nothing is changed\n{}", plan.describe()));
    }
    let mut out = String::new();
    for cmd in plan.apply(root)? {
        out.push_str(&format!("staged; not run: {}\n", cmd.join(" ")));
    }
    for note in &plan.notes {
        out.push_str(&format!("{note}\n"));
    }
    Ok(out)
}

/// Where binaries go: `/usr/local/bin`, or `~/.local/bin` for a user install.
pub fn default_prefix(scope: Scope, home: &std::path::Path) -> PathBuf {
    match scope {
        Scope::System => PathBuf::from("/usr/local/bin"),
        Scope::User => home.join(".local/bin"),
    }
}

/// The running binary copied to `prefix/name`, unless that is the running binary already.
/// Returns the path the service will run, and the file to write if any.
pub fn binary(prefix: &std::path::Path, name: &str) -> std::io::Result<(PathBuf, Option<PlannedFile>)> {
    let target = prefix.join(name);
    let running = std::env::current_exe()?.canonicalize()?;
    if target.canonicalize().is_ok_and(|t| t == running) {
        return Ok((target, None));
    }
    let contents = std::fs::read(&running)?;
    let shown = Some(format!("(a copy of {}, {} bytes)", running.display(), contents.len()));
    Ok((target.clone(), Some(PlannedFile { path: target, contents, mode: 0o755, shown })))
}

/// What the service manager says of the service: `active`, `inactive`, `failed`, ...; or why
/// it could not be asked.
pub fn query_state(spec: &ServiceSpec, manager: Manager) -> String {
    let argv = match manager {
        Manager::Systemd => spec.systemctl(&["is-active", &spec.unit()]),
        Manager::Launchd => vec!["launchctl".into(), "list".into(), spec.label()],
    };
    match std::process::Command::new(&argv[0]).args(&argv[1..]).output() {
        Ok(out) if manager == Manager::Launchd => if out.status.success() { "loaded" } else { "not loaded" }.to_owned(),
        Ok(out) => {
            let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if said.is_empty() {
                format!("unknown ({})", String::from_utf8_lossy(&out.stderr).trim())
            } else {
                said
            }
        }
        Err(e) => format!("unknown (cannot run the service manager: {e})"),
    }
}
