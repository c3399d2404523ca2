//! The download side: the connections to the download neighbours.
//!
//! One thread (the *download manager*) keeps a dialer thread for each
//! download neighbour of the moment (those given, or those the owner last
//! assigned; `--sources` of them at most). The coordinator steers it with
//! [`DownloadCmd`]s: the neighbours now, a neighbour to shun for a while,
//! that the file is verified, that the peer is leaving; the manager passes
//! on to each dialer what concerns it ([`DialCmd`]), and each dialer says
//! when it ends on a channel of its own, so nothing is polled. A dialer
//! connects to its neighbour, retrying with backoff (a wait on its
//! command channel, so a new assignment or the peer's exit ends it at
//! once) while it is not up and telling the coordinator (which tells the
//! owner) when it cannot be reached, and runs the connection with
//! [`DownloadRole`]: the neighbour's chunk-ID list and HAVE updates go to
//! the coordinator, which decides what to request from which neighbour;
//! each chunk that arrives is verified and stored by the store, then
//! reported. A dialer ends once its neighbour is no longer one of the
//! peer's. Once the file is verified the coordinator sends COMPLETE on
//! every connection and each dialer ends when its connection closes; a
//! neighbour still unreachable [`Limits::give_up_when_complete`] after
//! that is gone. After a neighbour sent corrupt chunks its dialer stays
//! away for the time the coordinator set. On [`DownloadCmd::Stop`] the
//! manager stops every dialer (firing its [`Abort`], which shuts down a
//! handshake or session in progress) and joins it.
//!
//! [`Limits::give_up_when_complete`]: crate::config::Limits::give_up_when_complete

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, at, never, select};

use super::intake::Intake;
use super::{Event, Shared};
use crate::conn::{self, Abort, ChunkSink, Conn, Handle, Role, Setup};
use crate::error::{Error, Result};
use crate::manifest::ChunkId;
use crate::net::Backoff;
use crate::scheduler::SourceKind;
use crate::store::{Put, Store};
use crate::wire::{self, Kind, Kinds, Message};

/// What the coordinator tells the download side.
#[derive(Debug)]
pub(crate) enum DownloadCmd {
    /// The download neighbours now, nearest first.
    Targets(Vec<SocketAddr>),
    /// Do not dial the neighbour at this address before then (it sent
    /// corrupt chunks).
    Shun(SocketAddr, Instant),
    /// The file is verified: dialers only deliver COMPLETE now.
    Verified,
    /// The peer is leaving: stop every dialer and end.
    Stop,
}

/// What the download manager tells one dialer.
#[derive(Debug)]
enum DialCmd {
    /// Whether its neighbour is (again) one of the peer's.
    Targeted(bool),
    /// Do not dial before then.
    Shun(Instant),
    /// The file is verified.
    Verified,
    /// The peer is leaving.
    Stop,
}

/// A dialer's state, kept up to date from its commands.
struct DialState {
    targeted: bool,
    shunned_until: Option<Instant>,
    verified: bool,
    stop: bool,
}

impl DialState {
    fn apply(&mut self, cmd: std::result::Result<DialCmd, crossbeam_channel::RecvError>) {
        match cmd {
            Ok(DialCmd::Targeted(on)) => self.targeted = on,
            Ok(DialCmd::Shun(until)) => self.shunned_until = Some(until),
            Ok(DialCmd::Verified) => self.verified = true,
            // The manager is gone: so is the peer.
            Ok(DialCmd::Stop) | Err(_) => self.stop = true,
        }
    }

    /// Applies every command already queued.
    fn drain(&mut self, cmds: &Receiver<DialCmd>) {
        while let Ok(cmd) = cmds.try_recv() {
            self.apply(Ok(cmd));
        }
    }

    fn leaving(&self) -> bool {
        self.stop || !self.targeted
    }
}

/// One running dialer, as the manager keeps it.
struct Dialer {
    cmds: Sender<DialCmd>,
    abort: Abort,
    thread: thread::JoinHandle<()>,
}

