//! Schedules: commands this node runs by itself at the times a cron expression names.
//!
//! Each schedule is a file, `<state>/schedules/<name>.json` ([`Record`]): what to run, when,
//! who asked, the last time the node looked at it, and its newest runs. One task
//! ([`run_loop`]) sleeps until the next run time; each run is an exec of this node on itself
//! that becomes a job at once, so the node's policy at that moment decides it (lower the mode
//! and what it forbids stops running) and the job keeps its output.
//!
//! When the node was down through run times, the next start reports them as missed and, if
//! the schedule says so, runs once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};
use tunnel_proto::job::JobStart;
use tunnel_proto::message::{ExecEvent, ExecSpec};
use tunnel_proto::schedule::ScheduleSpec;
use tunnel_proto::NodeId;

use crate::jobs::store::now_ms;
use crate::Node;

pub(crate) mod answer;
pub(crate) mod cron;

use cron::Cron;

/// Runs a schedule keeps a record of.
const RUNS_KEPT: usize = 50;
/// The longest the loop sleeps before it looks again (a clock that jumped, a new zone file).
const RECHECK: Duration = Duration::from_secs(60);
/// Most missed run times counted after a restart (an every-second schedule down for a week).
const MISSED_MAX: u32 = 100_000;

/// What a schedule's file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub spec: ScheduleSpec,
    pub created_by: NodeId,
    pub created_ms: i64,
    /// Run times up to here have been run, skipped or reported missed.
    pub checked_ms: i64,
    /// Newest last.
    pub runs: Vec<StoredRun>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredRun {
    pub at_ms: i64,
    pub job: Option<u64>,
    pub error: Option<String>,
    pub missed: u32,
}

/// A schedule in memory: its record and its parsed times.
struct Entry {
    record: Record,
    cron: Cron,
    tz: TimeZone,
}

impl Entry {
    fn next_after(&self, after_ms: i64) -> Option<Timestamp> {
        self.cron.next_after(Timestamp::from_millisecond(after_ms).ok()?, &self.tz)
    }
}

/// This node's schedules.
pub(crate) struct Schedules {
    root: Option<PathBuf>,
    entries: Mutex<BTreeMap<String, Entry>>,
    changed: Notify,
}

/// Parses what a schedule's times need: its expression and zone.
pub(crate) fn times_of(spec: &ScheduleSpec) -> Result<(Cron, TimeZone), String> {
    let cron = Cron::parse(&spec.cron)?;
    let tz = match &spec.timezone {
        None => TimeZone::system(),
        Some(name) => TimeZone::get(name).map_err(|e| format!("time zone {name:?}: {e}"))?,
    };
    Ok((cron, tz))
}

/// Names that are safe as file names and unambiguous in `NAME@NODE`.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("schedule name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'"))
    }
}

fn file_of(root: &Path, name: &str) -> PathBuf {
    root.join(format!("{name}.json"))
}

fn save(root: &Path, record: &Record) -> std::io::Result<()> {
    let path = file_of(root, &record.spec.name);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?)?;
    std::fs::rename(tmp, path)
}

