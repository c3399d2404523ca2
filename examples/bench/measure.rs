//! One measured case on loopback: swarm (an owner and N hand-wired
//! peers) or unicast (examples/unicast, a sender and N receivers), run
//! REPEAT times; each run's wall time, CPU share and CPU-seconds, what
//! the owner sent, every copy checked with cmp, peak memory when asked
//! and, for swarm, each peer's chunks held over time. [`measure`] gives
//! the median run with its min–max spread, as the bash bench's `measure`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{Ctx, Fatal, check_interrupt, note};
use crate::procs::{self, Proc};
use crate::timeline::Timeline;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Swarm,
    Unicast,
}

/// A case: N peers, S MiB, a timeout per run, peak memory, timeline.
pub struct Case {
    pub tool: Tool,
    pub n: u32,
    pub size: u32,
    pub timeout: u64,
    pub mem: bool,
    pub timeline: bool,
}

/// One run's figures (strings as they go into the table and CSV).
#[derive(Default)]
pub struct Run {
    pub status: String,
    pub secs: String,
    pub cpu: String,
    pub cpu_user: f64,
    pub cpu_sys: f64,
    pub sent_x: Option<String>,
    /// Peak RSS in KiB by process: owner, p1.., or sender, receiver.
    pub rss: BTreeMap<String, String>,
    pub timeline: Option<PathBuf>,
    /// Whether the owner (sender) started; a run whose owner did not is
    /// not noted again (its status says so).
    pub started: bool,
}

/// A measurement: the median run of REPEAT (see the bash `measure`).
#[derive(Default)]
pub struct Measured {
    pub status: String,
    pub secs: String,
    pub spread: String,
    pub cpu: String,
    pub runs: String,
    pub sent: String,
    pub sent_spread: String,
    pub sent_runs: String,
    pub cpu_s: String,
    pub cpu_s_spread: String,
    pub cpu_user: String,
    pub cpu_sys: String,
    pub timeline: Option<(PathBuf, String)>,
    /// The last run's peak RSS (memory runs once).
    pub rss: BTreeMap<String, String>,
}

/// The runner's run counter and the files the runs share.
pub struct Bench<'a> {
    pub ctx: &'a Ctx,
    pub run: u32,
    base: u16,
}

impl<'a> Bench<'a> {
    pub fn new(ctx: &'a Ctx, run: u32) -> Self {
        Bench {
            ctx,
            run,
            base: ctx.base_port,
        }
    }

