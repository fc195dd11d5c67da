//! Settings, resolved in two steps: the CLI parses raw flags without any I/O ([`Flags`]),
//! then [`Settings::resolve`] fills each value from, in order of precedence:
//! flag > `TUNNEL_*` environment variable > config file > default.
//!
//! Config file: `--config`, else `TUNNEL_CONFIG`, else `$XDG_CONFIG_HOME/tunnel/config.toml`
//! (`~/.config/tunnel/config.toml`), else the system service's [`SYSTEM_CONFIG`] when it is
//! readable and no state directory was chosen (so root's CLI finds `tunnel install`'s node). Keys: `relay`, `room`, `token`, `access_token`, `name`,
//! `tags`, `state_dir`, `runtime_dir`, `relay_ca`, `relay_pin`, `direct`, `udp_port`, `stun`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tunnel_proto::NodeId;

use crate::policy::Policy;

/// The config file `tunnel install` writes for the system service.
pub const SYSTEM_CONFIG: &str = "/etc/tunnel/config.toml";

/// Raw command-line values; `None` means "not given".
#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub config: Option<PathBuf>,
    pub relay: Option<String>,
    pub room: Option<String>,
    pub token: Option<String>,
    pub access_token: Option<String>,
    pub relay_ca: Option<PathBuf>,
    pub name: Option<String>,
    pub tags: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub runtime_dir: Option<PathBuf>,
    pub mode: Option<String>,
    pub direct: Option<String>,
    pub udp_port: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    relay: Option<String>,
    room: Option<String>,
    token: Option<String>,
    access_token: Option<String>,
    relay_ca: Option<PathBuf>,
    relay_pin: Option<String>,
    name: Option<String>,
    tags: Option<Vec<String>>,
    state_dir: Option<PathBuf>,
    runtime_dir: Option<PathBuf>,
    mode: Option<String>,
    direct: Option<String>,
    udp_port: Option<u16>,
    stun: Option<Vec<String>>,
    #[serde(default)]
    allow_paths: Vec<PathBuf>,
    #[serde(default)]
    deny_paths: Vec<PathBuf>,
    #[serde(default)]
    allow_commands: Vec<String>,
    #[serde(default)]
    deny_commands: Vec<String>,
    allow: Option<Vec<String>>,
    #[serde(default)]
    admins: Vec<String>,
    max_file_bytes: Option<u64>,
    #[serde(default)]
    forward_allow: Vec<String>,
    secret_paths: Option<Vec<String>>,
    #[serde(default)]
    plan_requires_sandbox: bool,
    edit_sandbox: Option<Vec<PathBuf>>,
    task_agent: Option<Vec<String>>,
    task_agent_plan: Option<Vec<String>>,
    #[serde(default)]
    ssh: crate::ssh::SshFileConfig,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    #[error("cannot read config file {path}: {source}")]
    ReadConfig { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is invalid: {reason}")]
    BadConfig { path: PathBuf, reason: String },
    #[error("no {what} given: pass {flag} or set {env} (or `{key}` in the config file)")]
    Missing { what: &'static str, flag: &'static str, env: &'static str, key: &'static str },
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid { what: &'static str, value: String, reason: &'static str },
    #[error("cannot find a home directory for state; set TUNNEL_STATE_DIR")]
    NoHome,
}

/// Resolved settings. Room settings stay optional: only `tunnel run` needs them.
#[derive(Clone)]
pub struct Settings {
    pub relay: Option<String>,
    pub room: Option<String>,
    pub token: Option<String>,
    pub access_token: Option<String>,
    /// Whom to trust for a `wss://` relay besides the system's roots.
    pub relay_trust: tunnel_net::ClientTrust,
    pub name: String,
    pub tags: Vec<String>,
    pub state_dir: PathBuf,
    pub runtime_dir: PathBuf,
    pub policy: Policy,
    /// The SSH arm: inventory sources and how hosts are reached.
    pub ssh: crate::ssh::SshSettings,
    /// Direct paths: the mode, the UDP port, the STUN servers.
    pub direct: tunnel_net::DirectConfig,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("relay", &self.relay)
            .field("room", &self.room)
            .field("token", &self.token.as_ref().map(|_| ".."))
            .field("access_token", &self.access_token.as_ref().map(|_| ".."))
            .field("relay_trust", &self.relay_trust)
            .field("name", &self.name)
            .field("tags", &self.tags)
            .field("state_dir", &self.state_dir)
            .field("runtime_dir", &self.runtime_dir)
            .field("policy", &self.policy)
            .field("ssh", &self.ssh)
            .field("direct", &self.direct)
            .finish()
    }
}

