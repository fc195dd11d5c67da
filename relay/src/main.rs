//! `tunnel-relay`: parse flags, start the relay library, stop gracefully on SIGTERM/ctrl-c.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tunnel_relay::{Relay, RelayConfig};

mod install;

#[derive(Parser)]
#[command(
    name = "tunnel-relay",
    version,
    about = "Self-hosted tunnel relay: routes end-to-end encrypted traffic between peers"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<RelayCommand>,
    /// Address to listen on (WebSocket at /, plus /healthz and /metrics).
    #[arg(long, env = "TUNNEL_RELAY_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Also answer STUN binding requests on this UDP address (e.g. 0.0.0.0:3478), so nodes
    /// learn their public address for direct paths. Nodes ask the relay's host on 3478 by
    /// default.
    #[arg(long, env = "TUNNEL_RELAY_STUN_LISTEN", value_name = "ADDR")]
    stun_listen: Option<String>,
    /// Require `Authorization: Bearer TOKEN` from clients (a private relay).
    #[arg(long, env = "TUNNEL_RELAY_ACCESS_TOKEN", hide_env_values = true)]
    access_token: Option<String>,
    /// Read the access token from this file (keeps it out of `ps`; what the service uses).
    #[arg(long, value_name = "FILE", conflicts_with = "access_token")]
    access_token_file: Option<std::path::PathBuf>,
    /// Most peers in one room.
    #[arg(long, default_value_t = RelayConfig::default().max_peers_per_room)]
    max_peers_per_room: usize,
    /// Most simultaneous connections.
    #[arg(long, default_value_t = RelayConfig::default().max_connections)]
    max_connections: usize,
    /// Outgoing queue per connection, in KiB; frames beyond it are dropped and the sender told.
    #[arg(long, default_value_t = RelayConfig::default().mailbox_bytes / 1024)]
    mailbox_kib: usize,
    /// Sustained send rate allowed per connection, in KiB/s.
    #[arg(long, default_value_t = RelayConfig::default().rate_bytes_per_sec / 1024)]
    rate_kib: u64,
    /// Seconds a connection has from TCP accept to a verified join.
    #[arg(long, default_value_t = 10)]
    handshake_timeout_secs: u64,
    /// Serve TLS (wss://) with this PEM certificate chain; reloaded on SIGHUP. Without it the
    /// relay serves plain ws:// (for use behind a TLS-terminating proxy).
    #[arg(long, env = "TUNNEL_RELAY_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, RSA or EC).
    #[arg(long, env = "TUNNEL_RELAY_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() {
    tunnel_relay::logging::init("info");
    if let Err(e) = run(Args::parse()).await {
        eprintln!("tunnel-relay: {e:#}");
        std::process::exit(1);
    }
}

#[derive(clap::Subcommand)]
enum RelayCommand {
    /// Put this relay into service (systemd, or launchd on macOS); `--dry-run` shows how.
    Install(install::InstallArgs),
    /// Stop and remove the relay's service.
    Uninstall(install::UninstallArgs),
}

async fn run(mut args: Args) -> anyhow::Result<()> {
    match args.command.take() {
        Some(RelayCommand::Install(a)) => return install::install(a),
        Some(RelayCommand::Uninstall(a)) => return install::uninstall(a),
        None => {}
    }
    if let Some(path) = &args.access_token_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        args.access_token = Some(text.trim().to_owned());
    }
    if args.access_token.as_deref() == Some("") {
        anyhow::bail!("--access-token is empty");
    }
    let tls = tunnel_tls::ServerTls::from_flags(args.tls_cert.as_deref(), args.tls_key.as_deref())?;
    let defaults = RelayConfig::default();
    let config = RelayConfig {
        tls,
        access_token: args.access_token,
        max_peers_per_room: args.max_peers_per_room.max(1),
        max_connections: args.max_connections.max(1),
        mailbox_bytes: (args.mailbox_kib * 1024).max(tunnel_proto::relay::MAX_FRAME),
        rate_bytes_per_sec: args.rate_kib.max(1) * 1024,
        rate_burst_bytes: defaults.rate_burst_bytes.max(args.rate_kib * 1024 / 4),
        handshake_timeout: Duration::from_secs(args.handshake_timeout_secs.max(1)),
        ..defaults
    };
    let relay = Relay::bind(&args.listen, config).await.context("starting the relay")?;
    println!("tunnel-relay listening on {}", relay.url());
    let _stun = match &args.stun_listen {
        Some(addr) => {
            let stun = tunnel_relay::StunServer::bind(addr)
                .await
                .with_context(|| format!("starting the STUN server on UDP {addr}"))?;
            println!("tunnel-relay answering STUN on udp {}", stun.local_addr());
            Some(stun)
        }
        None => None,
    };
    shutdown_signal().await;
    eprintln!("tunnel-relay: shutting down; telling peers to reconnect");
    relay.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
