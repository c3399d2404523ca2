//! The download side: pulls chunks from the download neighbour.
//!
//! One thread connects (retrying with backoff while the neighbour is not
//! up), reads the neighbour's chunk-ID list and its HAVE updates, and keeps
//! requests in flight for chunks the neighbour has and this peer lacks.
//! How many is measured, not fixed ([`Pacer`]): enough to cover the
//! round trip, and no more, because every chunk queued at the neighbour
//! delays the chunks behind it, and in a ring that delay adds up hop
//! after hop. Every chunk is verified
//! by the store before it is kept; a bad one is discarded and asked for
//! again. Once the store holds every chunk it sends COMPLETE and ends.
//!
//! It also watches for a stall: when the neighbour is unreachable or has
//! delivered nothing for `--stall-timeout`, it raises the shared `stalled`
//! flag so the owner link fetches missing chunks, and lowers it when the
//! neighbour delivers again. A neighbour that sends [`MAX_BAD_CHUNKS`]
//! corrupt chunks is dropped and left alone for a while.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use super::Shared;
use super::upload::id_list;
use crate::chunks::ChunkSet;
use crate::error::{Error, Result};
use crate::manifest::ChunkId;
use crate::net::{self, Backoff};
use crate::store::{Put, Store};
use crate::wire::{self, Decoder, Message};

/// Corrupt chunks a neighbour may send in one connection before it is
/// dropped in favour of the owner.
pub const MAX_BAD_CHUNKS: u32 = 3;

/// How long a complete peer keeps trying to reach its neighbour to tell
/// it so.
const GIVE_UP_WHEN_COMPLETE: Duration = Duration::from_secs(3);

/// Everything the download thread needs.
pub(crate) struct Download {
    pub addr: SocketAddr,
    pub store: Arc<Store>,
    pub shared: Arc<Shared>,
    pub stall_timeout: Duration,
}

/// Why a connected session ended early.
enum Ended {
    /// An error; reconnect after the usual backoff.
    Failed(Error),
    /// Too many corrupt chunks; stay away for a while.
    Untrusted,
}

impl From<Error> for Ended {
    fn from(e: Error) -> Ended {
        Ended::Failed(e)
    }
}

impl Download {
    /// The thread's body: sessions until the store is complete.
    pub fn run(self) {
        let name = &self.shared.name;
        let mut backoff = Backoff::default();
        let mut last_delivery = Instant::now();
        let mut failures = 0u32;
        let mut complete_since = None;
        loop {
            // A peer that is already complete still connects once, to
            // tell its neighbour so.
            if self.shared.stopping() {
                return;
            }
            match self.session(&mut last_delivery, &mut backoff) {
                Ok(()) => return,
                Err(Ended::Untrusted) => {
                    // Let the owner stand in at once, and for a while.
                    self.set_stalled(true, &format!("sent {MAX_BAD_CHUNKS} corrupt chunks"));
                    let until = Instant::now() + 3 * self.stall_timeout;
                    while Instant::now() < until && !self.shared.stopping() && !self.finished() {
                        thread::sleep(net::READ_TICK);
                    }
                    last_delivery = Instant::now() - self.stall_timeout;
                    continue;
                }
                Err(Ended::Failed(e)) => {
                    failures += 1;
                    // A neighbour that is not up yet refuses many times
                    // in a row; say so once.
                    if failures == 1 || !matches!(e, Error::Io { .. }) {
                        log::warn!("{name}: download neighbour at {}: {e}; retrying", self.addr);
                    }
                    if !matches!(e, Error::Io { .. }) {
                        failures = 0;
                    }
                }
            }
            // Complete or not, keep trying a little: the neighbour may
            // be starting up and then wait for our COMPLETE to leave. A
            // neighbour still unreachable 3 s after we completed is gone.
            if self.finished() {
                let since = *complete_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= GIVE_UP_WHEN_COMPLETE {
                    return;
                }
            }
            self.check_stall(last_delivery);
            thread::sleep(backoff.next_delay());
        }
    }

    fn finished(&self) -> bool {
        self.store.is_complete()
    }

    /// Raises the stall flag once nothing has come from the ring for
    /// `--stall-timeout` while chunks are missing.
    fn check_stall(&self, last_delivery: Instant) {
        if !self.finished() && last_delivery.elapsed() >= self.stall_timeout {
            let why = format!("delivered nothing for {} s", self.stall_timeout.as_secs());
            self.set_stalled(true, &why);
        }
    }

    fn set_stalled(&self, stalled: bool, why: &str) {
        let name = &self.shared.name;
        let was = self.shared.stalled.swap(stalled, Ordering::Relaxed);
        match (was, stalled) {
            (false, true) => log::warn!(
                "{name}: the download neighbour at {} {why}; fetching missing chunks from the owner",
                self.addr,
            ),
            (true, false) => log::info!(
                "{name}: the download neighbour at {} is delivering again; back to the ring",
                self.addr
            ),
            _ => {}
        }
    }

