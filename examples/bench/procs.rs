//! Running one measured case's processes: starting them (under
//! /usr/bin/time for peak memory when asked), waiting for a port to
//! listen, waiting for them to exit against a deadline (sampling the
//! per-peer timeline meanwhile), stopping them, and the counters read
//! around a run: CPU ticks from /proc/stat and the reaped children's
//! CPU-seconds (getrusage).

use std::fs::{self, File};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::common::Fatal;

/// A started process and, once it has exited, how: its exit code (128 +
/// signal when killed, as bash reports it) or "timeout".
pub struct Proc {
    pub child: Child,
    pub code: Option<String>,
}

/// A process still running when its handle goes (a run cut short by an
/// error) is killed and reaped: nothing the bench started outlives it.
impl Drop for Proc {
    fn drop(&mut self) {
        if self.code.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            kill_tree(self);
            let _ = self.child.wait();
        }
    }
}

/// Starts `args` with RUST_LOG=`log_level`, output to `log`, under
/// /usr/bin/time (peak RSS in KiB to `mem`) when `mem` is given.
pub fn launch(
    log: &Path,
    mem: Option<&Path>,
    log_level: &str,
    args: &[String],
) -> Result<Proc, Fatal> {
    let mut cmd = match mem {
        Some(m) => {
            let mut c = Command::new("/usr/bin/time");
            c.arg("-f").arg("%M").arg("-o").arg(m).args(args);
            c
        }
        None => {
            let mut c = Command::new(&args[0]);
            c.args(&args[1..]);
            c
        }
    };
    let out = File::create(log)?;
    cmd.env("RUST_LOG", log_level)
        .stdin(Stdio::null())
        .stderr(out.try_clone()?)
        .stdout(out);
    let child = cmd
        .spawn()
        .map_err(|e| Fatal::new(format!("cannot start {}: {e}", args[0])))?;
    Ok(Proc { child, code: None })
}

/// Whether something listens on TCP `port` here (/proc/net/tcp{,6}, no fork).
pub fn listening(port: u16) -> bool {
    let want = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        fs::read_to_string(table).is_ok_and(|text| {
            text.lines().skip(1).any(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                f.len() > 3 && f[3] == "0A" && f[1].ends_with(&want)
            })
        })
    })
}

/// Waits (10 s at most) until `port` listens; false if `p` exits first.
pub fn await_listen(port: u16, p: &mut Proc) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !listening(port) {
        if matches!(p.child.try_wait(), Ok(Some(_))) || Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(10));
    }
    true
}

fn code_of(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c.to_string(),
        (None, Some(s)) => (128 + s).to_string(),
        _ => "?".into(),
    }
}

/// Kills `p` and its children (/usr/bin/time's child first: killing
/// time alone would orphan it).
fn kill_tree(p: &mut Proc) {
    let pid = p.child.id();
    let children =
        fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for child in children
        .split_whitespace()
        .filter_map(|c| c.parse::<i32>().ok())
    {
        // SAFETY: a signal to a process this run started.
        unsafe { libc::kill(child, libc::SIGKILL) };
    }
    let _ = p.child.kill();
}

/// Waits until every process in `procs` has exited or `deadline` passes,
/// then kills what is left (code "timeout"). Calls `tick` every 30 ms
/// meanwhile. Returns when the last one was seen to exit.
pub fn await_all(procs: &mut [&mut Proc], deadline: Instant, mut tick: impl FnMut()) -> Instant {
    loop {
        let mut left = 0;
        for p in procs.iter_mut().filter(|p| p.code.is_none()) {
            match p.child.try_wait() {
                Ok(Some(status)) => p.code = Some(code_of(status)),
                _ => left += 1,
            }
        }
        if left == 0 {
            break;
        }
        tick();
        if Instant::now() >= deadline {
            for p in procs.iter_mut().filter(|p| p.code.is_none()) {
                kill_tree(p);
                let _ = p.child.wait();
                p.code = Some("timeout".into());
            }
            break;
        }
        sleep(Duration::from_millis(30));
    }
    Instant::now()
}

/// SIGTERM, then SIGKILL after 5 s.
pub fn stop(p: &mut Proc) {
    if p.code.is_none() {
        // SAFETY: a signal to a process this run started and has not reaped.
        unsafe { libc::kill(p.child.id() as i32, libc::SIGTERM) };
        await_all(&mut [p], Instant::now() + Duration::from_secs(5), || {});
    }
}

/// Busy and total CPU ticks of the machine so far (/proc/stat).
pub fn cpu_ticks() -> (u64, u64) {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        return (0, 0);
    }
    let total: u64 = v.iter().sum();
    (total - v[3] - v[4], total)
}

/// User and system CPU-seconds of every child reaped so far.
pub fn child_cpu() -> (f64, f64) {
    // SAFETY: getrusage writes into the struct we give it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (s(ru.ru_utime), s(ru.ru_stime))
}
