//! `tunnel install-mcp CLIENT`: adds tunnel's MCP server to an AI client's own config (or
//! removes it), merging into what is there: other servers, comments and formatting stay; the
//! original is backed up first; running it twice changes nothing; `--dry-run` shows a diff.

mod clients;
mod diff;
mod jsonc;
mod yaml;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

pub(crate) use clients::CLIENTS;
use clients::{Client, Format};

use crate::args::{Global, InstallMcpArgs};

/// What goes into the client's config.
pub(crate) struct Server {
    pub(crate) name: String,
    pub(crate) command: String,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
}

pub(crate) fn run(global: Global, args: InstallMcpArgs) -> anyhow::Result<i32> {
    let home = tunnel_service::home()?;
    if args.list {
        return list(&home, &args.name);
    }
    let known = || CLIENTS.iter().map(|c| c.id).collect::<Vec<_>>().join(", ");
    let Some(id) = args.client.as_deref() else { bail!("name a client ({}), or pass --list", known()) };
    let client =
        CLIENTS.iter().find(|c| c.id == id).with_context(|| format!("unknown client {id:?}; known: {}", known()))?;
    let server = server(&global, &args)?;
    let path = (client.config)(&home);
    if let Some(cli) = client.cli.filter(|c| !args.dry_run && on_path(clients::cli_program(c))) {
        clients::run_cli(cli, &server, args.uninstall)?;
        outln!("{}: {} through its own CLI", client.label, if args.uninstall { "removed" } else { "added" });
        return Ok(0);
    }
    let old = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let edited = if args.uninstall { remove(client, &old, &server.name) } else { add(client, &old, &server) };
    let new = match edited {
        Ok(Some(new)) => new,
        Ok(None) => {
            outln!(
                "{}: nothing to do ({})",
                client.label,
                if args.uninstall { "tunnel is not in it" } else { "already up to date" }
            );
            return Ok(0);
        }
        Err(why) => bail!("{}: {} is left untouched: {why}", client.label, path.display()),
    };
    if new == old {
        outln!("{}: nothing to do (already up to date)", client.label);
        return Ok(0);
    }
    if args.dry_run {
        outln!("dry run: {} would change:\n{}", path.display(), diff::lines(&old, &new).trim_end());
        return Ok(0);
    }
    write(&path, &old, &new)?;
    outln!(
        "{}: {} {} in {}",
        client.label,
        if args.uninstall { "removed" } else { "added" },
        server.name,
        path.display()
    );
    if !args.uninstall {
        outln!("restart {} to pick it up", client.label);
    }
    Ok(0)
}

fn server(global: &Global, args: &InstallMcpArgs) -> anyhow::Result<Server> {
    let command = std::env::current_exe()?.canonicalize()?.display().to_string();
    let mut mcp_args = vec!["mcp".to_owned()];
    if let Some(config) = &global.config {
        mcp_args.extend(["--config".into(), std::path::absolute(config)?.display().to_string()]);
    }
    if let Some(tools) = &args.tools {
        tunnel_mcp::ToolGroup::parse_list(tools).map_err(anyhow::Error::msg)?;
        mcp_args.extend(["--tools".into(), tools.clone()]);
    }
    let mut env = Vec::new();
    if args.embed_settings {
        let s = tunnel_node::Settings::resolve(global.flags(), |k| std::env::var(k).ok())?;
        let room = s.room_settings()?;
        env.push(("TUNNEL_RELAY".into(), room.relay.to_owned()));
        env.push(("TUNNEL_ROOM".into(), room.room.to_owned()));
        env.push(("TUNNEL_TOKEN".into(), room.token.to_owned()));
        if let Some(t) = &s.access_token {
            env.push(("TUNNEL_ACCESS_TOKEN".into(), t.clone()));
        }
        if let Some(ca) = &s.relay_trust.ca_file {
            env.push(("TUNNEL_RELAY_CA".into(), ca.display().to_string()));
        }
    }
    Ok(Server { name: args.name.clone(), command, args: mcp_args, env })
}

fn add(client: &Client, old: &str, server: &Server) -> Result<Option<String>, String> {
    match client.format {
        Format::Json { parents, shape } => {
            let mut path: Vec<&str> = parents.to_vec();
            path.push(&server.name);
            let value = shape.entry(server);
            if jsonc::get(old, &path)?.as_ref() == Some(&value) {
                return Ok(None);
            }
            jsonc::set(old, &path, &value).map(Some)
        }
        Format::CodexToml => clients::codex_set(old, server).map(Some),
        Format::YamlKey(top) => {
            yaml::set(old, top, yaml::Entry::Key(&server.name), &clients::goose_body(server)).map(Some)
        }
        Format::YamlNamed(top) => {
            yaml::set(old, top, yaml::Entry::Named(&server.name), &clients::continue_body(server)).map(Some)
        }
    }
}

fn remove(client: &Client, old: &str, name: &str) -> Result<Option<String>, String> {
    match client.format {
        Format::Json { parents, .. } => {
            let mut path: Vec<&str> = parents.to_vec();
            path.push(name);
            jsonc::remove(old, &path)
        }
        Format::CodexToml => clients::codex_remove(old, name),
        Format::YamlKey(top) => yaml::remove(old, top, yaml::Entry::Key(name)),
        Format::YamlNamed(top) => yaml::remove(old, top, yaml::Entry::Named(name)),
    }
}

/// Whether the config names a server `name`; `Err` for a file that does not parse.
fn present(client: &Client, text: &str, name: &str) -> Result<bool, String> {
    Ok(match client.format {
        Format::Json { parents, .. } => {
            let mut path: Vec<&str> = parents.to_vec();
            path.push(name);
            jsonc::get(text, &path)?.is_some()
        }
        Format::CodexToml => clients::codex_has(text, name)?,
        Format::YamlKey(top) => yaml::get(text, top, yaml::Entry::Key(name))?.is_some(),
        Format::YamlNamed(top) => yaml::get(text, top, yaml::Entry::Named(name))?.is_some(),
    })
}

fn list(home: &Path, name: &str) -> anyhow::Result<i32> {
    outln!("{:<15} {:<11} {:<8} CONFIG", "CLIENT", "FOUND", "TUNNEL");
    for client in CLIENTS {
        let path = (client.config)(home);
        let cli = client.cli.filter(|c| on_path(clients::cli_program(c)));
        let (found, has) = match std::fs::read_to_string(&path) {
            Ok(text) => (
                "config",
                match present(client, &text, name) {
                    Ok(true) => "yes".to_owned(),
                    Ok(false) => "no".to_owned(),
                    Err(_) => "unreadable".to_owned(),
                },
            ),
            Err(_) if cli.is_some() => ("cli", "?".to_owned()),
            Err(_) => ("no", "-".to_owned()),
        };
        outln!("{:<15} {:<11} {:<8} {}", client.id, found, has, path.display());
    }
    Ok(0)
}

/// Writes the new text whole after backing up the old.
fn write(path: &Path, old: &str, new: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let existed = path.exists();
    // Client configs may hold other servers' secrets: a new one is private, an old one keeps its mode.
    let mode = if existed { std::fs::metadata(path)?.permissions().mode() & 0o7777 } else { 0o600 };
    if existed {
        let mut backup = path.as_os_str().to_owned();
        backup.push(".tunnel-backup");
        let backup = PathBuf::from(backup);
        tunnel_service::write_file(&backup, old.as_bytes(), mode)?;
        outln!("backed up {} to {}", path.display(), backup.display());
    }
    tunnel_service::write_file(path, new.as_bytes(), mode)?;
    Ok(())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}
