//! What the benchmark reads from `/proc` and the shell about the machine and the processes
//! under test: resident memory, CPU time per process and per thread, whole-machine CPU
//! split, and the descriptive facts (cores, memory, kernel, disk, commit) a reader needs to
//! compare one report with another.
//!
//! CPU time comes from `schedstat` (nanoseconds on the CPU and waiting for one), not from
//! `stat` ticks, so short measurement windows still give usable percentages. It does not
//! interpret the numbers; `report` does.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::Context as _;

/// Bytes `pid` caused to be written to storage so far (`write_bytes` of `/proc/PID/io`):
/// what reaches the disk, WAL and checkpoints alike, not what sat in the page cache and
/// was overwritten before writeback. 0 when unreadable.
pub fn write_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| io.lines().find_map(|l| l.strip_prefix("write_bytes:")).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// Resident set size of `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS line")
}

/// CPU and run-queue time of one thread, nanoseconds since it started.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadTime {
    pub on_cpu_ns: u64,
    pub runq_wait_ns: u64,
}

/// Per-thread times of a process, by thread id, with each thread's name (tokio workers
/// share one name).
#[derive(Debug, Clone, Default)]
pub struct ProcTimes {
    threads: BTreeMap<u64, (String, ThreadTime)>,
}

impl ProcTimes {
    /// Reads every thread of `pid` (`"self"` for this process).
    pub fn read(pid: &str) -> Self {
        let mut threads = BTreeMap::new();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return Self::default();
        };
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<u64>().ok()) else {
                continue;
            };
            let dir = task.path();
            let (Ok(comm), Ok(sched)) =
                (std::fs::read_to_string(dir.join("comm")), std::fs::read_to_string(dir.join("schedstat")))
            else {
                continue;
            };
            let mut f = sched.split_whitespace().map(|v| v.parse::<u64>().unwrap_or(0));
            let t = ThreadTime { on_cpu_ns: f.next().unwrap_or(0), runq_wait_ns: f.next().unwrap_or(0) };
            threads.insert(tid, (comm.trim().to_owned(), t));
        }
        Self { threads }
    }

    /// Time spent since `earlier` by threads named `name` (all if None). Deltas are per
    /// thread: a thread that exited in between (tokio's blocking pool retires idle threads)
    /// must not subtract its whole lifetime from the survivors; its last moments are lost,
    /// which is small. A thread born in between counts from zero.
    fn delta(&self, earlier: &Self, name: Option<&str>) -> ThreadTime {
        let mut d = ThreadTime::default();
        for (tid, (comm, now)) in &self.threads {
            if name.is_some_and(|n| n != comm) {
                continue;
            }
            let before = earlier.threads.get(tid).filter(|(c, _)| c == comm).map(|(_, t)| *t).unwrap_or_default();
            d.on_cpu_ns += now.on_cpu_ns.saturating_sub(before.on_cpu_ns);
            d.runq_wait_ns += now.runq_wait_ns.saturating_sub(before.runq_wait_ns);
        }
        d
    }

    /// CPU nanoseconds spent since `earlier` by threads named `name` (all of them if None).
    pub fn cpu_since(&self, earlier: &Self, name: Option<&str>) -> u64 {
        self.delta(earlier, name).on_cpu_ns
    }

    /// Nanoseconds the process's threads spent runnable but waiting for a CPU.
    pub fn runq_since(&self, earlier: &Self) -> u64 {
        self.delta(earlier, None).runq_wait_ns
    }
}

/// Whole-machine jiffies from the first line of `/proc/stat`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineTimes {
    pub busy: u64,
    pub iowait: u64,
    pub total: u64,
}

impl MachineTimes {
    /// Busy and iowait shares of all cores since `earlier`, in %.
    pub fn busy_iowait_since(&self, earlier: &Self) -> (f64, f64) {
        let total = self.total.saturating_sub(earlier.total).max(1) as f64;
        let share = |now: u64, then: u64| now.saturating_sub(then) as f64 * 100.0 / total;
        (share(self.busy, earlier.busy), share(self.iowait, earlier.iowait))
    }

    pub fn read() -> Self {
        let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
            return Self::default();
        };
        let Some(line) = stat.lines().next() else {
            return Self::default();
        };
        // user nice system idle iowait irq softirq steal ...
        let v: Vec<u64> = line.split_whitespace().skip(1).map(|x| x.parse().unwrap_or(0)).collect();
        let get = |i: usize| v.get(i).copied().unwrap_or(0);
        let total: u64 = v.iter().take(8).sum();
        let idle = get(3);
        let iowait = get(4);
        Self { busy: total.saturating_sub(idle + iowait), iowait, total }
    }
}

/// Facts about the machine, each as printable text.
#[derive(Debug, Clone)]
pub struct MachineInfo {
    pub cpus: String,
    pub cpu_model: String,
    pub memory: String,
    pub kernel: String,
    pub disk: String,
    pub commit: String,
    /// When the relay binary under test was built: the commit above says what the tree
    /// was at run time, which is only what was measured if the binaries were rebuilt.
    pub relay_built: String,
}

impl MachineInfo {
    /// The lines every section of the report opens with: the command, the commit and the
    /// relay binary measured, the machine (Markdown list items).
    pub fn header(&self, command: &str) -> String {
        format!(
            "- Command: `{command}`\n- Commit: `{}`; relay binary: {}\n- Machine: {} CPUs ({}), {} RAM, {}; the generator ran on CPUs {}\n",
            self.commit,
            self.relay_built,
            self.cpus,
            self.cpu_model,
            self.memory,
            self.kernel,
            own_cpus()
        )
    }
}

/// The CPUs this process may run on (`Cpus_allowed_list`): all of them, or the ones
/// `taskset` gave the benchmark.
fn own_cpus() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).map(|v| v.trim().to_owned()))
        .unwrap_or_else(|| "unknown".into())
}

fn shell(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

impl MachineInfo {
    /// Collects the facts; `data_dir` is where the databases live (for `df`).
    pub fn collect(data_dir: &Path) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| format!("{:.1} GiB", kib as f64 / (1 << 20) as f64))
            .unwrap_or_else(|| "unknown".into());
        let dir = data_dir.to_string_lossy();
        let df = shell("df", &["-h", "--output=source,fstype,size,avail", &dir]);
        let disk = df.lines().last().unwrap_or("unknown").split_whitespace().collect::<Vec<_>>().join(" ");
        let mut commit = shell("git", &["rev-parse", "--short=12", "HEAD"]);
        if !shell("git", &["status", "--porcelain"]).is_empty() {
            commit.push_str(" (working tree has uncommitted changes)");
        }
        let relay = outpost_tests::bin("outpost-relay");
        let relay_built = format!(
            "{} (modified {})",
            relay.display(),
            shell("date", &["-u", "-r", &relay.to_string_lossy(), "+%Y-%m-%d %H:%M:%S UTC"])
        );
        let now = shell("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]);
        commit.push_str(&format!("; run at {now}"));
        Self {
            cpus: shell("nproc", &["--all"]),
            cpu_model,
            memory,
            kernel: shell("uname", &["-sr"]),
            disk,
            commit,
            relay_built,
        }
    }
}
