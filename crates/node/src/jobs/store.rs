//! Jobs on disk: one directory per job under `<state>/jobs/<seq>`, holding `job.json` (its
//! [`Record`]) and its output files. Records are replaced atomically (write, then rename).
//!
//! After a restart, a record that still says `running` belongs to a job whose process died
//! with the node, or outlived it with nobody reading its output: either way it is `lost`
//! (a survivor's process group is killed, so nothing runs that no job accounts for).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tunnel_proto::job::{JobInfo, JobState};

/// Ended jobs older than this are removed.
pub(crate) const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Past this many bytes of jobs on disk, the oldest ended jobs are removed.
pub(crate) const TOTAL_BYTES: u64 = 1 << 30;

/// What `job.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub info: JobInfo,
    /// The command's process (its group leader), while it runs.
    pub pid: Option<i32>,
    /// When that process started (`/proc/PID/stat` field 22), so that a recycled pid is never
    /// mistaken for it.
    pub pid_start: Option<u64>,
    /// For a job with no process of its own (an SSH host's command, a fleet's children): why
    /// it is lost if found running after its node stopped, set while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orphaned: Option<String>,
}

impl Record {
    /// The record of a job that ended: no process left, nothing to say if found running.
    pub(crate) fn ended(info: JobInfo) -> Self {
        Self { info, pid: None, pid_start: None, orphaned: None }
    }
}

pub(crate) fn job_dir(root: &Path, id: u64) -> PathBuf {
    root.join(id.to_string())
}

pub(crate) fn write_record(dir: &Path, record: &Record) -> std::io::Result<()> {
    let tmp = dir.join("job.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?)?;
    std::fs::rename(tmp, dir.join("job.json"))
}

pub(crate) fn read_record(dir: &Path) -> std::io::Result<Record> {
    let bytes = std::fs::read(dir.join("job.json"))?;
    serde_json::from_slice(&bytes).map_err(|e| std::io::Error::other(format!("{}: {e}", dir.display())))
}

/// Every job directory under `root`: `(seq, dir)`, in no particular order.
pub(crate) fn job_dirs(root: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(root) else { return Vec::new() };
    entries.flatten().filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path()))).collect()
}

/// When the process `pid` started, if it is alive.
pub(crate) fn process_start(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may itself hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Marks the jobs the last run of the node left `running` as `lost`; returns the highest
/// job number in use.
pub(crate) fn recover(root: &Path) -> u64 {
    let mut highest = 0;
    for (seq, dir) in job_dirs(root) {
        highest = highest.max(seq);
        let Ok(mut record) = read_record(&dir) else { continue };
        if !record.info.state.is_running() {
            continue;
        }
        let survivor = record.pid.filter(|&pid| record.pid_start.is_some() && process_start(pid) == record.pid_start);
        if let Some(pid) = survivor.and_then(rustix::process::Pid::from_raw) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::Kill);
        }
        let (kept_from, total) = crate::jobs::output::extent(&dir).unwrap_or((0, record.info.output_bytes));
        record.info.kept_from = kept_from;
        record.info.output_bytes = total;
        let orphaned = record.orphaned.take();
        let reason = match survivor {
            Some(_) => "the node stopped while the job ran; its process was still running and was killed",
            None => orphaned
                .as_deref()
                .unwrap_or("the node stopped while the job ran; its process ended with it, exit status unknown"),
        };
        mark_lost(&mut record.info, reason);
        record.pid = None;
        save_lost(&dir, record);
    }
    highest
}

/// A job whose end nobody saw: `lost`, now, and why.
pub(crate) fn mark_lost(info: &mut JobInfo, reason: &str) {
    info.state = JobState::Lost;
    info.ended_ms = Some(now_ms());
    info.reason = Some(reason.to_owned());
}

/// Writes a lost job's record; a failure is logged (there is nobody else to tell).
pub(crate) fn save_lost(dir: &Path, record: Record) {
    if let Err(e) = write_record(dir, &record) {
        tracing::warn!(job = record.info.id, error = %e, "could not record a job as lost");
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).into_iter().flatten().flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum()
}

