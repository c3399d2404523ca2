//! The connection's promises, each against a real socket pair on
//! 127.0.0.1 and each bounded in time: a broken rule fails the test
//! rather than hanging it. The writer is held inside a chunk by a
//! gated [`ChunkSource`], so "between two frames" is a fixed point.

use std::io::Read;
use std::net::TcpListener;
use std::sync::mpsc;

use crossbeam_channel::RecvTimeoutError;

use super::*;

/// How long any one step may take before the test fails.
const BOUND: Duration = Duration::from_secs(5);

/// Ten chunks of 1 KiB.
fn layout() -> Layout {
    Layout::new(10 * 1024, 1024).unwrap()
}

fn id(raw: u32) -> ChunkId {
    layout().chunk_id(raw).unwrap()
}

/// Both ends of one loopback connection: (ours, theirs).
fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (theirs, _) = listener.accept().unwrap();
    theirs.set_read_timeout(Some(BOUND)).unwrap();
    (ours, theirs)
}

/// Writes each chunk as a CHUNK frame of its raw ID repeated, after
/// saying which chunk it is in and waiting for the gate to open (or
/// to be dropped, which opens it for good).
struct Gated {
    inside: Sender<ChunkId>,
    gate: Receiver<()>,
}

impl ChunkSource for Gated {
    fn write_chunk(&self, id: ChunkId, w: &mut TcpStream) -> Result<()> {
        let _ = self.inside.send(id);
        if let Err(RecvTimeoutError::Timeout) = self.gate.recv_timeout(BOUND) {
            return Err(Error::Bug("the test never opened the gate".into()));
        }
        let data = vec![id.get() as u8; 1024];
        w.write_all(&wire::chunk_header(id, data.len()))
            .and_then(|()| w.write_all(&data))
            .map_err(|e| Error::io("write chunk", e))
    }
}

/// A role that accepts `accepts` and reports each message it is
/// handed, by name.
struct Recorder {
    accepts: Kinds,
    seen: mpsc::Sender<String>,
}

impl Role for Recorder {
    fn accepts(&self) -> Kinds {
        self.accepts
    }
    fn on_message(&mut self, msg: Message<'_>, _: &Handle) -> Result<()> {
        let _ = self.seen.send(msg.name().to_uppercase());
        Ok(())
    }
}

/// A started connection whose reader runs on its own thread.
struct Running {
    handle: Handle,
    theirs: TcpStream,
    /// Where the gated source reports the chunk it is in.
    inside: Receiver<ChunkId>,
    /// Drop it to let every chunk through.
    gate: Option<Sender<()>>,
    seen: mpsc::Receiver<String>,
    done: mpsc::Receiver<Result<()>>,
}

impl Running {
    fn start(accepts: Kinds, announce: Option<Receiver<ChunkId>>) -> Running {
        let (ours, theirs) = pair();
        let (inside_tx, inside) = crossbeam_channel::unbounded();
        let (gate, gate_rx) = crossbeam_channel::unbounded();
        let mut dec = Decoder::new();
        dec.set_layout(layout());
        let setup = Setup {
            name: "us".into(),
            who: "them".into(),
            source: Some(Arc::new(Gated {
                inside: inside_tx,
                gate: gate_rx,
            })),
            announce,
            stats: None,
            timeouts: Timeouts::default(),
        };
        let conn = Conn::start(ours, dec, setup).unwrap();
        let handle = conn.handle().clone();
        let (seen_tx, seen) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        thread::spawn(move || {
            let mut role = Recorder {
                accepts,
                seen: seen_tx,
            };
            let _ = done_tx.send(conn.run(&mut role));
        });
        Running {
            handle,
            theirs,
            inside,
            gate: Some(gate),
            seen,
            done,
        }
    }

    /// Queues every chunk as seeds and waits until the writer is
    /// inside chunk 0, held there by the gate.
    fn hold_inside_first_seed(&self) {
        let mut all = ChunkSet::new(10);
        for raw in 0..10 {
            all.insert(id(raw));
        }
        self.handle.send(Outgoing::Seeds(all)).unwrap();
        assert_eq!(self.inside.recv_timeout(BOUND), Ok(id(0)));
    }

