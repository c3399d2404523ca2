//! A peer of the ring: fetch, trade, reassemble, verify, leave.
//!
//! [`run`] is the coordinator. It binds the upload port first (a taken
//! port fails at once), resumes from a cached manifest and chunk files if
//! `--dir` has them, and starts three kinds of thread:
//!
//! - the owner link ([`owner_link`]) fetches the manifest and this peer's
//!   seeded chunks;
//! - the upload side ([`upload`]) serves the upload neighbour;
//! - the download side ([`download`]) pulls from the download neighbour.
//!
//! They share the [`Store`] (whose lock is held only for bookkeeping) and
//! report to the coordinator on one channel of [`Event`]s. The
//! coordinator prints progress, reassembles the file once every chunk is
//! held, and decides when to exit: the file is verified and the upload
//! neighbour holds every chunk, or no upload neighbour has been in
//! contact for `--linger`.

mod download;
mod owner_link;
mod upload;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};

use crate::cli::PeerArgs;
use crate::error::{Error, Result};
use crate::manifest::{Digest, to_hex};
use crate::net::{self, Stopper};
use crate::store::{self, Store};

/// What the peer's threads tell the coordinator.
#[derive(Debug)]
pub(crate) enum Event {
    /// The manifest is known and the store is open.
    Store(Arc<Store>),
    /// The named upload neighbour holds every chunk.
    UploadNeighbourComplete(String),
    /// A thread hit an error the peer cannot get past.
    Fatal(Error),
}

/// State the peer's threads share: counters, the event channel and the
/// stop flag. Nothing here needs a lock.
#[derive(Debug)]
pub(crate) struct Shared {
    /// This peer's name in logs, "peer PORT".
    pub name: String,
    started: Instant,
    /// Chunk bytes stored from the owner.
    pub from_owner: AtomicU64,
    /// Chunk bytes stored from the download neighbour.
    pub from_ring: AtomicU64,
    /// Milliseconds after `started` of the last frame from any upload
    /// neighbour.
    last_upload_contact: AtomicU64,
    /// Set when the peer is leaving; every loop checks it.
    stop: AtomicBool,
    /// Set by the download side while the download neighbour delivers
    /// nothing; the owner link then fetches missing chunks itself.
    pub stalled: AtomicBool,
    pub events: Sender<Event>,
}

impl Shared {
    /// Notes that an upload neighbour was heard from.
    pub fn upload_contact(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_upload_contact.fetch_max(now, Ordering::Relaxed);
    }

    /// Whether the peer is leaving.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Whether the owner should stand in for the download neighbour.
    pub fn stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed)
    }

    fn since_upload_contact(&self) -> Duration {
        let last = self.last_upload_contact.load(Ordering::Relaxed);
        self.started
            .elapsed()
            .saturating_sub(Duration::from_millis(last))
    }
}

/// What a finished peer reports.
#[derive(Debug, Clone)]
pub struct Report {
    /// Where the verified file was written.
    pub path: PathBuf,
    /// Its SHA-256.
    pub digest: Digest,
    /// Chunk bytes received from the owner.
    pub from_owner: u64,
    /// Chunk bytes received from the download neighbour.
    pub from_ring: u64,
    /// Time from start until the file was verified.
    pub elapsed: Duration,
}

/// The most chunk requests one link may have in flight: about 4 MiB
/// worth, at least 4. Within it the download side sizes its window to
/// the link it measures.
pub fn request_window(chunk_size: u32) -> usize {
    ((4 << 20) / chunk_size as usize).clamp(4, 64)
}

