//! `outpost-cloud`: the hospital server's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use outpost_cloud::database::Database;
use outpost_cloud::enroll::enroll_relay;
use outpost_cloud::identity::parse_ttl;
use outpost_cloud::{CloudConfig, CloudIdentity};
use outpost_shared::{RelayId, Role, RoomId, UserId};
use outpost_store_sqlite::{AuditEvent, AuditKind};

#[derive(Parser)]
#[command(name = "outpost-cloud", version, about = "Outpost cloud: keys, device tokens and relay enrollment")]
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
    /// Run the cloud: relays' QUIC endpoint, doctors' WebSocket endpoint, HTTP API.
    /// Settings: DIR/cloud.toml and OUTPOST_CLOUD_ variables (docs/configuration.md).
    Run {
        #[arg(long)]
        dir: PathBuf,
        /// WebSocket and HTTP listener, e.g. 0.0.0.0:8443 (replaces `[server] listen`).
        #[arg(long)]
        ws: Option<String>,
        /// QUIC listener for relays, e.g. 0.0.0.0:4433 (replaces `[server] quic_listen`).
        #[arg(long)]
        quic: Option<String>,
        /// TCP listener for relays whose network drops UDP, e.g. 0.0.0.0:4433, or `off`
        /// (replaces `[server] tcp_listen`; by default the --quic address, on TCP).
        #[arg(long)]
        tcp: Option<String>,
        /// Serve the WebSocket/HTTP listener over TLS with this certificate (PEM chain,
        /// the server's certificate first); needs --tls-key. Replaces `[server] tls_cert`.
        #[arg(long)]
        tls_cert: Option<PathBuf>,
        /// The private key of --tls-cert (PEM).
        #[arg(long)]
        tls_key: Option<PathBuf>,
        /// Run on this PostgreSQL database (postgres://USER@HOST:PORT/DB) as one of
        /// several nodes; replaces `[storage] database`. Unset: SQLite in DIR/data.
        #[arg(long)]
        database: Option<String>,
    },
    /// Move this cloud's SQLite database (DIR/data/cloud.db) and its media files
    /// (DIR/data/media) into an empty PostgreSQL database, keeping every cursor, mark and
    /// the epoch: hubs and doctors carry on without a resync. Stop the cloud first;
    /// afterwards run it with --database.
    Migrate {
        #[arg(long)]
        dir: PathBuf,
        /// The PostgreSQL database to move into (postgres://USER@HOST:PORT/DB).
        #[arg(long)]
        database: String,
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
        /// The cloud's PostgreSQL database, if it runs on one (else `[storage] database`).
        #[arg(long)]
        database: Option<String>,
    },
    /// Write the enrollment bundle a relay needs to join this cloud.
    EnrollRelay {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        relay: RelayId,
        #[arg(long)]
        out: PathBuf,
        /// The cloud's QUIC address as the relay will reach it (HOST:PORT). Repeat it for
        /// a cloud of several nodes: the hub tries them in this order and fails over
        /// between them. One address makes a bundle every hub release reads.
        #[arg(long = "cloud-addr", value_name = "HOST:PORT", required = true)]
        cloud_addrs: Vec<String>,
    },
    /// Revoke device tokens everywhere: recorded in the cloud's database, applied by the
    /// running cloud within seconds and sent to every relay over its uplink.
    Revoke {
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        what: outpost_engine::cli::RevokeArgs,
        /// The cloud's PostgreSQL database, if it runs on one (else `[storage] database`).
        #[arg(long)]
        database: Option<String>,
    },
    /// Put a room under legal hold: nothing of it is removed by retention or deleted
    /// until it is released. Recorded in the audit log.
    Hold {
        #[arg(long)]
        dir: PathBuf,
        room: RoomId,
        /// Why (a case number, a request): kept in the audit log.
        #[arg(long, default_value = "")]
        reason: String,
        /// The cloud's PostgreSQL database, if it runs on one (else `[storage] database`).
        #[arg(long)]
        database: Option<String>,
    },
    /// Release a room's legal hold (recorded in the audit log).
    Release {
        #[arg(long)]
        dir: PathBuf,
        room: RoomId,
        #[arg(long, default_value = "")]
        reason: String,
        /// The cloud's PostgreSQL database, if it runs on one (else `[storage] database`).
        #[arg(long)]
        database: Option<String>,
    },
    /// Erase a room's messages received before a date, with their receipts, from the
    /// cloud's database (overwritten, not only unlinked), and record who did it and how
    /// many in the audit log. Refused while the room is under legal hold. Hubs keep
    /// their copies until their own retention removes them.
    Delete {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        room: RoomId,
        /// YYYY-MM-DD (UTC): messages received before the start of this day go.
        #[arg(long, value_parser = parse_date)]
        before: u64,
        /// Who asked (recorded in the audit log beside `cli`).
        #[arg(long, default_value = "cli")]
        by: String,
        /// PostgreSQL only: rewrite the tables afterwards (`VACUUM FULL`) so the erased
        /// rows' old versions leave the disk now; the tables are locked while it runs. A
        /// SQLite cloud overwrites erased content as it deletes (`secure_delete`).
        #[arg(long)]
        vacuum_full: bool,
        /// The cloud's PostgreSQL database, if it runs on one (else `[storage] database`).
        #[arg(long)]
        database: Option<String>,
    },
    /// Import hubs' USB sticks: every RELAY.to-cloud.outpost in PATH (a stick's folder)
    /// or the file PATH, each exactly once however often it comes, each answered beside it
    /// (RELAY.from-cloud.outpost: the cloud's receipt and its replies for that hub's
    /// rooms; take it back and run `outpost-relay import`). Works while the cloud runs.
    Import {
        #[arg(long)]
        dir: PathBuf,
        path: PathBuf,
        /// Largest answer file, in MiB (the rest waits for the next trip).
        #[arg(long, default_value_t = outpost_engine::mule::DEFAULT_MAX_MB)]
        max_mb: u64,
        /// The cloud's PostgreSQL database, if it runs on one (else `[storage] database`).
        #[arg(long)]
        database: Option<String>,
    },
    /// Write the answer for a hub on demand, without a stick from it: the cloud's receipt
    /// and everything of its rooms it does not hold yet (RELAY.from-cloud.outpost in the
    /// folder PATH, or the file PATH).
    Export {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        relay: RelayId,
        #[arg(long)]
        to: PathBuf,
        #[arg(long, default_value_t = outpost_engine::mule::DEFAULT_MAX_MB)]
        max_mb: u64,
        /// The cloud's PostgreSQL database, if it runs on one (else `[storage] database`).
        #[arg(long)]
        database: Option<String>,
    },
    /// Print the cloud's audit log as JSON lines (security events; no message contents).
    Audit {
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        page: outpost_engine::cli::AuditArgs,
        /// The cloud's PostgreSQL database, if it runs on one (else `[storage] database`).
        #[arg(long)]
        database: Option<String>,
    },
}