    fn open_gate(&mut self) {
        self.gate = None;
    }

    /// What the other side receives until the connection's write
    /// side closes, one word per frame ("CHUNK 3", "REFUSE why").
    fn received(&mut self) -> Vec<String> {
        let mut dec = Decoder::new();
        dec.set_layout(layout());
        let mut got = Vec::new();
        loop {
            match dec.read(&mut self.theirs) {
                Ok(Message::Chunk { id, .. }) => got.push(format!("CHUNK {id}")),
                Ok(Message::Refuse(why)) => got.push(format!("REFUSE {why}")),
                Ok(Message::Have(ids)) => got.push(format!("HAVE {}", id_list(&ids))),
                Ok(msg) => got.push(msg.name().to_uppercase()),
                Err(wire::Error::Closed) => return got,
                Err(e) => panic!("after {got:?}: {e}"),
            }
        }
    }

    /// How the reader ended, within the bound.
    fn outcome(&self) -> Result<()> {
        self.done
            .recv_timeout(BOUND)
            .expect("the connection did not end in time")
    }
}

fn chunks(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|raw| format!("CHUNK {raw}")).collect()
}

#[test]
fn an_urgent_frame_goes_between_two_seeds() {
    let mut c = Running::start(Kinds::ALL, None);
    c.hold_inside_first_seed();
    c.handle
        .send_urgent(&Message::Neighbour(vec!["127.0.0.1:9"]))
        .unwrap();
    c.open_gate();
    c.handle.send(Outgoing::Finish).unwrap();
    let mut want = chunks(0..1);
    want.push("NEIGHBOUR".into());
    want.extend(chunks(1..10));
    assert_eq!(c.received(), want);
    c.theirs.shutdown(Shutdown::Both).unwrap();
    c.outcome().unwrap();
}

#[test]
fn the_last_word_goes_next_and_drops_what_is_queued() {
    let mut c = Running::start(Kinds::ALL, None);
    c.hold_inside_first_seed();
    c.handle.send_message(&Message::Complete).unwrap();
    c.handle.refuse("full");
    c.open_gate();
    // The chunk being written goes out whole, then the REFUSE, then
    // the write side closes: no more seeds, no COMPLETE.
    assert_eq!(c.received(), ["CHUNK 0", "REFUSE full"]);
    // The reader reads on until the other side closes: an orderly end.
    assert!(c.done.try_recv().is_err(), "ended before the other side");
    c.theirs.shutdown(Shutdown::Both).unwrap();
    c.outcome().unwrap();
}

#[test]
fn send_last_goes_after_everything_queued() {
    let mut c = Running::start(Kinds::ALL, None);
    c.hold_inside_first_seed();
    c.handle.send_last(&Message::Complete).unwrap();
    assert_eq!(
        c.handle.send_message(&Message::KeepAlive),
        Ok(()),
        "queued after the last word: never sent"
    );
    c.open_gate();
    let mut want = chunks(0..10);
    want.push("COMPLETE".into());
    assert_eq!(c.received(), want);
    c.theirs.shutdown(Shutdown::Both).unwrap();
    c.outcome().unwrap();
}

#[test]
fn finish_now_stops_after_the_frame_being_written() {
    let mut c = Running::start(Kinds::ALL, None);
    c.hold_inside_first_seed();
    c.handle.send_message(&Message::Complete).unwrap();
    c.handle.finish_now();
    c.open_gate();
    assert_eq!(c.received(), ["CHUNK 0"]);
    c.theirs.shutdown(Shutdown::Both).unwrap();
    c.outcome().unwrap();
}

