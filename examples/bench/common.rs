//! The runner's shared helpers: where things are (the sources, the build,
//! the output folder), the options every section reads, messages, running
//! the scripts the sections call, the output files' headers (bench.md's
//! and bench.csv's) and the bench-wide lock and temp folder.
//!
//! Everything a section shares with another lives here, so a section's
//! module holds only its own case list, its table and its rows.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

/// Every section, in the order the bench runs them (and ONLY's default).
pub const SECTIONS: [&str; 9] = [
    "netbed", "repair", "loopback", "scaling", "memory", "versions", "sources", "pipeline", "many",
];

/// bench.csv's columns; every row, whichever section writes it, has them all.
pub const CSV_HEAD: &str = "section,case,n,rate_mbit,size_mib,tool,status,seconds,runs,cpu_pct,\
ideal_seconds,ratio,sec_per_gib,peak_rss_kib,owner_sent_x_s,owner_sent_runs,half_seconds,\
half_held_pct,complete_seconds,gone_ms,rewire_ms,fallback_ms,killed,cpu_seconds,cpu_user,cpu_sys,\
cpu_s_per_gib,timeline,timeline_run,received_max_pct,received_median_pct,after_sharing_seconds,\
chunks_kept,chunks_total,owner_cpu_seconds";

/// A fatal error: the bench stops with this one line (and `code`).
#[derive(Debug)]
pub struct Fatal {
    pub msg: String,
    pub code: i32,
}

impl Fatal {
    pub fn new(msg: impl Into<String>) -> Self {
        Fatal {
            msg: msg.into(),
            code: 1,
        }
    }
}

impl From<io::Error> for Fatal {
    fn from(e: io::Error) -> Self {
        Fatal::new(e.to_string())
    }
}

/// A note on stderr, as the bash bench's `note`.
pub fn note(msg: &str) {
    eprintln!("bench: {msg}");
}

/// What every section reads: the flags and variables, and the paths.
pub struct Ctx {
    /// The sources (scripts/ and Cargo.toml are below it).
    pub root: PathBuf,
    /// Cargo's build folder (release/ holds swarm and the examples).
    pub build: PathBuf,
    /// BENCH_OUT: bench.md, bench.csv, bench.svg, timelines, logs/.
    pub out: PathBuf,
    pub smoke: bool,
    pub base_port: u16,
    /// ONLY: the sections asked for.
    pub only: Vec<String>,
    /// Why the netbed cannot run here (not root, no ip/tc), if it cannot.
    pub bed_why: Option<&'static str>,
    /// A temp folder of this run, removed when the runner ends.
    pub work: WorkDir,
}

impl Ctx {
    pub fn wants(&self, section: &str) -> bool {
        self.only.iter().any(|s| s == section)
    }
    pub fn md_path(&self) -> PathBuf {
        self.out.join("bench.md")
    }
    pub fn csv_path(&self) -> PathBuf {
        self.out.join("bench.csv")
    }
    pub fn script(&self, name: &str) -> PathBuf {
        self.root.join("scripts").join(name)
    }
    /// Appends `text` to bench.md.
    pub fn md(&self, text: &str) -> Result<(), Fatal> {
        let mut f = OpenOptions::new().append(true).open(self.md_path())?;
        f.write_all(text.as_bytes())?;
        Ok(())
    }
    /// Keeps `file` in BENCH_OUT/logs/ (a failed run's log).
    pub fn keep_log(&self, file: &Path) {
        let logs = self.out.join("logs");
        let kept = fs::create_dir_all(&logs).and_then(|()| {
            let name = file.file_name().unwrap_or_default();
            fs::copy(file, logs.join(name)).map(|_| ())
        });
        if let Err(e) = kept {
            note(&format!("cannot keep {}: {e}", file.display()));
        }
    }
}

/// Runs `cmd` to its end; stdout to `stdout_to` when given (stderr too
/// when `both`), else inherited. An error only when it cannot start.
pub fn run_to(
    cmd: &mut Command,
    stdout_to: Option<&Path>,
    both: bool,
) -> Result<ExitStatus, Fatal> {
    if let Some(path) = stdout_to {
        let f = File::create(path)?;
        if both {
            cmd.stderr(f.try_clone()?);
        }
        cmd.stdout(f);
    }
    cmd.stdin(Stdio::null())
        .status()
        .map_err(|e| Fatal::new(format!("cannot run {:?}: {e}", cmd.get_program())))
}

/// One line of a command's output (trimmed), or `fallback`.
pub fn capture(program: &str, args: &[&str], fallback: &str) -> String {
    Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| fallback.to_string())
}

/// The lines of `text` that start with `prefix`, without it, joined by
/// newlines (as `grep '^P' | sed 's/^P//'` in a `$(...)`).
pub fn lines_after(text: &str, prefix: &str) -> String {
    let found: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .collect();
    found.join("\n")
}

/// Whether `name` is an executable on PATH (as `command -v`).
pub fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| is_executable(&dir.join(name)))
    })
}

pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The bench-wide lock: one bench at a time, since a second one would
/// tear down the first one's netbed. Held until the runner exits.
pub fn lock() -> Result<File, Fatal> {
    let dir = std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into());
    let f = File::create(Path::new(&dir).join("swarm-bench.lock"))?;
    // SAFETY: flock on a file descriptor we own; no memory is shared.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(Fatal::new(
            "another scripts/bench.sh is running; wait for it to finish",
        ));
    }
    Ok(f)
}

/// A temp folder under TMPDIR, removed on drop.
pub struct WorkDir(pub PathBuf);

impl WorkDir {
    pub fn new() -> Result<Self, Fatal> {
        let dir = std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = Path::new(&dir).join(format!("swarm-bench.{}.{nanos:09}", std::process::id()));
        fs::create_dir(&path)?;
        Ok(WorkDir(path))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Set by SIGINT or SIGTERM. Ctrl-C reaches the running script too (the
/// terminal signals the whole group), which stops its processes and its
/// netbed; the runner waits for it, then stops at the next step, so the
/// temp folder is removed on the way out.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Takes note of SIGINT and SIGTERM instead of dying at once. A handler,
/// not SIG_IGN: a handler is reset on exec, so the scripts run keep
/// their own traps.
pub fn trap_signals() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe { libc::signal(sig, handler as libc::sighandler_t) };
    }
}

/// Stops the bench (exit 130) once interrupted.
pub fn check_interrupt() -> Result<(), Fatal> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err(Fatal {
            msg: String::new(),
            code: 130,
        });
    }
    Ok(())
}
