//! `tunnel-relay install` / `uninstall`: the relay as a service, hardened (it only moves
//! ciphertext, so it gets a read-only system and no privilege but binding low ports).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use tunnel_service::{Hardening, Manager, Plan, PlannedFile, Scope, ServiceSpec};

#[derive(clap::Args)]
pub(crate) struct InstallArgs {
    /// A service of your own (systemd --user, or a LaunchAgent) instead of the system's.
    #[arg(long)]
    user: bool,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:443")]
    listen: String,
    /// UDP address for the STUN server that helps nodes find direct paths; `off` for none.
    #[arg(long, default_value = "0.0.0.0:3478")]
    stun_listen: String,
    /// PEM certificate chain to serve TLS with (renew it in place and `systemctl reload`).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// File holding an access token clients must present (a private relay).
    #[arg(long, value_name = "FILE")]
    access_token_file: Option<PathBuf>,
    /// Where the binary goes (default /usr/local/bin, or ~/.local/bin with --user).
    #[arg(long, value_name = "DIR")]
    prefix: Option<PathBuf>,
    /// Print every file it would write and command it would run; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Stage under DIR instead of /: write the files there and run no command.
    #[arg(long, value_name = "DIR", hide = true)]
    root: Option<PathBuf>,
}

#[derive(clap::Args)]
pub(crate) struct UninstallArgs {
    #[arg(long)]
    user: bool,
    #[arg(long)]
    dry_run: bool,
    #[arg(long, value_name = "DIR", hide = true)]
    root: Option<PathBuf>,
}

fn spec(scope: Scope, program: PathBuf, args: Vec<String>, home: &Path) -> ServiceSpec {
    ServiceSpec {
        name: "tunnel-relay".into(),
        description: "tunnel relay: routes end-to-end encrypted traffic between peers".into(),
        program,
        args,
        scope,
        hardening: Hardening::Relay,
        log_file: Some(match scope {
            Scope::System => PathBuf::from("/var/log/tunnel-relay.log"),
            Scope::User => home.join("Library/Logs/tunnel-relay.log"),
        }),
    }
}

pub(crate) fn install(a: InstallArgs) -> anyhow::Result<()> {
    let scope = tunnel_service::scope(a.user, a.root.is_some())?;
    let home = tunnel_service::home()?;
    let manager = Manager::native();
    let prefix = a.prefix.clone().unwrap_or_else(|| tunnel_service::default_prefix(scope, &home));
    let (program, binary) = tunnel_service::binary(&prefix, "tunnel-relay").context("finding this program's binary")?;
    let mut plan = Plan::default();
    let mut args = vec!["--listen".to_owned(), a.listen.clone()];
    if a.stun_listen != "off" {
        args.extend(["--stun-listen".to_owned(), a.stun_listen.clone()]);
    }
    if let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) {
        // Loaded now, so a bad pair is an error here, not a service restarting forever.
        tunnel_tls::ServerTls::load(cert, key)?;
        for (flag, file) in [("--tls-cert", cert), ("--tls-key", key)] {
            args.extend([flag.to_owned(), std::path::absolute(file)?.display().to_string()]);
        }
    }
    if let Some(file) = &a.access_token_file {
        let token = tunnel_service::read_secret(file, "access token")?;
        if token.len() < 16 {
            bail!("the access token file {} must hold one token of at least 16 characters", file.display());
        }
        let kept = match scope {
            Scope::System => PathBuf::from("/etc/tunnel/relay-access-token"),
            Scope::User => home.join(".config/tunnel/relay-access-token"),
        };
        plan.files.push(PlannedFile {
            path: kept.clone(),
            contents: format!("{token}\n").into_bytes(),
            mode: 0o600,
            shown: Some("(the access token)".into()),
        });
        args.extend(["--access-token-file".to_owned(), kept.display().to_string()]);
    }
    let spec = spec(scope, program, args, &home);
    plan.files.extend(binary);
    spec.add_to(&mut plan, manager, &home);
    plan.notes
        .push("after renewing the certificate in place: systemctl reload tunnel-relay (open connections stay)".into());
    print!("{}", tunnel_service::execute(&plan, a.dry_run, a.root.as_deref())?);
    Ok(())
}

pub(crate) fn uninstall(a: UninstallArgs) -> anyhow::Result<()> {
    let scope = tunnel_service::scope(a.user, a.root.is_some())?;
    let home = tunnel_service::home()?;
    let manager = Manager::native();
    let spec = spec(scope, PathBuf::new(), vec![], &home);
    let plan = spec.removal(manager, &home);
    print!("{}", tunnel_service::execute(&plan, a.dry_run, a.root.as_deref())?);
    Ok(())
}
