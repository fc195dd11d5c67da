//! A job's output: everything the command writes (stdout and stderr together, in the order
//! they came), addressed by offset from its first byte. At most `cap` bytes are kept, in two
//! halves; when the newer half fills, the older one is dropped, so what is kept is always
//! the latest output, between half the cap and the cap of it.
//!
//! While a job runs its kept output is in memory (readers never touch the disk) and mirrored
//! to one file per half in the job's directory (`out-<offset of its first byte>`), so the
//! output survives the node; a job that ended is read from those files.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tunnel_proto::job::OutputFrom;

/// Bytes of output a job keeps at most.
pub(crate) const OUTPUT_CAP: u64 = 8 << 20;

/// The kept output of a running job.
pub(crate) struct OutputLog {
    half: u64,
    total: u64,
    older: Vec<u8>,
    older_start: u64,
    current: Vec<u8>,
    current_start: u64,
    mirror: Option<Mirror>,
}

/// The files that hold a running job's output.
struct Mirror {
    dir: PathBuf,
    file: File,
    file_start: u64,
}

impl OutputLog {
    pub(crate) fn new(cap: u64) -> Self {
        Self {
            half: (cap / 2).max(1),
            total: 0,
            older: Vec::new(),
            older_start: 0,
            current: Vec::new(),
            current_start: 0,
            mirror: None,
        }
    }

    pub(crate) fn cap(&self) -> u64 {
        self.half * 2
    }

    /// Bytes written so far, kept or not.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// The offset of the oldest byte kept.
    pub(crate) fn kept_from(&self) -> u64 {
        if self.older.is_empty() {
            self.current_start
        } else {
            self.older_start
        }
    }

    /// From now on, also writes the output to files in `dir`, starting with what is kept.
    pub(crate) fn mirror_to(&mut self, dir: &Path) -> std::io::Result<()> {
        let mut halves = vec![(self.current_start, &self.current)];
        if !self.older.is_empty() {
            halves.insert(0, (self.older_start, &self.older));
        }
        for (start, bytes) in &halves {
            std::fs::write(segment_path(dir, *start), bytes)?;
        }
        let file = OpenOptions::new().append(true).open(segment_path(dir, self.current_start))?;
        self.mirror = Some(Mirror { dir: dir.to_owned(), file, file_start: self.current_start });
        Ok(())
    }

    /// Adds output. A failure to write the files is returned (the bytes are still kept in
    /// memory); the caller reports it once.
    pub(crate) fn append(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        let mut result = Ok(());
        while !bytes.is_empty() {
            let room = (self.half - self.current.len() as u64) as usize;
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.current.extend_from_slice(now);
            self.total += now.len() as u64;
            if let Some(m) = &mut self.mirror {
                if let Err(e) = m.file.write_all(now) {
                    result = result.and(Err(e));
                }
            }
            if self.current.len() as u64 == self.half {
                let dropped = self.older_start;
                let had_older = !self.older.is_empty();
                self.older = std::mem::take(&mut self.current);
                self.older_start = self.current_start;
                self.current_start = self.total;
                if let Some(m) = &mut self.mirror {
                    if let Err(e) = m.rotate(self.current_start, had_older.then_some(dropped)) {
                        result = result.and(Err(e));
                    }
                }
            }
            bytes = rest;
        }
        result
    }

    /// Up to `max` kept bytes from `from`: the offset of the first, and the bytes.
    pub(crate) fn read(&self, from: OutputFrom, max: usize) -> (u64, Vec<u8>) {
        let start = start_of(from, self.kept_from(), self.total);
        let end = self.total.min(start + max as u64);
        let mut out = Vec::with_capacity((end - start) as usize);
        for (seg_start, seg) in [(self.older_start, &self.older), (self.current_start, &self.current)] {
            let seg_end = seg_start + seg.len() as u64;
            let (lo, hi) = (start.max(seg_start), end.min(seg_end));
            if lo < hi {
                out.extend_from_slice(&seg[(lo - seg_start) as usize..(hi - seg_start) as usize]);
            }
        }
        (start, out)
    }
}

impl Mirror {
    fn rotate(&mut self, start: u64, drop: Option<u64>) -> std::io::Result<()> {
        self.file = OpenOptions::new().create(true).append(true).open(segment_path(&self.dir, start))?;
        self.file_start = start;
        if let Some(old) = drop {
            std::fs::remove_file(segment_path(&self.dir, old))?;
        }
        Ok(())
    }
}

