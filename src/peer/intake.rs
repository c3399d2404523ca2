//! The intake: chunks verified and stored off the socket's thread.
//!
//! A connection's reader (see [`crate::conn`]) hands each CHUNK frame,
//! whole and uncopied, to its [`Intake`], and goes back to the socket.
//! Up to [`WORKERS`] threads take the frames from a bounded channel and
//! do what costs CPU per byte: the chunk's SHA-256, its chunk file and
//! its write into the output ([`Store::put`], which verifies before it
//! writes), then report it to the coordinator, Corrupt with its source
//! included. The frame's buffer comes back to the reader to take the next
//! frame, so the pipeline allocates nothing per chunk once it runs.
//!
//! The order of what the coordinator hears is kept where it matters:
//! before the role handles another message of the connection (the
//! owner's SEED_DONE above all; a neighbour's HAVE need not wait, as a
//! chunk still with the intake is in flight for the coordinator and never
//! asked for again), [`Intake::drain`] waits for every chunk taken so far
//! to be stored and reported, and the connection's end is reported only
//! after [`Intake::finish`] has joined the workers. The
//! channel's bound keeps a slow disk from piling up chunks in memory: the
//! reader then waits, and TCP slows the sender.

use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender};

use super::Shared;
use super::download::store_chunk;
use crate::conn::{ChunkSink, Handle};
use crate::error::{Error, Result};
use crate::manifest::ChunkId;
use crate::store::Store;
use crate::wire::{Frame, Message};

/// Threads per connection that verify and store chunks, at most. Two
/// store a connection's chunks in parallel, beside the reader.
pub const WORKERS: usize = 2;

/// About how many bytes of chunks a connection's workers and queue hold
/// beyond the frame being read: with 100 KiB chunks two workers and a
/// queue of eight; with chunks over 2 MiB one worker and no queue (the
/// reader hands each frame over directly), so a connection then holds at
/// most two chunks' buffers, against one when the reader stored them
/// itself.
const PIPELINE_BYTES: usize = 4 << 20;

/// The most chunks that may wait for a worker per connection.
const QUEUE_MAX: usize = 8;

/// A chunk frame on its way to a worker.
struct Job {
    id: ChunkId,
    frame: Frame,
    conn: Handle,
}

/// What a worker hands back: the frame's buffer and, if storing failed
/// (the disk is full), why; the coordinator has been told already.
struct Done {
    buf: Vec<u8>,
    failed: Option<Error>,
}

/// One connection's intake: its workers, started at the first chunk.
pub(super) struct Intake {
    store: Arc<Store>,
    shared: Arc<Shared>,
    jobs: Option<Sender<Job>>,
    done: Option<Receiver<Done>>,
    workers: Vec<JoinHandle<()>>,
    /// Frames sent to the workers and not yet handed back.
    in_flight: usize,
    /// Buffers handed back, ready for the decoder.
    spares: Vec<Vec<u8>>,
    /// The first failure a worker handed back, until it is returned.
    failed: Option<Error>,
}

impl Intake {
    /// An intake for one connection's chunks, storing into `store`.
    pub fn new(store: Arc<Store>, shared: Arc<Shared>) -> Intake {
        Intake {
            store,
            shared,
            jobs: None,
            done: None,
            workers: Vec::new(),
            in_flight: 0,
            spares: Vec::new(),
            failed: None,
        }
    }

    /// Starts the workers.
    fn start(&mut self) -> Result<()> {
        let chunk = self.store.layout().max_chunk_len().max(1) as usize;
        let room = PIPELINE_BYTES / chunk;
        let workers = room.clamp(1, WORKERS);
        let queue = room.saturating_sub(workers).min(QUEUE_MAX);
        let (jobs_tx, jobs_rx) = crossbeam_channel::bounded::<Job>(queue);
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        for i in 0..workers {
            let (jobs, done) = (jobs_rx.clone(), done_tx.clone());
            let (store, shared) = (Arc::clone(&self.store), Arc::clone(&self.shared));
            let worker = thread::Builder::new()
                .name(format!("intake {i}"))
                .spawn(move || work(&store, &shared, &jobs, &done))
                .map_err(|e| Error::io("start an intake thread", e))?;
            self.workers.push(worker);
        }
        self.jobs = Some(jobs_tx);
        self.done = Some(done_rx);
        Ok(())
    }

