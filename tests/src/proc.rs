//! Starting and stopping the real binaries.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command as TokioCommand};

/// Path of a workspace binary (`outpost-relay`, `outpost-cloud`).
pub fn bin(name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("HARNESS_BIN_DIR") {
        return Path::new(&dir).join(name);
    }
    // target/<profile>/deps/<test-exe> → target/<profile>/<name>
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let p = dir.join(name);
    if !p.exists() {
        panic!("{} not found: run `cargo build --bins` first (or set HARNESS_BIN_DIR)", p.display());
    }
    p
}

/// A command for workspace binary `name` with the environment the tests decide, not the
/// caller's: every `OUTPOST_...` variable of the shell that runs the tests is removed (a
/// developer's `OUTPOST_LIMITS__...` must not change what a test checks, and the tests
/// set what they need themselves), and `RUST_LOG` is the harness's: `HARNESS_RUST_LOG`
/// when set, else `info` (tests read the servers' logs).
pub fn command(name: &str) -> Command {
    let mut cmd = Command::new(bin(name));
    own_env(&mut cmd);
    cmd
}

/// See [`command`].
fn own_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().to_ascii_uppercase().starts_with("OUTPOST_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("RUST_LOG", std::env::var("HARNESS_RUST_LOG").unwrap_or_else(|_| "info".into()));
}

/// How to launch `outpost-relay`: the workspace's own build, or another build (such as the
/// aarch64 one) behind a wrapper command (such as `qemu-aarch64 -L ...`).
#[derive(Debug, Clone)]
pub struct RelayCmd {
    /// The wrapper and its arguments, then the binary: `argv[0..]` before the relay's own.
    argv: Vec<OsString>,
}

impl RelayCmd {
    /// The workspace binary, as every scenario runs it.
    pub fn native() -> Self {
        Self { argv: vec![bin("outpost-relay").into()] }
    }

    /// `wrapper... binary ARGS`; an empty `wrapper` runs `binary` directly.
    pub fn wrapped(wrapper: &[String], binary: &Path) -> Self {
        let mut argv: Vec<OsString> = wrapper.iter().map(OsString::from).collect();
        argv.push(binary.into());
        Self { argv }
    }

    /// A command ready for the relay's arguments.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..]);
        own_env(&mut cmd);
        cmd
    }

    fn tokio_command(&self) -> TokioCommand {
        TokioCommand::from(self.command())
    }
}

/// A cloud directory made by `outpost-cloud init`.
#[derive(Debug, Clone)]
pub struct Cloud {
    pub dir: PathBuf,
}

fn run_ok(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Cloud {
    pub fn init(dir: &Path) -> anyhow::Result<Self> {
        run_ok(command("outpost-cloud").arg("init").arg("--dir").arg(dir))?;
        Ok(Self { dir: dir.to_path_buf() })
    }

    /// Issues a token through the CLI, as an operator would.
    pub fn token(&self, user: &str, role: &str, rooms: &[&str], ttl: &str) -> anyhow::Result<String> {
        let mut cmd = command("outpost-cloud");
        cmd.arg("token").arg("--dir").arg(&self.dir).args(["--user", user, "--role", role, "--ttl", ttl]);
        for r in rooms {
            cmd.args(["--room", r]);
        }
        Ok(run_ok(&mut cmd)?.trim().to_owned())
    }

    /// Dr Neema's laptop, signed in at `url` with a doctor's token for `rooms`.
    pub async fn doctor(&self, url: &str, rooms: &[&str]) -> anyhow::Result<crate::Device> {
        let tok = self.token("dr-neema", "doctor", rooms, "1h")?;
        let mut d = crate::Device::connect(url).await?;
        d.hello(&tok, "neema-laptop", None, None).await?;
        Ok(d)
    }

    /// A device of `user` with `role` in the room `clinic`, signed in at `url`. Doctors
    /// read the whole log (cursor 0: an exact resume from the start), as tests that count
    /// every message of a drain need; others sign in as a new device (each room's latest
    /// window only, docs/protocol.md).
    pub async fn clinic_device(
        &self,
        url: &str,
        user: &str,
        role: &str,
        device: &str,
    ) -> anyhow::Result<crate::Device> {
        let tok = self.token(user, role, &["clinic"], "1h")?;
        let mut d = crate::Device::connect(url).await?;
        let cursor = (role == "doctor").then_some(0);
        d.hello(&tok, device, cursor, None).await?;
        Ok(d)
    }

    /// How many messages this cloud's SQLite database holds (read beside the running
    /// cloud, or after it died: what it holds durably).
    pub fn messages_held(&self) -> anyhow::Result<usize> {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let db = rusqlite::Connection::open_with_flags(self.db(), flags)?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        let n: i64 = db.query_row("SELECT count(*) FROM messages", [], |r| r.get(0))?;
        Ok(usize::try_from(n)?)
    }

    /// `user`'s phone, signed in at `url` with a worker's token for `rooms`.
    pub async fn worker(&self, url: &str, user: &str, rooms: &[&str]) -> anyhow::Result<crate::Device> {
        let tok = self.token(user, "worker", rooms, "1h")?;
        let mut d = crate::Device::connect(url).await?;
        d.hello(&tok, &format!("{user}-phone"), None, None).await?;
        Ok(d)
    }

    /// Enrolls relay `id` (for a cloud at 127.0.0.1:4433) and provisions `dir`.
    pub fn provision_relay(&self, id: &str, dir: &Path) -> anyhow::Result<RelayDir> {
        self.provision_relay_at(id, dir, "127.0.0.1:4433")
    }

    /// A copy of this cloud's directory at `dir` (its log left out), as a node on
    /// another machine holds it: the same identity and settings, none of the files.
    pub fn copy_to(&self, dir: &Path) -> anyhow::Result<Cloud> {
        fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
            std::fs::create_dir_all(to)?;
            for e in std::fs::read_dir(from)? {
                let e = e?;
                let target = to.join(e.file_name());
                if e.file_type()?.is_dir() {
                    copy(&e.path(), &target)?;
                } else if e.file_name() != "cloud.log" {
                    std::fs::copy(e.path(), &target).with_context(|| format!("copying {}", e.path().display()))?;
                }
            }
            Ok(())
        }
        copy(&self.dir, dir)?;
        Ok(Cloud { dir: dir.to_path_buf() })
    }
}

