//! `tunnel forward`: open port forwards in the running node, list them, close them.

use anyhow::{bail, Context};
use tunnel_node::control::{ControlRequest, ControlResponse};
use tunnel_node::forward::{ForwardInfo, ForwardKind, ForwardSpec, SocksAuth};

use crate::args::{ForwardArgs, ForwardCommand, Global};
use crate::query::unexpected;
use crate::remote::client;

pub(crate) async fn run(global: Global, args: ForwardArgs) -> anyhow::Result<i32> {
    match &args.command {
        Some(ForwardCommand::List { json }) => return list(&global, *json).await,
        Some(ForwardCommand::Close { id }) => return close(&global, *id).await,
        None => {}
    }
    let specs = specs(&args)?;
    if args.foreground {
        return foreground(&global, specs, args.json).await;
    }
    let mut opened: Vec<ForwardInfo> = Vec::new();
    for spec in specs {
        match client(&global).await?.request(&ControlRequest::ForwardOpen { spec, hold: false }).await? {
            ControlResponse::Forward(info) => opened.push(info),
            other => {
                // All or nothing: close what this command already opened.
                for info in &opened {
                    let _ = client(&global).await?.request(&ControlRequest::ForwardClose { id: info.id }).await;
                }
                return Err(unexpected(other));
            }
        }
    }
    print_opened(&opened, args.json)?;
    Ok(0)
}

/// The forwards the flags ask for (the node checks the rest).
fn specs(args: &ForwardArgs) -> anyhow::Result<Vec<ForwardSpec>> {
    let via = args.via.clone().context("name the peer (or ssh:HOST) to forward through")?;
    if args.local.is_empty() && args.remote.is_empty() && args.dynamic.is_empty() {
        bail!("give at least one of -L, -R or -D (see `tunnel forward --help`)");
    }
    let socks_auth = socks_auth(args)?;
    if socks_auth.is_some() && args.dynamic.is_empty() {
        bail!("--socks-user is for -D forwards");
    }
    let (public, mut specs) = (args.public, Vec::new());
    for (texts, kind) in
        [(&args.local, ForwardKind::Local), (&args.remote, ForwardKind::Remote), (&args.dynamic, ForwardKind::Socks)]
    {
        for text in texts {
            let auth = if kind == ForwardKind::Socks { socks_auth.clone() } else { None };
            specs.push(ForwardSpec::parse(&via, kind, text, public, auth).map_err(anyhow::Error::msg)?);
        }
    }
    Ok(specs)
}

fn socks_auth(args: &ForwardArgs) -> anyhow::Result<Option<SocksAuth>> {
    let Some(user) = args.socks_user.clone() else {
        if args.socks_password_file.is_some() {
            bail!("--socks-password-file needs --socks-user");
        }
        return Ok(None);
    };
    let password = match &args.socks_password_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the SOCKS password file {}", path.display()))?
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
        None => std::env::var("TUNNEL_SOCKS_PASSWORD")
            .context("--socks-user needs a password: set TUNNEL_SOCKS_PASSWORD or pass --socks-password-file")?,
    };
    Ok(Some(SocksAuth { user, password }))
}

/// Each forward held on its own control connection until Ctrl-C (or the node stops).
async fn foreground(global: &Global, specs: Vec<ForwardSpec>, json: bool) -> anyhow::Result<i32> {
    // Each connection waits in its own task; dropping the set closes them all.
    let mut held = tokio::task::JoinSet::new();
    let mut opened = Vec::new();
    for spec in specs {
        let mut conn = client(global).await?;
        match conn.request(&ControlRequest::ForwardOpen { spec, hold: true }).await? {
            // Dropping `held` on the way out closes the ones already open.
            ControlResponse::Forward(info) => opened.push(info),
            other => return Err(unexpected(other)),
        }
        held.spawn(wait_closed(conn.into_stream()));
    }
    print_opened(&opened, json)?;
    if !json {
        eprintln!("forwarding until Ctrl-C");
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(0),
        _ = held.join_next() => bail!("the node closed the forward (it stopped, or `tunnel forward close` was run)"),
    }
}

async fn wait_closed(mut stream: tokio::net::UnixStream) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
}

fn describe(f: &ForwardInfo) -> String {
    let to = f.to.as_deref().unwrap_or("*");
    match f.kind {
        ForwardKind::Local => format!("{} -> {} -> {to}", f.listen, f.via),
        ForwardKind::Socks => format!("socks5://{} -> {} -> *", f.listen, f.via),
        ForwardKind::Remote => format!("{}:{} -> here -> {to}", f.via, f.listen),
    }
}

fn print_opened(opened: &[ForwardInfo], json: bool) -> anyhow::Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(opened)?);
        return Ok(());
    }
    for f in opened {
        outln!("forward {} ({}): {}", f.id, f.kind, describe(f));
    }
    Ok(())
}

async fn list(global: &Global, json: bool) -> anyhow::Result<i32> {
    let forwards = match client(global).await?.request(&ControlRequest::ForwardList).await? {
        ControlResponse::Forwards(list) => list,
        other => return Err(unexpected(other)),
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&forwards)?);
        return Ok(0);
    }
    if forwards.is_empty() {
        outln!("no forwards; open one with `tunnel forward PEER -L PORT:HOST:PORT`");
        return Ok(0);
    }
    let header = ["ID", "KIND", "FORWARD", "STATE", "CONNS", "OUT", "IN", "ERRORS"].map(String::from);
    let rows: Vec<[String; 8]> = forwards
        .iter()
        .map(|f| {
            [
                f.id.to_string(),
                format!("{}{}", f.kind, if f.held { " (fg)" } else { "" }),
                describe(f),
                f.state.clone(),
                format!("{}/{}", f.active, f.total),
                bytes(f.bytes_out),
                bytes(f.bytes_in),
                match &f.last_error {
                    Some(e) => format!("{} (last: {e})", f.errors),
                    None => f.errors.to_string(),
                },
            ]
        })
        .collect();
    crate::query::print_columns(&header, &rows)?;
    Ok(0)
}

async fn close(global: &Global, id: u64) -> anyhow::Result<i32> {
    match client(global).await?.request(&ControlRequest::ForwardClose { id }).await? {
        ControlResponse::Forward(f) => {
            outln!(
                "closed forward {id}: {} connections, {} out, {} in",
                f.total,
                bytes(f.bytes_out),
                bytes(f.bytes_in)
            );
            Ok(0)
        }
        other => Err(unexpected(other)),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}
