//! The per-peer timeline of a swarm run: every 0.25 s, how many chunk
//! IDs each peer's DIR/summary.txt lists (rewritten by rename while
//! chunks arrive, so it lags by up to a second), as rows "seconds, peer,
//! held, total" since the owner's start. A peer seen holding every chunk
//! is not read again.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::Fatal;

/// swarm's default --chunk-size, which the bench uses.
const CHUNK_BYTES: u64 = 102_400;
const EVERY: Duration = Duration::from_millis(250);

pub struct Timeline {
    dir: PathBuf,
    t0: Instant,
    next: Instant,
    total: u64,
    held: Vec<u64>,
    rows: String,
}

impl Timeline {
    /// Starts sampling the peers p1..pN of the run in `dir`.
    pub fn start(dir: &Path, n: u32, size_mib: u32, t0: Instant) -> Self {
        let total = (u64::from(size_mib) << 20).div_ceil(CHUNK_BYTES);
        let mut t = Timeline {
            dir: dir.to_path_buf(),
            t0,
            next: Instant::now(),
            total,
            held: vec![0; n as usize],
            rows: String::new(),
        };
        t.sample(false);
        t
    }

    /// One sample, if 0.25 s has passed since the last one (or `now`).
    pub fn sample(&mut self, now: bool) {
        let at = Instant::now();
        if !now && at < self.next {
            return;
        }
        self.next = at + EVERY;
        let ms = at.duration_since(self.t0).as_millis();
        let secs = format!("{}.{:03}", ms / 1000, ms % 1000);
        for (k, held) in self.held.iter_mut().enumerate() {
            let i = k + 1;
            if *held < self.total {
                let summary = self.dir.join(format!("p{i}/summary.txt"));
                // No summary yet counts as none held.
                *held = fs::read_to_string(summary).map_or(0, |s| s.lines().count() as u64);
            }
            self.rows
                .push_str(&format!("{secs},{i},{held},{}\n", self.total));
        }
    }

    /// The last sample, then the samples to work/timeline-runR.csv.
    pub fn save(mut self, work: &Path, run: u32) -> Result<PathBuf, Fatal> {
        self.sample(true);
        let path = work.join(format!("timeline-run{run}.csv"));
        fs::write(&path, format!("seconds,peer,held,total\n{}", self.rows))?;
        Ok(path)
    }
}