    /// Takes back what the workers finished (all of it, with
    /// `wait_all`); the first failure is returned, once, and ends the
    /// connection.
    fn collect(&mut self, wait_all: bool) -> Result<()> {
        let Some(done) = &self.done else {
            return Ok(());
        };
        while self.in_flight > 0 {
            let next = if wait_all {
                match done.recv() {
                    Ok(d) => d,
                    // Every worker is gone (a panic): nothing more comes.
                    Err(_) => break,
                }
            } else {
                match done.try_recv() {
                    Ok(d) => d,
                    Err(_) => break,
                }
            };
            self.in_flight -= 1;
            if self.spares.len() < QUEUE_MAX + WORKERS {
                self.spares.push(next.buf);
            }
            if self.failed.is_none() {
                self.failed = next.failed;
            }
        }
        match self.failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Waits until every chunk taken so far is stored and reported.
    pub fn drain(&mut self) -> Result<()> {
        self.collect(true)
    }

    /// Stores and reports every chunk taken, then joins the workers.
    /// Returns the first failure not returned yet (a full disk).
    pub fn finish(&mut self) -> Result<()> {
        let collected = self.collect(true);
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        self.done = None;
        collected
    }
}

impl Drop for Intake {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

impl ChunkSink for Intake {
    fn spare(&mut self) -> Vec<u8> {
        // A failure is kept for the next take or drain.
        if let Err(e) = self.collect(false) {
            self.failed = Some(e);
        }
        self.spares.pop().unwrap_or_default()
    }

    fn take(&mut self, id: ChunkId, frame: Frame, conn: &Handle) -> Result<()> {
        self.collect(false)?;
        if self.jobs.is_none() {
            self.start()?;
        }
        let Some(jobs) = &self.jobs else {
            return Err(Error::Bug("an intake without workers".into()));
        };
        let job = Job {
            id,
            frame,
            conn: conn.clone(),
        };
        // Blocks while the queue is full: the workers set the pace.
        if jobs.send(job).is_err() {
            return Err(Error::Bug("the intake's workers are gone".into()));
        }
        self.in_flight += 1;
        Ok(())
    }
}

/// A worker: verifies, stores and reports each chunk it is given, until
/// the intake closes the queue.
fn work(store: &Store, shared: &Shared, jobs: &Receiver<Job>, done: &Sender<Done>) {
    for job in jobs {
        let failed = match job.frame.message(store.layout()) {
            Ok(Message::Chunk { id, data }) if id == job.id => {
                store_chunk(store, shared, &job.conn, id, data).err()
            }
            _ => Some(Error::Bug(format!(
                "chunk {} changed in the intake",
                job.id
            ))),
        };
        if failed.is_some() {
            // Ends the connection's reader too.
            job.conn.close();
        }
        let _ = done.send(Done {
            buf: job.frame.into_buf(),
            failed,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::time::Instant;

    use crate::conn::{Conn, Setup};
    use crate::store::{self, Put};
    use crate::wire::{self, Decoder};

    use super::super::Event;

    /// The frame of `msg`, taken whole out of a decoder as a reader does.
    fn frame(msg: &Message<'_>, layout: &crate::manifest::Layout) -> Frame {
        let mut buf = Vec::new();
        wire::encode(msg, &mut buf);
        let mut dec = Decoder::new();
        dec.set_layout(layout.clone());
        let mut r = &buf[..];
        assert!(dec.fill(&mut r).unwrap());
        dec.take_frame(Vec::new()).unwrap()
    }

    #[test]
    fn chunks_are_verified_stored_and_reported_with_their_source() {
        // 1. An owner's store to take chunks from, and a peer's to fill.
        let (dir, _, owner) = crate::testdir::split_sample("intake", 5000);
        let layout = owner.layout().clone();
        let peer = Arc::new(Store::open(&dir.join("peer"), owner.manifest().clone()).unwrap());
        let (events, event_rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            name: "peer test".into(),
            started: Instant::now(),
            wired: true,
            sources: 1,
            auto_sources: false,
            secret: None,
            timeouts: Default::default(),
            limits: Default::default(),
            events,
        });
        // 2. A connection, for its handle: the source chunks are from.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _other = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().unwrap();
        let conn = Conn::start(stream, Decoder::new(), Setup::default()).unwrap();
        let handle = conn.handle().clone();

        // 3. Every chunk but one through the intake, chunk 2 corrupt.
        let mut intake = Intake::new(Arc::clone(&peer), Arc::clone(&shared));
        let mut chunk = vec![0u8; 1024];
        for id in layout.ids() {
            owner.read_chunk(id, &mut chunk).unwrap();
            if id.get() == 2 {
                chunk[10] ^= 1;
            }
            let msg = Message::Chunk { id, data: &chunk };
            intake.take(id, frame(&msg, &layout), &handle).unwrap();
        }
        intake.drain().unwrap();

        // 4. Every chunk is reported once, from this connection, after
        // it was stored; the corrupt one as Corrupt and not stored.
        let mut reported: Vec<(u32, Put)> = event_rx
            .try_iter()
            .map(|e| match e {
                Event::Received { from, id, put, .. } => {
                    assert_eq!(from, handle.id());
                    (id.get(), put)
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        reported.sort_by_key(|&(id, _)| id);
        assert_eq!(
            reported,
            [
                (0, Put::Stored),
                (1, Put::Stored),
                (2, Put::Corrupt),
                (3, Put::Stored),
                (4, Put::Stored)
            ]
        );
        for id in layout.ids() {
            assert_eq!(peer.has(id), id.get() != 2, "chunk {id}");
            assert_eq!(store::chunk_path(peer.dir(), id).exists(), id.get() != 2);
        }
        intake.finish().unwrap();
        handle.close();
    }
}