/// Everything the download thread needs.
#[derive(Clone)]
pub(crate) struct Download {
    pub store: Arc<Store>,
    pub shared: Arc<Shared>,
    /// The download neighbours at the start (those given).
    pub targets: Vec<SocketAddr>,
}

impl Download {
    /// The manager's body: a dialer for every download neighbour, until
    /// the file is verified and every neighbour told, or the peer leaves.
    pub fn run(self, cmds: Receiver<DownloadCmd>) {
        let give_up = self.shared.limits.give_up_when_complete;
        let mut targets = self.targets.clone();
        let mut shunned: HashMap<SocketAddr, Instant> = HashMap::new();
        let mut dialers: HashMap<SocketAddr, Dialer> = HashMap::new();
        let (ended_tx, ended) = crossbeam_channel::unbounded::<SocketAddr>();
        // Neighbours whose dialer ended after the file was verified: told
        // COMPLETE, or given up on; not dialed again.
        let mut done: HashSet<SocketAddr> = HashSet::new();
        let mut verified_at: Option<Instant> = None;
        'run: loop {
            // Once verified, a neighbour assigned within a few seconds is
            // still dialed, to deliver COMPLETE.
            let late = verified_at.is_some_and(|at| at.elapsed() >= give_up);
            if late && dialers.is_empty() {
                break;
            }
            if !late {
                for &addr in &targets {
                    if dialers.contains_key(&addr) || done.contains(&addr) {
                        continue;
                    }
                    let (tx, rx) = crossbeam_channel::unbounded();
                    let abort = Abort::default();
                    let state = DialState {
                        targeted: true,
                        shunned_until: shunned.get(&addr).copied(),
                        verified: verified_at.is_some(),
                        stop: false,
                    };
                    let (dialer, ended_tx, aborted) =
                        (self.clone(), ended_tx.clone(), abort.clone());
                    let spawned = thread::Builder::new()
                        .name(format!("download {addr}"))
                        .spawn(move || {
                            dialer.dial(addr, state, &rx, &aborted);
                            let _ = ended_tx.send(addr);
                        });
                    match spawned {
                        Ok(thread) => {
                            dialers.insert(
                                addr,
                                Dialer {
                                    cmds: tx,
                                    abort,
                                    thread,
                                },
                            );
                        }
                        Err(e) => {
                            let e = Error::io("start a download thread", e);
                            self.shared.report(super::Event::Fatal(e));
                            break 'run;
                        }
                    }
                }
            }
            // Wakes to stop dialing new neighbours once it is late.
            let deadline = match verified_at {
                Some(v) if !late => at(v + give_up),
                _ => never(),
            };
            select! {
                recv(cmds) -> cmd => match cmd {
                    Ok(DownloadCmd::Targets(now)) => {
                        for (addr, d) in &dialers {
                            let _ = d.cmds.send(DialCmd::Targeted(now.contains(addr)));
                        }
                        targets = now;
                    }
                    Ok(DownloadCmd::Shun(addr, until)) => {
                        shunned.insert(addr, until);
                        if let Some(d) = dialers.get(&addr) {
                            let _ = d.cmds.send(DialCmd::Shun(until));
                        }
                    }
                    Ok(DownloadCmd::Verified) => {
                        verified_at.get_or_insert_with(Instant::now);
                        for d in dialers.values() {
                            let _ = d.cmds.send(DialCmd::Verified);
                        }
                    }
                    Ok(DownloadCmd::Stop) | Err(_) => break 'run,
                },
                recv(ended) -> addr => {
                    let Ok(addr) = addr else { continue 'run };
                    if let Some(d) = dialers.remove(&addr) {
                        let _ = d.thread.join();
                    }
                    // (One that ended because it is no longer a neighbour
                    // may be assigned again, and then told.)
                    if verified_at.is_some() && targets.contains(&addr) {
                        done.insert(addr);
                    }
                }
                recv(deadline) -> _ => {}
            }
        }
        // The peer is leaving (or every neighbour is told): stop each
        // dialer where it is and wait for it.
        for d in dialers.values() {
            let _ = d.cmds.send(DialCmd::Stop);
            d.abort.fire();
        }
        for (_, d) in dialers {
            let _ = d.thread.join();
        }
    }

