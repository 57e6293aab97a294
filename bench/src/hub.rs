//! The system under test: one cloud identity, device tokens, and a fresh `outpost-relay`
//! process per measurement.
//!
//! Every measurement gets a newly provisioned relay with an empty database, so a later
//! repetition does not pay for the rows an earlier one left behind (a bigger b-tree and
//! WAL) and results from different repetitions are comparable. The processes are started
//! through the `outpost-tests` harness, exactly as the end-to-end tests start them.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use outpost_tests::{Cloud, Relay, RelayDir};

/// Which rooms the clients are in.
#[derive(Debug, Clone, Copy)]
pub struct Topology {
    pub clients: usize,
    /// Clients per room; 1 means every client is alone in its room (no fan-out).
    pub room_size: usize,
}

impl Topology {
    pub fn room_of(&self, client: usize) -> String {
        format!("room{:04}", client / self.room_size.max(1))
    }

    /// How many other clients receive a message sent by `client`.
    pub fn recipients_of(&self, client: usize) -> usize {
        let size = self.room_size.max(1);
        let first = client / size * size;
        let members = (first + size).min(self.clients) - first;
        members - 1
    }

    pub fn rooms(&self) -> usize {
        self.clients.div_ceil(self.room_size.max(1))
    }
}

/// glibc's malloc arenas for every relay the benchmark starts (`--malloc-arena-max`), set
/// once at start-up. Two by default, as systemd/outpost-relay.service runs the hub
/// (docs/operations.md, "Memory"), so what is measured is the hub as deployed; `0` leaves
/// glibc's own default, the same-run "before" of that setting.
static MALLOC_ARENA_MAX: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Sets the arenas for every relay started from now on (the first call wins).
pub fn set_malloc_arena_max(n: usize) {
    let _ = MALLOC_ARENA_MAX.set(Box::leak(n.to_string().into_boxed_str()));
}

/// The CPUs every server the benchmark starts is pinned to (`--server-cpus`, `taskset -c`
/// syntax), if any: the relays and the peers' brokers alike, so that a race between them
/// gives each the same core while the generator runs on another.
static SERVER_CPUS: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Pins every server started from now on to `cpus` (the first call wins).
pub fn set_server_cpus(cpus: Option<&str>) {
    if let Some(c) = cpus {
        let _ = SERVER_CPUS.set(c.to_owned());
    }
}

/// The command a server is started with: `taskset -c CPUS binary` when pinned.
pub fn server_command(binary: &Path) -> (std::ffi::OsString, Vec<std::ffi::OsString>) {
    match SERVER_CPUS.get() {
        Some(cpus) => ("taskset".into(), vec!["-c".into(), cpus.into(), binary.into()]),
        None => (binary.into(), Vec::new()),
    }
}

/// `base` plus the allocator setting: the environment a benchmark's relay gets. With `0`
/// nothing is set, so glibc's default applies (unless the bench itself runs with one).
pub fn relay_env(base: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut env = base.to_vec();
    match MALLOC_ARENA_MAX.get().copied().unwrap_or("2") {
        "0" => {}
        n => env.push(("MALLOC_ARENA_MAX", n)),
    }
    env
}

/// Environment given to every relay the benchmark starts, and why (see also [`relay_env`]).
pub const RELAY_ENV: &[(&str, &str)] = &[
    // The per-device rate limit exists to stop a runaway phone, not to shape a benchmark;
    // it is raised so that it can never be what is measured. The check itself still runs
    // for every message, so its cost is included.
    ("OUTPOST_LIMITS__RATE_PER_SEC", "1000000"),
    ("OUTPOST_LIMITS__RATE_BURST", "1000000"),
    // Memory runs may open more sockets than the default device cap of 1,000.
    ("OUTPOST_LIMITS__MAX_DEVICES", "5000"),
    ("OUTPOST_LIMITS__MAX_CONNECTIONS_PER_IP", "5000"),
];

