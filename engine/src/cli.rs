//! What both server binaries (`outpost-relay`, `outpost-cloud`) do the same way at the
//! edge: logging to stderr and turning SIGTERM/SIGINT into a graceful shutdown.

use tokio_util::sync::CancellationToken;

/// Logs to stderr, `RUST_LOG` filtering (default `info`), colours only on a terminal
/// (the journal and log files get plain text).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Runs `server` to its end, cancelling `shutdown` (which `server` stops on) at the first
/// SIGTERM (systemd) or SIGINT (Ctrl-C). The signal handler lives exactly as long as the
/// server: a server that stops for another reason does not leave it behind.
pub async fn until_signal<F: std::future::Future>(shutdown: CancellationToken, server: F) -> F::Output {
    let mut server = std::pin::pin!(server);
    tokio::select! {
        out = &mut server => out,
        () = wait_for_signal(shutdown) => server.await,
    }
}

/// Cancels `shutdown` on SIGTERM or SIGINT; never resolves if the handlers cannot be
/// installed (the server then runs until killed).
async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop the process with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}

/// `revoke`: which tokens (exactly one of the three).
#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// The token itself (its signature is checked; its id is revoked).
    #[arg(long)]
    pub token: Option<String>,
    /// A token id (`jti`), as shown in the audit log's `login` events.
    #[arg(long)]
    pub jti: Option<String>,
    /// A user: every token issued to them until now (tokens issued later are valid).
    #[arg(long)]
    pub user: Option<outpost_shared::UserId>,
    /// A relay (a stolen or retired hub): every delegation it was given until now, so
    /// every token it renewed; the cloud gives it no delegation again.
    #[arg(long)]
    pub relay: Option<outpost_shared::RelayId>,
    /// Why (kept in the audit log).
    #[arg(long, default_value = "")]
    pub reason: String,
}

/// Records a revocation in the database at `db` (a running server applies it within
/// `security.revocation_poll_ms`; a cloud also sends it to every relay). Returns a
/// sentence for the operator.
pub fn revoke(
    db: &std::path::Path,
    verifier: &outpost_shared::TokenVerifier,
    args: RevokeArgs,
) -> anyhow::Result<String> {
    let r = revocation(verifier, args)?;
    let fresh = outpost_store_sqlite::security::record_offline(db, std::slice::from_ref(&r), &[], "cli", r.at)?;
    Ok(revoked(&r, fresh))
}

/// The revocation `args` ask for (a token's signature is checked first).
pub fn revocation(
    verifier: &outpost_shared::TokenVerifier,
    args: RevokeArgs,
) -> anyhow::Result<outpost_shared::Revocation> {
    use outpost_shared::{Revocation, Revoked};
    let now_ms = crate::clock::now_ms();
    let what = match (args.token, args.jti, args.user, args.relay) {
        (Some(token), None, None, None) => {
            // Expiry does not matter for revoking (0 = "any time"); the signature does:
            // a forged token must not be able to revoke someone else's.
            let claims = verifier.verify(token.trim(), 0).map_err(|e| anyhow::anyhow!("--token: {e}"))?;
            Revoked::Token(claims.jti)
        }
        (None, Some(jti), None, None) => Revoked::Token(jti),
        (None, None, Some(user), None) => {
            Revoked::User { user: user.as_str().to_owned(), issued_before: now_ms / 1000 }
        }
        (None, None, None, Some(relay)) => Revoked::User {
            user: outpost_shared::revocation::relay_entry(relay.as_str()),
            issued_before: now_ms / 1000,
        },
        _ => anyhow::bail!("name exactly one thing to revoke: --token TOKEN, --jti ID, --user USER or --relay RELAY"),
    };
    Ok(Revocation { what, reason: args.reason, at: now_ms })
}

/// The sentence for the operator once `r` was recorded (`fresh`: how many were new).
pub fn revoked(r: &outpost_shared::Revocation, fresh: usize) -> String {
    let what = match &r.what {
        outpost_shared::Revoked::Token(jti) => format!("token {jti}"),
        outpost_shared::Revoked::User { user, .. } => match user.strip_prefix("relay/") {
            Some(relay) => format!("relay {relay}'s delegations and every token it renewed"),
            None => format!("every token issued to {user} until now"),
        },
    };
    if fresh == 0 { format!("{what} was already revoked") } else { format!("revoked {what}") }
}

/// `audit`: which page of the log.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Events after this sequence number.
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    /// How many events at most.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

/// Prints audit events of the database at `db` as JSON lines, oldest first.
pub fn print_audit(db: &std::path::Path, args: &AuditArgs) -> anyhow::Result<()> {
    let page = outpost_store_sqlite::security::read_offline(db, args.after, args.limit)?;
    write_audit(page)
}

/// Prints a page of audit events as JSON lines, and on stderr where the next page starts.
pub fn write_audit((events, more): (Vec<outpost_storage::AuditRecord>, bool)) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    for e in &events {
        writeln!(out, "{}", serde_json::to_string(e)?)?;
    }
    if more && let Some(last) = events.last() {
        eprintln!("more events follow: --after {}", last.seq);
    }
    Ok(())
}
