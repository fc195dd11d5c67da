//! `tunnel install` / `tunnel uninstall`: this machine's node as a service.
//!
//! The room settings go into the config file (mode 0600), never onto the service's command
//! line, where every user of the machine could read them in `ps`.

use std::io::{BufRead as _, IsTerminal as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use tunnel_service::{Hardening, Manager, Plan, PlannedFile, Scope, ServiceSpec};

use crate::args::{Global, InstallArgs, UninstallArgs};

/// Where a scope keeps things.
struct Layout {
    config: PathBuf,
    state: PathBuf,
    /// `Some` for the system service: it and `state` are written into the config so the CLI
    /// finds the node. A user service uses the defaults the CLI finds anyway.
    runtime: Option<PathBuf>,
    home: PathBuf,
}

fn layout(scope: Scope) -> anyhow::Result<Layout> {
    let home = tunnel_service::home()?;
    Ok(match scope {
        Scope::System => {
            // systemd makes these (StateDirectory, RuntimeDirectory); on macOS the node does.
            let (state, runtime) = if cfg!(target_os = "macos") {
                ("/Library/Application Support/tunnel", "/var/run/tunnel")
            } else {
                ("/var/lib/tunnel", "/run/tunnel")
            };
            Layout {
                config: PathBuf::from(tunnel_node::settings::SYSTEM_CONFIG),
                state: PathBuf::from(state),
                runtime: Some(PathBuf::from(runtime)),
                home,
            }
        }
        Scope::User => {
            let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
            Layout {
                config: tunnel_node::settings::user_config_file(&env).context("HOME is not set")?,
                state: tunnel_node::settings::default_state_dir(&env).context("HOME is not set")?,
                runtime: None,
                home,
            }
        }
    })
}

pub(crate) fn node_spec(scope: Scope, program: PathBuf, config: &Path, home: &Path) -> ServiceSpec {
    ServiceSpec {
        name: "tunnel".into(),
        description: "tunnel node: end-to-end encrypted peer mesh".into(),
        program,
        args: vec!["run".into(), "--keep-trying".into(), "--config".into(), config.display().to_string()],
        scope,
        hardening: Hardening::Node,
        log_file: Some(match scope {
            Scope::System => PathBuf::from("/var/log/tunnel.log"),
            Scope::User => home.join("Library/Logs/tunnel.log"),
        }),
    }
}

pub(crate) fn install(global: Global, args: InstallArgs) -> anyhow::Result<i32> {
    let scope = tunnel_service::scope(args.user, args.root.is_some())?;
    let layout = layout(scope)?;
    let config_path = global.config.clone().unwrap_or_else(|| layout.config.clone());
    let staged = |p: &Path| stage(args.root.as_deref(), p);
    let existing = match std::fs::read_to_string(staged(&config_path)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", config_path.display())),
    };
    let config =
        merged_config(&existing, &args, &layout).with_context(|| format!("updating {}", config_path.display()))?;
    check_config(&config, &config_path)?;
    let manager = Manager::native();
    let prefix = args.prefix.clone().unwrap_or_else(|| tunnel_service::default_prefix(scope, &layout.home));
    let (program, binary) = tunnel_service::binary(&prefix, "tunnel").context("finding this program's binary")?;
    let spec = node_spec(scope, program, &config_path, &layout.home);
    let mut plan = Plan::default();
    let shown = Some(hide_secrets(&config));
    plan.files.push(PlannedFile { path: config_path.clone(), contents: config.into_bytes(), mode: 0o600, shown });
    plan.files.extend(binary);
    spec.add_to(&mut plan, manager, &layout.home);
    if scope == Scope::User && manager == Manager::Systemd {
        plan.notes.push(
            "a user service runs while you are logged in; to keep it running after you log out: \
             loginctl enable-linger $USER"
                .into(),
        );
    }
    plan.notes.push(format!("check it with: tunnel status{}", status_hint(scope, &config_path, &layout)));
    outln!("{}", tunnel_service::execute(&plan, args.dry_run, args.root.as_deref())?.trim_end());
    Ok(0)
}

pub(crate) fn uninstall(global: Global, args: UninstallArgs) -> anyhow::Result<i32> {
    let scope = tunnel_service::scope(args.user, args.root.is_some())?;
    let layout = layout(scope)?;
    let manager = Manager::native();
    let config_path = global.config.clone().unwrap_or_else(|| layout.config.clone());
    let spec = node_spec(scope, PathBuf::new(), &config_path, &layout.home);
    let mut plan = spec.removal(manager, &layout.home);
    if args.purge {
        let purge = vec![layout.state.clone(), config_path.clone()];
        if !args.dry_run && !args.yes && !confirm(&purge)? {
            bail!("nothing removed");
        }
        plan.remove.extend(purge);
    } else {
        plan.notes.push(format!(
            "kept the node key and audit log in {} and the config {} (--purge removes them)",
            layout.state.display(),
            config_path.display()
        ));
    }
    outln!("{}", tunnel_service::execute(&plan, args.dry_run, args.root.as_deref())?.trim_end());
    Ok(0)
}

fn stage(root: Option<&Path>, p: &Path) -> PathBuf {
    match root {
        Some(r) => r.join(p.strip_prefix("/").unwrap_or(p)),
        None => p.to_owned(),
    }
}

fn status_hint(scope: Scope, config: &Path, layout: &Layout) -> String {
    match scope {
        Scope::System if config == layout.config => String::new(),
        _ => format!(" --config {}", config.display()),
    }
}

/// The existing config with the given settings set, everything else (comments included) kept.
fn merged_config(existing: &str, args: &InstallArgs, layout: &Layout) -> anyhow::Result<String> {
    let mut doc: toml_edit::DocumentMut = existing.parse().context("the existing config is not valid TOML")?;
    let mut set = |key: &str, value: Option<String>| {
        if let Some(v) = value {
            doc[key] = toml_edit::value(v);
        }
    };
    set("relay", args.relay.clone());
    set("room", args.room.clone());
    set("token", args.token_file.as_deref().map(|p| tunnel_service::read_secret(p, "token")).transpose()?);
    let access = args.access_token_file.as_deref().map(|p| tunnel_service::read_secret(p, "access token"));
    set("access_token", access.transpose()?);
    let ca = args.relay_ca.as_deref().map(std::path::absolute).transpose().context("--relay-ca")?;
    set("relay_ca", ca.map(|p| p.display().to_string()));
    set("name", args.name.clone());
    set("mode", args.mode.clone());
    if let Some(tags) = &args.tags {
        let list: toml_edit::Array = tags.split(',').map(str::trim).filter(|t| !t.is_empty()).collect();
        doc["tags"] = toml_edit::value(list);
    }
    if let Some(runtime) = &layout.runtime {
        for (key, dir) in [("state_dir", &layout.state), ("runtime_dir", runtime)] {
            if !doc.contains_key(key) {
                doc[key] = toml_edit::value(dir.display().to_string());
            }
        }
    }
    Ok(doc.to_string())
}

/// The config as a dry run shows it: the tokens' values replaced.
fn hide_secrets(config: &str) -> String {
    config
        .lines()
        .map(|line| match line.split_once('=') {
            Some((key, _)) if matches!(key.trim(), "token" | "access_token") => format!("{}= (hidden)", key),
            _ => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The service would only restart forever on a config it cannot use: check it now.
fn check_config(text: &str, path: &Path) -> anyhow::Result<()> {
    let env = |k: &str| if k == "HOME" { std::env::var(k).ok() } else { None };
    let settings = tunnel_node::Settings::from_config_text(path, text, env)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    settings.room_settings().map_err(|e| {
        anyhow::anyhow!(
            "{e}\n(tunnel install takes --relay URL --room NAME --token-file FILE, or finds them in {})",
            path.display()
        )
    })?;
    Ok(())
}

fn confirm(paths: &[PathBuf]) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("--purge removes the node key, audit log and config; pass --yes to confirm without a terminal");
    }
    let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    eprint!("remove {} for good? [y/N] ", list.join(" and "));
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
