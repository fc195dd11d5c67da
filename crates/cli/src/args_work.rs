//! Flags of the commands for work that outlives a call: jobs, tasks, schedules, and git.

use clap::{Args, Subcommand};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct JobsArgs {
    #[command(subcommand)]
    pub(crate) command: Option<JobsCommand>,
    /// Whose jobs: a peer, or a target expression (`all`, `tag:web`); default every peer.
    pub(crate) target: Option<String>,
    /// One JSON object per job.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Subcommand)]
pub(crate) enum JobsCommand {
    /// Print a job's output (what is kept of it: the newest 8 MiB at most).
    Logs {
        /// The job, `SEQ@PEER`.
        id: String,
        /// Keep printing as the job writes, until it ends.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Start this many bytes before the end.
        #[arg(long, value_name = "BYTES", conflicts_with = "since")]
        tail: Option<u64>,
        /// Start at this byte offset (as a previous read ended).
        #[arg(long, value_name = "OFFSET")]
        since: Option<u64>,
    },
    /// Wait for a job to end; exits with its exit code (124 if the wait timed out).
    Wait {
        id: String,
        /// Give up waiting after this many seconds (the job runs on).
        #[arg(long, value_name = "SECS")]
        timeout: Option<f64>,
    },
    /// Stop a job and everything it started (SIGTERM, then SIGKILL after 5 s).
    Cancel { id: String },
}

#[derive(Args)]
pub(crate) struct TaskArgs {
    /// The peer whose agent does the work.
    pub(crate) target: String,
    /// What to do, in words.
    pub(crate) prompt: String,
    /// Where the agent works on the peer (absolute).
    #[arg(long, value_name = "DIR")]
    pub(crate) cwd: Option<String>,
}

#[derive(Args)]
pub(crate) struct GitArgs {
    /// Print the structured answer as JSON (branch, ahead/behind, files, commits, text).
    #[arg(long)]
    pub(crate) json: bool,
    /// PEER:PATH (or ssh:HOST:PATH) of the repository.
    pub(crate) repo: String,
    pub(crate) verb: String,
    /// git's own arguments for the verb (`-m MESSAGE`, `origin main`, ...).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) args: Vec<String>,
}

#[derive(Subcommand)]
pub(crate) enum ScheduleCommand {
    /// Store a schedule on a peer, which runs it from then on (under its policy at each run).
    Add {
        /// The peer that stores and runs it.
        target: String,
        /// When: five fields (minute hour day month weekday), or six with seconds first.
        #[arg(long)]
        cron: String,
        /// Its name on the peer (default: the program's name and a random suffix).
        #[arg(long)]
        name: Option<String>,
        /// The time zone the cron times are in (an IANA name; default the peer's own).
        #[arg(long, value_name = "TZ")]
        timezone: Option<String>,
        /// After the peer was down through run times, run once when it is back (default:
        /// skip them; either way they are reported).
        #[arg(long)]
        catch_up: bool,
        /// Kill each run after this many seconds.
        #[arg(long, value_name = "SECS")]
        timeout: Option<f64>,
        /// Working directory on the peer.
        #[arg(long, value_name = "DIR")]
        cwd: Option<String>,
        /// Run this string with `sh -c` instead of an argv after `--`.
        #[arg(long, value_name = "STRING")]
        shell: Option<String>,
        #[arg(last = true, value_name = "ARGV")]
        argv: Vec<String>,
    },
    /// The schedules of every peer `TARGET` selects (default all).
    List {
        target: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a schedule (`NAME@PEER`); runs already started go on as jobs.
    Rm { id: String },
    /// A schedule's newest runs: when, the job, its exit, the end of its output.
    Runs {
        id: String,
        #[arg(short = 'n', default_value_t = 10)]
        n: u32,
        #[arg(long)]
        json: bool,
    },
    /// Run a schedule now, as if it came due; prints the job.
    RunNow { id: String },
}