/// Token times come from the one wall clock every token decision reads.
fn now_secs() -> u64 {
    outpost_engine::clock::now_secs()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cmd = match cli.cmd {
        Cmd::Run { dir, ws, quic, tcp, tls_cert, tls_key, database } => {
            return serve(dir, ServeFlags { ws, quic, tcp, tls_cert, tls_key, database });
        }
        other => other,
    };
    match run(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("outpost-cloud: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Exit code for bad configuration or usage of `run` (as the relay's).
const EXIT_CONFIG: u8 = 64;

/// The flags of `run` that override `cloud.toml`.
struct ServeFlags {
    ws: Option<String>,
    quic: Option<String>,
    tcp: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    database: Option<String>,
}

fn serve(dir: PathBuf, flags: ServeFlags) -> ExitCode {
    let ServeFlags { ws, quic, tcp, tls_cert, tls_key, database } = flags;
    outpost_engine::cli::init_tracing();
    let tls_flags = match (tls_cert, tls_key) {
        (None, None) => None,
        // Flags are relative to where the command runs, not to the cloud directory.
        (Some(cert), Some(key)) => Some((absolute(cert), absolute(key))),
        (Some(_), None) | (None, Some(_)) => {
            eprintln!("outpost-cloud: --tls-cert and --tls-key go together: give both or neither");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let loaded = CloudConfig::load_with(&dir, |c| {
        if let Some(ws) = ws {
            c.server.listen = ws;
        }
        if let Some(quic) = quic {
            c.server.quic_listen = quic;
        }
        if let Some(tcp) = tcp {
            c.server.tcp_listen = tcp;
        }
        if let Some((cert, key)) = tls_flags {
            c.server.tls_cert = Some(cert);
            c.server.tls_key = Some(key);
        }
        if database.is_some() {
            c.storage.database = database;
        }
    });
    // Both are checked before either is used, so one run lists everything to fix.
    let (config, id) = match (loaded, CloudIdentity::load(&dir)) {
        (Ok(config), Ok(id)) => (config, id),
        (config, id) => {
            let mut problems = config.err().map(|e| e.problems).unwrap_or_default();
            problems.extend(id.err().map(|e| e.to_string()));
            eprintln!("outpost-cloud: invalid configuration:\n  - {}", problems.join("\n  - "));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    config.testing.apply();
    let (tls, quic_addr) = match (config.tls(&dir), config.quic_addr()) {
        (Ok(tls), Some(addr)) => (tls, addr),
        // Checked while loading; the files may have changed since.
        (Err(e), _) => {
            eprintln!("outpost-cloud: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
        (_, None) => {
            eprintln!("outpost-cloud: server.quic_listen = {:?} is not an address", config.server.quic_listen);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("outpost-cloud: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let endpoint = match outpost_cloud::server::bind_quic(&id, quic_addr) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("outpost-cloud: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let ws = &config.server.listen;
        let listener = match tokio::net::TcpListener::bind(ws).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("outpost-cloud: cannot listen on {ws}: {e}");
                return ExitCode::FAILURE;
            }
        };
        // Tests and scripts read this line to learn the bound ports; it comes once the
        // store is open (see `outpost_engine::server::OnReady`).
        let tcp = match (config.server.tcp_listen.as_str(), config.tcp_addr(), endpoint.local_addr()) {
            ("off", ..) => None,
            // By default: the QUIC endpoint's own port (as bound, if it was given as 0),
            // on TCP, which is where hubs look. Taken by something else, the cloud runs
            // without the TCP path rather than not at all.
            ("", _, Ok(quic)) => match outpost_cloud::tcp::bind(quic) {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::warn!(address = %quic, error = %e, "no TCP path for relays (the QUIC address's port is taken on TCP); set server.tcp_listen or --tcp");
                    None
                }
            },
            (_, Some(addr), _) => match outpost_cloud::tcp::bind(addr) {
                Ok(l) => Some(l),
                Err(e) => {
                    eprintln!("outpost-cloud: cannot listen on {addr} (TCP, the relays' path when UDP is blocked; server.tcp_listen or --tcp): {e}");
                    return ExitCode::FAILURE;
                }
            },
            _ => None,
        };
        let tcp_addr = tcp.as_ref().and_then(|l| l.local_addr().ok());
        let addrs = (listener.local_addr(), endpoint.local_addr());
        let announce = Box::new(move || match addrs {
            (Ok(w), Ok(q)) => {
                let tcp = tcp_addr.map(|t| format!(" tcp={t}")).unwrap_or_default();
                println!("outpost-cloud listening on {scheme}://{w}/ws quic={q}{tcp}");
            }
            (Err(e), _) | (_, Err(e)) => eprintln!("outpost-cloud: {e}"),
        });
        let shutdown = tokio_util::sync::CancellationToken::new();
        let relays = outpost_cloud::server::RelayListeners { quic: endpoint, tcp };
        let cloud = outpost_cloud::server::run(&id, &config, listener, tls, relays, shutdown.clone(), announce);
        match outpost_engine::cli::until_signal(shutdown, cloud).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("outpost-cloud: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// The one-shot commands (everything but `run`).
fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Run { .. } => anyhow::bail!("`run` is a server, not a one-shot command"),
        Cmd::Init { dir } => {
            let id = CloudIdentity::init(&dir)?;
            println!("created cloud {} in {}", id.cloud_id, dir.display());
        }
        Cmd::Migrate { dir, database } => {
            let id = CloudIdentity::load(&dir)?;
            let from = id.layout.database();
            if !from.exists() {
                anyhow::bail!("{} does not exist: there is no SQLite cloud to move", from.display());
            }
            let chunk = CloudConfig::storage(&dir)?.blob_chunk_bytes;
            let media = id.layout.media();
            let moving = outpost_store_postgres::from_sqlite::move_sqlite(&from, &media, &database, chunk);
            let moved = Database::block_on(moving)??;
            for (table, rows) in &moved.rows {
                println!("{table}: {rows} rows");
            }
            let m = &moved.media;
            println!(
                "media: {} blobs ({} bytes), {} unfinished uploads ({} bytes) copied from {}",
                m.blobs,
                m.blob_bytes,
                m.uploads,
                m.upload_bytes,
                media.display()
            );
            for left in &m.left {
                println!("media left behind: {left}");
            }
            println!(
                "moved {} into PostgreSQL (epoch {}, head {}); run the cloud with --database",
                from.display(),
                moved.epoch,
                moved.head
            );
            let detail = format!("SQLite database moved into PostgreSQL (head {})", moved.head);
            Database::Postgres(database).record(&[], &[AuditEvent::new(AuditKind::Enrollment, detail).actor("cli")])?;
        }
        Cmd::Token { dir, user, role, rooms, ttl, database } => {
            let id = CloudIdentity::load(&dir)?;
            let token = id.issue_token(user.clone(), role, rooms.clone(), now_secs(), ttl)?;
            let claims = id.verifier().verify(&token, 0)?;
            let rooms: Vec<&str> = rooms.iter().map(RoomId::as_str).collect();
            let detail = format!("token {} for rooms [{}], expires {}", claims.jti, rooms.join(", "), claims.exp);
            let event = AuditEvent::new(AuditKind::TokenIssued, detail).actor(user.as_str()).role(role.as_str());
            Database::of(&dir, &id, database)?.record(&[], &[event])?;
            println!("{token}");
        }
        Cmd::Revoke { dir, what, database } => {
            let id = CloudIdentity::load(&dir)?;
            let r = outpost_engine::cli::revocation(&id.verifier(), what)?;
            let fresh = Database::of(&dir, &id, database)?.record(std::slice::from_ref(&r), &[])?;
            println!("{}", outpost_engine::cli::revoked(&r, fresh));
        }
        Cmd::Hold { dir, room, reason, database } => hold(&dir, database, &room, true, &reason)?,
        Cmd::Release { dir, room, reason, database } => hold(&dir, database, &room, false, &reason)?,
        Cmd::Delete { dir, room, before, by, vacuum_full, database } => {
            let id = CloudIdentity::load(&dir)?;
            let at = outpost_engine::clock::now_ms();
            let n = match Database::of(&dir, &id, database)? {
                Database::Sqlite(db) => outpost_store_sqlite::delete_offline(&db, &room, before, &by, at)
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
                Database::Postgres(url) => Database::block_on(outpost_store_postgres::retention::delete_offline(
                    &url,
                    &room,
                    before,
                    &by,
                    at,
                    vacuum_full,
                ))?
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            };
            println!("erased {n} messages of room {room} received before {before} ms; recorded in the audit log");
        }
        Cmd::Import { dir, path, max_mb, database } => {
            for line in Database::block_on(outpost_cloud::mule::import(&dir, &path, max_mb, database))?? {
                println!("{line}");
            }
        }
        Cmd::Export { dir, relay, to, max_mb, database } => {
            let line = Database::block_on(outpost_cloud::mule::export(&dir, relay.as_str(), &to, max_mb, database))??;
            println!("{line}");
        }
        Cmd::Audit { dir, page, database } => {
            let id = CloudIdentity::load(&dir)?;
            outpost_engine::cli::write_audit(Database::of(&dir, &id, database)?.audit_page(page.after, page.limit)?)?;
        }
        Cmd::EnrollRelay { dir, relay, out, cloud_addrs } => {
            let id = CloudIdentity::load(&dir)?;
            outpost_shared::bundle::check_addresses(&cloud_addrs).map_err(|e| anyhow::anyhow!("--cloud-addr: {e}"))?;
            let bundle = enroll_relay(&id, &relay, &cloud_addrs)?;
            // Kept so the cloud can seal USB stick answers for this hub (`export --relay`).
            outpost_engine::mule::keep_hub_cert(&id.layout.relays(), relay.as_str(), &bundle.relay_cert_pem);
            let json = serde_json::to_string_pretty(&bundle)?;
            write_private(&out, &json)?;
            let addrs = match cloud_addrs.as_slice() {
                [one] => format!("cloud address {one}"),
                several => format!("cloud addresses {}", several.join(", ")),
            };
            let detail = format!("bundle for relay {relay} written to {} ({addrs})", out.display());
            record(&id, &[AuditEvent::new(AuditKind::Enrollment, detail).actor(relay.as_str())])?;
            println!("wrote enrollment bundle for relay {relay} to {}", out.display());
        }
    }
    Ok(())
}

fn hold(dir: &std::path::Path, database: Option<String>, room: &RoomId, on: bool, reason: &str) -> anyhow::Result<()> {
    let id = CloudIdentity::load(dir)?;
    let at = outpost_engine::clock::now_ms();
    let changed = match Database::of(dir, &id, database)? {
        Database::Sqlite(db) => outpost_store_sqlite::hold_offline(&db, room, on, "cli", reason, at)?,
        Database::Postgres(url) => {
            Database::block_on(outpost_store_postgres::retention::hold_offline(&url, room, on, "cli", reason, at))??
        }
    };
    match (on, changed) {
        (true, true) => println!("room {room} is under legal hold"),
        (true, false) => println!("room {room} was already under legal hold"),
        (false, true) => println!("room {room} is released from legal hold"),
        (false, false) => println!("room {room} was not under legal hold"),
    }
    Ok(())
}

/// `YYYY-MM-DD` as ms since the Unix epoch at 00:00 UTC that day.
fn parse_date(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a date; write YYYY-MM-DD");
    let mut it = s.split('-');
    let (Some(y), Some(m), Some(d), None) = (it.next(), it.next(), it.next(), it.next()) else { return Err(bad()) };
    let (y, m, d): (i64, i64, i64) =
        (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?, d.parse().map_err(|_| bad())?);
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400_000).map_err(|_| bad())
}

/// `path` against the working directory (unchanged if that cannot be read).
fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

/// Appends audit events for a one-shot command to the cloud's database (the one its
/// configuration names).
fn record(id: &CloudIdentity, events: &[AuditEvent]) -> anyhow::Result<()> {
    Database::of(&id.layout.dir, id, None)?.record(&[], events)?;
    Ok(())
}

/// The bundle holds the relay's private key: make it readable by its owner only.
fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    outpost_engine::private::write(path, text.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_date_is_the_start_of_that_day_in_utc() {
        assert_eq!(super::parse_date("1970-01-01"), Ok(0));
        assert_eq!(super::parse_date("2026-12-07"), Ok(1_796_601_600_000));
        assert_eq!(super::parse_date("2024-02-29"), Ok(1_709_164_800_000));
        assert!(super::parse_date("2026-13-01").is_err());
        assert!(super::parse_date("yesterday").is_err());
    }
}