impl Schedules {
    /// Loads the schedules under `state_dir`. Run times that passed while the node was down
    /// are counted now; `due_now` gets those that catch up with one run, and how many passed.
    pub(crate) fn open(state_dir: Option<&Path>, due_now: &mut Vec<(String, u32)>) -> Self {
        let root = state_dir.map(|d| d.join("schedules"));
        let mut entries = BTreeMap::new();
        if let Some(root) = &root {
            if let Err(e) = std::fs::create_dir_all(root) {
                tracing::warn!(dir = %root.display(), error = %e, "cannot keep schedules");
            }
            let now = now_ms();
            for file in std::fs::read_dir(root).into_iter().flatten().flatten() {
                let path = file.path();
                if path.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                let loaded = std::fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice::<Record>(&b).map_err(|e| e.to_string()))
                    .and_then(|r| times_of(&r.spec).map(|(cron, tz)| Entry { record: r, cron, tz }));
                let mut entry = match loaded {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "a schedule file cannot be used; it is left as it is");
                        continue;
                    }
                };
                let missed = count_between(&entry, entry.record.checked_ms, now);
                if missed > 0 {
                    if entry.record.spec.catch_up {
                        due_now.push((entry.record.spec.name.clone(), missed));
                    } else {
                        let why = format!("{missed} run time(s) passed while the node was down; skipped (no catch-up)");
                        push_run(&mut entry.record, StoredRun { at_ms: now, job: None, error: Some(why), missed });
                        entry.record.checked_ms = now;
                    }
                }
                if let Err(e) = save(root, &entry.record) {
                    tracing::warn!(file = %path.display(), error = %e, "cannot save a schedule");
                }
                entries.insert(entry.record.spec.name.clone(), entry);
            }
        }
        Self { root, entries: Mutex::new(entries), changed: Notify::new() }
    }

    pub(crate) fn root(&self) -> Result<&Path, String> {
        self.root.as_deref().ok_or_else(|| "this node keeps no schedules (it has no state directory)".into())
    }

    /// Stores a new schedule; its first run is its first time after now.
    pub(crate) fn add(&self, spec: ScheduleSpec, created_by: NodeId) -> Result<Record, String> {
        check_name(&spec.name)?;
        let (cron, tz) = times_of(&spec)?;
        let root = self.root()?;
        let now = now_ms();
        let record = Record { spec, created_by, created_ms: now, checked_ms: now, runs: Vec::new() };
        let mut entries = self.entries.lock().expect("schedules lock");
        if entries.contains_key(&record.spec.name) {
            return Err(format!("a schedule {:?} exists on this node; remove it first", record.spec.name));
        }
        save(root, &record).map_err(|e| format!("cannot save the schedule: {e}"))?;
        entries.insert(record.spec.name.clone(), Entry { record: record.clone(), cron, tz });
        drop(entries);
        self.changed.notify_one();
        Ok(record)
    }

    pub(crate) fn remove(&self, name: &str) -> Result<Record, String> {
        let root = self.root()?;
        let entry = self.entries.lock().expect("schedules lock").remove(name).ok_or_else(|| no_such(name))?;
        std::fs::remove_file(file_of(root, name)).map_err(|e| format!("cannot remove the schedule's file: {e}"))?;
        self.changed.notify_one();
        Ok(entry.record)
    }

    pub(crate) fn get(&self, name: &str) -> Result<(Record, Option<i64>), String> {
        let entries = self.entries.lock().expect("schedules lock");
        let e = entries.get(name).ok_or_else(|| no_such(name))?;
        Ok((e.record.clone(), e.next_after(now_ms()).map(|t| t.as_millisecond())))
    }

    pub(crate) fn list(&self) -> Vec<(Record, Option<i64>)> {
        let now = now_ms();
        let entries = self.entries.lock().expect("schedules lock");
        entries.values().map(|e| (e.record.clone(), e.next_after(now).map(|t| t.as_millisecond()))).collect()
    }

    /// Marks the run times up to `until_ms` as handled; returns the names that came due, with
    /// how many times each passed (more than one: the loop was late, say the machine slept).
    fn take_due(&self, until_ms: i64) -> Vec<(String, u32)> {
        let mut due = Vec::new();
        let mut entries = self.entries.lock().expect("schedules lock");
        for e in entries.values_mut() {
            let n = count_between(e, e.record.checked_ms, until_ms);
            if n > 0 {
                e.record.checked_ms = until_ms;
                due.push((e.record.spec.name.clone(), n));
            }
        }
        due
    }

    /// The earliest next run time of all schedules.
    fn next_due(&self) -> Option<Timestamp> {
        let entries = self.entries.lock().expect("schedules lock");
        entries.values().filter_map(|e| e.next_after(e.record.checked_ms)).min()
    }

    /// Records a run (and the handled time) in the schedule's file.
    fn record_run(&self, name: &str, run: StoredRun, checked_ms: Option<i64>) {
        let Ok(root) = self.root() else { return };
        let mut entries = self.entries.lock().expect("schedules lock");
        let Some(e) = entries.get_mut(name) else { return }; // removed meanwhile
        if let Some(at) = checked_ms {
            e.record.checked_ms = e.record.checked_ms.max(at);
        }
        push_run(&mut e.record, run);
        if let Err(err) = save(root, &e.record) {
            tracing::warn!(schedule = name, error = %err, "cannot save a schedule's run");
        }
    }
}

fn push_run(record: &mut Record, run: StoredRun) {
    record.runs.push(run);
    let excess = record.runs.len().saturating_sub(RUNS_KEPT);
    record.runs.drain(..excess);
}