/// The cloud identity, the device tokens and where relays are made.
pub struct World {
    root: PathBuf,
    cloud: Cloud,
    pub tokens: Vec<String>,
    pub topology: Topology,
    next_relay: usize,
}

/// A running relay and its directory (removed when the run is over).
pub struct RunningRelay {
    pub relay: Relay,
    pub dir: RelayDir,
}

impl RunningRelay {
    pub fn pid(&self) -> anyhow::Result<u32> {
        self.relay.child.id().context("the relay has exited")
    }

    /// Stops the relay gracefully and deletes its directory.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let code = self.relay.terminate().await?;
        if code != Some(0) {
            eprintln!("warning: relay exited with {code:?}; log tail:\n{}", tail(&self.dir.log(), 20));
        }
        std::fs::remove_dir_all(&self.dir.dir).with_context(|| format!("removing {}", self.dir.dir.display()))?;
        Ok(())
    }
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

impl World {
    /// Creates the cloud in `root` and issues one worker token per client. Each client is
    /// its own user, so presence and fan-out treat them as different people.
    pub fn create(root: &Path, topology: Topology, tokens_needed: usize) -> anyhow::Result<Self> {
        let cloud = Cloud::init(&root.join("cloud")).context("outpost-cloud init")?;
        let tokens = issue_tokens(&cloud, topology, tokens_needed)?;
        Ok(Self { root: root.to_path_buf(), cloud, tokens, topology, next_relay: 0 })
    }

    /// Provisions and starts a fresh relay with [`RELAY_ENV`].
    pub async fn fresh_relay(&mut self) -> anyhow::Result<RunningRelay> {
        self.next_relay += 1;
        let id = format!("bench{}", self.next_relay);
        let dir = self
            .cloud
            .provision_relay(&id, &self.root.join(&id))
            .with_context(|| format!("provisioning relay {id}"))?;
        let env = relay_env(RELAY_ENV);
        let relay = match SERVER_CPUS.get() {
            Some(cpus) => {
                let wrapper = ["taskset".to_owned(), "-c".to_owned(), cpus.clone()];
                let cmd = outpost_tests::RelayCmd::wrapped(&wrapper, &outpost_tests::bin("outpost-relay"));
                dir.start_cmd(&cmd, "127.0.0.1:0", &env).await
            }
            None => dir.start(&env).await,
        }
        .context("starting outpost-relay")?;
        Ok(RunningRelay { relay, dir })
    }
}

/// Tokens through the cloud's CLI, as an operator issues them; a few threads because each
/// is a process start. Token `i` grants client `i` its room only.
fn issue_tokens(cloud: &Cloud, topology: Topology, n: usize) -> anyhow::Result<Vec<String>> {
    const THREADS: usize = 4;
    let mut tokens = vec![String::new(); n];
    std::thread::scope(|s| -> anyhow::Result<()> {
        let chunk = n.div_ceil(THREADS).max(1);
        let handles: Vec<_> = tokens
            .chunks_mut(chunk)
            .enumerate()
            .map(|(k, out)| {
                s.spawn(move || -> anyhow::Result<()> {
                    for (j, slot) in out.iter_mut().enumerate() {
                        let i = k * chunk + j;
                        let room = topology.room_of(i);
                        *slot = cloud.token(&format!("u{i:04}"), "worker", &[&room], "3h")?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("token thread panicked"))??;
        }
        Ok(())
    })?;
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_and_recipients() {
        let t = Topology { clients: 5, room_size: 2 };
        assert_eq!(t.room_of(3), "room0001");
        assert_eq!(t.recipients_of(0), 1);
        assert_eq!(t.recipients_of(4), 0, "the last room has one member");
        assert_eq!(t.rooms(), 3);
        let alone = Topology { clients: 5, room_size: 1 };
        assert_eq!(alone.recipients_of(2), 0);
    }
}