    fn session(
        &self,
        last_delivery: &mut Instant,
        backoff: &mut Backoff,
    ) -> std::result::Result<(), Ended> {
        let name = &self.shared.name;
        let store = &self.store;
        let mut stream = net::connect(self.addr).map_err(|e| Error::io("connect", e))?;
        stream
            .set_read_timeout(Some(net::FAST_TICK))
            .map_err(|e| Error::io("configure connection", e))?;
        let addr = self.addr.to_string();
        let file_id = store.manifest().id();
        let hello = Message::Hello {
            version: wire::VERSION,
            file_id,
            name,
        };
        wire::send(&mut stream, &hello).map_err(|e| Error::wire(&addr, e.into()))?;
        let mut dec = Decoder::new();
        net::fill_within(&mut dec, &mut stream, net::HANDSHAKE_TIMEOUT)
            .map_err(|e| Error::wire(&addr, e))?;
        let refused = |why: String| Error::wire(&addr, wire::Error::Refused(why));
        let who = match dec.message().map_err(|e| Error::wire(&addr, e))? {
            Message::Hello {
                file_id: theirs,
                name: who,
                ..
            } if theirs == file_id => {
                if who.is_empty() {
                    addr.clone()
                } else {
                    who.to_string()
                }
            }
            Message::Hello { .. } => {
                return Err(refused("it shares a different file".into()).into());
            }
            Message::Refuse(why) => return Err(refused(why.into()).into()),
            other => {
                return Err(Error::wire(&addr, wire::Error::Unexpected(other.name())).into());
            }
        };
        dec.set_layout(*store.layout());
        backoff.reset();
        log::info!("{name}: connected to download neighbour {who} at {addr}");
        let mut link = Link {
            stream,
            who,
            offered: ChunkSet::new(store.layout().count()),
            in_flight: ChunkSet::new(store.layout().count()),
            pacer: Pacer::new(super::request_window(store.layout().chunk_size())),
            last_sent: Instant::now(),
            buf: Vec::with_capacity(256),
            bad: 0,
        };
        let result = self.pull(&mut link, &mut dec, last_delivery);
        // Whatever was asked for and not received may come from elsewhere.
        store.release(link.in_flight.iter(store.layout()).collect::<Vec<_>>());
        result
    }

    /// The request loop of one connected session.
    fn pull(
        &self,
        link: &mut Link,
        dec: &mut Decoder,
        last_delivery: &mut Instant,
    ) -> std::result::Result<(), Ended> {
        let name = &self.shared.name;
        let store = &self.store;
        let who = link.who.clone();
        let fail = |err| Error::wire(who.as_str(), err);
        let mut last_heard = Instant::now();
        loop {
            if self.finished() {
                link.send(&Message::Complete)?;
                log::info!("{name}: holds every chunk; told {who}");
                net::close_gracefully(&mut link.stream, net::HANDSHAKE_TIMEOUT);
                return Ok(());
            }
            if self.shared.stopping() {
                return Ok(());
            }
            self.check_stall(*last_delivery);
            link.request_more(store, name)?;
            if link.last_sent.elapsed() >= net::KEEPALIVE_EVERY {
                link.send(&Message::KeepAlive)?;
            }
            match dec.fill(&mut link.stream) {
                Ok(true) => last_heard = Instant::now(),
                Ok(false) if last_heard.elapsed() < net::IDLE_TIMEOUT => continue,
                Ok(false) => {
                    return Err(fail(wire::Error::Io(std::io::ErrorKind::TimedOut.into())).into());
                }
                Err(e) => return Err(fail(e).into()),
            }
            match dec.message().map_err(fail)? {
                Message::ChunkList(set) => {
                    log::info!(
                        target: "swarm::chunk",
                        "{name}: received chunk-ID list from {who} ({} chunks)",
                        set.len()
                    );
                    link.offered = set;
                }
                Message::Have(ids) => {
                    log::info!(
                        target: "swarm::chunk",
                        "{name}: received chunk-ID update from {who}: {}",
                        id_list(&ids)
                    );
                    for id in ids {
                        link.offered.insert(id);
                    }
                }
                Message::Chunk { id, data } => {
                    link.pacer.arrived(id);
                    if !link.in_flight.remove(id) {
                        return Err(fail(wire::Error::Unexpected("unrequested chunk")).into());
                    }
                    match store.put(id, data)? {
                        Put::Stored => {
                            *last_delivery = Instant::now();
                            self.set_stalled(false, "");
                            self.shared
                                .from_ring
                                .fetch_add(data.len() as u64, Ordering::Relaxed);
                            log::info!(target: "swarm::chunk", "{name}: received chunk {id} from {who}");
                        }
                        Put::Duplicate => {
                            log::debug!("{name}: chunk {id} from {who} was already held");
                        }
                        Put::Corrupt => {
                            link.bad += 1;
                            if link.bad >= MAX_BAD_CHUNKS {
                                log::warn!(
                                    "{name}: chunk {id} from {who} failed its SHA-256 check; \
                                     {MAX_BAD_CHUNKS} bad chunks from it; disconnecting"
                                );
                                return Err(Ended::Untrusted);
                            }
                            log::warn!(
                                "{name}: chunk {id} from {who} failed its SHA-256 check; \
                                 discarded, asking again"
                            );
                        }
                    }
                }
                Message::KeepAlive => {}
                Message::Refuse(why) => return Err(fail(wire::Error::Refused(why.into())).into()),
                other => return Err(fail(wire::Error::Unexpected(other.name())).into()),
            }
        }
    }
}

