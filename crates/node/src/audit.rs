//! The audit log: `<state>/audit.jsonl`, one JSON record per line, append-only. Each record
//! carries the SHA-256 of the line before it, so editing, deleting or reordering any record
//! breaks the chain at that point; `<state>/audit.head` holds the last sequence number and
//! hash, so cutting records off the end shows too. `verify` names the first broken record.
//!
//! Records are written with one `write` each (O_APPEND) and synced to disk on shutdown and
//! every few seconds, not per record: an fsync per operation would cost more than the
//! operation on most disks.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audited event: what the caller filled in, plus the chain fields the log adds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    #[serde(flatten)]
    pub entry: Entry,
    /// SHA-256 (hex) of the previous line.
    pub prev: String,
}

/// What a caller records. `detail` holds the operation's arguments with secrets redacted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub event: String,
    pub caller: Option<String>,
    pub caller_name: Option<String>,
    pub decision: String,
    pub rule: Option<String>,
    pub detail: serde_json::Value,
    pub exit_code: Option<i32>,
    pub bytes: Option<u64>,
    pub duration_ms: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("audit log {path}: record {line} (seq {seq:?}) is broken: {reason}")]
    Broken { path: PathBuf, line: u64, seq: Option<u64>, reason: String },
}

struct Tail {
    file: File,
    seq: u64,
    last_hash: String,
    /// `audit.head`, kept open and overwritten in place: replacing its contents by truncation
    /// makes ext4 flush the file when it is closed (`auto_da_alloc`), which cost 0.2 ms per
    /// record, more than a whole `exec true`.
    head: File,
    head_len: u64,
}

pub struct AuditLog {
    path: PathBuf,
    tail: Mutex<Tail>,
}