    /// A random input of `size` MiB, made once per size.
    fn input(&self, size: u32) -> Result<PathBuf, Fatal> {
        let path = self.ctx.work.0.join(format!("input-{size}M.bin"));
        if !path.exists() {
            let ok = Command::new("head")
                .arg("-c")
                .arg((u64::from(size) << 20).to_string())
                .arg("/dev/urandom")
                .stdout(fs::File::create(&path)?)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err(Fatal::new(format!(
                    "cannot write {} (disk full?)",
                    path.display()
                )));
            }
        }
        Ok(path)
    }

    /// A loopback base port with BASE..BASE+N free (the bash `free_base`).
    fn free_base(&mut self, n: u32) -> Result<(), Fatal> {
        for attempt in 0..20u32 {
            // 15 ranges of 100 from BASE_PORT (31000) stay below the
            // ephemeral ports (32768 on).
            let base = u32::from(self.ctx.base_port) + ((self.run + attempt) % 15) * 100;
            if (base..=base + n).all(|p| !procs::listening(p as u16)) {
                self.base = base as u16;
                return Ok(());
            }
        }
        Err(Fatal::new(format!(
            "no free range of {} ports from {}; set BASE_PORT",
            n + 1,
            self.ctx.base_port
        )))
    }

    fn port(&self, host: u32) -> u16 {
        self.base + host as u16
    }

    /// Runs `case` `reps` times and takes the median run.
    pub fn measure(&mut self, case: &Case, reps: u32) -> Result<Measured, Fatal> {
        let mut runs = Vec::new();
        for _ in 0..reps {
            runs.push(self.run_one(case)?);
        }
        self.empty_trash()?;
        Ok(crate::stats::median_run(runs))
    }

    /// One run (the bash `run_one`), loopback, hand-wired.
    pub fn run_one(&mut self, case: &Case) -> Result<Run, Fatal> {
        check_interrupt()?;
        let input = self.input(case.size)?;
        self.run += 1;
        let label = match case.tool {
            Tool::Swarm => "swarm-loop-hand",
            Tool::Unicast => "unicast-loop",
        };
        let dir = self.ctx.work.0.join(format!(
            "run{}-{label}-n{}-{}M",
            self.run, case.n, case.size
        ));
        fs::create_dir_all(&dir)?;
        self.free_base(case.n)?;
        let mut r = self.run_in(case, &input, &dir)?;
        if r.status != "ok" {
            let kept = keep_logs(self.ctx, &dir);
            let tool = if case.tool == Tool::Swarm {
                "swarm"
            } else {
                "unicast"
            };
            if r.started {
                note(&format!(
                    "{tool} loop N={} {} MiB: {} (logs in {kept})",
                    case.n, case.size, r.status
                ));
            }
            r.secs.clear();
        }
        // Kept until every run of this case is done (see empty_trash).
        let trash = self.ctx.work.0.join("trash");
        fs::create_dir_all(&trash)?;
        if fs::rename(&dir, trash.join(dir.file_name().unwrap_or_default())).is_err() {
            let _ = fs::remove_dir_all(&dir);
        }
        // Write back this run's files now, not during the next one.
        // SAFETY: sync has no preconditions.
        unsafe { libc::sync() };
        Ok(r)
    }

    /// The run's processes, from the owner's start to the copies checked.
    fn run_in(&mut self, case: &Case, input: &Path, dir: &Path) -> Result<Run, Fatal> {
        let mut r = Run {
            status: "ok".into(),
            ..Run::default()
        };
        let (busy0, total0) = procs::cpu_ticks();
        let (user0, sys0) = procs::child_cpu();
        let t0 = Instant::now();
        let mut owner = self.start_owner(case, input, dir)?;
        if !procs::await_listen(self.port(0), &mut owner) {
            procs::stop(&mut owner);
            let who = if case.tool == Tool::Swarm {
                "owner"
            } else {
                "sender"
            };
            r.status = format!("FAILED: the {who} did not start");
            return Ok(r);
        }
        r.started = true;
        let mut peers = Vec::new();
        for i in 1..=case.n {
            peers.push(self.start_peer(case, i, dir)?);
        }
        let swarm = case.tool == Tool::Swarm;
        let mut tl = (swarm && case.timeline).then(|| Timeline::start(dir, case.n, case.size, t0));
        let deadline = t0 + Duration::from_secs(case.timeout);
        let mut refs: Vec<&mut Proc> = peers.iter_mut().collect();
        let t1 = procs::await_all(&mut refs, deadline, || {
            if let Some(t) = tl.as_mut() {
                t.sample(false);
            }
        });
        if let Some(t) = tl.take() {
            r.timeline = Some(t.save(&self.ctx.work.0, self.run)?);
        }
        let (busy1, total1) = procs::cpu_ticks();
        r.cpu = crate::stats::cpu_pct(busy1 - busy0, total1 - total0);
        self.finish_owner(case, &mut owner, &mut r);
        // Before cmp: its reading of every copy is not the run's.
        let (user1, sys1) = procs::child_cpu();
        (r.cpu_user, r.cpu_sys) = (user1 - user0, sys1 - sys0);
        let why = std::mem::take(&mut r.status);
        r.status = verify(&peers, input, dir);
        if why != "ok" {
            r.status = why;
        }
        if r.status == "ok" && !swarm && owner.code.as_deref() != Some("0") {
            r.status = format!(
                "FAILED: sender exit {}",
                owner.code.as_deref().unwrap_or("?")
            );
        }
        if case.mem {
            peak_rss(case, dir, &mut r);
        }
        r.secs = format!("{:.2}", (t1 - t0).as_secs_f64());
        Ok(r)
    }
}