    /// One download neighbour's dialer: sessions until the file is
    /// verified and the neighbour told, the neighbour is no longer one of
    /// this peer's, or the peer leaves.
    fn dial(self, addr: SocketAddr, mut state: DialState, cmds: &Receiver<DialCmd>, abort: &Abort) {
        let name = &self.shared.name;
        let give_up = self.shared.limits.give_up_when_complete;
        let mut backoff = Backoff::default();
        let mut failures = 0u32;
        let mut verified_since = None;
        loop {
            state.drain(cmds);
            if state.leaving() {
                return;
            }
            if let Some(until) = state.shunned_until.filter(|&u| Instant::now() < u) {
                // A neighbour that sent corrupt chunks is not told COMPLETE.
                if state.verified {
                    return;
                }
                select! {
                    recv(cmds) -> cmd => state.apply(cmd),
                    recv(at(until)) -> _ => {}
                }
                continue;
            }
            let result = self.session(addr, &mut backoff, abort);
            abort.disarm();
            state.drain(cmds);
            match result {
                // Ended in order after the file was verified: COMPLETE
                // went out.
                Ok(told) if told || state.verified => return,
                Ok(_) => failures = 0,
                // Cut short by this peer's own exit.
                Err(_) if state.stop => return,
                Err(e) => {
                    failures += 1;
                    // A neighbour that is not up yet refuses many times
                    // in a row; say so once.
                    if failures == 1 || !matches!(e, Error::Io { .. }) {
                        log::warn!("{name}: download neighbour at {addr}: {e}; retrying");
                    }
                    // The owner re-wires around a neighbour that is gone.
                    if matches!(e, Error::Io { .. }) {
                        self.shared.report(Event::Unreachable(addr));
                    }
                    if !matches!(e, Error::Io { .. }) {
                        failures = 0;
                    }
                }
            }
            // Complete or not, keep trying a little: the neighbour may be
            // starting up and then wait for our COMPLETE to leave. A
            // neighbour still unreachable a few seconds after we
            // completed is gone.
            if state.verified {
                let since = *verified_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= give_up {
                    return;
                }
            }
            // Backoff before the next attempt; a new assignment, or the
            // peer's exit, ends the wait early.
            let until = at(Instant::now() + backoff.next_delay());
            'wait: loop {
                select! {
                    recv(cmds) -> cmd => state.apply(cmd),
                    recv(until) -> _ => break 'wait,
                }
                if state.leaving() {
                    return;
                }
            }
        }
    }

    /// One session with the neighbour at `to`; `Ok(true)` when it ended
    /// in order after this side's last word (COMPLETE).
    fn session(&self, to: SocketAddr, backoff: &mut Backoff, abort: &Abort) -> Result<bool> {
        let name = &self.shared.name;
        let file_id = self.store.manifest().id();
        let addr = to.to_string();
        let secret = self.shared.secret.as_deref();
        let timeouts = &self.shared.timeouts;
        let (stream, mut dec, hello) = conn::dial(to, file_id, name, secret, timeouts, abort)?;
        if hello.file_id != file_id {
            return Err(Error::wire(
                &addr,
                wire::Error::Refused("it shares a different file".into()),
            ));
        }
        dec.set_layout(self.store.layout().clone());
        backoff.reset();
        log::info!(
            "{name}: connected to download neighbour {} at {addr}",
            hello.name
        );
        let conn = Conn::start(
            stream,
            dec,
            Setup {
                name: name.clone(),
                who: hello.name,
                timeouts: *timeouts,
                ..Setup::default()
            },
        )?;
        let id = conn.handle().id();
        let handle = conn.handle().clone();
        self.shared.report(Event::SourceUp(
            SourceKind::Ring,
            conn.handle().clone(),
            Some(to),
        ));
        let mut role = DownloadRole {
            store: Arc::clone(&self.store),
            shared: Arc::clone(&self.shared),
            listed: false,
            intake: Intake::new(Arc::clone(&self.store), Arc::clone(&self.shared)),
        };
        let result = conn.run(&mut role);
        // Every chunk that arrived is reported before the source is gone;
        // a chunk that could not be stored (a full disk) closed the
        // connection, and is why it ended.
        let stored = role.intake.finish();
        let result = result.and(stored);
        self.shared.report(Event::SourceDown(id));
        result.map(|()| handle.sent_last_word())
    }
}