fn hash_line(line: &str) -> String {
    Sha256::digest(line.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Replaces the values of arguments that look like secrets (`--password=x`, `TOKEN=x`).
pub fn redact(arg: &str) -> String {
    const SECRET_WORDS: &[&str] = &["pass", "token", "secret", "key", "auth", "credential"];
    match arg.split_once('=') {
        Some((k, _)) if SECRET_WORDS.iter().any(|w| k.to_ascii_lowercase().contains(w)) => format!("{k}=<redacted>"),
        _ => arg.to_owned(),
    }
}

impl AuditLog {
    /// Opens (or creates, mode 0600) `<state>/audit.jsonl` and finds where the chain ends.
    pub fn open(state_dir: &Path) -> Result<Self, AuditError> {
        let path = state_dir.join("audit.jsonl");
        let io = |source| AuditError::Io { path: path.clone(), source };
        crate::identity::create_private_dir(state_dir).map_err(io)?;
        let mut opts = OpenOptions::new();
        opts.create(true).append(true).read(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut file = opts.open(&path).map_err(io)?;
        let (seq, last_hash) = last_record(&mut file).map_err(io)?;
        let head_path = state_dir.join("audit.head");
        let mut opts = OpenOptions::new();
        opts.create(true).write(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        // Not truncated here: until the next record, it still says how far the log went.
        let head = opts.open(&head_path).map_err(|source| AuditError::Io { path: head_path.clone(), source })?;
        let head_len = head.metadata().map_err(|source| AuditError::Io { path: head_path, source })?.len();
        Ok(Self { path, tail: Mutex::new(Tail { file, seq, last_hash, head, head_len }) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record. Failures are reported, never silently dropped.
    pub fn append(&self, entry: Entry) -> Result<AuditRecord, AuditError> {
        let io = |source| AuditError::Io { path: self.path.clone(), source };
        let mut tail = self.tail.lock().expect("audit lock");
        let record = AuditRecord { seq: tail.seq + 1, time_ms: now_ms(), entry, prev: tail.last_hash.clone() };
        let line = serde_json::to_string(&record).expect("audit records serialize");
        tail.file.write_all(format!("{line}\n").as_bytes()).map_err(io)?;
        tail.seq = record.seq;
        tail.last_hash = hash_line(&line);
        let head = format!("{} {}\n", tail.seq, tail.last_hash);
        let len = head.len() as u64;
        std::os::unix::fs::FileExt::write_all_at(&tail.head, head.as_bytes(), 0).map_err(io)?;
        // Sequence numbers only grow, so the text only lengthens; it is shorter only after the
        // log was cut, and then what is left of the old text goes.
        if len < tail.head_len {
            tail.head.set_len(len).map_err(io)?;
        }
        tail.head_len = len;
        Ok(record)
    }

    /// Forces records to disk (on shutdown and periodically).
    pub fn sync(&self) -> Result<(), AuditError> {
        let tail = self.tail.lock().expect("audit lock");
        tail.file.sync_data().map_err(|source| AuditError::Io { path: self.path.clone(), source })
    }
}

/// The last record's seq and hash, reading only the end of the file.
fn last_record(file: &mut File) -> std::io::Result<(u64, String)> {
    let len = file.metadata()?.len();
    let start = len.saturating_sub(1 << 20);
    file.seek(SeekFrom::Start(start))?;
    let mut last = None;
    for line in BufReader::new(&mut *file).lines() {
        let line = line?;
        if !line.is_empty() {
            last = Some(line);
        }
    }
    file.seek(SeekFrom::End(0))?;
    Ok(match last.and_then(|l| serde_json::from_str::<AuditRecord>(&l).ok().map(|r| (r.seq, hash_line(&l)))) {
        Some(found) => found,
        None => (0, GENESIS.to_owned()),
    })
}

/// Checks the whole chain; returns how many records it holds.
pub fn verify(state_dir: &Path) -> Result<u64, AuditError> {
    let path = state_dir.join("audit.jsonl");
    let broken =
        |line: u64, seq: Option<u64>, reason: String| AuditError::Broken { path: path.clone(), line, seq, reason };
    let file = File::open(&path).map_err(|source| AuditError::Io { path: path.clone(), source })?;
    let mut prev = GENESIS.to_owned();
    let mut n = 0;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| AuditError::Io { path: path.clone(), source })?;
        let lineno = i as u64 + 1;
        let record: AuditRecord =
            serde_json::from_str(&line).map_err(|e| broken(lineno, None, format!("not a valid record: {e}")))?;
        if record.prev != prev {
            return Err(broken(
                lineno,
                Some(record.seq),
                "does not follow the record before it (edited, deleted or reordered)".into(),
            ));
        }
        if record.seq != lineno {
            return Err(broken(
                lineno,
                Some(record.seq),
                format!("sequence number {} where {lineno} was due", record.seq),
            ));
        }
        prev = hash_line(&line);
        n = lineno;
    }
    if let Ok(head) = std::fs::read_to_string(state_dir.join("audit.head")) {
        let mut parts = head.split_whitespace();
        let (seq, hash) = (parts.next().and_then(|s| s.parse::<u64>().ok()), parts.next());
        if seq != Some(n) || hash != Some(prev.as_str()) {
            return Err(broken(
                n + 1,
                seq,
                format!(
                    "the log ends at record {n}, but {} records were written (records removed from the end)",
                    seq.unwrap_or(0)
                ),
            ));
        }
    }
    Ok(n)
}

/// The newest `limit` records whose event starts with `prefix`, as the log's own lines
/// (oldest first), read in one pass whatever the log's size.
pub fn newest_lines(state_dir: &Path, limit: usize, prefix: &str) -> Result<Vec<String>, AuditError> {
    #[derive(Deserialize)]
    struct Event {
        event: String,
    }
    let path = state_dir.join("audit.jsonl");
    let io = |source| AuditError::Io { path: path.clone(), source };
    let file = match File::open(&path) {
        Ok(f) => f,
        // No operation yet, no log yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(io(e)),
    };
    let mut out = std::collections::VecDeque::with_capacity(limit.min(10_000));
    for line in BufReader::new(file).lines() {
        let line = line.map_err(io)?;
        let matches = serde_json::from_str::<Event>(&line).is_ok_and(|r| r.event.starts_with(prefix));
        if matches && limit > 0 {
            if out.len() == limit {
                out.pop_front();
            }
            out.push_back(line);
        }
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tunnel-audit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn write(d: &Path, n: u64) {
        let log = AuditLog::open(d).unwrap();
        for i in 0..n {
            log.append(Entry {
                event: "exec".into(),
                decision: "allowed".into(),
                detail: serde_json::json!({ "i": i }),
                ..Default::default()
            })
            .unwrap();
        }
    }

    fn lines(d: &Path) -> Vec<String> {
        std::fs::read_to_string(d.join("audit.jsonl")).unwrap().lines().map(str::to_owned).collect()
    }

    fn put(d: &Path, lines: &[String]) {
        std::fs::write(d.join("audit.jsonl"), lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    }

    #[test]
    fn chain_survives_reopen_and_verifies() {
        let d = dir("ok");
        write(&d, 3);
        write(&d, 2);
        assert_eq!(verify(&d).unwrap(), 5);
        let seqs = |lines: Vec<String>| -> Vec<u64> {
            lines.iter().map(|l| serde_json::from_str::<AuditRecord>(l).unwrap().seq).collect()
        };
        assert_eq!(seqs(newest_lines(&d, 2, "").unwrap()), vec![4, 5]);
        assert_eq!(seqs(newest_lines(&d, 10, "no-such-event").unwrap()), Vec::<u64>::new());
        assert_eq!(newest_lines(&d, 10, "ex").unwrap().len(), 5);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn edits_deletions_reorders_and_truncation_are_named() {
        let d = dir("tamper");
        write(&d, 5);
        let good = lines(&d);
        let broken_at = |d: &Path| match verify(d) {
            Err(AuditError::Broken { line, .. }) => line,
            other => panic!("expected a broken chain, got {other:?}"),
        };
        let mut edited = good.clone();
        edited[2] = edited[2].replace("\"i\":2", "\"i\":9");
        put(&d, &edited);
        assert_eq!(broken_at(&d), 4, "an edit breaks the next record's link");
        let mut deleted = good.clone();
        deleted.remove(1);
        put(&d, &deleted);
        assert_eq!(broken_at(&d), 2);
        let mut reordered = good.clone();
        reordered.swap(1, 2);
        put(&d, &reordered);
        assert_eq!(broken_at(&d), 2);
        put(&d, &good[..4]);
        assert_eq!(broken_at(&d), 5, "cut off the end");
        put(&d, &good);
        assert_eq!(verify(&d).unwrap(), 5);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_head_is_rewritten_in_place_and_never_keeps_stale_text() {
        let d = dir("head");
        write(&d, 10);
        let head = || std::fs::read_to_string(d.join("audit.head")).unwrap();
        assert!(head().starts_with("10 ") && head().lines().count() == 1, "{}", head());
        // Opening the log does not touch the head: a cut log still shows as cut.
        put(&d, &lines(&d)[..5]);
        drop(AuditLog::open(&d).unwrap());
        assert!(head().starts_with("10 "));
        assert!(matches!(verify(&d), Err(AuditError::Broken { line: 6, .. })));
        // The next record (seq 6) has a shorter head line than "10 ...": nothing of it is left.
        write(&d, 1);
        let last = hash_line(lines(&d).last().unwrap());
        assert_eq!(head(), format!("6 {last}\n"));
        assert_eq!(verify(&d).unwrap(), 6);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(redact("--password=hunter2"), "--password=<redacted>");
        assert_eq!(redact("API_TOKEN=abc"), "API_TOKEN=<redacted>");
        assert_eq!(redact("--name=web"), "--name=web");
    }
}