impl Bench<'_> {
    /// Deletes the folders of the runs measured so far; not between runs
    /// of one case (see the bash bench's empty_trash: freeing 15,000 chunk
    /// files right before a run swung its CPU time).
    pub fn empty_trash(&self) -> Result<(), Fatal> {
        let trash = self.ctx.work.0.join("trash");
        let _ = fs::remove_dir_all(&trash);
        fs::create_dir_all(&trash)?;
        // SAFETY: sync has no preconditions.
        unsafe { libc::sync() };
        Ok(())
    }

    fn bin(&self, name: &str) -> String {
        self.ctx
            .build
            .join("release")
            .join(name)
            .to_string_lossy()
            .into_owned()
    }

    fn start_owner(&self, case: &Case, input: &Path, dir: &Path) -> Result<Proc, Fatal> {
        let p = |x: &Path| x.to_string_lossy().into_owned();
        let port = self.port(0).to_string();
        let log = dir.join("owner.log");
        let args: Vec<String> = match case.tool {
            Tool::Swarm => vec![
                self.bin("swarm"),
                "owner".into(),
                "--port".into(),
                port,
                "--bind".into(),
                "127.0.0.1".into(),
                "--dir".into(),
                p(&dir.join("owner")),
                "--peers".into(),
                case.n.to_string(),
                p(input),
            ],
            Tool::Unicast => vec![
                self.bin("examples/unicast"),
                "send".into(),
                "--port".into(),
                port,
                "--bind".into(),
                "127.0.0.1".into(),
                "--receivers".into(),
                case.n.to_string(),
                "--wait".into(),
                "60".into(),
                p(input),
            ],
        };
        // The swarm owner is killed at the end, so its peak comes from /proc.
        let mem = (case.mem && case.tool == Tool::Unicast).then(|| dir.join("owner.rss"));
        procs::launch(&log, mem.as_deref(), "warn", &args)
    }

    fn start_peer(&self, case: &Case, i: u32, dir: &Path) -> Result<Proc, Fatal> {
        let p = |x: &Path| x.to_string_lossy().into_owned();
        let owner = format!("127.0.0.1:{}", self.port(0));
        let out = p(&dir.join(format!("p{i}.bin")));
        let args: Vec<String> = match case.tool {
            Tool::Swarm => vec![
                self.bin("swarm"),
                "peer".into(),
                "--owner".into(),
                owner,
                "--port".into(),
                self.port(i).to_string(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--download-neighbor".into(),
                format!("127.0.0.1:{}", self.port(i % case.n + 1)),
                "--dir".into(),
                p(&dir.join(format!("p{i}"))),
                "--out".into(),
                out,
            ],
            Tool::Unicast => vec![
                self.bin("examples/unicast"),
                "recv".into(),
                "--from".into(),
                owner,
                "--out".into(),
                out,
                "--wait".into(),
                "60".into(),
            ],
        };
        let mem = case.mem.then(|| dir.join(format!("p{i}.rss")));
        procs::launch(
            &dir.join(format!("p{i}.log")),
            mem.as_deref(),
            "warn",
            &args,
        )
    }

    /// Swarm: the owner's peak (when asked) and what it sent, then it is
    /// stopped. Unicast: the sender exits by itself once every receiver
    /// acknowledged.
    fn finish_owner(&self, case: &Case, owner: &mut Proc, r: &mut Run) {
        if case.tool == Tool::Unicast {
            procs::await_all(
                &mut [owner],
                Instant::now() + Duration::from_secs(10),
                || {},
            );
            return;
        }
        if case.mem {
            let status = fs::read_to_string(format!("/proc/{}/status", owner.child.id()));
            let hwm = status.unwrap_or_default().lines().find_map(|l| {
                l.strip_prefix("VmHWM:")
                    .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
            });
            r.rss.insert("owner".into(), hwm.unwrap_or_default());
        }
        if matches!(owner.child.try_wait(), Ok(None)) {
            let addr = format!("127.0.0.1:{}", self.port(0));
            let json = Command::new("timeout")
                .args([
                    "10",
                    &self.bin("swarm"),
                    "status",
                    "--owner",
                    &addr,
                    "--json",
                ])
                .stderr(std::process::Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let sent = crate::stats::json_num(&json, "owner_sent_bytes");
            r.sent_x =
                sent.map(|s| crate::stats::fx(s as f64, (u64::from(case.size) << 20) as f64));
        } else {
            note("the swarm owner exited before it was stopped (see its log)");
        }
        procs::stop(owner);
    }
}

/// Each peer's exit and its copy against the input: "ok", or how many
/// failed and the first failure.
fn verify(peers: &[Proc], input: &Path, dir: &Path) -> String {
    let mut bad = 0;
    let mut first = String::new();
    for (k, p) in peers.iter().enumerate() {
        let i = k + 1;
        let why = match p.code.as_deref() {
            Some("timeout") => format!("p{i} timed out"),
            Some("0") => {
                let same = Command::new("cmp")
                    .arg("-s")
                    .arg(input)
                    .arg(dir.join(format!("p{i}.bin")))
                    .status()
                    .is_ok_and(|s| s.success());
                if same {
                    String::new()
                } else {
                    format!("p{i} copy differs")
                }
            }
            code => format!("p{i} exit {}", code.unwrap_or("?")),
        };
        if !why.is_empty() {
            bad += 1;
            if first.is_empty() {
                first = why;
            }
        }
    }
    if bad == 0 {
        "ok".into()
    } else {
        format!("FAILED: {bad} of {} peers ({first})", peers.len())
    }
}

/// Peak RSS (KiB) of each peer (/usr/bin/time's last line) and, for
/// unicast, of the sender and the largest receiver.
fn peak_rss(case: &Case, dir: &Path, r: &mut Run) {
    let last = |f: &str| {
        let text = fs::read_to_string(dir.join(f)).unwrap_or_default();
        text.lines().last().unwrap_or("").to_string()
    };
    let mut max = 0u64;
    for i in 1..=case.n {
        let v = last(&format!("p{i}.rss"));
        max = max.max(v.parse().unwrap_or(0));
        r.rss.insert(format!("p{i}"), v);
    }
    if case.tool == Tool::Unicast {
        r.rss.insert("sender".into(), last("owner.rss"));
        r.rss.insert("receiver".into(), max.to_string());
    }
}

/// Saves a failed run's logs under BENCH_OUT/logs/; returns where.
fn keep_logs(ctx: &Ctx, dir: &Path) -> String {
    let dest = ctx
        .out
        .join("logs")
        .join(dir.file_name().unwrap_or_default());
    let _ = fs::create_dir_all(&dest);
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.path().extension().is_some_and(|e| e == "log") {
            let _ = fs::copy(entry.path(), dest.join(entry.file_name()));
        }
    }
    dest.to_string_lossy().into_owned()
}