#[test]
fn after_our_last_word_a_frame_cut_short_is_an_orderly_end() {
    let mut c = Running::start(Kinds::ALL, None);
    c.handle.finish_now();
    assert_eq!(c.received(), Vec::<String>::new());
    // Half of a CHUNK frame, then the other side leaves.
    c.theirs
        .write_all(&wire::chunk_header(id(1), 1024))
        .unwrap();
    c.theirs.write_all(&[1; 100]).unwrap();
    c.theirs.shutdown(Shutdown::Both).unwrap();
    c.outcome().unwrap();
}

#[test]
fn before_our_last_word_a_frame_cut_short_is_an_error() {
    let c = Running::start(Kinds::ALL, None);
    let mut theirs = c.theirs.try_clone().unwrap();
    theirs.write_all(&wire::chunk_header(id(1), 1024)).unwrap();
    theirs.write_all(&[1; 100]).unwrap();
    theirs.shutdown(Shutdown::Both).unwrap();
    match c.outcome() {
        Err(Error::Wire {
            err: wire::Error::Truncated { got, wanted },
            ..
        }) => assert_eq!((got, wanted), (109, 4 + 1 + 4 + 1024)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_close_between_frames_is_an_orderly_end_after_each_message_is_handled() {
    let mut c = Running::start(Kinds::ALL, None);
    let mut buf = Vec::new();
    wire::encode(&Message::Complete, &mut buf);
    wire::encode(&Message::KeepAlive, &mut buf);
    c.theirs.write_all(&buf).unwrap();
    c.theirs.shutdown(Shutdown::Write).unwrap();
    c.outcome().unwrap();
    let seen: Vec<String> = c.seen.try_iter().collect();
    assert_eq!(seen, ["COMPLETE", "KEEPALIVE"]);
    // Our side closed too.
    assert_eq!(c.received(), Vec::<String>::new());
}

#[test]
fn a_kind_the_role_does_not_accept_ends_the_connection_from_its_header() {
    let c = Running::start(Kinds::of(&[Kind::Complete]), None);
    let mut theirs = c.theirs.try_clone().unwrap();
    // Only the five header bytes of a CHUNK frame arrive: the reader
    // must not wait for the rest to refuse it.
    theirs
        .write_all(&wire::chunk_header(id(1), 1024)[..5])
        .unwrap();
    match c.outcome() {
        Err(Error::Wire {
            err: wire::Error::Unexpected(kind),
            ..
        }) => assert_eq!(kind, Kind::Chunk.name()),
        other => panic!("{other:?}"),
    }
    assert!(c.seen.try_recv().is_err(), "the role was handed the frame");
}

#[test]
fn a_writer_stuck_past_its_deadline_ends_the_connection() {
    let c = Running::start(Kinds::ALL, None);
    // As the writer does before a frame that the other side never
    // reads; the real deadline is 30 s and more.
    c.handle.stats().start_writing(Duration::from_millis(10));
    match c.outcome() {
        Err(Error::Wire {
            err: wire::Error::SlowReader(_),
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_write_done_in_time_ends_nothing() {
    let c = Running::start(Kinds::ALL, None);
    c.handle.stats().start_writing(Duration::from_millis(10));
    c.handle.stats().done_writing();
    // The reader checks deadlines each READ_TICK (1 s).
    thread::sleep(READ_TICK + Duration::from_millis(500));
    assert!(c.done.try_recv().is_err(), "a finished write ended it");
    c.handle.close();
    c.outcome().unwrap();
}

#[test]
fn the_write_deadline_grows_with_the_frame() {
    let write = Timeouts::default().write;
    assert_eq!(write_deadline(write, 0), write);
    let mib = write_deadline(write, 1024 * 1024);
    assert_eq!(mib, write + Duration::from_secs(64));
}

#[test]
fn close_is_idempotent_and_refuses_later_sends() {
    let mut c = Running::start(Kinds::ALL, None);
    c.handle.close();
    c.handle.close();
    assert!(c.handle.is_closed());
    assert_eq!(
        c.handle.send_message(&Message::KeepAlive),
        Err(SendError::Closed)
    );
    assert_eq!(
        c.handle.send_urgent(&Message::KeepAlive),
        Err(SendError::Closed)
    );
    c.outcome().unwrap();
    // The other side sees the socket close, and nothing before it.
    let mut rest = Vec::new();
    let _ = c.theirs.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn a_full_inbox_is_an_error_for_the_sender_not_a_wait() {
    let c = Running::start(Kinds::ALL, None);
    c.hold_inside_first_seed();
    for _ in 0..INBOX {
        c.handle.send_message(&Message::KeepAlive).unwrap();
    }
    assert_eq!(
        c.handle.send_message(&Message::KeepAlive),
        Err(SendError::Full)
    );
    c.handle.close();
    drop(c.gate);
    let _ = c.done.recv_timeout(BOUND).expect("ended");
}

#[test]
fn new_chunks_go_out_as_one_have_in_id_order() {
    let (tx, rx) = crossbeam_channel::unbounded();
    for raw in [7, 2, 5] {
        tx.send(id(raw)).unwrap();
    }
    let mut c = Running::start(Kinds::ALL, Some(rx));
    // Written once the announcements are out: the inbox and the
    // announcements are read by one writer, so wait for them first.
    let mut dec = Decoder::new();
    dec.set_layout(layout());
    match dec.read(&mut c.theirs).unwrap() {
        Message::Have(ids) => assert_eq!(ids, [id(2), id(5), id(7)]),
        other => panic!("{other:?}"),
    }
    c.handle.send(Outgoing::Finish).unwrap();
    assert_eq!(c.received(), Vec::<String>::new());
    c.theirs.shutdown(Shutdown::Both).unwrap();
    c.outcome().unwrap();
}

#[test]
fn dial_and_read_hello_exchange_names_and_file_ids() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (mut s, from) = listener.accept().unwrap();
        let mut dec = Decoder::new();
        let theirs = read_hello(
            &mut s,
            &mut dec,
            &from.to_string(),
            None,
            &Timeouts::default(),
        )
        .unwrap();
        answer_hello(&mut s, [7; 32], "", &theirs, None).unwrap();
        theirs
    });
    let (_, _, hello) = dial(
        addr,
        [3; 32],
        "peer 1",
        None,
        &Timeouts::default(),
        &Abort::default(),
    )
    .unwrap();
    let theirs = server.join().unwrap();
    assert_eq!((theirs.file_id, theirs.name.as_str()), ([3; 32], "peer 1"));
    // An empty name is shown as the address.
    assert_eq!((hello.file_id, hello.name), ([7; 32], addr.to_string()));
}

#[test]
fn a_hello_of_another_version_is_answered_with_a_refuse_that_says_so() {
    let (mut ours, mut theirs) = pair();
    ours.set_read_timeout(Some(BOUND)).unwrap();
    let mut hello = Vec::new();
    wire::encode(
        &Message::Hello {
            version: wire::VERSION,
            file_id: [0; 32],
            name: "old",
        },
        &mut hello,
    );
    // The version follows the length, kind and magic.
    let at = 4 + 1 + 4;
    hello[at..at + 2].copy_from_slice(&9u16.to_be_bytes());
    theirs.write_all(&hello).unwrap();
    let mut dec = Decoder::new();
    match read_hello(&mut ours, &mut dec, "old", None, &Timeouts::default()) {
        Err(Error::Wire {
            err: wire::Error::BadVersion(9),
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    let mut dec = Decoder::new();
    let want = format!(
        "protocol version 9 is not supported (this is version {})",
        wire::VERSION
    );
    assert_eq!(dec.read(&mut theirs).unwrap(), Message::Refuse(&want));
}

#[test]
fn id_lists_elide_after_eight() {
    assert_eq!(id_list(&[id(4)]), "chunk 4");
    assert_eq!(id_list(&[id(1), id(3)]), "2 chunks (1, 3)");
    let nine: Vec<ChunkId> = (0..9).map(id).collect();
    assert_eq!(id_list(&nine), "9 chunks (0, 1, 2, 3, 4, 5, 6, 7, ...)");
}
