//! `tunnel`: parse flags, resolve settings, call the library. Errors print as one line.

/// `println!` that returns an error instead of panicking when stdout is closed
/// (`tunnel peers | head`); only that error is treated as success.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*).map_err(|_| crate::StdoutClosed)?;
    }};
}

/// Stdout went away (the reader of a pipe exited). Not a failure of ours.
#[derive(Debug)]
pub(crate) struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout closed")
    }
}

impl std::error::Error for StdoutClosed {}

mod args;
mod args_work;
mod audit;
mod cp;
mod demo;
mod exec;
mod fleet;
mod forward;
mod git;
mod install;
mod install_mcp;
mod jobs;
mod malloc;
mod mapreduce;
mod mcp;
mod mcp_handoff;
mod progress_bar;
mod query;
mod remote;
mod run;
mod schedule;
mod status;

use clap::Parser;

use crate::args::{Cli, Command};

fn main() {
    malloc::keep_freed_memory();
    let cli = Cli::parse();
    // rmcp logs every error answer it sends (a client's bad arguments, say) as a warning: the
    // client has the answer; the operator's log (tunnel run serves handed-over sessions) need not.
    let default_level =
        if matches!(cli.command, Command::Run(_)) { "info,rmcp::service=error" } else { "warn,rmcp::service=error" };
    tunnel_relay::logging::init(default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => exit_with(&anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => std::process::exit(code),
        Err(e) => exit_with(&e),
    }
}

fn exit_with(e: &anyhow::Error) -> ! {
    // A closed stdout (`tunnel peers | head`) is not a failure. Any other broken pipe is.
    if e.downcast_ref::<StdoutClosed>().is_some() {
        std::process::exit(0);
    }
    eprintln!("tunnel: {}", one_line(e));
    std::process::exit(1);
}

/// The error and its causes on one line, each cause once: library errors often name their
/// cause in their own message already.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let global = cli.global;
    match cli.command {
        Command::Run(args) => run::run(global, args).await,
        Command::Peers(args) => query::peers(global, args).await,
        Command::Id => query::id(global).await,
        Command::Ping(args) => query::ping(global, args).await,
        Command::Exec(args) => exec::run(global, args).await,
        Command::Cp(args) => cp::run(global, args).await,
        Command::Ls(args) => remote::ls(global, args).await,
        Command::Info(args) => remote::info(global, args).await,
        Command::Mode(args) => remote::mode(global, args).await,
        Command::Token => {
            outln!("{}", tunnel_proto::room::generate_token(&mut rand::rngs::OsRng));
            Ok(0)
        }
        Command::Demo => demo::run().await,
        Command::Install(args) => install::install(global, args),
        Command::Uninstall(args) => install::uninstall(global, args),
        Command::InstallMcp(args) => install_mcp::run(global, args),
        Command::Status(args) => status::run(global, args).await,
        Command::Mcp(args) => mcp::run(global, args).await,
        Command::Fleet(cmd) => fleet::run(global, cmd).await,
        Command::Mapreduce(args) => mapreduce::run(global, args).await,
        Command::Audit(cmd) => audit::run(global, cmd).await,
        Command::Jobs(args) => jobs::run(global, args).await,
        Command::Schedule(cmd) => schedule::run(global, cmd).await,
        Command::Git(args) => git::run(global, args).await,
        Command::Task(args) => jobs::task(global, args).await,
        Command::Ssh(args::SshCommand::Hosts(args)) => query::ssh_hosts(global, args).await,
        Command::Forward(args) => forward::run(global, args).await,
        Command::Backups(cmd) => audit::backups(global, cmd).await,
    }
}