/// Removes ended jobs past the retention, then the oldest ended ones while the jobs take more
/// than `total_cap` bytes. Running jobs are never removed.
pub(crate) fn prune(root: &Path, now_ms: i64, retention: Duration, total_cap: u64) {
    let mut ended = Vec::new();
    let mut total = 0;
    for (seq, dir) in job_dirs(root) {
        let bytes = dir_bytes(&dir);
        total += bytes;
        match read_record(&dir) {
            Ok(r) if r.info.state.is_running() => {}
            Ok(r) => ended.push((r.info.ended_ms.unwrap_or(r.info.started_ms), seq, dir, bytes)),
            // A directory without a readable record (a crash while it was created): junk.
            Err(_) => ended.push((0, seq, dir, bytes)),
        }
    }
    ended.sort();
    for (ended_ms, _, dir, bytes) in ended {
        let old = now_ms.saturating_sub(ended_ms) > retention.as_millis() as i64;
        if !old && total <= total_cap {
            break;
        }
        if std::fs::remove_dir_all(&dir).is_ok() {
            total -= bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u64, state: JobState, ended_ms: Option<i64>) -> JobInfo {
        let node = tunnel_proto::SecretKey::generate(&mut rand::rngs::OsRng).public();
        JobInfo {
            id,
            node,
            caller: node,
            label: "local".into(),
            command: "sleep 1".into(),
            started_ms: 1,
            ended_ms,
            state,
            exit_code: None,
            signal: None,
            reason: None,
            output_bytes: 0,
            kept_from: 0,
            output_cap: 100,
        }
    }

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tunnel-jobs-{}", rand::random::<u64>()));
        std::fs::create_dir(&dir).unwrap();
        dir
    }

    #[test]
    fn a_job_left_running_is_lost_after_a_restart_and_a_surviving_process_is_killed() {
        use std::os::unix::process::CommandExt;
        let root = scratch();
        let mut child = std::process::Command::new("sleep").arg("30").process_group(0).spawn().unwrap();
        let pid = child.id() as i32;
        for (id, pid, pid_start) in [(3, Some(pid), process_start(pid)), (5, Some(i32::MAX - 1), Some(1))] {
            let dir = job_dir(&root, id);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("out-0"), b"partial").unwrap();
            write_record(&dir, &Record { info: info(id, JobState::Running, None), pid, pid_start, orphaned: None })
                .unwrap();
        }
        assert_eq!(recover(&root), 5);
        let status = child.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "the survivor was killed");
        for (id, word) in [(3, "killed"), (5, "unknown")] {
            let r = read_record(&job_dir(&root, id)).unwrap();
            assert_eq!(r.info.state, JobState::Lost);
            assert_eq!(r.info.output_bytes, 7);
            assert!(r.info.reason.as_deref().unwrap().contains(word), "{:?}", r.info.reason);
        }
        std::fs::remove_dir_all(root).unwrap();
    }

    /// Jobs with no process of their own say what became of the work they stood for.
    #[test]
    fn ssh_and_fleet_jobs_left_running_say_where_their_work_went() {
        let root = scratch();
        let (ssh, fleet) = (crate::ssh::job::SSH_CHANNEL_CLOSED, crate::jobs::fleet::FLEET_UNFOLLOWED);
        for (id, reason) in [(1, ssh), (2, fleet)] {
            let dir = job_dir(&root, id);
            std::fs::create_dir(&dir).unwrap();
            let record = Record {
                info: info(id, JobState::Running, None),
                pid: None,
                pid_start: None,
                orphaned: Some(reason.into()),
            };
            write_record(&dir, &record).unwrap();
        }
        recover(&root);
        for (id, reason) in [(1, ssh), (2, fleet)] {
            let r = read_record(&job_dir(&root, id)).unwrap();
            assert_eq!((r.info.state, r.info.reason.as_deref()), (JobState::Lost, Some(reason)));
        }
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn pruning_removes_old_and_then_oldest_ended_jobs_never_running_ones() {
        let root = scratch();
        let day = 24 * 3600 * 1000;
        let now = 30 * day;
        let jobs = [
            (1, JobState::Exited, Some(now - 10 * day)),
            (2, JobState::Running, None),
            (3, JobState::Exited, Some(now - day)),
            (4, JobState::Cancelled, Some(now - 1000)),
        ];
        for (id, state, ended) in jobs {
            let dir = job_dir(&root, id);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("out-0"), vec![b'x'; 1000]).unwrap();
            write_record(&dir, &Record::ended(info(id, state, ended))).unwrap();
        }
        prune(&root, now, RETENTION, 1 << 20);
        let left = |root: &Path| {
            let mut ids: Vec<u64> = job_dirs(root).into_iter().map(|(id, _)| id).collect();
            ids.sort();
            ids
        };
        assert_eq!(left(&root), vec![2, 3, 4], "the 10-day-old job goes");
        // Over the byte cap: the oldest ended job goes first, the running one stays.
        let two_jobs = dir_bytes(&job_dir(&root, 2)) + dir_bytes(&job_dir(&root, 4));
        prune(&root, now, RETENTION, two_jobs);
        assert_eq!(left(&root), vec![2, 4]);
        prune(&root, now, RETENTION, 0);
        assert_eq!(left(&root), vec![2]);
        std::fs::remove_dir_all(root).unwrap();
    }
}