/// What `tunnel run` needs to join a room.
pub struct RoomSettings<'a> {
    pub relay: &'a str,
    pub room: &'a str,
    pub token: &'a str,
}

impl Settings {
    /// Resolves `flags` against the environment (`env`, usually `std::env::var`) and the
    /// config file.
    pub fn resolve(flags: Flags, env: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let env = |k: &str| env(k).filter(|v| !v.is_empty());
        let (config_path, explicit) = match flags.config.clone().or_else(|| env("TUNNEL_CONFIG").map(PathBuf::from)) {
            Some(p) => (Some(p), true),
            None => (user_config_file(&env), false),
        };
        let user_default_missing = !explicit && !matches!(&config_path, Some(p) if p.exists());
        let (config_path, explicit) = if user_default_missing
            && flags.state_dir.is_none()
            && env("TUNNEL_STATE_DIR").is_none()
            && std::fs::File::open(SYSTEM_CONFIG).is_ok()
        {
            (Some(PathBuf::from(SYSTEM_CONFIG)), true)
        } else {
            (config_path, explicit)
        };
        let file = match &config_path {
            Some(path) => read_config(path, explicit)?,
            None => FileConfig::default(),
        };
        Self::from_file(flags, &env, config_path, file)
    }

    /// Settings from a config file's text as if it were at `path`, with no flags: what
    /// `tunnel install` checks before it writes the file.
    pub fn from_config_text(
        path: &Path,
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, SettingsError> {
        let env = |k: &str| env(k).filter(|v| !v.is_empty());
        Self::from_file(Flags::default(), &env, Some(path.to_owned()), parse_config(path, text)?)
    }

    fn from_file(
        flags: Flags,
        env: &dyn Fn(&str) -> Option<String>,
        config_path: Option<PathBuf>,
        file: FileConfig,
    ) -> Result<Self, SettingsError> {
        let home = env("HOME").map(PathBuf::from);
        let pick = |flag: Option<String>, var: &str, from_file: Option<String>| flag.or_else(|| env(var)).or(from_file);
        let pick_path = |flag: Option<PathBuf>, var: &str, from_file: Option<PathBuf>| {
            flag.or_else(|| env(var).map(PathBuf::from)).or(from_file)
        };

        let state_dir = match pick_path(flags.state_dir, "TUNNEL_STATE_DIR", file.state_dir) {
            Some(p) => p,
            None => default_state_dir(env).ok_or(SettingsError::NoHome)?,
        };
        let runtime_dir = pick_path(flags.runtime_dir, "TUNNEL_RUNTIME_DIR", file.runtime_dir)
            .or_else(|| env("XDG_RUNTIME_DIR").map(|d| PathBuf::from(d).join("tunnel")))
            .unwrap_or_else(|| state_dir.clone());
        let name = pick(flags.name, "TUNNEL_NAME", file.name).unwrap_or_else(crate::services::os_info::hostname);
        check_name(&name)?;
        let tags = match flags.tags.or_else(|| env("TUNNEL_TAGS")) {
            Some(list) => split_tags(&list),
            None => file.tags.unwrap_or_default(),
        };
        for tag in &tags {
            check_tag(tag)?;
        }
        let mode = pick(flags.mode, "TUNNEL_MODE", file.mode.clone()).unwrap_or_else(|| "plan".into());
        let policy = Policy {
            mode: mode.parse().map_err(|_| SettingsError::Invalid {
                what: "mode",
                value: mode.clone(),
                reason: "use plan, edit, bypass or disabled",
            })?,
            allow_paths: canonical_dirs(&file.allow_paths, "allow_paths")?,
            deny_paths: canonical_dirs(&file.deny_paths, "deny_paths")?,
            allow_commands: file.allow_commands,
            deny_commands: file.deny_commands,
            allow: file.allow.as_deref().map(|ids| node_ids(ids, "allow")).transpose()?,
            admins: node_ids(&file.admins, "admins")?,
            max_file_bytes: file.max_file_bytes.unwrap_or(Policy::default().max_file_bytes),
            forward_allow: file
                .forward_allow
                .iter()
                .map(|rule| rule.parse())
                .collect::<Result<_, String>>()
                .map_err(|reason| SettingsError::BadConfig { path: config_path.clone().unwrap_or_default(), reason })?,
            secrets: crate::policy::Secrets::new(&crate::policy::SecretSources {
                home: home.clone(),
                state_dir: Some(state_dir.clone()),
                runtime_dir: Some(runtime_dir.clone()),
                config_file: config_path.clone(),
                secret_paths: file.secret_paths.clone(),
            })
            .map_err(|reason| SettingsError::BadConfig { path: config_path.clone().unwrap_or_default(), reason })?,
            plan_requires_sandbox: file.plan_requires_sandbox,
            edit_sandbox: file.edit_sandbox.as_deref().map(|d| canonical_dirs(d, "edit_sandbox")).transpose()?,
            task_agent: agent_argv(file.task_agent, "task_agent", &config_path)?,
            task_agent_plan: agent_argv(file.task_agent_plan, "task_agent_plan", &config_path)?,
        };
        let config_dir = config_path.as_deref().and_then(Path::parent);
        let ssh =
            crate::ssh::SshSettings::from_file(file.ssh, config_dir).map_err(|reason| SettingsError::BadConfig {
                path: config_path.clone().unwrap_or_default(),
                reason: format!("[ssh]: {reason}"),
            })?;
        // A relative `relay_ca` in the config file is relative to the file.
        let file_ca = file.relay_ca.map(|p| match config_dir {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p,
        });
        let relay_pin = env("TUNNEL_RELAY_PIN").or(file.relay_pin);
        let relay_trust = tunnel_net::ClientTrust {
            ca_file: pick_path(flags.relay_ca, "TUNNEL_RELAY_CA", file_ca),
            pin: relay_pin.as_deref().map(str::parse).transpose().map_err(|e: tunnel_net::TlsError| match e {
                tunnel_net::TlsError::BadPin { value, reason } => {
                    SettingsError::Invalid { what: "relay_pin (TUNNEL_RELAY_PIN)", value, reason }
                }
                other => SettingsError::BadConfig {
                    path: config_path.clone().unwrap_or_default(),
                    reason: other.to_string(),
                },
            })?,
        };
        let direct = direct_settings(flags.direct, flags.udp_port, file.direct, file.udp_port, file.stun, env)?;
        Ok(Self {
            relay: pick(flags.relay, "TUNNEL_RELAY", file.relay),
            room: pick(flags.room, "TUNNEL_ROOM", file.room),
            token: pick(flags.token, "TUNNEL_TOKEN", file.token),
            access_token: pick(flags.access_token, "TUNNEL_ACCESS_TOKEN", file.access_token),
            relay_trust,
            name,
            tags,
            state_dir,
            runtime_dir,
            policy,
            ssh,
            direct,
        })
    }

    /// The control socket of the node that uses these settings.
    pub fn socket_path(&self) -> PathBuf {
        self.runtime_dir.join("tunnel.sock")
    }

    pub fn room_settings(&self) -> Result<RoomSettings<'_>, SettingsError> {
        let missing = |what, flag, env, key| SettingsError::Missing { what, flag, env, key };
        Ok(RoomSettings {
            relay: self.relay.as_deref().ok_or_else(|| missing("relay", "--relay URL", "TUNNEL_RELAY", "relay"))?,
            room: self.room.as_deref().ok_or_else(|| missing("room", "--room NAME", "TUNNEL_ROOM", "room"))?,
            token: self
                .token
                .as_deref()
                .ok_or_else(|| missing("room token", "--token SECRET", "TUNNEL_TOKEN", "token"))?,
        })
    }
}