/// Runs a peer until it has the verified file and may leave.
pub fn run(args: &PeerArgs) -> Result<Report> {
    let listener = net::listen(args.listen)?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("read the listening address", e))?;
    let (events, event_rx) = crossbeam_channel::unbounded();
    let shared = Arc::new(Shared {
        name: format!("peer {}", local.port()),
        started: Instant::now(),
        from_owner: AtomicU64::new(0),
        from_ring: AtomicU64::new(0),
        last_upload_contact: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        stalled: AtomicBool::new(false),
        events,
    });
    let name = shared.name.clone();
    log::info!(
        "{name}: listening on {local}; owner {}, download neighbour {}",
        args.owner,
        args.download_neighbor
    );

    // Resume: a cached manifest lets the ring start before the owner is
    // reachable, with every chunk file re-hashed first.
    let cached = match store::read_manifest(&args.dir) {
        Ok(m) => m,
        Err(e) => {
            log::warn!("{name}: ignoring the cached manifest: {e}");
            None
        }
    };
    let mut store = None;
    if let Some(m) = cached {
        let s = Arc::new(Store::open(&args.dir, m)?);
        log::info!(
            "{name}: resuming from {}: {} of {} chunks verified on disk",
            args.dir.display(),
            s.held(),
            s.layout().count()
        );
        store = Some(s);
    }

    let link = owner_link::OwnerLink {
        addr: args.owner,
        dir: args.dir.clone(),
        store: store.clone(),
        shared: Arc::clone(&shared),
        wait: args.wait,
    };
    thread::Builder::new()
        .name("owner link".into())
        .spawn(move || link.run())
        .map_err(|e| Error::io("start the owner link thread", e))?;

    let store = match store {
        Some(s) => s,
        None => wait_for_store(&event_rx, args.wait)?,
    };

    // The output grows as chunks arrive, so little is left to do at the
    // end; it takes its final name only once whole and verified.
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.dir.join(store.manifest().name()));
    store.begin_assembly(&out)?;

    let stopper = Stopper::new(local);
    let up = upload::Upload {
        listener,
        store: Arc::clone(&store),
        shared: Arc::clone(&shared),
        stopper: stopper.clone(),
    };
    thread::Builder::new()
        .name("upload".into())
        .spawn(move || up.run())
        .map_err(|e| Error::io("start the upload thread", e))?;
    let down = download::Download {
        addr: args.download_neighbor,
        store: Arc::clone(&store),
        shared: Arc::clone(&shared),
        stall_timeout: args.stall_timeout,
    };
    let download = thread::Builder::new()
        .name("download".into())
        .spawn(move || down.run())
        .map_err(|e| Error::io("start the download thread", e))?;

    let result = coordinate(args, &store, &shared, &event_rx);
    if result.is_ok() {
        // Let the download side tell its neighbour we are complete
        // before the process exit resets the connection; that neighbour
        // may be waiting for exactly that message to leave.
        let deadline = Instant::now() + net::HANDSHAKE_TIMEOUT;
        while !download.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    stopper.stop();
    result
}

/// Waits for the owner link to open the store.
fn wait_for_store(events: &Receiver<Event>, wait: Duration) -> Result<Arc<Store>> {
    // The owner link gives up after `wait` itself; the margin covers its
    // last connect attempt and handshake.
    let deadline = wait + net::CONNECT_TIMEOUT + net::HANDSHAKE_TIMEOUT;
    loop {
        match events.recv_timeout(deadline) {
            Ok(Event::Store(store)) => return Ok(store),
            Ok(Event::Fatal(e)) => return Err(e),
            Ok(Event::UploadNeighbourComplete(_)) => {}
            Err(_) => {
                return Err(Error::Timeout("no manifest from the owner".into()));
            }
        }
    }
}