/// What the peer does with its download neighbour's messages.
struct DownloadRole {
    store: Arc<Store>,
    shared: Arc<Shared>,
    /// Whether the neighbour's one chunk-ID list has arrived.
    listed: bool,
    /// Verifies and stores the chunks that arrive, off the reader.
    intake: Intake,
}

impl Role for DownloadRole {
    fn accepts(&self) -> Kinds {
        // One list, first; after it only what changes. A list costs the
        // coordinator time in proportion to the chunk count.
        const FIRST: Kinds = Kinds::of(&[Kind::ChunkList, Kind::KeepAlive, Kind::Refuse]);
        const THEN: Kinds = Kinds::of(&[Kind::Have, Kind::Chunk, Kind::KeepAlive, Kind::Refuse]);
        if self.listed { THEN } else { FIRST }
    }

    fn chunk_sink(&mut self) -> Option<&mut dyn ChunkSink> {
        Some(&mut self.intake)
    }

    fn on_message(&mut self, msg: Message<'_>, conn: &Handle) -> Result<()> {
        // What the neighbour says now comes after the chunks it sent, but
        // for a HAVE, which comes often in a ring and which the
        // coordinator takes in any order: a chunk still with the intake is
        // in flight for it, never asked for again.
        if !matches!(msg, Message::Have(_) | Message::KeepAlive) {
            self.intake.drain()?;
        }
        match msg {
            Message::ChunkList(set) => {
                self.listed = true;
                self.shared.report(Event::Offered(conn.id(), set));
            }
            Message::Have(ids) => self.shared.report(Event::Have(conn.id(), ids)),
            Message::Chunk { id, data } => {
                store_chunk(&self.store, &self.shared, conn, id, data)?;
            }
            Message::Refuse(why) => {
                return Err(Error::wire(
                    conn.who(),
                    wire::Error::Refused(why.to_string()),
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

/// Verifies and stores a chunk that arrived on `conn` and reports it. A
/// store that cannot write (a full disk) stops the peer: retrying would
/// only fail again.
pub(super) fn store_chunk(
    store: &Store,
    shared: &Shared,
    conn: &Handle,
    id: ChunkId,
    data: &[u8],
) -> Result<()> {
    let put = match store.put(id, data) {
        Ok(put) => put,
        Err(e) => {
            let text = e.to_string();
            shared.report(Event::Fatal(e));
            return Err(Error::io("store a chunk", std::io::Error::other(text)));
        }
    };
    match put {
        Put::Stored => log::info!(
            target: "swarm::chunk",
            "{}: received chunk {id} from {}",
            shared.name,
            conn.who()
        ),
        Put::Duplicate => log::debug!(
            "{}: chunk {id} from {} was already held",
            shared.name,
            conn.who()
        ),
        // The coordinator says what it does about it.
        Put::Corrupt => {}
    }
    shared.report(Event::Received {
        from: conn.id(),
        id,
        put,
        bytes: data.len() as u64,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Duration;

    use crate::config::{Limits, Timeouts};
    use crate::testdir::TestDir;

    /// A download side for a store of a small file (in a fresh directory
    /// named after `name`), with `timeouts`, and the receiving end of its
    /// events.
    fn download_side(
        name: &str,
        targets: Vec<SocketAddr>,
        timeouts: Timeouts,
    ) -> (TestDir, Download, Receiver<Event>) {
        let (dir, _, owner) = crate::testdir::split_sample(name, 5000);
        let store = Arc::new(Store::open(&dir.join("peer"), owner.manifest().clone()).unwrap());
        let (events, event_rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            name: "peer test".into(),
            started: Instant::now(),
            wired: true,
            sources: 1,
            auto_sources: false,
            secret: None,
            timeouts,
            limits: Limits::default(),
            events,
        });
        let down = Download {
            store,
            shared,
            targets,
        };
        (dir, down, event_rx)
    }

    /// Runs the download side on a thread; the receiver says when it has
    /// ended (all its dialers joined).
    fn start(down: Download) -> (Sender<DownloadCmd>, Receiver<()>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (ended_tx, ended) = crossbeam_channel::bounded(1);
        thread::spawn(move || {
            down.run(rx);
            let _ = ended_tx.send(());
        });
        (tx, ended)
    }

    #[test]
    fn stop_ends_a_dialer_in_backoff_and_joins_it() {
        // 1. A neighbour that is not up: the dialer retries with backoff,
        //    and tells the coordinator it cannot reach it.
        let gone = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = gone.local_addr().unwrap();
        drop(gone);
        let (_dir, down, events) =
            download_side("download-backoff", vec![addr], Timeouts::default());
        let (cmds, ended) = start(down);
        match events.recv_timeout(Duration::from_secs(10)) {
            Ok(Event::Unreachable(a)) => assert_eq!(a, addr),
            other => panic!("expected Unreachable, got {other:?}"),
        }
        // 2. Stop: the manager and its dialer end, and are joined.
        cmds.send(DownloadCmd::Stop).unwrap();
        ended
            .recv_timeout(Duration::from_secs(10))
            .expect("the download side did not end on Stop");
    }

    #[test]
    fn stop_aborts_a_handshake_in_progress() {
        // 1. A neighbour that accepts and never answers HELLO, under a
        //    handshake timeout far longer than the test waits.
        let mute = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = mute.local_addr().unwrap();
        let timeouts = Timeouts {
            handshake: Duration::from_secs(600),
            ..Timeouts::default()
        };
        let (_dir, down, _events) = download_side("download-abort", vec![addr], timeouts);
        let (cmds, ended) = start(down);
        let (_held, _) = mute.accept().unwrap();
        // 2. Stop: the dialer's Abort shuts its socket down, so the
        //    handshake read ends now, not in ten minutes.
        cmds.send(DownloadCmd::Stop).unwrap();
        ended
            .recv_timeout(Duration::from_secs(10))
            .expect("the dialer stayed in its handshake after Stop");
    }

    #[test]
    fn a_neighbour_no_longer_assigned_is_not_dialed_again() {
        // 1. A neighbour that is not up, then another assignment: the
        //    first one's dialer ends, the new one is dialed.
        let (a, b) = {
            let la = TcpListener::bind("127.0.0.1:0").unwrap();
            let lb = TcpListener::bind("127.0.0.1:0").unwrap();
            (la.local_addr().unwrap(), lb.local_addr().unwrap())
        };
        let (_dir, down, events) = download_side("download-targets", vec![a], Timeouts::default());
        let (cmds, ended) = start(down);
        let next_unreachable = || loop {
            match events.recv_timeout(Duration::from_secs(10)) {
                Ok(Event::Unreachable(x)) => return x,
                Ok(_) => {}
                Err(e) => panic!("no Unreachable: {e}"),
            }
        };
        assert_eq!(next_unreachable(), a);
        cmds.send(DownloadCmd::Targets(vec![b])).unwrap();
        // 2. After the switch only `b` is dialed: while `b` fails five
        //    times, `a` fails at most once more (an attempt already under
        //    way); a dialer left running would fail about four times.
        let (mut from_a, mut from_b) = (0, 0);
        while from_b < 5 {
            match next_unreachable() {
                x if x == b => from_b += 1,
                _ => from_a += 1,
            }
        }
        assert!(from_a <= 1, "{from_a} more attempts at the old neighbour");
        cmds.send(DownloadCmd::Stop).unwrap();
        ended.recv_timeout(Duration::from_secs(10)).unwrap();
    }
}