/// A provisioned relay directory.
#[derive(Debug, Clone)]
pub struct RelayDir {
    pub dir: PathBuf,
}

impl RelayDir {
    /// Starts `outpost-relay run` on a free loopback port and waits until it listens.
    pub async fn start(&self, env: &[(&str, &str)]) -> anyhow::Result<Relay> {
        self.start_on("127.0.0.1:0", env).await
    }

    pub async fn start_on(&self, addr: &str, env: &[(&str, &str)]) -> anyhow::Result<Relay> {
        self.start_full(addr, &[], env).await
    }

    /// Starts the relay with its uplink pointed at `cloud` (e.g. a link emulator).
    pub async fn start_via(&self, cloud: &str, env: &[(&str, &str)]) -> anyhow::Result<Relay> {
        self.start_full("127.0.0.1:0", &[cloud], env).await
    }

    /// Starts the relay with `--cloud` given once for each of `clouds` (in that order).
    pub async fn start_via_all(&self, clouds: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Relay> {
        self.start_full("127.0.0.1:0", clouds, env).await
    }

    /// Starts the relay with `cmd` (e.g. an ARM build under qemu) on `addr`.
    pub async fn start_cmd(&self, cmd: &RelayCmd, addr: &str, env: &[(&str, &str)]) -> anyhow::Result<Relay> {
        self.start_full_cmd(cmd, addr, &[], env).await
    }

    async fn start_full(&self, addr: &str, clouds: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Relay> {
        self.start_full_cmd(&RelayCmd::native(), addr, clouds, env).await
    }

    async fn start_full_cmd(
        &self,
        cmd: &RelayCmd,
        addr: &str,
        clouds: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Relay> {
        let mut args = vec![
            "run".to_owned(),
            "--dir".to_owned(),
            self.dir.display().to_string(),
            "--ws".to_owned(),
            addr.to_owned(),
        ];
        for c in clouds {
            args.extend(["--cloud".to_owned(), (*c).to_owned()]);
        }
        let (child, line) =
            spawn_server("outpost-relay", cmd.tokio_command(), &args, &self.dir.join("relay.log"), env).await?;
        let url = line.rsplit(' ').next().unwrap_or_default().to_owned();
        // `wss://` when the relay serves TLS (`server.tls_cert`).
        if !url.starts_with("ws://") && !url.starts_with("wss://") {
            bail!("unexpected first line from relay: {line:?}");
        }
        Ok(Relay { child, url })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("relay.log")).unwrap_or_default()
    }

    pub fn db(&self) -> PathBuf {
        self.dir.join("data/relay.db")
    }
}

/// Starts a server binary, waits for its first stdout line (where it says what it
/// listens on) and keeps draining stdout. Logs go to `log`.
async fn spawn_server(
    name: &str,
    mut cmd: TokioCommand,
    args: &[String],
    log: &Path,
    env: &[(&str, &str)],
) -> anyhow::Result<(Child, String)> {
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::from(log_file)).kill_on_drop(true);
    let mut child = cmd.spawn().with_context(|| format!("spawning {name}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(crate::EVENT_TIMEOUT, lines.next_line())
        .await
        .with_context(|| format!("{name} did not report its address in time"))??;
    let Some(line) = line else {
        let status = child.wait().await?;
        let text = std::fs::read_to_string(log).unwrap_or_default();
        bail!("{name} exited ({status}) before listening; log:\n{text}");
    };
    // Keep draining stdout so the process never blocks on a full pipe. Its end means the
    // process is gone: say so with the log's tail, so that a test that then cannot
    // connect shows why (test runners print this only for failing tests).
    let (name, log) = (name.to_owned(), log.to_path_buf());
    tokio::spawn(async move {
        while let Ok(Some(_)) = lines.next_line().await {}
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        eprintln!("{name} ({}) has exited; last lines of its log:\n{}", log.display(), tail.join("\n"));
    });
    Ok((child, line))
}

/// A running cloud process.
pub struct CloudProc {
    pub child: Child,
    ws: String,
    quic: String,
    tcp: Option<String>,
}

impl CloudProc {
    /// The relays' TCP path (UDP blocked), when the cloud has one.
    pub fn tcp_addr(&self) -> Option<String> {
        self.tcp.clone()
    }

    pub fn ws_url(&self) -> String {
        self.ws.clone()
    }
    /// `host:port` of the relays' QUIC endpoint.
    pub fn quic_addr(&self) -> String {
        self.quic.clone()
    }
    /// `http://host:port` of the HTTP API.
    pub fn http_base(&self) -> String {
        self.ws.replace("ws://", "http://").trim_end_matches("/ws").to_owned()
    }
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }

    /// SIGTERM, then waits for the process to exit; returns its exit code.
    pub async fn terminate(&mut self) -> anyhow::Result<Option<i32>> {
        terminate(&mut self.child).await
    }
}

/// SIGTERM to a server, then its exit code.
async fn terminate(child: &mut Child) -> anyhow::Result<Option<i32>> {
    let pid = child.id().context("the process already exited")?;
    run_ok(Command::new("kill").args(["-TERM", &pid.to_string()]))?;
    let status = tokio::time::timeout(crate::EVENT_TIMEOUT, child.wait()).await??;
    Ok(status.code())
}

impl Cloud {
    /// Starts `outpost-cloud run` with its QUIC endpoint on `quic` (`127.0.0.1:0` for any).
    pub async fn start(&self, quic: &str) -> anyhow::Result<CloudProc> {
        self.start_with_args(quic, &[]).await
    }

    /// Like [`Cloud::start`], with more `run` arguments (e.g. `--tls-cert FILE`).
    pub async fn start_with_args(&self, quic: &str, extra: &[&str]) -> anyhow::Result<CloudProc> {
        self.start_full(Some(quic), extra, &[]).await
    }

    /// Like [`Cloud::start`], with environment variables (`OUTPOST_CLOUD_...`).
    pub async fn start_with_env(&self, quic: &str, env: &[(&str, &str)]) -> anyhow::Result<CloudProc> {
        self.start_full(Some(quic), &[], env).await
    }

    /// Starts `outpost-cloud run --dir DIR` with no `--ws`/`--quic`: the listeners are
    /// those `cloud.toml` (or the environment) sets.
    pub async fn start_from_config(&self, env: &[(&str, &str)]) -> anyhow::Result<CloudProc> {
        self.start_full(None, &[], env).await
    }

    /// `outpost-cloud run` as a one-off that is expected to fail: its output.
    pub fn run_output(&self, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<std::process::Output> {
        let mut cmd = command("outpost-cloud");
        cmd.arg("run").arg("--dir").arg(&self.dir).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().with_context(|| format!("spawning {cmd:?}"))
    }

    async fn start_full(&self, quic: Option<&str>, extra: &[&str], env: &[(&str, &str)]) -> anyhow::Result<CloudProc> {
        let mut args = vec!["run".to_owned(), "--dir".to_owned(), self.dir.display().to_string()];
        if let Some(quic) = quic {
            args.extend(["--ws", "127.0.0.1:0", "--quic", quic].map(str::to_owned));
        }
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let (child, line) = spawn_server(
            "outpost-cloud",
            TokioCommand::from(command("outpost-cloud")),
            &args,
            &self.dir.join("cloud.log"),
            env,
        )
        .await?;
        // "outpost-cloud listening on ws://A/ws quic=B [tcp=C]" (wss:// with TLS)
        let mut ws = String::new();
        let mut q = String::new();
        let mut tcp = None;
        for word in line.split(' ') {
            if word.starts_with("ws://") || word.starts_with("wss://") {
                ws = word.to_owned();
            } else if let Some(a) = word.strip_prefix("quic=") {
                q = a.to_owned();
            } else if let Some(a) = word.strip_prefix("tcp=") {
                tcp = Some(a.to_owned());
            }
        }
        if ws.is_empty() || q.is_empty() {
            bail!("unexpected first line from cloud: {line:?}");
        }
        Ok(CloudProc { child, ws, quic: q, tcp })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("cloud.log")).unwrap_or_default()
    }

    /// The cloud's settings file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("cloud.toml")
    }

    /// Appends `text` to `cloud.toml` (after what `init` wrote, which is `cloud_id` and
    /// commented-out defaults).
    pub fn configure(&self, text: &str) -> anyhow::Result<()> {
        let mut cfg = std::fs::read_to_string(self.config_path())?;
        cfg.push('\n');
        cfg.push_str(text);
        std::fs::write(self.config_path(), cfg)?;
        Ok(())
    }

    pub fn db(&self) -> PathBuf {
        self.dir.join("data/cloud.db")
    }

    /// Enrolls relay `id` for a cloud reachable at `cloud_addr` and provisions `dir`.
    pub fn provision_relay_at(&self, id: &str, dir: &Path, cloud_addr: &str) -> anyhow::Result<RelayDir> {
        self.provision_relay_cmd(&RelayCmd::native(), id, dir, cloud_addr)
    }

    /// Enrolls relay `id` for a cloud of several nodes at `cloud_addrs` (tried in that
    /// order) and provisions `dir`.
    pub fn provision_relay_at_all(&self, id: &str, dir: &Path, cloud_addrs: &[&str]) -> anyhow::Result<RelayDir> {
        let bundle = self.enroll_relay_at_all(id, cloud_addrs)?;
        run_ok(RelayCmd::native().command().arg("init").arg("--dir").arg(dir).arg("--bundle").arg(&bundle))?;
        Ok(RelayDir { dir: dir.to_path_buf() })
    }

    /// `outpost-cloud enroll-relay` for relay `id`; returns the bundle's path.
    pub fn enroll_relay(&self, id: &str, cloud_addr: &str) -> anyhow::Result<PathBuf> {
        self.enroll_relay_at_all(id, &[cloud_addr])
    }

    /// `outpost-cloud enroll-relay` with `--cloud-addr` once for each of `cloud_addrs`.
    pub fn enroll_relay_at_all(&self, id: &str, cloud_addrs: &[&str]) -> anyhow::Result<PathBuf> {
        let bundle = self.dir.join(format!("{id}.bundle.json"));
        let mut cmd = command("outpost-cloud");
        cmd.arg("enroll-relay").arg("--dir").arg(&self.dir).args(["--relay", id]);
        for a in cloud_addrs {
            cmd.args(["--cloud-addr", a]);
        }
        run_ok(cmd.arg("--out").arg(&bundle))?;
        Ok(bundle)
    }

    /// Enrolls relay `id` and provisions `dir` with `relay`'s `init` (e.g. an ARM build).
    pub fn provision_relay_cmd(
        &self,
        relay: &RelayCmd,
        id: &str,
        dir: &Path,
        cloud_addr: &str,
    ) -> anyhow::Result<RelayDir> {
        let bundle = self.enroll_relay(id, cloud_addr)?;
        run_ok(relay.command().arg("init").arg("--dir").arg(dir).arg("--bundle").arg(&bundle))?;
        Ok(RelayDir { dir: dir.to_path_buf() })
    }
}

/// A free UDP port on loopback (for a cloud that starts later than its relays).
pub fn free_udp_addr() -> anyhow::Result<String> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
    Ok(s.local_addr()?.to_string())
}

/// A running relay process.
pub struct Relay {
    pub child: Child,
    url: String,
}

impl Relay {
    pub fn ws_url(&self) -> String {
        self.url.clone()
    }

    /// `host:port` of the device listener.
    pub fn addr(&self) -> String {
        crate::client::host_port(&self.url).to_owned()
    }

    /// `http://host:port` of the hub's HTTP API (media, audit, status).
    pub fn http_base(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// SIGKILL: no chance to flush anything.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }

    /// SIGTERM, then waits for the process to exit; returns its exit code.
    pub async fn terminate(&mut self) -> anyhow::Result<Option<i32>> {
        terminate(&mut self.child).await
    }
}
