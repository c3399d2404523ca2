//! The owner's loop: one thread that owns the [`OwnerCore`] (registry,
//! seeder, sessions' seeding state) and every session's [`Handle`], and
//! carries out the core's [`Command`]s on the sessions' writers.
//!
//! Session threads, the watch thread and [`super::Owner::run`] send it
//! [`Event`]s over one channel; writers report that a batch of seeds is
//! out on a second (the [`Outgoing::Written`] mark queued after the
//! seeds). The loop selects both together with the tracker's deadline
//! tick, every [`TICK_EVERY`]. Nothing it does blocks: frames are queued
//! on writers, never written here, so one slow peer never holds up
//! another, and decisions go out in the order they were made.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};

use super::core::{Command, Input, OwnerCore};
use super::version::Version;
use super::{STOPPED, Shared, TABLE_ROWS};
use crate::conn::{self, ConnId, Handle, Outgoing, SendError};
use crate::error::Error;
use crate::net;
use crate::tracker;
use crate::wire::{self, Message};

/// How often the loop ticks the tracker: the grace of a member away
/// ([`tracker::GRACE`]) and the wait before re-seeding chunks no member
/// holds ([`tracker::QUIET`]) are measured to within this.
pub const TICK_EVERY: Duration = Duration::from_millis(100);

/// How long a stopping owner waits for its sessions to end once their
/// connections are closed.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// How long an owner that stops on an error gives its REFUSEs to leave.
const REFUSE_WAIT: Duration = Duration::from_secs(1);

/// What the owner's loop hears.
pub(super) enum Event {
    /// A session began, serving version `version`.
    Opened { handle: Handle, version: u32 },
    /// A session heard something, or ended.
    Input(Input),
    /// Version `number`, whose file ID is `file_id`, is about to replace
    /// the current one: tell every older session VERSION, and how many
    /// were told.
    Retire {
        number: u32,
        file_id: [u8; 32],
        told: Sender<usize>,
    },
    /// This version is current now.
    Current(Arc<Version>),
    /// The owner stops: refuse every session first if `refuse` (it stops
    /// on an error), then close every connection of `open`, and end once
    /// the sessions have.
    Stop { refuse: bool, open: net::Open },
}

/// The loop's state: the core and the I/O it cannot do.
pub(super) struct Shell {
    shared: Arc<Shared>,
    core: OwnerCore,
    handles: HashMap<ConnId, Handle>,
    /// The version being served, for the status answer's frame limit.
    current: Arc<Version>,
    /// The file ID a VERSION frame names: the newest version's.
    file_id: [u8; 32],
    /// Where writers report that a session's seeds are out.
    written: (Sender<ConnId>, Receiver<ConnId>),
    /// SEED_DONE, encoded once.
    seed_done: Vec<u8>,
    /// Set once the owner stops: sessions that begin now are closed.
    stopping: bool,
}

impl Shell {
    /// A loop serving `current` with `core`.
    pub fn new(shared: Arc<Shared>, core: OwnerCore, current: Arc<Version>) -> Shell {
        let mut seed_done = Vec::new();
        wire::encode(&Message::SeedDone, &mut seed_done);
        Shell {
            shared,
            core,
            handles: HashMap::new(),
            file_id: current.file_id,
            current,
            written: crossbeam_channel::unbounded(),
            seed_done,
            stopping: false,
        }
    }