/// `direct` (flag > TUNNEL_DIRECT > file), `udp_port` (flag > TUNNEL_UDP_PORT > file) and
/// `stun` (TUNNEL_STUN, comma-separated > file).
fn direct_settings(
    flag_mode: Option<String>,
    flag_port: Option<u16>,
    file_mode: Option<String>,
    file_port: Option<u16>,
    file_stun: Option<Vec<String>>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<tunnel_net::DirectConfig, SettingsError> {
    let mode = flag_mode.or_else(|| env("TUNNEL_DIRECT")).or(file_mode).unwrap_or_else(|| "auto".into());
    let mode = mode.parse().map_err(|_| SettingsError::Invalid {
        what: "direct (TUNNEL_DIRECT)",
        value: mode.clone(),
        reason: "use auto, relay-only or direct-only",
    })?;
    let udp_port = match (flag_port, env("TUNNEL_UDP_PORT")) {
        (Some(p), _) => p,
        (None, Some(v)) => v.parse().map_err(|_| SettingsError::Invalid {
            what: "udp_port (TUNNEL_UDP_PORT)",
            value: v.clone(),
            reason: "use a port number from 0 to 65535",
        })?,
        (None, None) => file_port.unwrap_or(0),
    };
    let stun = match env("TUNNEL_STUN") {
        Some(list) => list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        None => file_stun.unwrap_or_default(),
    };
    for server in &stun {
        let port_ok = server.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !port_ok {
            return Err(SettingsError::Invalid { what: "stun server", value: server.clone(), reason: "use host:port" });
        }
    }
    Ok(tunnel_net::DirectConfig { mode, udp_port, stun, switch: Default::default() })
}

/// `$XDG_CONFIG_HOME/tunnel/config.toml`, else `~/.config/tunnel/config.toml`.
pub fn user_config_file(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("tunnel/config.toml"))
}

