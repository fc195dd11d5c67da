//! OpenSSH client config (`~/.ssh/config`): every `Host` pattern without wildcards or
//! negation becomes an inventory host. Its settings are found as OpenSSH finds them: every
//! `Host` block whose patterns match the name (wildcard blocks included) is applied in file
//! order, and for each keyword the first value obtained wins (`IdentityFile` accumulates).
//!
//! Keywords we use: HostName (with `%h` and `%%`), User, Port, IdentityFile, ProxyJump,
//! StrictHostKeyChecking. `Include` is followed (globs in the last path component; relative
//! paths are under `~/.ssh`). `Match` blocks cannot be evaluated without connecting and are
//! reported, with their lines skipped. Other keywords are ignored.

use std::path::{Path, PathBuf};

use super::{check_name, expand_home, glob_match, Host, Loaded, StrictHostKeys};

/// How deep `Include` may nest (OpenSSH's own limit is 16).
const MAX_INCLUDE_DEPTH: usize = 16;

struct Block {
    patterns: Vec<String>,
    /// (keyword in lowercase, value, file:line)
    settings: Vec<(String, String, String)>,
}

pub(crate) fn load(path: &Path) -> Loaded {
    let mut loaded = Loaded::default();
    let mut blocks = vec![Block { patterns: vec!["*".into()], settings: vec![] }];
    // Host names in the order they first appear, with where.
    let mut names: Vec<(String, String)> = Vec::new();
    read_file(path, 0, &mut blocks, &mut names, &mut loaded);
    for (name, source) in names {
        match check_name(&name).and_then(|()| resolve(&name, &blocks, source.clone())) {
            Ok(host) => loaded.hosts.push(host),
            Err(message) => {
                let (file, line) = super::split_source(&source);
                loaded.problems.push(super::Problem { file, line, message });
            }
        }
    }
    loaded
}

fn read_file(
    path: &Path,
    depth: usize,
    blocks: &mut Vec<Block>,
    names: &mut Vec<(String, String)>,
    loaded: &mut Loaded,
) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return loaded.problem(path, 0, format!("cannot read: {e}")),
    };
    let mut in_match = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((keyword, value)) = split_keyword(line) else {
            loaded.problem(path, i + 1, format!("{line:?} is not `Keyword value`"));
            continue;
        };
        let where_ = format!("{}:{}", path.display(), i + 1);
        match keyword.as_str() {
            "host" => {
                in_match = false;
                let patterns: Vec<String> = words(&value);
                for p in &patterns {
                    let plain = !p.contains(['*', '?', '!']);
                    if plain && !names.iter().any(|(n, _)| n == p) {
                        names.push((p.clone(), where_.clone()));
                    }
                }
                blocks.push(Block { patterns, settings: vec![] });
            }
            "match" => {
                in_match = true;
                loaded.problem(path, i + 1, "Match blocks are not evaluated; their settings are skipped");
            }
            "include" => {
                if depth >= MAX_INCLUDE_DEPTH {
                    loaded.problem(path, i + 1, "Include nested too deeply");
                    continue;
                }
                for pattern in words(&value) {
                    for file in include_files(&pattern) {
                        read_file(&file, depth + 1, blocks, names, loaded);
                    }
                }
            }
            _ if in_match => {}
            _ => blocks.last_mut().expect("a block").settings.push((keyword, value, where_)),
        }
    }
}

/// `Keyword value`, `Keyword=value` or `Keyword = value`; the keyword in lowercase.
fn split_keyword(line: &str) -> Option<(String, String)> {
    let cut = line.find(|c: char| c.is_whitespace() || c == '=')?;
    let keyword = line[..cut].to_ascii_lowercase();
    let rest = line[cut..].trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim();
    (!rest.is_empty()).then(|| (keyword, rest.to_owned()))
}

/// Whitespace-separated words; double quotes group.
fn words(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in value.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn include_files(pattern: &str) -> Vec<PathBuf> {
    let path = if pattern.starts_with('/') || pattern.starts_with('~') {
        expand_home(pattern)
    } else {
        expand_home("~/.ssh").join(pattern)
    };
    let (Some(dir), Some(file)) = (path.parent(), path.file_name().and_then(|f| f.to_str())) else {
        return vec![];
    };
    if !file.contains(['*', '?']) {
        return vec![path.clone()];
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| glob_match(file, n)))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// Whether a `Host` line's patterns select `name`: some pattern matches and no negated one.
fn selects(patterns: &[String], name: &str) -> bool {
    let mut any = false;
    for p in patterns {
        if let Some(negated) = p.strip_prefix('!') {
            if glob_match(negated, name) {
                return false;
            }
        } else if glob_match(p, name) {
            any = true;
        }
    }
    any
}

fn resolve(name: &str, blocks: &[Block], source: String) -> Result<Host, String> {
    let mut host = Host::new(name, source);
    let (mut address, mut port, mut user, mut jump, mut strict) = (None, None, None, None, None);
    for block in blocks.iter().filter(|b| selects(&b.patterns, name)) {
        for (keyword, value, where_) in &block.settings {
            let first = |slot: &mut Option<String>| {
                if slot.is_none() {
                    *slot = Some(value.clone());
                }
            };
            match keyword.as_str() {
                "hostname" => first(&mut address),
                "port" => first(&mut port),
                "user" => first(&mut user),
                "proxyjump" => first(&mut jump),
                "stricthostkeychecking" => first(&mut strict),
                "identityfile" => host.identity_files.push(expand_home(&expand_tokens(value, name))),
                "password" => return Err(format!("{where_}: {}", super::NO_PASSWORDS)),
                _ => {}
            }
        }
    }
    if let Some(a) = address {
        host.address = expand_tokens(&a, name);
    }
    if let Some(p) = port {
        host.port = p.parse().ok().filter(|p| *p != 0).ok_or_else(|| format!("Port {p:?} is not a port number"))?;
    }
    host.user = user;
    host.proxy_jump = jump.filter(|j| !j.eq_ignore_ascii_case("none"));
    host.strict_host_keys = match strict.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("ask") => None,
        Some("yes") => Some(StrictHostKeys::Yes),
        Some("accept-new") => Some(StrictHostKeys::AcceptNew),
        // `no`/`off` would trust any key; we never do that, so it means the node's default.
        Some(_) => None,
    };
    Ok(host)
}

fn expand_tokens(value: &str, name: &str) -> String {
    value.replace("%%", "\u{0}").replace("%h", name).replace('\u{0}', "%")
}