/// One connected session's state.
struct Link {
    stream: TcpStream,
    who: String,
    /// What the neighbour has listed.
    offered: ChunkSet,
    /// Requested and not yet received.
    in_flight: ChunkSet,
    pacer: Pacer,
    last_sent: Instant,
    buf: Vec<u8>,
    /// Corrupt chunks received in this session.
    bad: u32,
}

impl Link {
    fn send(&mut self, msg: &Message<'_>) -> Result<()> {
        wire::send(&mut self.stream, msg).map_err(|e| Error::wire(self.who.as_str(), e.into()))?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// Tops the in-flight requests up to the window, in one write.
    fn request_more(&mut self, store: &Store, name: &str) -> Result<()> {
        let room = self
            .pacer
            .window()
            .saturating_sub(self.in_flight.len() as usize);
        if room == 0 {
            return Ok(());
        }
        let ids = store.claim_missing(Some(&self.offered), room);
        if ids.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        for &id in &ids {
            self.in_flight.insert(id);
            self.pacer.requested(id);
            wire::encode(&Message::Request(id), &mut self.buf);
        }
        std::io::Write::write_all(&mut self.stream, &self.buf)
            .map_err(|e| Error::wire(self.who.as_str(), e.into()))?;
        self.last_sent = Instant::now();
        log::info!(target: "swarm::chunk", "{name}: requested {} from {}", id_list(&ids), self.who);
        Ok(())
    }
}

/// Sizes the request window from what the link shows.
///
/// A chunk asked for on an idle link arrives after a round trip plus its
/// own transmission; on a busy link, chunks arrive one transmission time
/// apart. Keeping `round trip / transmission + 1` requests in flight keeps
/// the link busy with at most about one chunk waiting at the sender.
#[derive(Debug)]
struct Pacer {
    /// Outstanding requests, oldest first, with when they were sent.
    sent: VecDeque<(ChunkId, Instant)>,
    /// The fastest request-to-chunk time seen: round trip plus one
    /// transmission, with nothing queued ahead.
    min_latency: Option<Duration>,
    /// Smoothed gap between chunks while the link was busy: one
    /// transmission time.
    gap: Option<Duration>,
    last_arrival: Option<Instant>,
    /// Whether requests were still outstanding after the last arrival,
    /// which makes the next gap a transmission time, not idle time.
    busy: bool,
    max: usize,
}

impl Pacer {
    /// The fewest requests in flight: one arriving while one is sent.
    const MIN: usize = 2;

    fn new(max: usize) -> Pacer {
        Pacer {
            sent: VecDeque::new(),
            min_latency: None,
            gap: None,
            last_arrival: None,
            busy: false,
            max,
        }
    }

    fn requested(&mut self, id: ChunkId) {
        self.sent.push_back((id, Instant::now()));
    }

    fn arrived(&mut self, id: ChunkId) {
        let now = Instant::now();
        if let Some(at) = self.sent.iter().position(|&(i, _)| i == id) {
            let (_, sent) = self.sent.remove(at).unwrap_or((id, now));
            let latency = now - sent;
            self.min_latency = Some(self.min_latency.map_or(latency, |m| m.min(latency)));
        }
        if let (true, Some(last)) = (self.busy, self.last_arrival) {
            let gap = now - last;
            self.gap = Some(self.gap.map_or(gap, |g| (g * 7 + gap) / 8));
        }
        self.last_arrival = Some(now);
        self.busy = !self.sent.is_empty();
    }

    /// How many requests may be in flight now.
    fn window(&self) -> usize {
        match (self.min_latency, self.gap) {
            (Some(latency), Some(gap)) if !gap.is_zero() => {
                let cover = latency.as_secs_f64() / gap.as_secs_f64();
                (cover.ceil() as usize + 1).clamp(Self::MIN, self.max)
            }
            // Nothing measured yet: start modestly.
            _ => 4.min(self.max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Layout;

    fn pace(latency_ms: u64, gap_ms: u64) -> usize {
        let mut p = Pacer::new(40);
        let l = Layout::new(1 << 20, 1024).unwrap();
        let id = |i| l.chunk_id(i).unwrap();
        p.min_latency = Some(Duration::from_millis(latency_ms));
        p.gap = Some(Duration::from_millis(gap_ms));
        p.requested(id(0));
        assert_eq!(p.sent.len(), 1);
        p.window()
    }

    #[test]
    fn window_covers_the_round_trip_and_no_more() {
        // A LAN: the round trip is small next to a chunk's transmission.
        assert_eq!(pace(34, 33), 3);
        assert_eq!(pace(33, 33), 2);
        // A long fat link: 100 ms round trip, 8 ms per chunk.
        assert_eq!(pace(108, 8), 15);
        // Never past the byte cap.
        assert_eq!(pace(1000, 1), 40);
        assert_eq!(Pacer::new(40).window(), 4);
    }
}
