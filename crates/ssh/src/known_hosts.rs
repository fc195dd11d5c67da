//! Host key verification against OpenSSH `known_hosts` files.
//!
//! Understands plain host patterns (`*`, `?`, `!` negation), `[host]:port` for ports other
//! than 22, hashed entries (`|1|salt|HMAC-SHA1(salt, host)`), and the `@revoked` marker.
//! `@cert-authority` lines are skipped: host certificates are not accepted.
//!
//! A host with known keys must present one of them; any other key is [`Verdict::Changed`]
//! (OpenSSH treats a new key of another type as suspicious too). Files are read at each
//! check, so a key trusted with `ssh-keyscan >> ~/.ssh/known_hosts` takes effect at once.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use russh::keys::{HashAlg, PublicKey};
use sha1::Sha1;

/// What `known_hosts` says of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Trusted,
    /// The host is not listed.
    Unknown,
    /// The host is listed with other keys: at `file:line`.
    Changed {
        known_at: String,
    },
    /// The key is marked `@revoked` at `file:line`.
    Revoked {
        at: String,
    },
}

/// The name a host is listed under: `host`, or `[host]:port` off port 22.
pub fn lookup_name(address: &str, port: u16) -> String {
    if port == 22 {
        address.to_owned()
    } else {
        format!("[{address}]:{port}")
    }
}

/// `SHA256:...`, as OpenSSH prints fingerprints.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Checks `key` for `address:port` against every file (missing files are empty).
pub fn check(files: &[PathBuf], address: &str, port: u16, key: &PublicKey) -> Verdict {
    let name = lookup_name(address, port);
    let wanted = key_text(key);
    let parsed: Vec<Arc<Parsed>> = files.iter().filter_map(|f| parsed(f)).collect();
    // A revocation anywhere wins over any line that trusts the key.
    if let Some(at) = parsed.iter().find_map(|p| p.revoked.get(&wanted)) {
        return Verdict::Revoked { at: at.clone() };
    }
    let mut other: Option<&String> = None;
    for p in &parsed {
        let exact = p.exact.get(&name).into_iter().flatten();
        let patterns = p.patterns.iter().filter(|(hosts, _, _)| matches(hosts, &name)).map(|(_, k, at)| (k, at));
        for (k, at) in exact.map(|(k, at)| (k, at)).chain(patterns) {
            if *k == wanted {
                return Verdict::Trusted;
            }
            other.get_or_insert(at);
        }
    }
    match other {
        Some(known_at) => Verdict::Changed { known_at: known_at.clone() },
        None => Verdict::Unknown,
    }
}

/// One file's entries, parsed once and kept until the file changes: a connection to each of
/// 10,000 hosts must not parse a 10,000-line file 10,000 times.
#[derive(Default)]
struct Parsed {
    /// Revoked key text, and where.
    revoked: HashMap<String, String>,
    /// Entries whose host field is plain names only, by name: (key text, where).
    exact: HashMap<String, Vec<(String, String)>>,
    /// Hashed entries and those with wildcards or negation: (host field, key text, where).
    patterns: Vec<(String, String, String)>,
}

type Stamp = (u64, std::time::SystemTime, u64);

/// Parsed files by path, with the stamp they were parsed at.
type Cache = Mutex<HashMap<PathBuf, (Stamp, Arc<Parsed>)>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

fn parsed(file: &Path) -> Option<Arc<Parsed>> {
    let meta = std::fs::metadata(file).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    let stamp: Stamp = (meta.len(), meta.modified().ok()?, inode);
    if let Some((seen, p)) = cache().lock().expect("known_hosts cache").get(file) {
        if *seen == stamp {
            return Some(p.clone());
        }
    }
    let text = std::fs::read_to_string(file).ok()?;
    let mut p = Parsed::default();
    for (i, line) in text.lines().enumerate() {
        let Some(entry) = Entry::parse(line) else { continue };
        let at = format!("{}:{}", file.display(), i + 1);
        match entry.marker {
            Some(Marker::Revoked) => {
                p.revoked.entry(entry.key).or_insert(at);
            }
            Some(Marker::CertAuthority) => {}
            None if entry.hosts.starts_with('|') || entry.hosts.contains(['*', '?', '!']) => {
                p.patterns.push((entry.hosts.to_owned(), entry.key, at));
            }
            None => {
                for name in entry.hosts.split(',') {
                    p.exact.entry(name.to_owned()).or_default().push((entry.key.clone(), at.clone()));
                }
            }
        }
    }
    let p = Arc::new(p);
    cache().lock().expect("known_hosts cache").insert(file.to_owned(), (stamp, p.clone()));
    Some(p)
}

/// Appends a line trusting `key` for `address:port` (the `accept-new` policy), making the
/// file (mode 0600) and its directory if needed.
pub fn record(file: &Path, address: &str, port: u16, key: &PublicKey) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new();
    f.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut f, 0o600);
    let mut f = f.open(file)?;
    // A file not ending in a newline would glue our entry to its last line.
    let needs_newline = std::fs::read(file).map(|b| b.last().is_some_and(|c| *c != b'\n')).unwrap_or(false);
    let line = format!("{}{} {}\n", if needs_newline { "\n" } else { "" }, lookup_name(address, port), key_text(key));
    f.write_all(line.as_bytes())?;
    f.sync_all()
}

/// `type base64`, the form keys take in `known_hosts`.
fn key_text(key: &PublicKey) -> String {
    let openssh = key.to_openssh().unwrap_or_default();
    let mut parts = openssh.split_whitespace();
    format!("{} {}", parts.next().unwrap_or_default(), parts.next().unwrap_or_default())
}

#[derive(Debug, PartialEq, Eq)]
enum Marker {
    Revoked,
    CertAuthority,
}

#[derive(Debug)]
struct Entry<'a> {
    marker: Option<Marker>,
    hosts: &'a str,
    key: String,
}

impl<'a> Entry<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let mut words = line.split_whitespace();
        let mut first = words.next()?;
        let marker = match first {
            "@revoked" => Some(Marker::Revoked),
            "@cert-authority" => Some(Marker::CertAuthority),
            m if m.starts_with('@') => return None,
            _ => None,
        };
        if marker.is_some() {
            first = words.next()?;
        }
        let (kind, data) = (words.next()?, words.next()?);
        Some(Self { marker, hosts: first, key: format!("{kind} {data}") })
    }
}

/// Whether a host field lists `name`: hashed, or patterns with negation.
fn matches(hosts: &str, name: &str) -> bool {
    if let Some(hashed) = hosts.strip_prefix("|1|") {
        return hashed_matches(hashed, name);
    }
    let mut any = false;
    for pattern in hosts.split(',') {
        if let Some(negated) = pattern.strip_prefix('!') {
            if crate::inventory::glob_match(negated, name) {
                return false;
            }
        } else if crate::inventory::glob_match(pattern, name) {
            any = true;
        }
    }
    any
}

fn hashed_matches(hashed: &str, name: &str) -> bool {
    let Some((salt, hash)) = hashed.split_once('|') else { return false };
    let (Ok(salt), Ok(hash)) = (B64.decode(salt), B64.decode(hash)) else { return false };
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&salt) else { return false };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

#[cfg(test)]
mod tests;
