//! `outpost-cloud`: the hospital server's command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use outpost_cloud::CloudIdentity;
use outpost_cloud::enroll::enroll_relay;
use outpost_cloud::identity::parse_ttl;
use outpost_shared::{RelayId, Role, RoomId, UserId};

#[derive(Parser)]
#[command(
    name = "outpost-cloud",
    version,
    about = "Outpost cloud: keys, device tokens and relay enrollment"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a new cloud: token-signing key, relay CA, server certificate, config, data.
    Init {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Print a signed device token on stdout.
    Token {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        user: UserId,
        /// worker, doctor, supervisor or admin.
        #[arg(long)]
        role: Role,
        /// A room the user belongs to (repeat for several).
        #[arg(long = "room")]
        rooms: Vec<RoomId>,
        /// Lifetime, e.g. 30d, 12h, 15m or 90s.
        #[arg(long, default_value = "30d", value_parser = parse_ttl)]
        ttl: u64,
    },
    /// Write the enrollment bundle a relay needs to join this cloud.
    EnrollRelay {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        relay: RelayId,
        #[arg(long)]
        out: PathBuf,
        /// The cloud's QUIC address as the relay will reach it (HOST:PORT).
        #[arg(long)]
        cloud_addr: String,
    },
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("outpost-cloud: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Init { dir } => {
            let id = CloudIdentity::init(&dir)?;
            println!("created cloud {} in {}", id.cloud_id, dir.display());
        }
        Cmd::Token {
            dir,
            user,
            role,
            rooms,
            ttl,
        } => {
            let id = CloudIdentity::load(&dir)?;
            println!("{}", id.issue_token(user, role, rooms, now_secs(), ttl)?);
        }
        Cmd::EnrollRelay {
            dir,
            relay,
            out,
            cloud_addr,
        } => {
            let id = CloudIdentity::load(&dir)?;
            if cloud_addr
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                anyhow::bail!("--cloud-addr {cloud_addr:?} must be HOST:PORT");
            }
            let bundle = enroll_relay(&id, &relay, &cloud_addr)?;
            let json = serde_json::to_string_pretty(&bundle)?;
            write_private(&out, &json)?;
            println!(
                "wrote enrollment bundle for relay {relay} to {}",
                out.display()
            );
        }
    }
    Ok(())
}

/// The bundle holds the relay's private key: create it readable by its owner only.
fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}