fn no_such(name: &str) -> String {
    format!("no schedule {name:?} on this node")
}

/// How many run times fall in `(from_ms, to_ms]`.
fn count_between(e: &Entry, from_ms: i64, to_ms: i64) -> u32 {
    let mut n = 0;
    let mut at = from_ms;
    while n < MISSED_MAX {
        match e.next_after(at) {
            Some(t) if t.as_millisecond() <= to_ms => {
                n += 1;
                at = t.as_millisecond();
            }
            _ => break,
        }
    }
    n
}

/// Runs the schedules until the node stops. `due_now` are those catching up after a restart.
pub(crate) async fn run_loop(node: Node, due_now: Vec<(String, u32)>) {
    for (name, missed) in due_now {
        fire(&node, &name, missed, Some(now_ms())).await;
    }
    loop {
        let schedules = node.schedules();
        let wait = match schedules.next_due() {
            Some(t) => Duration::from_millis((t.as_millisecond() - now_ms()).max(0) as u64).min(RECHECK),
            None => RECHECK,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = schedules.changed.notified() => continue,
            _ = node.stopping() => return,
        }
        for (name, times) in schedules.take_due(now_ms()) {
            let node = node.clone();
            // Each run on its own task: a slow start never delays another schedule.
            tokio::spawn(async move { fire(&node, &name, times.saturating_sub(1), None).await });
        }
    }
}

/// Runs a schedule once, now: an exec of this node on itself, detached as a job at once.
/// `missed` run times passed before this one unrun.
pub(crate) async fn fire(node: &Node, name: &str, missed: u32, checked_ms: Option<i64>) -> StoredRun {
    let at_ms = now_ms();
    let found = node.schedules().get(name);
    let created_by = found.as_ref().ok().map(|(r, _)| r.created_by.to_string());
    // The node runs the command as itself, so the schedule must still be its creator's to
    // have: a node dropped from the allow list stops its schedules with it.
    let creator_allowed = |r: &Record| node.policy_check(|p| p.check_caller(&r.created_by));
    let run = match found {
        Err(e) => StoredRun { at_ms, job: None, error: Some(e), missed },
        Ok((record, _)) if creator_allowed(&record).is_err() => {
            let why = creator_allowed(&record).err().map(|r| r.to_string()).unwrap_or_default();
            StoredRun {
                at_ms,
                job: None,
                error: Some(format!("refused: its creator may no longer run commands here ({why})")),
                missed,
            }
        }
        Ok((record, _)) => {
            let spec = ExecSpec {
                request_id: rand::random(),
                command: record.spec.command.clone(),
                env: Vec::new(),
                cwd: record.spec.cwd.clone(),
                timeout_ms: record.spec.timeout_ms,
                output_cap: 0,
                stdin: false,
            };
            let start = JobStart { after_ms: 0, label: format!("schedule:{name}") };
            let (tx, mut events) = mpsc::channel(8);
            let exec = node.exec_as_job(node.id(), crate::JobLaunch::Exec { spec, job: start }, None, tx);
            let read = async {
                let mut run = StoredRun { at_ms, job: None, error: None, missed };
                while let Some(event) = events.recv().await {
                    match event {
                        ExecEvent::Detached(job) => run.job = Some(job.id),
                        ExecEvent::Refused(why) => run.error = Some(format!("refused: {why}")),
                        ExecEvent::Failed(why) => run.error = Some(format!("could not start: {why}")),
                        ExecEvent::Exit(_) => run.error = Some("ended before it became a job".into()),
                        ExecEvent::Stdout(_) | ExecEvent::Stderr(_) => {}
                    }
                }
                run
            };
            let (started, mut run) = tokio::join!(exec, read);
            if let Err(e) = started {
                run.error = Some(format!("could not start: {e}"));
            }
            run
        }
    };
    let detail = serde_json::json!({
        "schedule": name, "created_by": created_by, "job": run.job, "error": run.error, "missed": missed,
    });
    let decision = if run.error.is_some() { "refused" } else { "allowed" };
    node.audit(crate::audit::Entry {
        event: "schedule.run".into(),
        decision: decision.into(),
        detail,
        ..Default::default()
    });
    node.schedules().record_run(name, run.clone(), checked_ms);
    run
}