/// The coordinator loop: progress, reassembly and the exit rule.
fn coordinate(
    args: &PeerArgs,
    store: &Arc<Store>,
    shared: &Shared,
    events: &Receiver<Event>,
) -> Result<Report> {
    let name = &shared.name;
    let (_, stored) = store.subscribe();
    let ticker = crossbeam_channel::tick(Duration::from_secs(1));
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.dir.join(store.manifest().name()));
    let total = store.layout().count();
    let mut report: Option<Report> = None;
    let mut upload_done = false;
    let mut last_bytes = 0u64;
    let mut last_tick = Instant::now();
    let mut completed_at = None;
    let mut held = store.held();
    let mut progress_at = Instant::now();
    loop {
        if report.is_none() && store.is_complete() {
            match finish(store, shared, &out) {
                Ok(r) => {
                    completed_at = Some(Instant::now());
                    report = Some(r);
                }
                // Damaged chunks were dropped; the ring fetches them again.
                Err(Error::Integrity(msg)) => log::warn!("{name}: {msg}"),
                Err(e) => return Err(e),
            }
        }
        if let (Some(r), Some(at)) = (&report, completed_at) {
            if upload_done {
                log::info!("{name}: upload neighbour holds every chunk; exiting");
                return Ok(r.clone());
            }
            let quiet = shared.since_upload_contact().min(at.elapsed());
            if quiet >= args.linger {
                log::info!(
                    "{name}: no upload neighbour in contact for {} s; exiting",
                    args.linger.as_secs()
                );
                return Ok(r.clone());
            }
        }
        select! {
            recv(events) -> ev => match ev {
                Ok(Event::UploadNeighbourComplete(who)) => {
                    log::info!("{name}: {who} reports it holds every chunk");
                    upload_done = true;
                }
                Ok(Event::Fatal(e)) => return Err(e),
                Ok(Event::Store(_)) | Err(_) => {}
            },
            recv(stored) -> _ => {
                // Drain the burst; completion is checked at the top.
                while stored.try_recv().is_ok() {}
            }
            recv(ticker) -> _ => {
                if let Err(e) = store.flush_summary() {
                    log::warn!("{name}: {e}");
                }
                if report.is_none() {
                    store.sync_partial();
                }
                if report.is_none() && store.held() != held {
                    held = store.held();
                    progress_at = Instant::now();
                } else if report.is_none() && progress_at.elapsed() >= args.wait {
                    return Err(Error::Timeout(format!(
                        "no chunk arrived from the owner or the download neighbour for {} s",
                        args.wait.as_secs()
                    )));
                }
                if report.is_none() {
                    let bytes = shared.from_owner.load(Ordering::Relaxed)
                        + shared.from_ring.load(Ordering::Relaxed);
                    let secs = last_tick.elapsed().as_secs_f64().max(1e-3);
                    log::info!(
                        "{name}: {held}/{total} chunks ({:.1}%), {:.1} MiB/s",
                        percent(held, total),
                        (bytes - last_bytes) as f64 / secs / MIB,
                        );
                    last_bytes = bytes;
                    last_tick = Instant::now();
                }
            }
        }
    }
}

const MIB: f64 = 1024.0 * 1024.0;

fn percent(held: u32, total: u32) -> f64 {
    if total == 0 {
        100.0
    } else {
        100.0 * f64::from(held) / f64::from(total)
    }
}

/// Reassembles and verifies the file and prints the closing lines.
fn finish(store: &Store, shared: &Shared, out: &std::path::Path) -> Result<Report> {
    let name = &shared.name;
    store.flush_summary()?;
    let digest = store.finish_assembly()?;
    let elapsed = shared.started.elapsed();
    let from_owner = shared.from_owner.load(Ordering::Relaxed);
    let from_ring = shared.from_ring.load(Ordering::Relaxed);
    log::info!(
        "{name}: complete in {:.2} s: {:.2} MiB from the owner, {:.2} MiB from the download neighbour",
        elapsed.as_secs_f64(),
        from_owner as f64 / MIB,
        from_ring as f64 / MIB,
    );
    log::info!(
        "{name}: verified sha256 {}  {}",
        to_hex(&digest),
        out.display()
    );
    Ok(Report {
        path: out.to_path_buf(),
        digest,
        from_owner,
        from_ring,
        elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_covers_about_four_mib() {
        assert_eq!(request_window(102_400), 40);
        assert_eq!(request_window(1024), 64);
        assert_eq!(request_window(16 << 20), 4);
    }
}
