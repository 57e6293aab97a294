//! A private PostgreSQL cluster for tests (feature `test-cluster`): `initdb` into a
//! temporary directory and `pg_ctl` on a free port on 127.0.0.1, as the `postgres` user
//! when run as root (PostgreSQL refuses to run as root). Nothing of a system service is
//! used or needed; scripts/test.sh installs Debian's `postgresql` package for the
//! binaries. The cluster is stopped (immediately) and removed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A running private cluster.
#[derive(Debug)]
pub struct TestCluster {
    // Removed on drop, after the server stopped.
    root: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

/// The PostgreSQL binaries: `OUTPOST_PG_BIN`, or the newest of Debian's
/// /usr/lib/postgresql/*/bin.
fn find_bin() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("OUTPOST_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("PostgreSQL is not installed (/usr/lib/postgresql: {e}); scripts/test.sh installs it"))?
        .filter_map(Result::ok)
        .filter_map(|d| Some((d.file_name().to_str()?.parse().ok()?, d.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| "no PostgreSQL server binaries under /usr/lib/postgresql".into())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

impl TestCluster {
    /// Creates and starts a cluster (a few seconds).
    pub fn start() -> Result<Self, String> {
        let bin = find_bin()?;
        let as_postgres = is_root();
        // /tmp is traversable by every user; a root-owned directory under the test's
        // own temp tree might not be.
        let root = tempfile::Builder::new().prefix("outpost-pg-").tempdir_in("/tmp").map_err(|e| e.to_string())?;
        if as_postgres {
            run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(root.path()))?;
        }
        let cluster = Self { root, bin, port: free_port()?, as_postgres };
        cluster.pg(
            "initdb",
            &["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "-D"],
            Some(&cluster.data()),
        )?;
        cluster.start_server()?;
        Ok(cluster)
    }

    fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// Runs one of the cluster's binaries (as `postgres` when we are root).
    fn pg(&self, tool: &str, args: &[&str], last: Option<&Path>) -> Result<Output, String> {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args);
        if let Some(p) = last {
            cmd.arg(p);
        }
        cmd.current_dir(self.root.path());
        run(&mut cmd)
    }

    fn start_server(&self) -> Result<(), String> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.root.path().display()
        );
        let log = self.root.path().join("server.log");
        self.pg(
            "pg_ctl",
            &[
                "-w",
                "-t",
                "60",
                "-o",
                &opts,
                "-l",
                &log.to_string_lossy(),
                "-D",
                &self.data().to_string_lossy(),
                "start",
            ],
            None,
        )?;
        Ok(())
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates database `name` and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        let port = self.port.to_string();
        self.pg("createdb", &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", name], None)?;
        Ok(self.url(name))
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Stops the server the way a crash would (`immediate`: no checkpoint; the next
    /// start replays the WAL).
    pub fn stop_immediately(&self) -> Result<(), String> {
        self.pg("pg_ctl", &["-w", "-m", "immediate", "-D", &self.data().to_string_lossy(), "stop"], None).map(drop)
    }

    /// Starts the server again after [`Self::stop_immediately`], on the same port.
    pub fn restart(&self) -> Result<(), String> {
        self.start_server()
    }

    /// The postmaster's process id (for measuring the server's CPU), while it runs.
    pub fn server_pid(&self) -> Option<u32> {
        let pid = std::fs::read_to_string(self.data().join("postmaster.pid")).ok()?;
        pid.lines().next()?.trim().parse().ok()
    }

    /// The server's version line, e.g. "PostgreSQL 15.18".
    pub fn version(&self) -> Option<String> {
        let out = Command::new(self.bin.join("postgres")).arg("--version").output().ok()?;
        let v = String::from_utf8_lossy(&out.stdout);
        Some(v.trim().trim_start_matches("postgres (").replace(") ", " "))
    }

    /// The server's log (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let _ = self.stop_immediately();
    }
}

fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd.output().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}
