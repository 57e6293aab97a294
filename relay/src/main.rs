//! `outpost-relay`: the hub's command line. Arguments, logging, configuration and exit
//! codes live here; everything else is in the library.
//!
//! Exit codes: 0 after a clean shutdown, 64 for bad configuration or a bad enrollment
//! bundle (systemd's `RestartPreventExitStatus=64` keeps a misconfigured hub from
//! restart-looping), 2 for command-line usage errors (clap), 1 for any other failure.

use std::path::PathBuf;
use std::process::ExitCode;

mod init;

use clap::{Parser, Subcommand};
use outpost_engine::{Listeners, RelayConfig, run};
use tokio_util::sync::CancellationToken;

const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(name = "outpost-relay", version, about = "Outpost hub: stores and delivers a village's messages")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Provision a relay directory from the cloud's enrollment bundle.
    Init {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        bundle: PathBuf,
    },
    /// Run the hub.
    Run {
        #[arg(long)]
        dir: PathBuf,
        /// Device listener address (overrides server.listen), e.g. 0.0.0.0:8080.
        #[arg(long)]
        ws: Option<String>,
        /// HTTPS listener under the hub's own LAN name (overrides lan_https.listen), e.g.
        /// 0.0.0.0:443.
        #[arg(long)]
        https: Option<String>,
        /// The cloud's QUIC address, HOST:PORT; repeat it for a cloud of several nodes,
        /// tried in this order (replaces uplink.cloud).
        #[arg(long, value_name = "HOST:PORT")]
        cloud: Vec<String>,
    },
    /// Revoke device tokens on this hub alone (for when its uplink is down; the cloud's
    /// `revoke` reaches every hub). A running hub applies it within seconds.
    Revoke {
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        what: outpost_engine::cli::RevokeArgs,
    },
    /// Write what the cloud has not confirmed (messages, receipts) to a USB stick, for a
    /// village without a network: encrypted to the cloud, signed by this hub. Works while
    /// the hub runs. Take the stick to the cloud (`outpost-cloud import`), and its answer
    /// back (`outpost-relay import`).
    Export {
        #[arg(long)]
        dir: PathBuf,
        /// A folder on the stick (the file is named RELAY.to-cloud.outpost) or a file.
        #[arg(long)]
        to: PathBuf,
        /// Largest file to write, in MiB: past it the oldest entries go and the rest wait
        /// for the next trip (the command says so).
        #[arg(long, default_value_t = outpost_engine::mule::DEFAULT_MAX_MB)]
        max_mb: u64,
    },
    /// Apply the cloud's answer from a stick: its receipt (senders see `forwarded`) and
    /// the doctors' replies for this hub's rooms. Importing it twice changes nothing.
    Import {
        #[arg(long)]
        dir: PathBuf,
        /// A folder on the stick (holding RELAY.from-cloud.outpost) or the file.
        path: PathBuf,
    },
    /// Print the hub's audit log as JSON lines (security events; no message contents).
    Audit {
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        page: outpost_engine::cli::AuditArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    outpost_engine::cli::init_tracing();
    match cli.cmd {
        Cmd::Init { dir, bundle } => match init::init(&dir, &bundle) {
            Ok(relay) => {
                println!("relay {relay} provisioned in {}", dir.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("outpost-relay: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Cmd::Run { dir, ws, https, cloud } => run_hub(dir, ws, https, cloud),
        Cmd::Revoke { dir, what } => one_shot(&dir, |config, db| {
            let key = outpost_shared::bundle::decode_public_key(&config.identity.token_public_key)
                .map_err(anyhow::Error::msg)?;
            let verifier = outpost_shared::TokenVerifier::new(&key, config.identity.cloud_id.clone());
            println!("{}", outpost_engine::cli::revoke(db, &verifier, what)?);
            Ok(())
        }),
        Cmd::Export { dir, to, max_mb } => stick(outpost_engine::mule::cli::hub_export(&dir, &to, max_mb)),
        Cmd::Import { dir, path } => stick(outpost_engine::mule::cli::hub_import(&dir, &path)),
        Cmd::Audit { dir, page } => one_shot(&dir, |_, db| outpost_engine::cli::print_audit(db, &page)),
    }
}

/// Runs a stick command (`export`, `import`) and prints what it did.
fn stick(f: impl std::future::Future<Output = anyhow::Result<String>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("outpost-relay: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(f) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("outpost-relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a command on the hub's database (configuration loaded as `run` would).
fn one_shot(dir: &std::path::Path, f: impl FnOnce(&RelayConfig, &std::path::Path) -> anyhow::Result<()>) -> ExitCode {
    let config = match RelayConfig::load(dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("outpost-relay: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match f(&config, &config.db_path(dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("outpost-relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_hub(dir: PathBuf, ws: Option<String>, https: Option<String>, cloud: Vec<String>) -> ExitCode {
    let config = match RelayConfig::load_with(&dir, |c| {
        if let Some(ws) = ws {
            c.server.listen = ws;
        }
        if let Some(https) = https {
            c.lan_https.listen = https;
        }
        c.uplink.override_clouds(cloud);
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("outpost-relay: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    config.testing.apply();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let workers = config.server.effective_worker_threads(cores);
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("outpost-relay: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        tracing::info!(workers, cores, "runtime started");
        let listener = match tokio::net::TcpListener::bind(&config.server.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("outpost-relay: cannot listen on {}: {e}", config.server.listen);
                return ExitCode::FAILURE;
            }
        };
        let scheme = if config.server.tls_cert.is_some() { "wss" } else { "ws" };
        let addr = listener.local_addr();
        // Tests and scripts read this line to learn the bound port; it comes once the
        // store is open, so a hub that cannot open its database never announces itself.
        let announce = Box::new(move || match addr {
            Ok(addr) => println!("outpost-relay listening on {scheme}://{addr}/ws"),
            Err(e) => eprintln!("outpost-relay: {e}"),
        });
        let shutdown = CancellationToken::new();
        let hub = run(config, dir, Listeners { ws: listener, https: None }, shutdown.clone(), announce);
        match outpost_engine::cli::until_signal(shutdown, hub).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("outpost-relay: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