/// `$XDG_DATA_HOME/tunnel`, else `~/.local/share/tunnel`.
pub fn default_state_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    env("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .map(|d| d.join("tunnel"))
}

fn read_config(path: &Path, explicit: bool) -> Result<FileConfig, SettingsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_config(path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(FileConfig::default()),
        Err(source) => Err(SettingsError::ReadConfig { path: path.to_owned(), source }),
    }
}

fn parse_config(path: &Path, text: &str) -> Result<FileConfig, SettingsError> {
    toml::from_str(text).map_err(|e| SettingsError::BadConfig { path: path.to_owned(), reason: e.message().to_owned() })
}

/// Policy roots, canonicalized once so later checks compare like with like. A root that does
/// not exist stays as written (nothing can be under it yet).
fn canonical_dirs(dirs: &[PathBuf], what: &'static str) -> Result<Vec<PathBuf>, SettingsError> {
    dirs.iter()
        .map(|d| {
            if !d.is_absolute() {
                return Err(SettingsError::Invalid {
                    what,
                    value: d.display().to_string(),
                    reason: "paths must be absolute",
                });
            }
            Ok(std::fs::canonicalize(d).unwrap_or_else(|_| d.clone()))
        })
        .collect()
}

fn node_ids(ids: &[String], what: &'static str) -> Result<Vec<NodeId>, SettingsError> {
    ids.iter()
        .map(|s| {
            s.parse().map_err(|_| SettingsError::Invalid {
                what,
                value: s.clone(),
                reason: "not a node id (52 base32 characters)",
            })
        })
        .collect()
}

fn split_tags(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect()
}