fn start_of(from: OutputFrom, kept_from: u64, total: u64) -> u64 {
    match from {
        OutputFrom::Offset(o) => o.clamp(kept_from, total),
        OutputFrom::Tail(n) => total.saturating_sub(n).max(kept_from),
    }
}

fn segment_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("out-{start}"))
}

/// The output files in a job's directory: `(first offset, path, length)`, oldest first.
fn segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf, u64)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(start) = name.to_str().and_then(|n| n.strip_prefix("out-")).and_then(|n| n.parse().ok()) else {
            continue;
        };
        out.push((start, entry.path(), entry.metadata()?.len()));
    }
    out.sort();
    Ok(out)
}

/// What the files of a job that no longer runs hold: `(kept_from, total)`.
pub(crate) fn extent(dir: &Path) -> std::io::Result<(u64, u64)> {
    let segs = segments(dir)?;
    let kept_from = segs.first().map_or(0, |s| s.0);
    let total = segs.last().map_or(0, |s| s.0 + s.2);
    Ok((kept_from, total))
}

/// Up to `max` bytes from `from` of a job that no longer runs, read from its files.
pub(crate) fn read_files(dir: &Path, from: OutputFrom, max: usize) -> std::io::Result<(u64, Vec<u8>)> {
    let segs = segments(dir)?;
    let kept_from = segs.first().map_or(0, |s| s.0);
    let total = segs.last().map_or(0, |s| s.0 + s.2);
    let start = start_of(from, kept_from, total);
    let end = total.min(start + max as u64);
    let mut out = Vec::with_capacity((end - start) as usize);
    for (seg_start, path, len) in segs {
        let (lo, hi) = (start.max(seg_start), end.min(seg_start + len));
        if lo < hi {
            let mut f = File::open(path)?;
            f.seek(SeekFrom::Start(lo - seg_start))?;
            let before = out.len();
            f.take(hi - lo).read_to_end(&mut out)?;
            if (out.len() - before) as u64 != hi - lo {
                return Err(std::io::Error::other("a job output file shrank while it was read"));
            }
        }
    }
    Ok((start, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: u64) -> Vec<u8> {
        (0..n).map(|i| b'a' + (i % 26) as u8).collect()
    }

    #[test]
    fn the_latest_output_is_kept_in_memory_and_in_the_files_alike() {
        let dir = std::env::temp_dir().join(format!("tunnel-job-output-{}", rand::random::<u64>()));
        std::fs::create_dir(&dir).unwrap();
        let mut log = OutputLog::new(100);
        log.append(&text(30)).unwrap();
        log.mirror_to(&dir).unwrap();
        let all = text(1000);
        // Odd chunk sizes cross the halves' edges.
        for chunk in all[30..].chunks(17) {
            log.append(chunk).unwrap();
        }
        assert_eq!(log.total(), 1000);
        let kept = log.kept_from();
        assert!((900..=950).contains(&kept), "kept from {kept}");
        assert_eq!(extent(&dir).unwrap(), (kept, 1000));
        for from in
            [OutputFrom::Offset(0), OutputFrom::Offset(kept + 7), OutputFrom::Tail(10), OutputFrom::Offset(5000)]
        {
            let mem = log.read(from, 64);
            let disk = read_files(&dir, from, 64).unwrap();
            assert_eq!(mem, disk, "{from:?}");
            let (start, bytes) = mem;
            assert_eq!(bytes, all[start as usize..(start as usize + bytes.len())]);
        }
        assert_eq!(log.read(OutputFrom::Tail(10), 64), (990, all[990..].to_vec()));
        assert_eq!(log.read(OutputFrom::Offset(5000), 64), (1000, vec![]));
        // Two files at most.
        assert!(std::fs::read_dir(&dir).unwrap().count() <= 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_short_output_is_kept_whole() {
        let mut log = OutputLog::new(OUTPUT_CAP);
        log.append(b"hello\n").unwrap();
        assert_eq!(log.read(OutputFrom::Offset(0), 1 << 20), (0, b"hello\n".to_vec()));
        assert_eq!(log.read(OutputFrom::Offset(3), 2), (3, b"lo".to_vec()));
        assert_eq!(log.kept_from(), 0);
    }
}