    /// Runs until told to stop (or every sender is gone).
    pub fn run(mut self, events: Receiver<Event>) {
        let mut next_tick = Instant::now() + TICK_EVERY;
        loop {
            let written = self.written.1.clone();
            select! {
                recv(events) -> event => match event {
                    Ok(Event::Stop { refuse, open }) => return self.stop(&events, refuse, open),
                    Ok(event) => self.on_event(event),
                    Err(_) => return,
                },
                recv(written) -> conn => {
                    if let Ok(conn) = conn {
                        self.input(Input::SeedsOut(conn));
                    }
                }
                recv(crossbeam_channel::at(next_tick)) -> _ => {
                    let now = Instant::now();
                    let commands = self.core.tick(now);
                    self.carry_out(commands);
                    next_tick = now + TICK_EVERY;
                }
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Opened { handle, version } => {
                if self.stopping {
                    handle.close();
                }
                let conn = handle.id();
                self.handles.insert(conn, handle);
                self.input(Input::Opened { conn, version });
            }
            Event::Input(input) => self.input(input),
            Event::Retire {
                number,
                file_id,
                told,
            } => {
                self.file_id = file_id;
                let commands = self.core.retire(number);
                let _ = told.send(commands.len());
                self.carry_out(commands);
            }
            Event::Current(v) => {
                self.file_id = v.file_id;
                let commands = self
                    .core
                    .switch(v.number, v.store.layout().clone(), Instant::now());
                self.current = v;
                self.carry_out(commands);
            }
            // Handled by the loop itself.
            Event::Stop { .. } => {}
        }
    }

    fn input(&mut self, input: Input) {
        let ended = match input {
            Input::Ended(conn) => Some(conn),
            _ => None,
        };
        let commands = self.core.handle(Instant::now(), input);
        self.carry_out(commands);
        if let Some(conn) = ended {
            self.handles.remove(&conn);
        }
    }

    /// Refuses every session if `refuse`, closes every connection, waits
    /// (a while) for the sessions to end, then joins every connection
    /// thread, so none outlives the owner.
    fn stop(mut self, events: &Receiver<Event>, refuse: bool, open: net::Open) {
        self.stopping = true;
        // A writer waiting to read a chunk from the source sees the owner
        // stopping.
        self.shared.source_reads.wake();
        if refuse {
            for handle in self.handles.values() {
                handle.refuse(STOPPED);
            }
            // Give the REFUSEs a moment to leave, and the sessions to
            // end, before the connections are closed.
            self.drain(events, Instant::now() + REFUSE_WAIT);
        }
        open.close_all();
        for handle in self.handles.values() {
            handle.close();
        }
        self.drain(events, Instant::now() + CLOSE_WAIT);
        open.close_and_join();
    }

    /// Takes events until every session has ended or `deadline`.
    fn drain(&mut self, events: &Receiver<Event>, deadline: Instant) {
        while !self.handles.is_empty() {
            let written = self.written.1.clone();
            select! {
                recv(events) -> event => match event {
                    Ok(event) => self.on_event(event),
                    Err(_) => return,
                },
                recv(written) -> _ => {}
                recv(crossbeam_channel::at(deadline)) -> _ => return,
            }
        }
    }

    /// Carries out the core's commands, in order.
    fn carry_out(&mut self, commands: Vec<Command>) {
        for command in commands {
            self.carry(command);
        }
    }

    fn carry(&mut self, command: Command) {
        let handle = |conn: &ConnId| self.handles.get(conn);
        match command {
            Command::Log(line) => log::info!("owner: {line}"),
            Command::Table(peers) => {
                let layout = self.current.store.layout();
                let text = tracker::table(
                    &peers,
                    layout.count(),
                    layout.file_len(),
                    self.shared.sent.load(Ordering::Relaxed),
                    TABLE_ROWS,
                );
                log::info!("owner: swarm status\n{text}");
            }
            Command::Neighbour { conn, addrs } => {
                if let Some(h) = handle(&conn) {
                    let shown = if addrs.is_empty() {
                        "no one".to_string()
                    } else {
                        addrs.join(", ")
                    };
                    log::info!("owner: told {} to download from {shown}", h.who());
                    let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
                    let _ = h.send_urgent(&Message::Neighbour(addrs));
                }
            }
            Command::Share { conn, count } => {
                if let Some(h) = handle(&conn) {
                    log::info!("owner: seeding {count} chunks to {}", h.who());
                }
            }
            Command::Seed { conn, chunks } => {
                if let Some(h) = handle(&conn) {
                    let queued = h
                        .send(Outgoing::Seeds(chunks))
                        .and_then(|()| h.send(Outgoing::Frames(self.seed_done.clone())))
                        .and_then(|()| h.send(Outgoing::Written(self.written.0.clone())));
                    if queued.is_err() {
                        h.close();
                    }
                }
            }
            Command::SeedDone { conn, busy } => {
                if let Some(h) = handle(&conn) {
                    let mut frames = self.seed_done.clone();
                    if let Some(busy) = busy {
                        wire::encode(&Message::Seeding(busy), &mut frames);
                    }
                    if h.send(Outgoing::Frames(frames)).is_err() {
                        h.close();
                    }
                }
            }
            Command::Seeding { conn, busy } => {
                if let Some(h) = handle(&conn) {
                    let _ = h.send_message(&Message::Seeding(busy));
                }
            }
            Command::Release(conn) => {
                if let Some(h) = handle(&conn) {
                    let _ = h.send_message(&Message::Complete);
                }
            }
            Command::Refuse { conn, why } => {
                if let Some(h) = handle(&conn) {
                    log::warn!("owner: refused {}: {why}", h.who());
                    h.refuse(&why);
                }
            }
            Command::Member(conn) => {
                if let Some(h) = handle(&conn) {
                    h.stats().set_member();
                }
            }
            Command::Version(conn) => {
                if let Some(h) = handle(&conn) {
                    h.leave_with(&Message::Version(self.file_id));
                }
            }
            Command::Status { conn, peers } => {
                if let Some(h) = handle(&conn) {
                    let mut buf = Vec::new();
                    let limit = self.current.store.layout().frame_limit();
                    let sent = self.shared.sent.load(Ordering::Relaxed);
                    wire::encode_status(sent, &peers, limit, &mut buf);
                    if h.send(Outgoing::Frames(buf)) == Err(SendError::Full) {
                        let e = Error::wire(h.who(), wire::Error::Flood(conn::INBOX));
                        log::warn!("owner: {e}; connection closed");
                        h.close();
                    }
                }
            }
        }
    }
}
