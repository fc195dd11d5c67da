//! tunnel's own inventory file, `hosts.toml`:
//!
//! ```toml
//! [defaults]                 # optional, applies to every host below
//! user = "ops"
//!
//! [[host]]
//! name = "web-1"
//! address = "10.0.0.5"       # default: the name
//! port = 22
//! user = "ubuntu"
//! identity_file = "~/.ssh/id_ed25519"   # or identity_files = [..]
//! tags = ["web", "prod"]
//! proxy_jump = "bastion"
//! strict_host_keys = "accept-new"
//! passphrase_env = "WEB_KEY_PASSPHRASE" # or passphrase_file = "/run/secrets/web-key"
//! ```
//!
//! Each `[[host]]` table is parsed on its own, so one broken entry (even a syntax error) is
//! reported with its line and the others still load.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{check_name, expand_home, Host, Loaded, Passphrase, StrictHostKeys, NO_PASSWORDS};

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: Option<String>,
    address: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    identity_file: Option<String>,
    identity_files: Option<Vec<String>>,
    #[serde(default)]
    tags: Vec<String>,
    proxy_jump: Option<String>,
    strict_host_keys: Option<String>,
    passphrase_env: Option<String>,
    passphrase_file: Option<String>,
    // Present only so it can be refused by name.
    password: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Preamble {
    defaults: Option<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    host: Vec<Entry>,
}

pub(crate) fn parse(text: &str, path: &Path) -> Loaded {
    let mut loaded = Loaded::default();
    let sections = split_sections(text);
    let mut defaults = Entry::default();
    for (first_line, chunk) in sections {
        if first_line == 1 && !chunk.trim_start().starts_with("[[host]]") {
            match toml::from_str::<Preamble>(&chunk) {
                Ok(p) => defaults = p.defaults.unwrap_or_default(),
                Err(e) => loaded.problem(path, first_line + error_line(&e, &chunk), toml_message(&e)),
            }
            continue;
        }
        let entry = match toml::from_str::<Section>(&chunk) {
            Ok(mut s) if s.host.len() == 1 => s.host.remove(0),
            Ok(_) => continue,
            Err(e) => {
                loaded.problem(path, first_line + error_line(&e, &chunk), toml_message(&e));
                continue;
            }
        };
        let source = format!("{}:{first_line}", path.display());
        match host_of(entry, &defaults, source) {
            Ok(host) => loaded.hosts.push(host),
            Err(message) => loaded.problem(path, first_line, message),
        }
    }
    loaded
}

/// Splits the file before every `[[host]]` line: (1-based first line, text).
fn split_sections(text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = vec![(1, String::new())];
    for (i, line) in text.lines().enumerate() {
        if line.trim() == "[[host]]" && i != 0 {
            out.push((i + 1, String::new()));
        }
        let chunk = &mut out.last_mut().expect("one section at least").1;
        chunk.push_str(line);
        chunk.push('\n');
    }
    out
}

/// The 0-based line inside `chunk` that a TOML error points at.
fn error_line(e: &toml::de::Error, chunk: &str) -> usize {
    e.span().map(|s| chunk[..s.start.min(chunk.len())].matches('\n').count()).unwrap_or(0)
}

/// TOML's message without its own multi-line excerpt (we report file and line ourselves).
fn toml_message(e: &toml::de::Error) -> String {
    e.message().trim().to_owned()
}

fn identities(e: &Entry) -> Vec<PathBuf> {
    e.identity_file.iter().chain(e.identity_files.iter().flatten()).map(|p| expand_home(p)).collect()
}

fn host_of(entry: Entry, defaults: &Entry, source: String) -> Result<Host, String> {
    if entry.password.is_some() || defaults.password.is_some() {
        return Err(NO_PASSWORDS.into());
    }
    let name = entry.name.clone().ok_or("a [[host]] without name")?;
    check_name(&name)?;
    let mut host = Host::new(&name, source);
    host.identity_files = identities(&entry);
    host.address = entry.address.or_else(|| defaults.address.clone()).unwrap_or(name);
    host.port = entry.port.or(defaults.port).unwrap_or(22);
    if host.port == 0 {
        return Err("port 0".into());
    }
    host.user = entry.user.clone().or_else(|| defaults.user.clone());
    if host.identity_files.is_empty() {
        host.identity_files = identities(defaults);
    }
    host.tags = defaults.tags.iter().chain(&entry.tags).cloned().collect();
    host.tags.dedup();
    host.proxy_jump = entry.proxy_jump.or_else(|| defaults.proxy_jump.clone());
    host.strict_host_keys = entry
        .strict_host_keys
        .or_else(|| defaults.strict_host_keys.clone())
        .map(|s| s.parse::<StrictHostKeys>())
        .transpose()?;
    let env = entry.passphrase_env.or_else(|| defaults.passphrase_env.clone());
    let file = entry.passphrase_file.or_else(|| defaults.passphrase_file.clone());
    host.passphrase = match (env, file) {
        (Some(_), Some(_)) => return Err("passphrase_env and passphrase_file both set; choose one".into()),
        (Some(var), None) => Some(Passphrase::Env(var)),
        (None, Some(path)) => Some(Passphrase::File(expand_home(&path))),
        (None, None) => None,
    };
    Ok(host)
}