fn check_name(name: &str) -> Result<(), SettingsError> {
    let invalid = |reason| Err(SettingsError::Invalid { what: "name", value: name.to_owned(), reason });
    if name.is_empty() || name.len() > 64 {
        return invalid("must be 1 to 64 characters");
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control() || c == ',' || c == ':') {
        return invalid("must not contain spaces, commas, colons or control characters");
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<(), SettingsError> {
    if tag.len() > 64 || !tag.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(SettingsError::Invalid {
            what: "tag",
            value: tag.to_owned(),
            reason: "use letters, digits, '-', '_' or '.' (at most 64)",
        });
    }
    Ok(())
}

/// A task agent's invocation: a program and its first arguments; the prompt is added last.
fn agent_argv(
    argv: Option<Vec<String>>,
    key: &str,
    config_path: &Option<PathBuf>,
) -> Result<Option<Vec<String>>, SettingsError> {
    match argv {
        Some(a) if a.first().is_none_or(|p| p.trim().is_empty()) => Err(SettingsError::BadConfig {
            path: config_path.clone().unwrap_or_default(),
            reason: format!("{key} needs at least the program, as in {key} = [\"claude\", \"-p\"]"),
        }),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    fn config_file(body: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tunnel-settings-{}-{}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        std::fs::write(&path, body).unwrap();
        path
    }

    #[test]
    fn precedence_is_flag_then_env_then_file_then_default() {
        let path = config_file("relay = \"ws://file\"\nroom = \"file-room\"\ntoken = \"file-token\"\nname = \"file-name\"\ntags = [\"f\"]\n");
        let env = env_of(&[("HOME", "/home/x"), ("TUNNEL_ROOM", "env-room"), ("TUNNEL_NAME", "env-name")]);
        let flags = Flags { config: Some(path), name: Some("flag-name".into()), ..Default::default() };
        let s = Settings::resolve(flags, env).unwrap();
        assert_eq!(s.name, "flag-name");
        assert_eq!(s.room.as_deref(), Some("env-room"));
        assert_eq!(s.relay.as_deref(), Some("ws://file"));
        assert_eq!(s.token.as_deref(), Some("file-token"));
        assert_eq!(s.tags, vec!["f"]);
        assert_eq!(s.state_dir, PathBuf::from("/home/x/.local/share/tunnel"));
        assert_eq!(s.runtime_dir, s.state_dir, "no XDG_RUNTIME_DIR: the socket lives in the state dir");
    }

    #[test]
    fn env_tags_and_dirs() {
        let env = env_of(&[
            ("HOME", "/h"),
            ("TUNNEL_TAGS", "web, prod,,db"),
            ("XDG_RUNTIME_DIR", "/run/user/1"),
            ("TUNNEL_CONFIG", ""),
        ]);
        let s = Settings::resolve(Flags::default(), env).unwrap();
        assert_eq!(s.tags, vec!["web", "prod", "db"]);
        assert_eq!(s.socket_path(), PathBuf::from("/run/user/1/tunnel/tunnel.sock"));
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let env = env_of(&[("HOME", "/h")]);
        let s = Settings::resolve(Flags::default(), &env).unwrap();
        let err = s.room_settings().err().unwrap().to_string();
        assert!(err.contains("--relay") && err.contains("TUNNEL_RELAY"), "{err}");

        let bad = Flags { tags: Some("ok,not ok".into()), ..Default::default() };
        assert!(Settings::resolve(bad, &env).unwrap_err().to_string().contains("\"not ok\""));

        let path = config_file("relay = 3\n");
        let err = Settings::resolve(Flags { config: Some(path.clone()), ..Default::default() }, &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");

        let missing = Flags { config: Some("/nonexistent/tunnel.toml".into()), ..Default::default() };
        assert!(matches!(Settings::resolve(missing, &env), Err(SettingsError::ReadConfig { .. })));

        let unknown = config_file("relya = \"ws://typo\"\n");
        let err =
            Settings::resolve(Flags { config: Some(unknown), ..Default::default() }, &env).unwrap_err().to_string();
        assert!(err.contains("relya"), "{err}");
    }
}
