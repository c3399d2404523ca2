//! The swarm protocol: every byte that crosses a connection.
//!
//! This module holds the whole wire format: one
//! [`Message`] enum, one encoder
//! ([`encode`]) and one decoder
//! ([`Decoder`]). It knows nothing of files or
//! threads. The text below is the specification of protocol version 6; a
//! compatible peer can be written from it alone.
//!
//! # Frames
//!
//! A connection carries frames in both directions. Integers are unsigned
//! and big-endian; a chunk ID is a `u32`; text is UTF-8.
//!
//! ```text
//! frame = length:u32  kind:u8  payload:(length - 1 bytes)
//! ```
//!
//! `length` counts the kind byte and the payload. From the five header
//! bytes alone, before it reads or allocates the payload, a receiver
//! checks, in this order: `length >= 1`; `length` is within its frame
//! limit; the kind is known (1 to 21); the kind does not need the layout,
//! or the MANIFEST (table below), before the receiver has it; the kind is
//! accepted in the
//! session's current state (tables under Sessions); `length` is within the
//! kind's bounds. Then it reads the payload and checks its contents. Its
//! buffer grows with the bytes that actually arrive, not with what `length`
//! claims.
//!
//! The frame limit is 1024 while the receiver lacks the file's MANIFEST,
//! then `64 + max(max_len, ceil(chunks / 8))` (at most 16 MiB + 64), where
//! `max_len`, the longest a chunk may be, is `chunk_size` for fixed
//! chunking and `4 · chunk_size` for content chunking (see Manifest and
//! file ID), whatever the actual chunks. The owner and both ends of a ring
//! session have the layout once the HELLOs are exchanged; a peer or status
//! client in an owner session has the MANIFEST's fields from the MANIFEST
//! on, so HASHES already fall under the file's limit, and the whole layout
//! from the last HASHES on.
//!
//! A violation (a frame this specification does not allow where it arrives)
//! ends the connection: the receiver closes the socket at once, sends no
//! REFUSE and reads nothing more (the other side may see a reset). REFUSE
//! is sent only where Admission, Sessions and Owner session say so.
//!
//! # Messages
//!
//! | kind | name       | payload | `length` | layout |
//! |------|------------|---------|----------|--------|
//! | 1    | HELLO      | `"SWRM"` `version:u16` `file_id:[32]` `name:utf8 (0..=64 bytes)`: opens every session | 39..=103 | no |
//! | 2    | MANIFEST   | `file_len:u64` `chunk_size:u32` `chunking:u8` (0 fixed, 1 content) `chunks:u32` `file_sha256:[32]` `name:utf8 (1..=255 bytes, plain)` | 51..=305 | no |
//! | 3    | HASHES     | `first:u32`, then `n >= 1` entries for chunks `first..first+n`, each the chunk's SHA-256 `digest:[32]` (fixed chunking) or its length and SHA-256 `len:u32 digest:[32]` (content chunking) | fixed: 37..=5+32·chunks, `length % 32 == 5`; content: 41..=5+36·chunks, `(length - 5) % 36 == 0` | MANIFEST |
//! | 4    | CHUNK_LIST | every chunk the sender holds now: bitfield of `ceil(chunks / 8)` bytes; bit 7 of byte 0 is chunk 0; spare bits 0 | exactly 1+ceil(chunks/8) | yes |
//! | 5    | HAVE       | `n >= 1` chunk IDs the sender gained since it listed; order means nothing, an ID may repeat | 5..=1+4·chunks, `length % 4 == 1` | yes |
//! | 6    | REQUEST    | `chunk:u32` | 5 | yes |
//! | 7    | CHUNK      | `chunk:u32`, then exactly that chunk's bytes | 5 + the chunk's length (6..=5+max_len) | yes |
//! | 8    | SEED_DONE  | empty: the owner has sent the batch of chunks it pushed unasked | 1 | no |
//! | 9    | COMPLETE   | empty: the sender holds every chunk and has checked the file | 1 | no |
//! | 10   | KEEPALIVE  | empty | 1 | no |
//! | 11   | REFUSE     | `reason:utf8 (0..=200 bytes)`; the sender then stops writing and closes | 1..=201 | no |
//! | 12   | SEEDING    | `busy:u8`, 1 or 0: whether the owner is pushing seeds to any session now | 2 | no |
//! | 13   | CHALLENGE  | `nonce:[32]`: fresh random bytes to be proved over (see Admission) | 33 | no |
//! | 14   | PROOF      | `mac:[32]`: HMAC-SHA-256 over both nonces (see Admission) | 33 | no |
//! | 15   | REGISTER   | `wired:u8` (1 or 0) `sources:u8` (0..=4; 0: the owner chooses) `port:u16` `host_len:u8` `host:utf8` `nb_len:u8` `neighbour:utf8`, each text 0..=255 bytes | 7..=517; the two lengths account for the payload exactly | no |
//! | 16   | PROGRESS   | `rate:u64`: bytes of new chunks the sender stored per second, over about the last second | 9 | no |
//! | 17   | NEIGHBOUR  | `n:u8` (0..=4), then `n` entries `len:u8` (1..=255) `addr:utf8`: the `HOST:PORT`s to download from, nearest first; `n` 0: no one | 2..=1026; the lengths account for the payload exactly | no |
//! | 18   | UNREACHABLE | `addr:utf8 (1..=255 bytes)`: a download neighbour, as NEIGHBOUR named it, cannot be reached | 2..=256 | no |
//! | 19   | STATUS_REQUEST | empty | 1 | no |
//! | 20   | STATUS     | `total:u32` `first:u32` `sent:u64`, then entries to the end of the frame | 17..=limit | no |
//! | 21   | VERSION    | `file_id:[32]`: the owner now shares another version of its file, with this ID; the sender then stops writing (see Versions) | 33 | no |
//!
//! Every `length` is also at most the frame limit, for HASHES, HAVE and
//! STATUS usually the tighter bound. "layout: yes" kinds arriving before
//! the receiver has the layout are violations, and so is HASHES before the
//! MANIFEST, whose `chunking` says which form its entries take (kinds 15
//! to 20 need none to be decoded, but no state accepts them before it is
//! known). A byte shown as 1 or 0 may be nothing else, nor may
//! `chunking`. A chunk ID is valid below `chunks`: a REQUEST, HAVE or
//! CHUNK naming an ID of `chunks` or more is a violation (one such ID
//! among a HAVE's is enough), as is a CHUNK_LIST with a spare bit set.
//! With fixed chunking
//! chunk `i` is `chunk_size` bytes long, except the last, which is
//! `file_len - (chunks - 1) * chunk_size`; with content chunking it is the
//! `len` of entry `i` of the HASHES, and starts where chunk `i - 1` ends
//! (chunk 0 at 0). HASHES also needs `first + n <= chunks`. For an empty
//! file (`chunks = 0`) no HASHES, HAVE, REQUEST or CHUNK can be valid, and
//! CHUNK_LIST has `length` 1. A STATUS entry is `state:u8` (0 to
//! 4) `wired:u8` `held:u32` `rate:u64` `addr_len:u8` `addr:utf8`
//! `nb_len:u8` `neighbour:utf8` (16 to 526 bytes); the entries fill the
//! frame exactly, and `first` plus their number is at most `total`.
//!
//! Every list must be split to fit the receiver's frame limit:
//!
//! - HASHES: the owner puts `per = (limit - 64) / E` entries in a frame,
//!   `E` the entry's size, 32 for fixed chunking and 36 for content
//!   chunking (that is `max(max_len, ceil(chunks / 8)) / E`, at least 32),
//!   with `first = 0, per, 2·per, ...`; every frame is full but the last,
//!   and an empty file has none ([`max_hashes`]).
//!   A receiver accepts any `n` that fits, but each `first` must equal the
//!   number of entries it has received so far: a HASHES with another
//!   `first` is a violation (the peer closes and, as after any failed
//!   session, connects again after its backoff; it is not fatal like the
//!   MANIFEST errors under Manifest and file ID).
//! - HAVE: at most `(limit - 1) / 4` IDs a frame
//!   ([`encode_have`]).
//! - STATUS: one answer is one or more frames with the same `total` and
//!   `sent`, `first` counting the entries of the frames before; a frame
//!   holds as many whole entries as fit, at least one, and an empty
//!   registry is one frame with none
//!   ([`encode_status`]).
//! - CHUNK_LIST and CHUNK always fit the limit, which is made for them;
//!   MANIFEST, REGISTER and UNREACHABLE always fit 1024, and NEIGHBOUR
//!   (which only a peer that has the MANIFEST receives) fits every limit
//!   with a layout, 1088 at least.
//!
//! # Manifest and file ID
//!
//! A file is cut into chunks in one of two ways, which the MANIFEST's
//! `chunking` names:
//!
//! - fixed (0): `chunks = ceil(file_len / chunk_size)`, 0 for an empty
//!   file; `chunk_size` is within 1024..=16777216, and `max_len =
//!   chunk_size`.
//! - content (1): boundaries where the content says, so that bytes
//!   inserted into a file change only the chunks around them. The owner
//!   finds them with FastCDC as published in 2020 (the `fastcdc` crate's
//!   `v2020`: its gear table, normalization level 1) with minimum
//!   `chunk_size / 4`, average `AVG` and maximum `max_len = 4 ·
//!   chunk_size`, but a receiver needs none of that: the chunk lengths are
//!   in the HASHES. `AVG` is `chunk_size`, or if `log2(chunk_size)` has a
//!   fraction of .5 or more (FastCDC would cut as for the next power of
//!   two), the largest integer below `2^(k + 0.5)`, `k =
//!   floor(log2(chunk_size))`: 92681 for 102400, whose chunks then
//!   average about 100 KB. `chunk_size` is within 1024..=4194304; every length is
//!   within 1..=max_len (every chunk but the last is at least the minimum,
//!   which a receiver need not check), they add up to `file_len`, and
//!   their number is `chunks`, so `chunks <= file_len <= chunks · max_len`.
//!
//! Either way `chunks <= 4194304`. The file ID is the SHA-256 of the
//! manifest's text form, exactly these bytes:
//!
//! ```text
//! "swarm manifest 1" LF
//! "name " NAME LF
//! "size " DEC(file_len) LF
//! "chunk-size " DEC(chunk_size) LF
//! "chunks " DEC(chunks) LF
//! "sha256 " HEX(file_sha256) LF
//! DEC(i) " " HEX(chunk i's SHA-256) LF      for i = 0 .. chunks-1
//! ```
//!
//! for fixed chunking, and for content chunking, with a `chunking` line
//! and each chunk's length, so the ID fixes every boundary:
//!
//! ```text
//! "swarm manifest 1" LF
//! "name " NAME LF
//! "size " DEC(file_len) LF
//! "chunk-size " DEC(chunk_size) LF
//! "chunking fastcdc-2020 " DEC(chunk_size / 4) " " DEC(AVG) " " DEC(4 · chunk_size) LF
//! "chunks " DEC(chunks) LF
//! "sha256 " HEX(file_sha256) LF
//! DEC(i) " " DEC(chunk i's length) " " HEX(chunk i's SHA-256) LF      for i = 0 .. chunks-1
//! ```
//!
//! LF is the byte 0x0A and ends every line, the last one too; there is no
//! CR and no other space than those shown. DEC is ASCII decimal with no
//! sign and no leading zeros (`0` for zero); `/` rounds down. HEX is 64
//! lowercase hex digits. NAME is the MANIFEST's name bytes. For an empty
//! file the text ends with the `sha256` line. `DIR/manifest` holds exactly
//! these bytes; a reader may be lenient (the Rust one takes CRLF and
//! uppercase hex), as the ID is always taken over the canonical form.
//!
//! Test vectors: `empty.bin`, 0 bytes, chunk size 102400 gives ID
//! `2352aaa160ae8c6df60d8e66593c42a63e945b9008580c52a46d4b75503995f7`;
//! `a.txt` holding `"hello\n"`, chunk size 1024 (one chunk, both digests
//! `5891b5b5...f6be03`) gives ID
//! `fa38f4546ee07702657d4c248c4547a92a8c7281353e461c287a0f2d272752b9`,
//! and with content chunking (one chunk of 6 bytes; the `chunking` line
//! is `chunking fastcdc-2020 256 1024 4096`) ID
//! `f0299c7962f43c7b38f13311ae45f5ea25146b873205ae70e490daee0e536d0e`.
//!
//! A name is plain when it is 1 to 255 bytes of UTF-8 with no `/`, no `\`
//! and no control character (Unicode Cc: U+0000..=U+001F, U+007F..=U+009F),
//! and is neither `.` nor `..`. The owner makes its name plain before it
//! hashes the manifest (`plain_name`: its file's last path component,
//! control characters dropped, cut to 255 bytes, `file` for an empty
//! result, `.` or `..`).
//!
//! A peer gives up (exits with an error, and does not retry) on a MANIFEST
//! whose `chunk_size` or `chunks` is out of bounds for its `chunking` (for
//! fixed chunking, `chunks` must be exactly as above) or whose name is not
//! plain, and on HASHES whose lengths break the rules above: no honest
//! owner sends one. It rebuilds the text from the MANIFEST and the HASHES;
//! its SHA-256 must equal the `file_id` of the owner's HELLO; a mismatch
//! is fatal as well. A manifest that differs from the one the peer holds
//! (cached, or received earlier in this run) is a new version of the file
//! (see Versions).
//!
//! # Admission
//!
//! A swarm may be closed by a secret that the owner and every peer hold
//! (`--secret-file`). Then every connection (a status client's too) opens
//! with a mutual challenge-response before any HELLO, and a side that has
//! not proved the secret is sent nothing of the file; a peer likewise takes
//! nothing from an owner that has not proved it. Without a secret a
//! connection opens with HELLO, and the swarm is open to anyone.
//!
//! A is the connecting side, B the accepting side. `na` and `nb` are 32
//! bytes from the operating system's random source, fresh for each
//! connection. `secret` is the secret file's bytes without trailing ASCII
//! whitespace, the HMAC-SHA-256 key (RFC 2104): the file is at most 4096
//! bytes, and the bytes 0x20, 0x09, 0x0A, 0x0C and 0x0D are stripped from
//! its end, one after another, until another byte ends it (the vertical
//! tab, 0x0B, is not whitespace here and stays part of the secret); at
//! least 1 byte must remain. `||` is
//! concatenation, and the labels are the ASCII bytes shown, without a
//! terminator; they differ so that neither side's proof can be replayed as
//! the other's.
//!
//! 1. A → CHALLENGE(`na`), its first frame.
//! 2. B reads A's first frame. A CHALLENGE: B → CHALLENGE(`nb`), then
//!    PROOF(`HMAC(secret, "swarm accept" || na || nb)`).
//! 3. A checks B's PROOF in constant time. If it is wrong, or B sent HELLO
//!    or REFUSE instead of CHALLENGE, A closes without sending its own
//!    proof or its HELLO: B has not shown it belongs to the swarm.
//! 4. A → PROOF(`HMAC(secret, "swarm connect" || na || nb)`), then its
//!    HELLO.
//! 5. B checks A's PROOF in constant time; if it is wrong, B → REFUSE
//!    `"wrong swarm secret"` and closes. Otherwise it reads A's HELLO and
//!    answers as Sessions says; an answering HELLO is followed at once by
//!    PROOF(`HMAC(secret, "swarm hello" || na || nb || file_id)`), with the
//!    `file_id` of that HELLO.
//! 6. A checks that PROOF in constant time; if it is wrong, A closes
//!    without a word. The session goes on as below.
//!
//! A side configured differently from the other is refused, with nothing
//! else sent: B with a secret whose first frame from A is a HELLO → REFUSE
//! `"this swarm needs its secret: start with --secret-file"` (a HELLO of
//! another version gets the version refusal instead, see Sessions); B
//! without a secret whose first frame from A is a CHALLENGE → REFUSE `"this
//! swarm has no secret; start without --secret-file"`. These three refusals
//! mean that admission failed, which trying again will not change; B then
//! stops writing and discards input for up to 0.5 s before it closes. B's
//! other refusals (a full listener) come before it reads anything and mean
//! what they always do.
//!
//! The exchange runs under the handshake deadline (Sessions), and its
//! frames are checked from their headers like any other: B accepts only
//! CHALLENGE or HELLO first and then only PROOF; A accepts CHALLENGE, HELLO
//! or REFUSE first, then only PROOF, and after B's HELLO only PROOF.
//!
//! Admission proves that whoever answers at the start of a connection holds
//! the secret, and the last proof binds B's file ID to the connection, so a
//! relay cannot substitute a file: the file ID fixes the manifest, and the
//! manifest every chunk. It neither encrypts nor authenticates the other
//! frames: a party that can alter traffic between two members can still
//! relay the exchange and then inject frames of its own (a forged
//! NEIGHBOUR, say), though never make a peer keep a byte that is not the
//! owner's.
//!
//! # Sessions
//!
//! The dialing side speaks first (after admission, if any): HELLO. The
//! listening side reads it and, if it serves the session, answers with its
//! own HELLO. `version` is 6 (version 1 had no SEEDING, version 2 no
//! CHALLENGE and PROOF, version 3 no content chunking, whose MANIFEST had
//! no `chunking` and `chunks`, and no VERSION, version 4 one download
//! neighbour per peer: REGISTER without `sources`, NEIGHBOUR one address,
//! version 5 no REGISTER `sources` 0). `file_id` is the file ID, or 32 zero bytes from a
//! side that has no manifest yet (sent only to the owner). `name` names the
//! sender in logs (`"owner"`, `"peer 9001"`, `"status"`); empty means "use
//! my address". Each side gives the other 10 s from its accept or connect
//! for admission and HELLO; a peer gives the owner 10 s more for the
//! MANIFEST, and again for each HASHES frame.
//!
//! What the first frame at a listener gets:
//!
//! | first frame                                    | owner           | peer's upload port |
//! |------------------------------------------------|-----------------|--------------------|
//! | HELLO with magic `"SWRM"` and version 6        | served, whatever its `file_id` | served if `file_id` is its file ID, else REFUSE `this peer is sharing a different file` (zero ID included) |
//! | HELLO with magic `"SWRM"` and another version V | REFUSE `protocol version V is not supported (this is version 6)` | same |
//! | HELLO with another magic; REFUSE, another kind, a malformed frame | closed | closed |
//! | CHALLENGE, or HELLO where a CHALLENGE is due    | see Admission   | see Admission      |
//! | nothing whole within 10 s                      | closed          | closed             |
//! | anything, while the listener is full           | REFUSE `too many connections; try again later`, written before anything is read | same |
//!
//! "Closed" means closed without a word: no HELLO, no REFUSE. A refusing
//! listener writes REFUSE instead of its HELLO (the version refusal also
//! answers a HELLO that follows admission), then stops writing (TCP
//! half-close) and discards its input: it reads whatever arrives and
//! drops it unparsed, frame checks and deadlines included, until the
//! other side closes, a read fails, or 0.5 s pass; then it closes. This
//! keeps its REFUSE from being lost to a reset; it acts on nothing it
//! read. (A REFUSE in a running session, Owner session step 4 and 7, is
//! followed instead by reading on as under Leaving.) The owner
//! never compares a peer's `file_id`: zeros, its own ID and any other are
//! served alike, with its real ID, MANIFEST and HASHES; only the peer
//! compares (Manifest and file ID).
//!
//! A dialer takes HELLO or REFUSE as the other side's first frame after
//! admission, and closes without a word on a HELLO it cannot accept
//! (another magic or version, malformed). A peer's dialer, after a REFUSE,
//! a failed connect or handshake, or a ring HELLO whose `file_id` differs
//! (closed without a word), tries again later, backing off from 25 ms,
//! doubling, to 2 s; a failed admission on its owner link is fatal. The
//! version refusal is not: on the owner link, as on a ring connection, it
//! is retried like any other REFUSE at the start of a session (on the
//! owner link until `--wait` runs out while the peer has no manifest, and
//! for as long as the peer runs once it has one), since the other side
//! may be restarted with another build.
//!
//! ## Owner session (a peer connects to the owner)
//!
//! 1. peer → HELLO; owner → HELLO (with the real `file_id`; and, with a
//!    secret, its PROOF).
//! 2. owner → MANIFEST, then the HASHES frames, all at once. The peer
//!    checks them (Manifest and file ID).
//! 3. peer → REGISTER, then CHUNK_LIST of the chunks it already holds, in
//!    one write. A session without REGISTER is served alike but is not
//!    registered. A status client sends STATUS_REQUEST instead of both.
//! 4. On the CHUNK_LIST the owner registers a peer that sent REGISTER, or
//!    refuses it: REFUSE `the swarm is full: this owner takes at most N
//!    peers (--max-peers)`; or one whose address (`host:port`, see The
//!    owner as tracker) is over 255 bytes, which NEIGHBOUR could not carry:
//!    REFUSE `the address to reach this peer at is longer than 255 bytes`.
//!    A peer stops on either (exits with an error, no retry): the two
//!    refusals begin `the swarm is full` and `the address to reach this
//!    peer at`. Any other REFUSE on a session past its MANIFEST (today
//!    only the `--once` owner's, step 7) ends that session like any
//!    failed session, and the peer reconnects as under Reconnecting to
//!    the owner. A refusing owner, having written REFUSE, stops writing
//!    and reads on in the session's state, as under Leaving: frames are
//!    still checked (one out of place closes at once), but it acts on
//!    none (a REQUEST goes unanswered, a HAVE or PROGRESS registers
//!    nothing), until the peer closes or 10 s pass.
//!    Then owner → NEIGHBOUR (to a peer it wires),
//!    CHUNK for each chunk it seeds to this session, unasked, in ID order,
//!    then SEED_DONE, then SEEDING (Seeding).
//! 5. From step 3 on the peer may send REQUEST for any chunk, even one it
//!    listed or asked for before; the owner answers each with CHUNK, in the
//!    order they queue behind its other messages (so after the seeds). This
//!    implementation's peer sends no REQUEST before SEED_DONE. The peer
//!    also sends, once a second until its file is verified, HAVE (if
//!    any) and PROGRESS: the HAVE names every chunk it stored since this
//!    session's CHUNK_LIST or its last HAVE, from whatever source,
//!    including the chunks this owner pushed (seeds and repairs) or sent
//!    on request; the owner counts them as it counts a ring peer's. It
//!    sends UNREACHABLE (the address exactly as NEIGHBOUR gave it) each
//!    time its TCP connect to a download neighbour that the owner named,
//!    and still names, fails (refused, unreachable, or no answer within
//!    5 s; a failed handshake or a session that breaks sends none): once
//!    per attempt, and attempts follow the dialer's backoff (25 ms
//!    doubling to 2 s), so about every 2 s while the neighbour stays
//!    down; only
//!    a wired peer sends it, only on the session that is up (none is
//!    queued while the session is down), including for the 3 s after
//!    verification in which it still tries its neighbours. Once verified,
//!    a last HAVE (if any), PROGRESS 0 and COMPLETE.
//! 6. At any time the owner may send NEIGHBOUR (ahead of anything still
//!    queued for the session, between two frames: a peer must not spend
//!    its seeding on the wrong neighbour), and push a batch of CHUNKs
//!    unasked, then SEED_DONE and SEEDING (a repair, see The owner as
//!    tracker). A peer accepts any CHUNK from the owner, asked for or not.
//!    Once every live registered peer is complete, the owner sends
//!    COMPLETE to each of them, wired or hand-wired: it may leave at once
//!    instead of waiting out `--linger` for a downloader that may have
//!    been re-wired away or has left.
//! 7. The session lasts until the peer leaves (it stops writing; the owner
//!    closes on seeing that) or closes, or a rule under Limits and idle
//!    rules applies, or the owner shares a new version (it sends VERSION,
//!    see Versions). An owner started with `--once` whose file changed
//!    sends every session REFUSE `the owner's file changed while being
//!    shared; the owner has stopped`, then exits.
//!
//! | receiver, state                                    | kinds accepted                                         |
//! |----------------------------------------------------|--------------------------------------------------------|
//! | owner, first frame                                 | HELLO (after admission, if any)                        |
//! | owner, after the HELLOs                            | REGISTER, CHUNK_LIST, STATUS_REQUEST, KEEPALIVE        |
//! | owner, after REGISTER                              | CHUNK_LIST, STATUS_REQUEST, KEEPALIVE                  |
//! | owner, after CHUNK_LIST                            | REQUEST, HAVE, PROGRESS, UNREACHABLE, COMPLETE, KEEPALIVE |
//! | owner, after STATUS_REQUEST                        | STATUS_REQUEST, KEEPALIVE                              |
//! | peer, first frame                                  | HELLO, REFUSE (after admission, if any)                |
//! | peer, after the owner's HELLO, with a secret       | PROOF                                                  |
//! | peer, before MANIFEST                              | MANIFEST, REFUSE, VERSION                              |
//! | peer, until it has `chunks` digests                | HASHES                                                 |
//! | peer, once it has sent CHUNK_LIST                  | CHUNK, SEED_DONE, SEEDING, NEIGHBOUR, COMPLETE, KEEPALIVE, REFUSE, VERSION |
//! | status client, once it has the digests             | STATUS, KEEPALIVE, REFUSE, VERSION                     |
//!
//! So before its CHUNK_LIST a peer takes a REFUSE only in place of the
//! owner's HELLO or MANIFEST, and between HASHES frames a REFUSE or a
//! KEEPALIVE is a violation (an honest owner writes MANIFEST and HASHES at
//! once). A hand-wired peer ignores NEIGHBOUR. A wired one takes, in
//! order, the addresses of a NEIGHBOUR that it can resolve, skipping
//! repeats, up to `sources` of them (all 4 if it sent `sources` 0),
//! and ignores a NEIGHBOUR none of
//! whose addresses it can; when they differ from its
//! download neighbours it closes its ring connections to any neighbour not
//! among them and connects to each new one (to none if `n` is 0). Such a
//! close is abrupt: the socket is shut down both ways at once, with no
//! COMPLETE, REFUSE or half-close, and requests still outstanding there
//! lapse and go to other sources; the uploader sees the connection end
//! (possibly reset in the middle of a CHUNK) and drops it, which is no
//! violation on either side.
//!
//! An address in NEIGHBOUR (and in UNREACHABLE, REGISTER's `neighbour`
//! and a STATUS entry) is `HOST:PORT`, the port in decimal: an IPv4
//! address in dotted decimal, an IPv6 address in square brackets
//! (`[2001:db8::7]:9001`, as RFC 3986 writes it), or a host name, which
//! the receiver resolves and takes the first address of. A bare decimal
//! port `PORT` means `127.0.0.1:PORT`. The owner writes a peer's address
//! as REGISTER determined it (The owner as tracker): for an empty
//! `host`, the session's source address in that form, IPv6 bracketed;
//! otherwise `host` as the peer sent it. A sender must bracket IPv6.
//! (This implementation's receiver also takes an unbracketed one,
//! splitting at the last `:`, so `::1:9001` is `[::1]:9001`; and its
//! `--advertise` passes an unbracketed IPv6 host through as given.)
//!
//! A peer closes the session on the third chunk from it that fails its
//! digest (it discards each bad one and asks again), without a word,
//! and treats it as a session that ended: it is not shunned, as a ring
//! neighbour would be, and the peer reconnects as below.
//!
//! ### Reconnecting to the owner
//!
//! Until its file is verified, a wired peer keeps an owner session up: a
//! session that ends in order (the owner closed, or the peer closed it
//! for bad chunks) is followed by a new one at once, one that failed by
//! the dialer's backoff (25 ms doubling to 2 s). The owner takes the new
//! session as the member's (a known address) and seeds it nothing new
//! beyond repairs. A hand-wired peer connects until it has a session
//! that sent its CHUNK_LIST; after that it reconnects only while it
//! wants the owner as a source (its ring is stalled, or it is in its end
//! game; see `src/peer/machine.rs`), since the owner seeds each new
//! session of a hand-wired peer a share again. Either kind also
//! reconnects at once after VERSION. A verified peer reconnects only to
//! take up a new version: after VERSION on its session (before it
//! leaves), or, with `--follow` (wired or hand-wired), whenever its
//! session ends, with the dialer's backoff while the owner is away (a
//! verified peer lacks nothing, so the owner seeds it nothing). The fatal
//! cases are a failed admission, the two refusals of step 4, a MANIFEST
//! or HASHES that breaks the rules under Manifest and file ID, and no
//! manifest within `--wait`.
//!
//! ## Ring session (a downloader connects to an uploader's listening port)
//!
//! 1. downloader → HELLO; uploader → HELLO (and, with a secret, its PROOF),
//!    both with the file ID (see the table above for a mismatch).
//! 2. uploader → CHUNK_LIST of everything it holds, then HAVE whenever it
//!    gains chunks, and CHUNK in answer to each REQUEST, in request order.
//! 3. downloader → REQUEST for chunks it lacks, several in flight at once;
//!    COMPLETE once it holds every chunk and has checked the whole file. A
//!    downloader never sends HAVE: chunks flow one way.
//!
//! | receiver, state                     | kinds accepted                  |
//! |-------------------------------------|---------------------------------|
//! | uploader, first frame               | HELLO (after admission, if any) |
//! | uploader, after the HELLOs          | REQUEST, COMPLETE, KEEPALIVE    |
//! | downloader, first frame             | HELLO, REFUSE (after admission, if any) |
//! | downloader, after the uploader's HELLO, with a secret | PROOF       |
//! | downloader, before CHUNK_LIST       | CHUNK_LIST, KEEPALIVE, REFUSE   |
//! | downloader, after it                | HAVE, CHUNK, KEEPALIVE, REFUSE  |
//!
//! A peer's upload port serves nobody until the peer has the manifest (at
//! once if it resumes from a cached one). Before that the port is bound and
//! the kernel completes TCP connections, but nothing is read or written: a
//! dialer's HELLO goes unanswered until its own 10 s deadline. When the
//! manifest arrives, the connections still waiting are served like new ones
//! (their 10 s start then), however old their HELLO.
//!
//! An uploader serves a REQUEST for any chunk it holds when it reads the
//! REQUEST, listed or not (a HAVE may be on its way), unless the chunk is
//! dropped before its turn. A REQUEST for a chunk it does not hold goes
//! unanswered: no CHUNK, no REFUSE, no close. A downloader should ask only
//! for chunks the uploader listed. A connection becomes a *downloader* with
//! its first REQUEST for a held chunk; COMPLETE from any other connection
//! does not count, and the uploader closes that connection at once, without
//! a word.
//!
//! A sender (uploader or owner) queues what it has to write, HAVE and
//! KEEPALIVE aside, in one queue of 256 items; the frame being written is
//! no longer in it. Each REQUEST queues one item, and a REQUEST that finds
//! the queue full is a flood: the sender closes. An uploader queues nothing
//! else before COMPLETE, so 256 REQUESTs unanswered never flood it. The
//! owner's queue also holds its own messages until written (three items per
//! batch of seeds: the seeds, SEED_DONE with any SEEDING, an end-of-batch
//! marker; one per NEIGHBOUR or SEEDING), so a requester must stay a few
//! below 256 there; this implementation keeps at most 64 REQUESTs
//! unanswered per source.
//!
//! A requester gives each REQUEST a deadline (the peer's
//! `--stall-timeout`): past it, the chunk may be asked of another source,
//! and the first copy to arrive is kept. A late CHUNK in answer to a
//! REQUEST that was sent is no violation; a CHUNK from an uploader that
//! nobody asked for is, and ends the connection. After three chunks that
//! fail their digest on one ring connection the downloader closes it and
//! stays away from that neighbour for three times `--stall-timeout`.
//!
//! # Leaving
//!
//! A side that is done stops writing (TCP half-close) after what it has
//! queued (an uploader given COMPLETE drops its queued chunks, below), and
//! reads on, in its current state, until the other side closes too, for
//! at most 10 s, so its last message is not lost to a reset. Once it has
//! stopped writing, the other side's close ends the connection in order
//! even in the middle of a frame (a peer released by our COMPLETE may
//! leave while sending a chunk we no longer need).
//!
//! - A downloader, once its file is verified, sends COMPLETE on its ring
//!   connection and stops writing. It requests nothing more, and still
//!   accepts exactly what it accepted before: HAVE, CHUNK (an answer to
//!   a REQUEST sent before; stored if new), KEEPALIVE and REFUSE; any
//!   other kind is a violation as before. The uploader's close, even in
//!   the middle of a frame, or a reset, is then an orderly end, and after
//!   10 s it closes itself.
//! - An uploader, on a downloader's COMPLETE, finishes the frame it is
//!   writing, drops the chunks still queued for it (the downloader holds
//!   them all) and stops writing; REQUESTs read after that go unanswered.
//!   When it sees the downloader close, it closes at once.
//! - Toward the owner a verified peer sends COMPLETE (step 5 of the owner
//!   session) and keeps the session open while it stays, since a registered
//!   peer whose session ends without COMPLETE is away, then gone. When it
//!   leaves it stops writing; the owner, which has read COMPLETE by then,
//!   closes and counts it as left. A verified peer does not reconnect to
//!   the owner, except to take up a new version (VERSION on its session,
//!   or `--follow`; see Reconnecting to the owner): VERSION makes every
//!   peer still running fetch the new manifest, verified or not.
//! - If the download side connects (again) after verification, it sends
//!   COMPLETE right after the HELLOs; as that connection never asked for a
//!   chunk, the uploader closes it without counting it. It tries an
//!   unreachable neighbour for about 3 s after verification, and no
//!   neighbour at all while it has none.
//!
//! A peer exits, once its file is verified, as soon as either holds:
//!
//! 1. a downloader has ever sent it COMPLETE, and for every open downloader
//!    connection `--linger` seconds have passed since the last chunk sent
//!    to it. That clock is per connection, on the peer's own monotonic
//!    clock: it starts when this peer has written the whole of the last
//!    CHUNK it sent on that connection in answer to a REQUEST (handed to
//!    the socket, not acknowledged), whether before or after
//!    verification; for a connection that was never sent one, at
//!    verification;
//! 2. `--linger` seconds have passed since the latest of: verification, and
//!    the last chunk sent in answer to any downloader, open or gone (a
//!    downloader's COMPLETE counts as its last contact).
//!
//! Only chunks sent in answer to a downloader's REQUEST count as contact;
//! KEEPALIVEs and strangers count for nothing. A downloader that never had
//! to ask for a chunk (all seeded or resumed) releases no one, and for an
//! empty file every peer stays the full `--linger`. Before exiting, the
//! peer stops writing on its owner session and waits up to 2 s for its
//! download connection and owner session to close (its COMPLETEs have then
//! been read); then it closes every connection, without REFUSE. A download
//! side between connections is not waited for, and its COMPLETE is then
//! never sent.
//!
//! # The owner as tracker
//!
//! The owner keeps a registry of the peers that send REGISTER, by address,
//! and wires a ring of those that ask. The address, where the peer's upload
//! port is reached, is `host:port`, or for an empty `host` the address the
//! session comes from with `port`. `wired` 1 asks the owner to place the
//! peer in its ring; 0 marks a hand-wired peer (`--download-neighbor`),
//! whose `neighbour` (its `HOST:PORT`s, separated by `, `) is for the
//! registry only. `sources` is the most download neighbours the peer
//! downloads from at once (`--sources`), or 0 to leave the number to the
//! owner (up to 4).
//!
//! What this implementation's peer puts in REGISTER, on every session:
//!
//! | peer started with | `wired` | `sources` | `host`, `port` | `neighbour` |
//! |---|---|---|---|---|
//! | no `--download-neighbor` | 1 | `--sources K`, or 0 without it | empty and its upload port | empty |
//! | `--download-neighbor A` (once or more) | 0 | `--sources K`, 1 without it | empty and its upload port | each given neighbour as resolved, `IP:PORT` (IPv6 bracketed), separated by `, ` |
//! | either, with `--advertise HOST:PORT` | as above | as above | `HOST` exactly as given (an IPv6 address in its brackets) and `PORT` | as above |
//!
//! The upload port is the port the peer listens on (`--port`). The owner
//! joins `host` and `port` with a `:` as they are, so a `host` must be
//! written as NEIGHBOUR needs it (brackets for IPv6).
//!
//! A peer registers when its CHUNK_LIST arrives. A new address is refused
//! (owner session, step 4) while the live members (downloading, complete or
//! away) number `--max-peers`. A known address (a reconnect or a restart)
//! takes over its entry with the new CHUNK_LIST, and is refused only if the
//! member had gone or left and the live members number `--max-peers`. A
//! member is complete once its CHUNK_LIST is full or it sent COMPLETE. When
//! its session ends, a complete member has left; any other is away and
//! keeps its place for 3 s (registering again within that time changes
//! nothing). Past that, or at once when the member told to download from
//! it sends UNREACHABLE naming it while its session is down, it is gone
//! (any other UNREACHABLE changes nothing). At most 1000 gone and left members are kept, the
//! oldest dropped first.
//!
//! The owner wires the live wired members so that each downloads from
//! `k` others, `k` the member's `sources`, or for `sources` 0 the owner's
//! choice (1 in a small ring, 3 in a large one), but never more than
//! the members less one, and fewer where two rings put the same member
//! before it (it is counted once). The ring is large from the moment it
//! has 8 members on, and stays large as members leave. A small ring, or
//! a large one of at most 5 members, is a list in which each downloads
//! from the `k` before it, nearest first (the first from the last): with
//! `k` 1 the card's ring, with 2 a ring plus a chord.
//! The ring is a list in data-flow order, each member downloading from
//! the one before it. Let `n` be the number of members in the ring
//! before the newcomer goes in (live wired members; hand-wired, gone and
//! left ones are not in it). While `n < 16` a newcomer goes in right
//! after the first member (at index `min(n, 1)`): it downloads from the
//! first member, and the member that was after the first now downloads
//! from it, so peer `i` downloads from peer `i + 1` when they join in
//! order. From `n = 16` on it goes in at index `1 + (h mod n)`, where
//! `h = (j · 0x9E3779B97F4A7C15 mod 2^64) >> 32` and `j` counts the
//! registry's entries with the newcomer's own: every address registered
//! in this version (hand-wired, gone and left ones too) less those
//! dropped beyond the 1000 gone and left kept. A member that registers
//! again is placed in front of the member that was after it, as below,
//! or else by the same rule. In a large ring of more than 5 each
//! downloads from the member before it in the ring and from the member
//! before it in each of up to three other rings, each in an order of its
//! own, so every member is a few hops from every other however many join
//! (the exact placement is the owner's; see its tracker module). A member
//! serves about as many downloaders as the largest `k`. A member alone is
//! told NEIGHBOUR with `n` 0. A member that is gone or has left is taken
//! out and the members after it, in each ring, are told their download
//! neighbours anew. A gone or left member that registers again wired,
//! holding chunks, goes back in front of the member that was after it, if
//! that one is still in the ring. One that registers again hand-wired is
//! taken out. The owner sends NEIGHBOUR to a member with a session whose
//! download neighbours change, unless it is complete, and to every new
//! session of a wired member that keeps its place; to a registering
//! session it goes before the seeds, and changes go out in the order the
//! owner decided them.
//!
//! Repair: the chunks that no member in the ring holds (by its CHUNK_LIST
//! and HAVEs) or, with its session up, has been pushed by the owner go, as
//! one batch (CHUNKs, then SEED_DONE), to a member with a session: when a
//! member is taken out, to the one after it unless that one is complete;
//! and when a wired member registers again and keeps its place, to it,
//! before its (empty) share. This is how such chunks re-enter the ring.
//! As a safety net, chunks that no member of the ring holds or has been
//! pushed for 2 s in a row (shares never handed out because fewer than N
//! peers came, say) are pushed too, split in equal runs of IDs among up
//! to 8 members with sessions that are not complete, spread evenly along
//! the ring. A complete member leaving causes no push (its downloader is
//! complete or has stopped asking).
//!
//! A STATUS entry describes one member, in registration order: `state` 0
//! downloading, 1 complete, 2 away, 3 gone, 4 left; `wired` 1 if the owner
//! wires it; `held` how many chunks its CHUNK_LIST and HAVEs named; `rate`
//! its last PROGRESS (0 once complete or ended); `addr` its address;
//! `neighbour` its download neighbours, separated by `, ` (those the owner
//! assigned, or a hand-wired peer's own; cut to 255 bytes), empty if none. `sent` is the chunk bytes the
//! owner has sent in all. A status client (`swarm status`) opens an owner
//! session with a zero `file_id`, reads MANIFEST and HASHES, then sends
//! STATUS_REQUEST, again whenever it wants a fresh answer; each gets one
//! STATUS answer. It never registers.
//!
//! # Limits and idle rules
//!
//! | rule                                   | value                              |
//! |----------------------------------------|------------------------------------|
//! | TCP connect                            | 5 s                                |
//! | admission and HELLO; MANIFEST; each HASHES or STATUS frame | 10 s           |
//! | KEEPALIVE                              | after 5 s with nothing to write    |
//! | silence                                | 30 s without a byte arriving       |
//! | slow reader                            | 30 s + 1 s per whole 16 KiB of the frame being written |
//! | reading on after stopping to write     | 10 s                               |
//! | items queued at a sender               | 256                                |
//! | connections at a listener              | owner `--max-peers` + 256, peer 16 |
//!
//! Once a session is running (from the owner's HELLO on the owner; from
//! sending CHUNK_LIST on a peer's owner link; from the HELLOs on both ring
//! ends), a side whose writer has had nothing to write for 5 s sends
//! KEEPALIVE; none is sent during a handshake or after the side stopped
//! writing. A side closes a silent connection: one on which no byte has
//! arrived for 30 s (any byte counts, part of a frame too). The clock
//! starts at a listener at its accept (the handshake's frames do not
//! reset it; the first frame after them does), and at a dialer when its
//! session starts running: on a ring connection once the HELLOs (and
//! PROOF) are exchanged, on a peer's owner link once it has written
//! REGISTER and CHUNK_LIST (after the MANIFEST and HASHES, and after
//! the peer has allocated its output). It also closes one whose other
//! side reads too slowly (for a
//! CHUNK the size counted is `max_len`; a single blocked write also
//! fails after 30 s). None of these closes sends REFUSE.
//!
//! These deadlines (handshake, silence, slow reader, reading on) are
//! checked after each whole frame, and when about a second (half a second
//! in a handshake) passes with no byte arriving. Bytes trickled in more
//! often than that postpone the check: a HELLO sent a byte every 0.4 s is
//! accepted after 20 s, a frame trickled in keeps the slow-reader check
//! from running, and a frame at least once a second holds a finished
//! connection open.
//!
//! A listener counts its connections from accept (handshakes included),
//! with no limit per address. When a new one arrives at the cap, it closes
//! one without a word to make room, choosing the first non-empty tier below
//! and within it the smallest key; a registered peer's session, from its
//! registration on, is never chosen:
//!
//! 1. connections that never sent or received a chunk, oldest first (by
//!    accept time);
//! 2. connections that moved only unasked chunks (the owner's seeds), the
//!    last one more than 5 s ago, least recent first;
//! 3. connections that moved chunks asked for, the last one more than 30 s
//!    ago, least recent first.
//!
//! If no connection qualifies, the newcomer gets REFUSE `too many
//! connections; try again later`. The owner never leaves on its own: it
//! keeps every session until the peer closes or a rule above applies, and
//! stops only when killed (connections just close) or, with `--once`, when
//! its file changes (REFUSE to every session, then exit with an error
//! within a second).
//!
//! # Versions
//!
//! An owner follows its file unless started with `--once`. It looks at the
//! file's size, modification and change times and inode every 0.25 s; a
//! change, SIGHUP, or a chunk read from the file that no longer matches
//! its digest marks the file changed. Once it has stayed unchanged for
//! 1 s (at once for SIGHUP or a read that no longer matches), the owner
//! indexes it again, while it keeps serving the current version; a file
//! that changes during that read is indexed again once quiet. A result
//! with the current file ID changes nothing. Otherwise the new manifest
//! becomes the *current version*, numbered one more: every
//! session opened from then on gets its HELLO, MANIFEST and HASHES, and
//! every older session (whatever its state) is sent VERSION with the new
//! file ID, ahead of anything still queued for it, and nothing after it:
//! the owner stops writing and reads on until the other side closes, for
//! at most 10 s. The registry and ring start again empty with each version
//! (peers register again as they come back), and a version's seed shares
//! are `ceil(L / N)` chunks for a session whose CHUNK_LIST lacks `L`
//! (see Seeding), so N peers that held the version before
//! share out what changed between them. The same holds for the first
//! version of an owner started on a directory whose cached manifest is
//! another file's: its peers likely hold that one.
//!
//! A peer that reads VERSION closes its owner session and connects again
//! at once (verified or not), as a new session. A peer whose owner session
//! brings a manifest other than the one it holds ends everything of the
//! old version: its ring connections and its upload port's sessions close
//! (their other sides see a new file ID when they reconnect, and are
//! refused until they too have switched; they retry with backoff as
//! usual). It then keeps every chunk file whose bytes have a SHA-256 that
//! the new manifest lists, at every place the new manifest lists it, and
//! fetches only the rest. Its output keeps the old version, whole, until
//! the new one is verified and renamed over it. A peer started with
//! `--follow` never leaves on its own once verified (it ignores COMPLETE
//! from the owner and `--linger`) and keeps its owner session up,
//! reconnecting, so it takes up every later version; any other peer takes
//! up a version announced before it leaves. A peer that was away through
//! several versions gets the newest manifest when it reconnects.
//!
//! A session whose VERSION arrives before its MANIFEST (it began just as
//! the owner switched) ends the same way: the peer or status client
//! opens a new one. A status client that reads VERSION instead of a
//! STATUS answer opens a new session and asks again (ten times at most).
//! Before the owner's new version takes over its chunk files, the old
//! version's sessions have been sent VERSION, and they send no chunk
//! after the frame they are writing.
//!
//! # Seeding
//!
//! The owner pushes chunks to a session unasked in batches: CHUNKs in ID
//! order, then SEED_DONE (owner session, steps 4 and 6); a batch may be
//! empty. How many chunks, and which, each session is seeded is the
//! owner's choice, and a peer accepts any: this implementation's rule
//! (`Seeder`: the first `--peers` wired peers between them get every
//! chunk once, later ones nothing) is in the module docs of
//! `src/tracker.rs`, under Seed shares.
//!
//! SEEDING. A session is *seeding* from the moment a non-empty batch of
//! seeds (its share or a repair) is queued for it until the batch's
//! SEED_DONE has been written (or it ended); `busy` is whether any session
//! is seeding. A session gets SEEDING(`busy`) after the SEED_DONE that ends
//! its seeding, or that follows an empty share, and then, while it is not
//! seeding, on every change of `busy`. Before its first SEED_DONE it gets
//! none.
//!
//! A peer's own policy is not part of the protocol: when it asks the
//! owner for chunks, how many REQUESTs it keeps in flight (within the
//! limits of Ring session), which chunk it asks of which source, when a
//! source counts as failing, and its end game. This implementation's
//! rules, with every constant, are in the module docs of
//! `src/peer/machine.rs`.

use std::fmt;
use std::io::{self, Read, Write};

use crate::chunks::ChunkSet;
use crate::manifest::{ChunkId, Chunking, Digest, Layout, MAX_NAME_LEN, Shape};

/// The four bytes every HELLO starts with.
pub const MAGIC: [u8; 4] = *b"SWRM";
/// The protocol version this build speaks.
pub const VERSION: u16 = 6;
/// The largest `length` accepted before the manifest is known.
pub const HANDSHAKE_LIMIT: usize = 1024;
/// The longest name a HELLO may carry.
pub const MAX_HELLO_NAME: usize = 64;
/// The longest reason a REFUSE may carry.
pub const MAX_REFUSE_LEN: usize = 200;

const KIND_HELLO: u8 = 1;
const KIND_MANIFEST: u8 = 2;
const KIND_HASHES: u8 = 3;
const KIND_CHUNK_LIST: u8 = 4;
const KIND_HAVE: u8 = 5;
const KIND_REQUEST: u8 = 6;
const KIND_CHUNK: u8 = 7;
const KIND_SEED_DONE: u8 = 8;
const KIND_COMPLETE: u8 = 9;
const KIND_KEEPALIVE: u8 = 10;
const KIND_REFUSE: u8 = 11;
const KIND_SEEDING: u8 = 12;
const KIND_CHALLENGE: u8 = 13;
const KIND_PROOF: u8 = 14;

/// Bytes in a CHALLENGE's nonce and in a PROOF's MAC.
pub const NONCE_LEN: usize = 32;
const KIND_REGISTER: u8 = 15;
const KIND_PROGRESS: u8 = 16;
const KIND_NEIGHBOUR: u8 = 17;
const KIND_UNREACHABLE: u8 = 18;
const KIND_STATUS_REQUEST: u8 = 19;
const KIND_STATUS: u8 = 20;
const KIND_VERSION: u8 = 21;

/// The longest address a REGISTER, NEIGHBOUR or UNREACHABLE may carry.
pub const MAX_ADDR_LEN: usize = 255;

/// The most download neighbours a peer may have (`--sources`), and so
/// the most addresses a NEIGHBOUR carries.
pub const MAX_SOURCES: u8 = 4;

/// A message kind: the byte after the length field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Hello = KIND_HELLO,
    Manifest = KIND_MANIFEST,
    Hashes = KIND_HASHES,
    ChunkList = KIND_CHUNK_LIST,
    Have = KIND_HAVE,
    Request = KIND_REQUEST,
    Chunk = KIND_CHUNK,
    SeedDone = KIND_SEED_DONE,
    Complete = KIND_COMPLETE,
    KeepAlive = KIND_KEEPALIVE,
    Refuse = KIND_REFUSE,
    Seeding = KIND_SEEDING,
    Challenge = KIND_CHALLENGE,
    Proof = KIND_PROOF,
    Register = KIND_REGISTER,
    Progress = KIND_PROGRESS,
    Neighbour = KIND_NEIGHBOUR,
    Unreachable = KIND_UNREACHABLE,
    StatusRequest = KIND_STATUS_REQUEST,
    Status = KIND_STATUS,
    Version = KIND_VERSION,
}

impl Kind {
    /// The kind's name for logs and errors.
    pub fn name(self) -> &'static str {
        kind_name(self as u8)
    }
}

/// The kinds a connection accepts in its current state. A frame of any
/// other kind is refused from its five header bytes, before a buffer is
/// sized for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kinds(u32);

impl Kinds {
    /// Every kind: what a bare [`Decoder`] accepts.
    pub const ALL: Kinds = Kinds(0x3F_FFFE);

    /// The set of `kinds`.
    pub const fn of(kinds: &[Kind]) -> Kinds {
        let mut bits = 0u32;
        let mut i = 0;
        while i < kinds.len() {
            bits |= 1 << kinds[i] as u8;
            i += 1;
        }
        Kinds(bits)
    }

    /// Whether the kind byte `kind` is in the set.
    pub fn contains(self, kind: u8) -> bool {
        kind < 32 && self.0 & (1 << kind) != 0
    }
}

/// Bytes before the payload: the length and the kind.
const HEADER_LEN: usize = 5;
/// How much the frame buffer grows by at least when bytes arrive.
const GROW_STEP: usize = 64 * 1024;
const HELLO_FIXED: usize = 4 + 2 + 32;
const MANIFEST_FIXED: usize = 8 + 4 + 1 + 4 + 32;

/// One protocol message. Borrowed fields point into the decoder's buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// Opens every session in both directions.
    Hello {
        version: u16,
        file_id: Digest,
        name: &'a str,
    },
    /// The file's name, size, chunking, chunk size (the average, for
    /// content chunking), chunk count and whole-file digest.
    Manifest {
        file_len: u64,
        chunk_size: u32,
        chunking: Chunking,
        chunks: u32,
        file_hash: Digest,
        name: &'a str,
    },
    /// Chunk digests for chunks `first`, `first + 1`, ..., and for content
    /// chunking each chunk's length (`lens`, as many as `hashes`; `None`
    /// for fixed chunking). `first` is a raw index: the receiver has no
    /// layout to check it against until every length is in.
    Hashes {
        first: u32,
        hashes: Vec<Digest>,
        lens: Option<Vec<u32>>,
    },
    /// Every chunk the sender holds.
    ChunkList(ChunkSet),
    /// Chunks the sender gained since it last listed.
    Have(Vec<ChunkId>),
    /// Asks for one chunk.
    Request(ChunkId),
    /// One chunk's bytes.
    Chunk { id: ChunkId, data: &'a [u8] },
    /// The owner has sent all the chunks it seeds to this peer.
    SeedDone,
    /// The sender holds every chunk.
    Complete,
    /// Nothing to say; keeps an idle connection known to be alive.
    KeepAlive,
    /// The sender will not serve this connection, and says why.
    Refuse(&'a str),
    /// Whether the owner is sending seeds to any peer now.
    Seeding(bool),
    /// Fresh random bytes the other side must prove the secret over.
    Challenge([u8; NONCE_LEN]),
    /// HMAC-SHA-256 of the secret over both sides' nonces.
    Proof([u8; NONCE_LEN]),
    /// A peer joins the owner's registry: where its upload port is
    /// reached (`host` empty: at the address its owner link comes from),
    /// and whether the owner wires it into the ring.
    Register {
        wired: bool,
        /// How many download neighbours it wants the owner to give it.
        sources: u8,
        port: u16,
        host: &'a str,
        /// A hand-wired peer's download neighbours, for the registry.
        neighbour: &'a str,
    },
    /// A peer's receive rate over the last second, in bytes per second.
    Progress { rate: u64 },
    /// The owner tells a peer whom to download from, nearest first
    /// (none: no one yet).
    Neighbour(Vec<&'a str>),
    /// A peer cannot reach its download neighbour at this address.
    Unreachable(&'a str),
    /// Asks the owner for its registry.
    StatusRequest,
    /// Part of the owner's registry.
    Status(Status),
    /// The owner now shares another version of its file, with this file
    /// ID: the session is over, and a new one gets the new manifest.
    Version(Digest),
}

/// One STATUS frame: entries `first..first + peers.len()` of `total`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub total: u32,
    pub first: u32,
    /// Chunk bytes the owner has sent in all.
    pub sent: u64,
    pub peers: Vec<PeerStatus>,
}

/// One registered peer as the owner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub state: PeerState,
    /// Whether the owner wires it into the ring.
    pub wired: bool,
    pub held: u32,
    /// Bytes per second it last reported receiving.
    pub rate: u64,
    pub addr: String,
    /// Its download neighbour, empty if none.
    pub neighbour: String,
}

/// Where a registered peer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Connected and still missing chunks.
    Downloading = 0,
    /// Holds the whole verified file.
    Complete = 1,
    /// Its link to the owner dropped; it may come back.
    Away = 2,
    /// Gone without completing (dead).
    Gone = 3,
    /// Left after completing.
    Left = 4,
}

impl PeerState {
    /// The state's name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            PeerState::Downloading => "downloading",
            PeerState::Complete => "complete",
            PeerState::Away => "away",
            PeerState::Gone => "gone",
            PeerState::Left => "left",
        }
    }

    fn from_u8(raw: u8) -> Option<PeerState> {
        Some(match raw {
            0 => PeerState::Downloading,
            1 => PeerState::Complete,
            2 => PeerState::Away,
            3 => PeerState::Gone,
            4 => PeerState::Left,
            _ => return None,
        })
    }
}

/// Bytes of a STATUS frame before its entries.
const STATUS_FIXED: usize = 4 + 4 + 8;
/// Bytes of a STATUS entry besides its two addresses.
const ENTRY_FIXED: usize = 1 + 1 + 4 + 8 + 1 + 1;

impl Message<'_> {
    /// The message's name for logs and errors.
    pub fn name(&self) -> &'static str {
        kind_name(self.kind())
    }

    fn kind(&self) -> u8 {
        match self {
            Message::Hello { .. } => KIND_HELLO,
            Message::Manifest { .. } => KIND_MANIFEST,
            Message::Hashes { .. } => KIND_HASHES,
            Message::ChunkList(_) => KIND_CHUNK_LIST,
            Message::Have(_) => KIND_HAVE,
            Message::Request(_) => KIND_REQUEST,
            Message::Chunk { .. } => KIND_CHUNK,
            Message::SeedDone => KIND_SEED_DONE,
            Message::Complete => KIND_COMPLETE,
            Message::KeepAlive => KIND_KEEPALIVE,
            Message::Refuse(_) => KIND_REFUSE,
            Message::Seeding(_) => KIND_SEEDING,
            Message::Challenge(_) => KIND_CHALLENGE,
            Message::Proof(_) => KIND_PROOF,
            Message::Register { .. } => KIND_REGISTER,
            Message::Progress { .. } => KIND_PROGRESS,
            Message::Neighbour(_) => KIND_NEIGHBOUR,
            Message::Unreachable(_) => KIND_UNREACHABLE,
            Message::StatusRequest => KIND_STATUS_REQUEST,
            Message::Status(_) => KIND_STATUS,
            Message::Version(_) => KIND_VERSION,
        }
    }
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        KIND_HELLO => "hello",
        KIND_MANIFEST => "manifest",
        KIND_HASHES => "hashes",
        KIND_CHUNK_LIST => "chunk-list",
        KIND_HAVE => "have",
        KIND_REQUEST => "request",
        KIND_CHUNK => "chunk",
        KIND_SEED_DONE => "seed-done",
        KIND_COMPLETE => "complete",
        KIND_KEEPALIVE => "keepalive",
        KIND_REFUSE => "refuse",
        KIND_SEEDING => "seeding",
        KIND_CHALLENGE => "challenge",
        KIND_PROOF => "proof",
        KIND_REGISTER => "register",
        KIND_PROGRESS => "progress",
        KIND_NEIGHBOUR => "neighbour",
        KIND_UNREACHABLE => "unreachable",
        KIND_STATUS_REQUEST => "status-request",
        KIND_STATUS => "status",
        KIND_VERSION => "version",
        _ => "unknown",
    }
}

/// Why a connection's bytes were rejected.
#[derive(Debug)]
pub enum Error {
    /// The other side closed the connection between frames.
    Closed,
    /// The other side closed the connection inside a frame.
    Truncated { got: usize, wanted: usize },
    /// A read or write failed.
    Io(io::Error),
    /// The length field was 0.
    EmptyFrame,
    /// The length field exceeded the frame limit.
    TooLong { len: usize, limit: usize },
    /// The kind byte names no message.
    UnknownKind(u8),
    /// The length does not fit the message kind.
    BadLength { kind: &'static str, len: usize },
    /// A message that needs the manifest came before it.
    NeedsManifest(&'static str),
    /// A HELLO without the magic bytes.
    BadMagic,
    /// A HELLO of another protocol version.
    BadVersion(u16),
    /// A name or reason that is not UTF-8.
    BadText(&'static str),
    /// A chunk ID at or past the chunk count.
    ChunkOutOfRange {
        kind: &'static str,
        id: u64,
        count: u32,
    },
    /// A chunk whose length is not the layout's length for that chunk.
    ChunkLength {
        id: ChunkId,
        got: usize,
        wanted: usize,
    },
    /// A chunk-ID list whose size or spare bits are wrong.
    BadChunkList,
    /// A well-formed message that does not belong at this point.
    Unexpected(&'static str),
    /// The other side refused the session.
    Refused(String),
    /// The other side queued more requests than any honest peer would.
    Flood(usize),
    /// Nothing arrived for this many seconds.
    Silent(u64),
    /// The other side took longer than this many seconds to read one frame.
    SlowReader(u64),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Closed => write!(f, "connection closed"),
            Error::Truncated { got, wanted } => write!(
                f,
                "connection closed inside a frame ({got} of {wanted} bytes)"
            ),
            Error::Io(err) => write!(f, "{}", crate::error::plain(err)),
            Error::EmptyFrame => write!(f, "frame with length 0"),
            Error::TooLong { len, limit } => {
                write!(f, "frame of {len} bytes is over the {limit}-byte limit")
            }
            Error::UnknownKind(kind) => write!(f, "unknown message type {kind}"),
            Error::BadLength { kind, len } => {
                write!(f, "{kind} message with a {len}-byte length is malformed")
            }
            Error::NeedsManifest(kind) => {
                write!(f, "{kind} message before the manifest")
            }
            Error::BadMagic => write!(f, "not a swarm connection (bad magic)"),
            Error::BadVersion(v) => write!(
                f,
                "protocol version {v} is not supported (this is version {VERSION})"
            ),
            Error::BadText(what) => write!(f, "{what} is not valid UTF-8"),
            Error::ChunkOutOfRange { kind, id, count } => write!(
                f,
                "{kind} message names chunk {id} but the file has {count} chunks"
            ),
            Error::ChunkLength { id, got, wanted } => {
                write!(f, "chunk {id} carries {got} bytes instead of {wanted}")
            }
            Error::BadChunkList => write!(f, "chunk-ID list has the wrong size"),
            Error::Unexpected(kind) => write!(f, "unexpected {kind} message"),
            Error::Refused(reason) => write!(f, "refused: {reason}"),
            Error::Flood(n) => write!(f, "more than {n} requests queued (request flood)"),
            Error::Silent(secs) => write!(f, "nothing received for {secs} s"),
            Error::SlowReader(secs) => {
                write!(f, "took more than {secs} s to read one frame (too slow)")
            }
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Error {
        Error::Io(err)
    }
}

impl Error {
    /// Whether this is a read that timed out rather than bad data.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Io(e) if is_timeout(e))
    }
}

fn is_timeout(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Appends `msg` as one frame to `out`.
pub fn encode(msg: &Message<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, msg.kind()]);
    match msg {
        Message::Hello {
            version,
            file_id,
            name,
        } => {
            out.extend_from_slice(&MAGIC);
            out.extend_from_slice(&version.to_be_bytes());
            out.extend_from_slice(file_id);
            out.extend_from_slice(name.as_bytes());
        }
        Message::Manifest {
            file_len,
            chunk_size,
            chunking,
            chunks,
            file_hash,
            name,
        } => {
            out.extend_from_slice(&file_len.to_be_bytes());
            out.extend_from_slice(&chunk_size.to_be_bytes());
            out.push(chunking_byte(*chunking));
            out.extend_from_slice(&chunks.to_be_bytes());
            out.extend_from_slice(file_hash);
            out.extend_from_slice(name.as_bytes());
        }
        Message::Hashes {
            first,
            hashes,
            lens,
        } => {
            out.extend_from_slice(&first.to_be_bytes());
            match lens {
                None => hashes.iter().for_each(|h| out.extend_from_slice(h)),
                Some(lens) => {
                    debug_assert_eq!(lens.len(), hashes.len());
                    for (len, hash) in lens.iter().zip(hashes) {
                        out.extend_from_slice(&len.to_be_bytes());
                        out.extend_from_slice(hash);
                    }
                }
            }
        }
        Message::ChunkList(set) => out.extend_from_slice(&set.to_bitfield()),
        Message::Have(ids) => {
            for id in ids {
                out.extend_from_slice(&id.get().to_be_bytes());
            }
        }
        Message::Request(id) => out.extend_from_slice(&id.get().to_be_bytes()),
        Message::Chunk { id, data } => {
            out.truncate(start);
            out.extend_from_slice(&chunk_header(*id, data.len()));
            out.extend_from_slice(data);
        }
        Message::SeedDone | Message::Complete | Message::KeepAlive => {}
        Message::Refuse(reason) => out.extend_from_slice(reason.as_bytes()),
        Message::Seeding(busy) => out.push(u8::from(*busy)),
        Message::Challenge(bytes) | Message::Proof(bytes) | Message::Version(bytes) => {
            out.extend_from_slice(bytes)
        }
        Message::Register {
            wired,
            sources,
            port,
            host,
            neighbour,
        } => {
            out.push(u8::from(*wired));
            out.push(*sources);
            out.extend_from_slice(&port.to_be_bytes());
            short_text(host, out);
            short_text(neighbour, out);
        }
        Message::Progress { rate } => out.extend_from_slice(&rate.to_be_bytes()),
        Message::Neighbour(addrs) => {
            // The sender keeps to the limits; an address too long or too
            // many would be a bug, cut here rather than break the frame.
            let addrs = &addrs[..addrs.len().min(usize::from(MAX_SOURCES))];
            out.push(addrs.len() as u8);
            for addr in addrs {
                short_text(addr, out);
            }
        }
        Message::Unreachable(addr) => {
            out.extend_from_slice(addr.as_bytes());
        }
        Message::StatusRequest => {}
        Message::Status(status) => {
            out.extend_from_slice(&status.total.to_be_bytes());
            out.extend_from_slice(&status.first.to_be_bytes());
            out.extend_from_slice(&status.sent.to_be_bytes());
            for p in &status.peers {
                out.push(p.state as u8);
                out.push(u8::from(p.wired));
                out.extend_from_slice(&p.held.to_be_bytes());
                out.extend_from_slice(&p.rate.to_be_bytes());
                short_text(&p.addr, out);
                short_text(&p.neighbour, out);
            }
        }
    }
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// A length byte, then at most [`MAX_ADDR_LEN`] bytes of `text`, cut at
/// a character boundary.
fn short_text(text: &str, out: &mut Vec<u8>) {
    let mut end = text.len().min(MAX_ADDR_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out.push(end as u8);
    out.extend_from_slice(&text.as_bytes()[..end]);
}

/// The bytes one STATUS entry takes.
pub fn status_entry_len(p: &PeerStatus) -> usize {
    ENTRY_FIXED + p.addr.len().min(MAX_ADDR_LEN) + p.neighbour.len().min(MAX_ADDR_LEN)
}

/// Appends the registry as STATUS frames that each fit `limit` (at least
/// one frame, even for no peers).
pub fn encode_status(sent: u64, peers: &[PeerStatus], limit: usize, out: &mut Vec<u8>) {
    let total = peers.len() as u32;
    let room = limit.saturating_sub(1 + STATUS_FIXED);
    let mut first = 0;
    loop {
        let mut used = 0;
        let mut end = first;
        while end < peers.len() && used + status_entry_len(&peers[end]) <= room {
            used += status_entry_len(&peers[end]);
            end += 1;
        }
        // An entry is at most 530 bytes and every limit is over 1024.
        let end = end.max((first + 1).min(peers.len()));
        let status = Status {
            total,
            first: first as u32,
            sent,
            peers: peers[first..end].to_vec(),
        };
        encode(&Message::Status(status), out);
        first = end;
        if first >= peers.len() {
            return;
        }
    }
}

/// The bytes of a CHUNK frame that precede the chunk's data, for senders
/// that copy the data straight from a file to the socket.
pub fn chunk_header(id: ChunkId, data_len: usize) -> [u8; 9] {
    let len = (1 + 4 + data_len) as u32;
    let mut out = [0u8; 9];
    out[..4].copy_from_slice(&len.to_be_bytes());
    out[4] = KIND_CHUNK;
    out[5..].copy_from_slice(&id.get().to_be_bytes());
    out
}

/// The MANIFEST byte that names `chunking`.
fn chunking_byte(chunking: Chunking) -> u8 {
    match chunking {
        Chunking::Fixed => 0,
        Chunking::Content => 1,
    }
}

/// The bytes one HASHES entry takes: a digest, and for content chunking
/// the chunk's length before it.
pub fn hash_entry_len(chunking: Chunking) -> usize {
    match chunking {
        Chunking::Fixed => 32,
        Chunking::Content => 4 + 32,
    }
}

/// The most entries one HASHES frame carries for a file of `shape`: what
/// fits the frame limit with 64 bytes to spare (at least 32).
pub fn max_hashes(shape: &Shape) -> usize {
    (shape.frame_limit() - 64) / hash_entry_len(shape.chunking())
}

/// The most chunk IDs one HAVE frame may carry for `layout`: the frame
/// must fit the receiver's frame limit like any other.
pub fn max_have_ids(layout: &Layout) -> usize {
    (layout.frame_limit() - 1) / 4
}

/// Appends `ids` as HAVE frames, as many as it takes for each to fit
/// within [`max_have_ids`].
pub fn encode_have(ids: &[ChunkId], layout: &Layout, out: &mut Vec<u8>) {
    for part in ids.chunks(max_have_ids(layout)) {
        encode(&Message::Have(part.to_vec()), out);
    }
}

/// Encodes `msg` and writes it with one call.
pub fn send(w: &mut impl Write, msg: &Message<'_>) -> io::Result<()> {
    let mut buf = Vec::with_capacity(64);
    encode(msg, &mut buf);
    w.write_all(&buf)
}

/// The allowed `length` range for a kind, or why the kind is rejected.
/// Called on the five header bytes, before any payload is read. `shape`
/// is the file's once a MANIFEST gave it; `has_layout` whether the whole
/// layout is known too (HASHES need only the shape).
fn length_bounds(
    kind: u8,
    shape: Option<&Shape>,
    has_layout: bool,
) -> Result<(usize, usize), Error> {
    let needs = |layout_too: bool| match shape {
        Some(shape) if has_layout || !layout_too => Ok(shape),
        _ => Err(Error::NeedsManifest(kind_name(kind))),
    };
    let payload = match kind {
        KIND_HELLO => (HELLO_FIXED, HELLO_FIXED + MAX_HELLO_NAME),
        KIND_MANIFEST => (MANIFEST_FIXED + 1, MANIFEST_FIXED + MAX_NAME_LEN),
        KIND_HASHES => {
            let s = needs(false)?;
            let entry = hash_entry_len(s.chunking());
            (4 + entry, 4 + entry * s.count() as usize)
        }
        KIND_CHUNK_LIST => {
            let bytes = needs(true)?.count().div_ceil(8) as usize;
            (bytes, bytes)
        }
        KIND_HAVE => (4, 4 * needs(true)?.count() as usize),
        KIND_REQUEST => {
            needs(true)?;
            (4, 4)
        }
        KIND_CHUNK => (4 + 1, 4 + needs(true)?.max_chunk_len() as usize),
        KIND_SEED_DONE | KIND_COMPLETE | KIND_KEEPALIVE => (0, 0),
        KIND_REFUSE => (0, MAX_REFUSE_LEN),
        KIND_SEEDING => (1, 1),
        KIND_CHALLENGE | KIND_PROOF => (NONCE_LEN, NONCE_LEN),
        KIND_REGISTER => (1 + 1 + 2 + 1 + 1, 1 + 1 + 2 + 2 * (1 + MAX_ADDR_LEN)),
        KIND_PROGRESS => (8, 8),
        KIND_NEIGHBOUR => (1, 1 + usize::from(MAX_SOURCES) * (1 + MAX_ADDR_LEN)),
        KIND_UNREACHABLE => (1, MAX_ADDR_LEN),
        KIND_STATUS_REQUEST => (0, 0),
        KIND_STATUS => (STATUS_FIXED, usize::MAX - 1),
        KIND_VERSION => (32, 32),
        other => return Err(Error::UnknownKind(other)),
    };
    Ok((1 + payload.0, 1 + payload.1))
}

/// Bytes every decoder in this process has read: what a process received
/// over the network, frames of every kind and the handshakes included.
static RECEIVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Bytes read by every [`Decoder`] in this process so far.
pub fn bytes_received() -> u64 {
    RECEIVED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Reads frames from a blocking stream and decodes them.
///
/// A read timeout on the stream does not lose data: bytes of a partly
/// read frame stay buffered and [`Decoder::fill`] carries on from there on
/// its next call. The buffer never grows past the frame limit, whatever
/// the length field claims.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    filled: usize,
    ready: bool,
    /// What the MANIFEST said, once known: it bounds every frame.
    shape: Option<Shape>,
    layout: Option<Layout>,
    accepts: Kinds,
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder::new()
    }
}

impl Decoder {
    /// A decoder for the handshake, before the manifest is known.
    pub fn new() -> Decoder {
        Decoder {
            buf: vec![0; HEADER_LEN],
            filled: 0,
            ready: false,
            shape: None,
            layout: None,
            accepts: Kinds::ALL,
        }
    }

    /// Tells the decoder the file's shape from its MANIFEST, before the
    /// HASHES complete its layout: from then on frames are bounded by the
    /// file's frame limit, and HASHES decode.
    pub fn set_shape(&mut self, shape: Shape) {
        self.shape = Some(shape);
    }

    /// Tells the decoder which file the connection is about; from then on
    /// chunk messages are accepted and checked against `layout`.
    pub fn set_layout(&mut self, layout: Layout) {
        self.shape = Some(*layout.shape());
        self.layout = Some(layout);
    }

    /// The layout frames are checked against, once known.
    pub fn layout(&self) -> Option<&Layout> {
        self.layout.as_ref()
    }

    /// Restricts the kinds accepted from the next frame on; any other
    /// kind fails with [`Error::Unexpected`] from the frame's header.
    pub fn set_accepts(&mut self, kinds: Kinds) {
        self.accepts = kinds;
    }

    /// Bytes of the frame being read that have arrived so far.
    pub fn buffered(&self) -> usize {
        if self.ready { 0 } else { self.filled }
    }

    /// Bytes the decoder's buffer holds allocated; never more than the
    /// frame limit plus the length field.
    pub fn allocated(&self) -> usize {
        self.buf.capacity()
    }

    /// The largest `length` currently accepted.
    pub fn limit(&self) -> usize {
        self.shape.map_or(HANDSHAKE_LIMIT, |s| s.frame_limit())
    }

    /// Reads until one whole frame is buffered. Returns `Ok(false)` when
    /// the stream's read timeout expired first (call again to continue)
    /// and `Ok(true)` when [`Decoder::message`] has a frame to decode.
    pub fn fill<R: Read>(&mut self, r: &mut R) -> Result<bool, Error> {
        if self.ready {
            self.ready = false;
            self.filled = 0;
        }
        loop {
            let wanted = if self.filled < HEADER_LEN {
                HEADER_LEN
            } else {
                4 + self.header_len()
            };
            if self.filled >= HEADER_LEN && self.filled == wanted {
                self.ready = true;
                return Ok(true);
            }
            if self.buf.len() <= self.filled {
                // The buffer grows with the bytes that actually arrive, at
                // most doubling, so a header that claims a large frame
                // costs nothing until its bytes come.
                let grow = self.filled.max(GROW_STEP);
                self.buf.resize((self.filled + grow).min(wanted), 0);
            }
            let end = self.buf.len().min(wanted);
            match r.read(&mut self.buf[self.filled..end]) {
                Ok(0) if self.filled == 0 => return Err(Error::Closed),
                Ok(0) => {
                    return Err(Error::Truncated {
                        got: self.filled,
                        wanted,
                    });
                }
                Ok(n) => {
                    RECEIVED.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                    self.filled += n;
                    if self.filled == HEADER_LEN {
                        // The header is complete: check it before reading
                        // anything of the payload.
                        self.check_header()?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Ok(false),
                Err(e) => return Err(Error::Io(e)),
            }
        }
    }

    /// Decodes the frame that [`Decoder::fill`] buffered.
    pub fn message(&self) -> Result<Message<'_>, Error> {
        if !self.ready {
            return Err(Error::Unexpected("partial frame"));
        }
        decode_with(
            &self.buf[4..4 + self.header_len()],
            self.shape.as_ref(),
            self.layout.as_ref(),
        )
    }

    /// Hands over the buffer that holds the frame [`Decoder::fill`]
    /// buffered, whole, and goes on with `spare` as its buffer: a CHUNK
    /// then travels to the thread that verifies and stores it without a
    /// copy. `spare` keeps its length, so a recycled buffer is not
    /// zeroed again (its old bytes are never read: only what arrives is).
    /// `None` if no whole frame is buffered.
    pub fn take_frame(&mut self, spare: Vec<u8>) -> Option<Frame> {
        if !self.ready {
            return None;
        }
        let len = self.header_len();
        let mut buf = std::mem::replace(&mut self.buf, spare);
        if self.buf.len() < HEADER_LEN {
            self.buf.resize(HEADER_LEN, 0);
        }
        self.ready = false;
        self.filled = 0;
        buf.truncate(4 + len);
        Some(Frame { buf })
    }

    /// Reads and decodes one message, however many read timeouts it
    /// takes; for tests and simple clients.
    pub fn read<R: Read>(&mut self, r: &mut R) -> Result<Message<'_>, Error> {
        while !self.fill(r)? {}
        self.message()
    }

    fn header_len(&self) -> usize {
        u32::from_be_bytes(self.buf[..4].try_into().unwrap()) as usize
    }

    /// Checks the length field and kind before any payload is read.
    fn check_header(&self) -> Result<(), Error> {
        let len = self.header_len();
        if len == 0 {
            return Err(Error::EmptyFrame);
        }
        let limit = self.limit();
        if len > limit {
            return Err(Error::TooLong { len, limit });
        }
        let kind = self.buf[4];
        let (min, max) = length_bounds(kind, self.shape.as_ref(), self.layout.is_some())?;
        if !self.accepts.contains(kind) {
            return Err(Error::Unexpected(kind_name(kind)));
        }
        if len < min || len > max {
            return Err(Error::BadLength {
                kind: kind_name(kind),
                len,
            });
        }
        Ok(())
    }
}

/// One whole frame taken out of a [`Decoder`] (see
/// [`Decoder::take_frame`]), its length field included.
#[derive(Debug)]
pub struct Frame {
    buf: Vec<u8>,
}

impl Frame {
    /// Decodes the frame again (the decoder checked it already); `layout`
    /// is the file's layout.
    pub fn message(&self, layout: &Layout) -> Result<Message<'_>, Error> {
        decode(&self.buf[4..], Some(layout))
    }

    /// The frame's buffer, to be handed back to a decoder as its spare.
    pub fn into_buf(self) -> Vec<u8> {
        self.buf
    }
}

/// Decodes one frame's kind and payload (everything after the length
/// field). `layout` is the file's layout once the manifest is known.
pub fn decode<'a>(frame: &'a [u8], layout: Option<&Layout>) -> Result<Message<'a>, Error> {
    decode_with(frame, layout.map(Layout::shape), layout)
}

/// [`decode`] with the shape known apart from the layout: between a
/// MANIFEST and the last of its HASHES, the shape alone.
fn decode_with<'a>(
    frame: &'a [u8],
    shape: Option<&Shape>,
    layout: Option<&Layout>,
) -> Result<Message<'a>, Error> {
    let (&kind, payload) = frame.split_first().ok_or(Error::EmptyFrame)?;
    let (min, max) = length_bounds(kind, shape, layout.is_some())?;
    let name = kind_name(kind);
    if frame.len() < min || frame.len() > max {
        return Err(Error::BadLength {
            kind: name,
            len: frame.len(),
        });
    }
    let id_at = |at: usize| -> Result<ChunkId, Error> {
        let raw = u32::from_be_bytes(payload[at..at + 4].try_into().unwrap());
        // Every kind that carries an ID needs a layout (length_bounds).
        let l = layout.ok_or(Error::NeedsManifest(name))?;
        l.chunk_id(raw).ok_or(Error::ChunkOutOfRange {
            kind: name,
            id: u64::from(raw),
            count: l.count(),
        })
    };
    let digest = |bytes: &[u8]| -> Digest { bytes.try_into().unwrap() };
    let text = |bytes: &'a [u8], what| std::str::from_utf8(bytes).map_err(|_| Error::BadText(what));
    Ok(match kind {
        KIND_HELLO => {
            if payload[..4] != MAGIC {
                return Err(Error::BadMagic);
            }
            let version = u16::from_be_bytes([payload[4], payload[5]]);
            if version != VERSION {
                return Err(Error::BadVersion(version));
            }
            Message::Hello {
                version,
                file_id: digest(&payload[6..38]),
                name: text(&payload[38..], "hello name")?,
            }
        }
        KIND_MANIFEST => Message::Manifest {
            file_len: u64::from_be_bytes(payload[..8].try_into().unwrap()),
            chunk_size: u32::from_be_bytes(payload[8..12].try_into().unwrap()),
            chunking: match payload[12] {
                0 => Chunking::Fixed,
                1 => Chunking::Content,
                _ => {
                    return Err(Error::BadLength {
                        kind: name,
                        len: frame.len(),
                    });
                }
            },
            chunks: u32::from_be_bytes(payload[13..17].try_into().unwrap()),
            file_hash: digest(&payload[17..49]),
            name: text(&payload[49..], "file name")?,
        },
        KIND_HASHES => {
            // length_bounds let HASHES through only with a shape.
            let shape = shape.ok_or(Error::NeedsManifest(name))?;
            let entry = hash_entry_len(shape.chunking());
            let rest = &payload[4..];
            if rest.len() % entry != 0 {
                return Err(Error::BadLength {
                    kind: name,
                    len: frame.len(),
                });
            }
            let first = u32::from_be_bytes(payload[..4].try_into().unwrap());
            let n = rest.len() / entry;
            if u64::from(first) + n as u64 > u64::from(shape.count()) {
                return Err(Error::ChunkOutOfRange {
                    kind: name,
                    id: u64::from(first) + n as u64 - 1,
                    count: shape.count(),
                });
            }
            let entries = rest.chunks_exact(entry);
            match shape.chunking() {
                Chunking::Fixed => Message::Hashes {
                    first,
                    hashes: entries.map(digest).collect(),
                    lens: None,
                },
                Chunking::Content => Message::Hashes {
                    first,
                    hashes: entries.clone().map(|e| digest(&e[4..])).collect(),
                    lens: Some(
                        entries
                            .map(|e| u32::from_be_bytes(e[..4].try_into().unwrap()))
                            .collect(),
                    ),
                },
            }
        }
        KIND_CHUNK_LIST => {
            let count = layout.map_or(0, |l| l.count());
            let set = ChunkSet::from_bitfield(count, payload).ok_or(Error::BadChunkList)?;
            Message::ChunkList(set)
        }
        KIND_HAVE => {
            if payload.len() % 4 != 0 {
                return Err(Error::BadLength {
                    kind: name,
                    len: frame.len(),
                });
            }
            let ids = (0..payload.len()).step_by(4).map(id_at);
            Message::Have(ids.collect::<Result<_, _>>()?)
        }
        KIND_REQUEST => Message::Request(id_at(0)?),
        KIND_CHUNK => {
            let id = id_at(0)?;
            let data = &payload[4..];
            let wanted = layout.map_or(0, |l| l.chunk_len(id));
            if data.len() != wanted {
                return Err(Error::ChunkLength {
                    id,
                    got: data.len(),
                    wanted,
                });
            }
            Message::Chunk { id, data }
        }
        KIND_SEED_DONE => Message::SeedDone,
        KIND_COMPLETE => Message::Complete,
        KIND_KEEPALIVE => Message::KeepAlive,
        KIND_REFUSE => Message::Refuse(text(payload, "refusal reason")?),
        KIND_SEEDING => match payload[0] {
            0 => Message::Seeding(false),
            1 => Message::Seeding(true),
            _ => {
                return Err(Error::BadLength {
                    kind: name,
                    len: frame.len(),
                });
            }
        },
        // length_bounds let through exactly NONCE_LEN bytes.
        KIND_CHALLENGE => Message::Challenge(payload.try_into().unwrap()),
        KIND_PROOF => Message::Proof(payload.try_into().unwrap()),
        KIND_VERSION => Message::Version(payload.try_into().unwrap()),
        KIND_REGISTER => {
            let bad = || Error::BadLength {
                kind: name,
                len: frame.len(),
            };
            let mut at = 4;
            let mut field = |what| -> Result<&'a str, Error> {
                let len = *payload.get(at).ok_or_else(bad)? as usize;
                let bytes = payload.get(at + 1..at + 1 + len).ok_or_else(bad)?;
                at += 1 + len;
                text(bytes, what)
            };
            let host = field("registered host")?;
            let neighbour = field("registered neighbour")?;
            if at != payload.len() || payload[0] > 1 || payload[1] > MAX_SOURCES {
                return Err(bad());
            }
            Message::Register {
                wired: payload[0] == 1,
                sources: payload[1],
                port: u16::from_be_bytes([payload[2], payload[3]]),
                host,
                neighbour,
            }
        }
        KIND_PROGRESS => Message::Progress {
            rate: u64::from_be_bytes(payload.try_into().unwrap()),
        },
        KIND_NEIGHBOUR => {
            let bad = || Error::BadLength {
                kind: name,
                len: frame.len(),
            };
            let n = payload[0];
            if n > MAX_SOURCES {
                return Err(bad());
            }
            let mut at = 1;
            let mut addrs = Vec::with_capacity(usize::from(n));
            for _ in 0..n {
                let len = *payload.get(at).ok_or_else(bad)? as usize;
                let bytes = payload.get(at + 1..at + 1 + len).ok_or_else(bad)?;
                if len == 0 {
                    return Err(bad());
                }
                at += 1 + len;
                addrs.push(text(bytes, "neighbour address")?);
            }
            if at != payload.len() {
                return Err(bad());
            }
            Message::Neighbour(addrs)
        }
        KIND_UNREACHABLE => Message::Unreachable(text(payload, "unreachable address")?),
        KIND_STATUS_REQUEST => Message::StatusRequest,
        KIND_STATUS => Message::Status(decode_status(payload).ok_or(Error::BadLength {
            kind: name,
            len: frame.len(),
        })?),
        other => return Err(Error::UnknownKind(other)),
    })
}

fn decode_status(payload: &[u8]) -> Option<Status> {
    let u32_at = |at: usize| {
        Some(u32::from_be_bytes(
            payload.get(at..at + 4)?.try_into().ok()?,
        ))
    };
    let u64_at = |at: usize| {
        Some(u64::from_be_bytes(
            payload.get(at..at + 8)?.try_into().ok()?,
        ))
    };
    let total = u32_at(0)?;
    let first = u32_at(4)?;
    let sent = u64_at(8)?;
    let mut at = STATUS_FIXED;
    let mut peers = Vec::new();
    let text = |at: &mut usize| -> Option<String> {
        let len = *payload.get(*at)? as usize;
        let bytes = payload.get(*at + 1..*at + 1 + len)?;
        *at += 1 + len;
        std::str::from_utf8(bytes).ok().map(str::to_string)
    };
    while at < payload.len() {
        let state = PeerState::from_u8(*payload.get(at)?)?;
        let wired = match *payload.get(at + 1)? {
            0 => false,
            1 => true,
            _ => return None,
        };
        let held = u32_at(at + 2)?;
        let rate = u64_at(at + 6)?;
        at += 14;
        let addr = text(&mut at)?;
        let neighbour = text(&mut at)?;
        peers.push(PeerStatus {
            state,
            wired,
            held,
            rate,
            addr,
            neighbour,
        });
    }
    if u64::from(first) + peers.len() as u64 > u64::from(total) {
        return None;
    }
    Some(Status {
        total,
        first,
        sent,
        peers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2.5 chunks of 1 KiB.
    fn layout() -> Layout {
        Layout::new(2560, 1024).unwrap()
    }

    fn id(raw: u32) -> ChunkId {
        layout().chunk_id(raw).unwrap()
    }

    /// 2560 bytes in content-defined chunks of 1500, 1 and 1059 bytes.
    fn content_layout() -> Layout {
        Layout::content(2560, 1024, &[1500, 1, 1059]).unwrap()
    }

    /// The longest name a MANIFEST carries.
    /// An address of the most bytes NEIGHBOUR allows.
    static LONG_ADDR: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("{}:65535", "h".repeat(MAX_ADDR_LEN - 6)));
    static NAME: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| "n".repeat(MAX_NAME_LEN));

    /// The messages whose form depends on the chunking, for
    /// [`content_layout`].
    fn content_messages() -> Vec<Message<'static>> {
        static DATA: [u8; 1500] = [0xCD; 1500];
        let l = content_layout();
        let id = |raw| l.chunk_id(raw).unwrap();
        let mut set = ChunkSet::new(3);
        set.insert(id(1));
        vec![
            Message::Hashes {
                first: 0,
                hashes: vec![[4; 32], [5; 32], [6; 32]],
                lens: Some(vec![1500, 1, 1059]),
            },
            Message::Hashes {
                first: 2,
                hashes: vec![[7; 32]],
                lens: Some(vec![u32::MAX]),
            },
            Message::ChunkList(set),
            Message::Have(vec![id(1), id(2)]),
            Message::Request(id(0)),
            Message::Chunk {
                id: id(0),
                data: &DATA,
            },
            Message::Chunk {
                id: id(1),
                data: &DATA[..1],
            },
            Message::Chunk {
                id: id(2),
                data: &DATA[..1059],
            },
            Message::KeepAlive,
        ]
    }

    /// Every message, each with the layout it is decoded with.
    fn cases() -> Vec<(Layout, Message<'static>)> {
        let fixed = every_message().into_iter().map(|m| (layout(), m));
        let content = content_messages()
            .into_iter()
            .map(|m| (content_layout(), m));
        fixed.chain(content).collect()
    }

    fn every_message() -> Vec<Message<'static>> {
        static DATA: [u8; 1024] = [0xAB; 1024];
        let mut set = ChunkSet::new(3);
        set.insert(id(2));
        vec![
            Message::Hello {
                version: VERSION,
                file_id: [7; 32],
                name: "peer 9001",
            },
            Message::Hello {
                version: VERSION,
                file_id: [0; 32],
                name: "",
            },
            Message::Manifest {
                file_len: 2560,
                chunk_size: 1024,
                chunking: Chunking::Fixed,
                chunks: 3,
                file_hash: [1; 32],
                name: "report ü.pdf",
            },
            Message::Manifest {
                file_len: u64::MAX,
                chunk_size: 4 << 20,
                chunking: Chunking::Content,
                chunks: u32::MAX,
                file_hash: [9; 32],
                name: &NAME,
            },
            Message::Hashes {
                first: 1,
                hashes: vec![[2; 32], [3; 32]],
                lens: None,
            },
            Message::ChunkList(set),
            Message::ChunkList(ChunkSet::new(3)),
            Message::Have(vec![id(0), id(2)]),
            Message::Request(id(2)),
            Message::Chunk {
                id: id(0),
                data: &DATA,
            },
            Message::Chunk {
                id: id(2),
                data: &DATA[..512],
            },
            Message::SeedDone,
            Message::Complete,
            Message::KeepAlive,
            Message::Refuse("too many connections"),
            Message::Seeding(true),
            Message::Seeding(false),
            Message::Challenge([0x5A; NONCE_LEN]),
            Message::Proof(std::array::from_fn(|i| i as u8)),
            Message::Register {
                wired: true,
                sources: 1,
                port: 9001,
                host: "",
                neighbour: "",
            },
            Message::Register {
                wired: false,
                sources: 4,
                port: 65535,
                host: "peer-7.example.org",
                neighbour: "[::1]:9002",
            },
            Message::Progress { rate: u64::MAX },
            Message::Neighbour(vec!["127.0.0.1:9002"]),
            Message::Neighbour(vec!["127.0.0.1:9002", "peer-3.example.org:9003"]),
            Message::Neighbour(vec![LONG_ADDR.as_str(); 4]),
            Message::Neighbour(vec![]),
            Message::Unreachable("127.0.0.1:9002"),
            Message::StatusRequest,
            Message::Version([0xA5; 32]),
            Message::Status(Status {
                total: 0,
                first: 0,
                sent: 0,
                peers: vec![],
            }),
            Message::Status(Status {
                total: 3,
                first: 1,
                sent: 12345,
                peers: vec![
                    PeerStatus {
                        state: PeerState::Downloading,
                        wired: true,
                        held: 2,
                        rate: 1 << 20,
                        addr: "127.0.0.1:9001".into(),
                        neighbour: "127.0.0.1:9002".into(),
                    },
                    PeerStatus {
                        state: PeerState::Left,
                        wired: false,
                        held: 3,
                        rate: 0,
                        addr: "h:1".into(),
                        neighbour: String::new(),
                    },
                ],
            }),
        ]
    }

    #[test]
    fn status_splits_into_frames_that_fit_the_limit() {
        let peers: Vec<PeerStatus> = (0..1000)
            .map(|i| PeerStatus {
                state: PeerState::Downloading,
                wired: true,
                held: i,
                rate: 7,
                addr: format!("127.0.0.1:{}", 10_000 + i),
                neighbour: format!("127.0.0.1:{}", 10_001 + i),
            })
            .collect();
        let l = layout();
        let mut buf = Vec::new();
        encode_status(99, &peers, l.frame_limit(), &mut buf);
        let mut dec = Decoder::new();
        dec.set_layout(l.clone());
        let mut got = Vec::new();
        let mut cursor = &buf[..];
        while !cursor.is_empty() {
            let Message::Status(s) = dec.read(&mut cursor).unwrap() else {
                panic!("not a status frame")
            };
            assert_eq!((s.total, s.first as usize, s.sent), (1000, got.len(), 99));
            got.extend(s.peers);
        }
        assert_eq!(got, peers);
        let mut one = Vec::new();
        encode_status(0, &[], l.frame_limit(), &mut one);
        assert_eq!(one.len(), 5 + 16);
    }

    /// The specification is written so that a compatible peer can be
    /// built from it alone: every place it names the version must name
    /// the one spoken.
    #[test]
    fn the_specification_names_the_protocol_version_spoken() {
        let spec: Vec<&str> = include_str!("wire.rs")
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .collect();
        let spec = spec.join("\n");
        let v = VERSION;
        let stale: Vec<String> = [
            format!("specification of protocol version {v}"),
            format!("`version` is {v}"),
            format!("`\"SWRM\"` and version {v}"),
            format!("this is version {v}"),
        ]
        .into_iter()
        .filter(|want| !spec.contains(want.as_str()))
        .collect();
        assert!(
            stale.is_empty(),
            "the protocol is version {v}, but src/wire.rs's specification lacks {stale:#?}"
        );
    }

    #[test]
    fn neighbour_lists_out_of_bounds_are_rejected() {
        let bad = |payload: &[u8]| {
            let mut frame = vec![KIND_NEIGHBOUR];
            frame.extend_from_slice(payload);
            matches!(
                decode(&frame, Some(&layout())),
                Err(Error::BadLength { .. })
            )
        };
        // Five addresses, one more than --sources allows.
        let mut five = vec![5u8];
        for _ in 0..5 {
            five.extend_from_slice(&[3, b'a', b':', b'1']);
        }
        assert!(bad(&five));
        // An empty address; a length past the payload; a byte left over.
        assert!(bad(&[1, 0]));
        assert!(bad(&[1, 4, b'a', b':', b'1']));
        assert!(bad(&[1, 3, b'a', b':', b'1', 0]));
        assert!(bad(&[]));
        assert!(!bad(&[0]));
    }

    #[test]
    fn register_with_a_bad_field_length_is_rejected() {
        let mut buf = Vec::new();
        encode(
            &Message::Register {
                wired: true,
                sources: 2,
                port: 1,
                host: "ab",
                neighbour: "",
            },
            &mut buf,
        );
        // Claim a host of 3 bytes where 2 follow.
        buf[5 + 4] = 3;
        assert!(matches!(
            decode(&buf[4..], Some(&layout())),
            Err(Error::BadLength { .. })
        ));
    }

    /// Hands out bytes in pieces of at most `step`, then times out once
    /// before each piece, to exercise resumption after a read timeout.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
        timeout_next: bool,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if std::mem::take(&mut self.timeout_next) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.timeout_next = true;
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn every_message_round_trips_at_every_split() {
        for (layout, msg) in cases() {
            let mut buf = Vec::new();
            encode(&msg, &mut buf);
            let frame = &buf[4..];
            assert_eq!(decode(frame, Some(&layout)).unwrap(), msg);
            for step in [1, 3, 7, buf.len()] {
                let mut r = Trickle {
                    data: &buf,
                    step,
                    timeout_next: true,
                };
                let mut dec = Decoder::new();
                dec.set_layout(layout.clone());
                while !dec.fill(&mut r).unwrap() {}
                assert_eq!(dec.message().unwrap(), msg);
                assert!(matches!(dec.read(&mut r), Err(Error::Closed)));
            }
        }
    }

    #[test]
    fn a_stream_of_messages_decodes_in_order() {
        for (layout, messages) in [
            (layout(), every_message()),
            (content_layout(), content_messages()),
        ] {
            let mut buf = Vec::new();
            for msg in &messages {
                encode(msg, &mut buf);
            }
            let mut r = &buf[..];
            let mut dec = Decoder::new();
            dec.set_layout(layout);
            for msg in messages {
                assert_eq!(dec.read(&mut r).unwrap(), msg);
            }
            assert!(matches!(dec.read(&mut r), Err(Error::Closed)));
        }
    }

    #[test]
    fn frames_taken_whole_decode_and_the_decoder_goes_on_with_the_spare() {
        let layout = layout();
        let (big, last) = ([7u8; 1024], [3u8; 512]);
        let messages = [
            Message::Chunk {
                id: id(1),
                data: &big,
            },
            Message::KeepAlive,
            Message::Chunk {
                id: id(2),
                data: &last,
            },
            Message::Chunk {
                id: id(0),
                data: &big,
            },
        ];
        let mut buf = Vec::new();
        for msg in &messages {
            encode(msg, &mut buf);
        }
        // A trickle, so frames arrive over many reads and timeouts.
        let mut r = Trickle {
            data: &buf,
            step: 7,
            timeout_next: true,
        };
        let mut dec = Decoder::new();
        dec.set_layout(layout.clone());
        assert!(dec.take_frame(Vec::new()).is_none(), "nothing buffered");
        // Spares are handed back frames, longer than the next frame or
        // shorter, with old bytes in them.
        let mut spare = vec![0xEE; 2000];
        for msg in &messages {
            while !dec.fill(&mut r).unwrap() {}
            if matches!(msg, Message::KeepAlive) {
                assert_eq!(dec.message().unwrap(), *msg);
                continue;
            }
            let frame = dec.take_frame(spare).unwrap();
            assert!(dec.take_frame(Vec::new()).is_none(), "taken once");
            assert_eq!(frame.message(&layout).unwrap(), *msg);
            spare = frame.into_buf();
        }
        assert!(matches!(dec.read(&mut r), Err(Error::Closed)));
    }

    #[test]
    fn chunk_header_matches_encoder() {
        let data = [9u8; 512];
        let mut buf = Vec::new();
        encode(
            &Message::Chunk {
                id: id(2),
                data: &data,
            },
            &mut buf,
        );
        assert_eq!(buf[..9], chunk_header(id(2), 512));
    }

    fn decode_bytes(bytes: &[u8], layout: Option<Layout>) -> Error {
        let mut dec = Decoder::new();
        if let Some(l) = layout {
            dec.set_layout(l.clone());
        }
        let mut r = bytes;
        match dec.read(&mut r) {
            Err(e) => e,
            Ok(m) => panic!("decoded {m:?}"),
        }
    }

    #[test]
    fn truncated_frames_are_rejected() {
        for (layout, msg) in cases() {
            let mut buf = Vec::new();
            encode(&msg, &mut buf);
            for cut in 1..buf.len() {
                let err = decode_bytes(&buf[..cut], Some(layout.clone()));
                assert!(
                    matches!(err, Error::Truncated { got, .. } if got == cut),
                    "{} cut at {cut}: {err}",
                    msg.name()
                );
            }
        }
    }

    #[test]
    fn oversized_and_malformed_frames_are_rejected_before_the_payload() {
        let l = Some(layout());
        // A 4 GiB length is refused from the header alone.
        let err = decode_bytes(&[0xFF, 0xFF, 0xFF, 0xFF, KIND_CHUNK], l.clone());
        assert!(
            matches!(
                err,
                Error::TooLong {
                    len: 0xFFFF_FFFF,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "frame of 4294967295 bytes is over the {}-byte limit",
                64 + 1024
            )
        );
        // Before the manifest the limit is the handshake limit.
        let err = decode_bytes(&[0, 0, 8, 0, KIND_HELLO], None);
        assert!(matches!(
            err,
            Error::TooLong {
                len: 2048,
                limit: 1024
            }
        ));
        // A chunk one byte longer than a chunk can be.
        let err = decode_bytes(&[0, 0, 4, 6, KIND_CHUNK], l.clone());
        assert!(matches!(
            err,
            Error::BadLength {
                kind: "chunk",
                len: 1030
            }
        ));
        assert!(matches!(
            decode_bytes(&[0, 0, 0, 0, 1], l.clone()),
            Error::EmptyFrame
        ));
        let err = decode_bytes(&[0, 0, 0, 1, 99], l.clone());
        assert_eq!(err.to_string(), "unknown message type 99");
        let err = decode_bytes(&[0, 0, 0, 5, KIND_REQUEST], None);
        assert_eq!(err.to_string(), "request message before the manifest");
        let err = decode_bytes(&[0, 0, 0, 2, KIND_KEEPALIVE, 0], l.clone());
        assert!(matches!(
            err,
            Error::BadLength {
                kind: "keepalive",
                ..
            }
        ));
    }

    #[test]
    fn a_buffer_grows_with_the_bytes_that_arrive_not_the_length_claimed() {
        // 16 MiB chunks: a CHUNK header may claim 16 MiB.
        let big = Layout::new(64 << 20, 16 << 20).unwrap();
        let id = big.chunk_id(0).unwrap();
        let mut bytes = chunk_header(id, 16 << 20).to_vec();
        bytes.extend_from_slice(&[7; 100]);
        let mut dec = Decoder::new();
        dec.set_layout(big.clone());
        let mut r = &bytes[..];
        assert!(matches!(dec.fill(&mut r), Err(Error::Truncated { .. })));
        assert!(dec.allocated() <= 128 * 1024, "{}", dec.allocated());
        // A kind the state does not accept is refused from its header.
        let mut dec = Decoder::new();
        dec.set_layout(big.clone());
        dec.set_accepts(Kinds::of(&[Kind::Request, Kind::KeepAlive]));
        let mut r = &bytes[..];
        let err = dec.fill(&mut r).unwrap_err();
        assert_eq!(err.to_string(), "unexpected chunk message");
        assert!(dec.allocated() <= 64, "{}", dec.allocated());
        // And a whole frame still arrives whole.
        let l = layout();
        let data = [5u8; 1024];
        let mut buf = Vec::new();
        encode(
            &Message::Chunk {
                id: id0(),
                data: &data,
            },
            &mut buf,
        );
        let mut dec = Decoder::new();
        dec.set_layout(l.clone());
        dec.set_accepts(Kinds::of(&[Kind::Chunk]));
        let mut r = &buf[..];
        assert_eq!(
            dec.read(&mut r).unwrap(),
            Message::Chunk {
                id: id0(),
                data: &data
            }
        );
    }

    fn id0() -> ChunkId {
        id(0)
    }

    #[test]
    fn have_lists_are_split_to_fit_the_frame_limit() {
        // 8192 chunks of 1 KiB: the limit is 64 + 1024 bytes.
        let l = Layout::new(8192 * 1024, 1024).unwrap();
        let ids: Vec<ChunkId> = l.ids().collect();
        let mut buf = Vec::new();
        encode_have(&ids, &l, &mut buf);
        let mut dec = Decoder::new();
        dec.set_layout(l.clone());
        let mut r = &buf[..];
        let mut got = Vec::new();
        while !r.is_empty() {
            match dec.read(&mut r).unwrap() {
                Message::Have(more) => got.extend(more),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, ids);
        assert_eq!(max_have_ids(&l), (64 + 1024 - 1) / 4);
    }

    #[test]
    fn random_and_mutated_frames_never_panic_or_overallocate() {
        let mut x = 0x853C_49E6_748F_EA9Bu64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let valid: Vec<(Layout, Vec<u8>)> = cases()
            .into_iter()
            .map(|(l, m)| {
                let mut buf = Vec::new();
                encode(&m, &mut buf);
                (l, buf)
            })
            .collect();
        let mut decoded = 0;
        for round in 0..100_000 {
            let (l, frame) = &valid[next() as usize % valid.len()];
            let mut bytes = match round % 4 {
                // Pure noise.
                0 => (0..next() % 64).map(|_| next() as u8).collect(),
                // A valid frame with a few bytes flipped.
                1 | 2 => {
                    let mut f = frame.clone();
                    for _ in 0..1 + next() % 3 {
                        let at = next() as usize % f.len();
                        f[at] ^= 1 << (next() % 8);
                    }
                    f
                }
                // A valid frame with a random length field.
                _ => {
                    let mut f = frame.clone();
                    f[..4].copy_from_slice(&(next() as u32).to_be_bytes());
                    f
                }
            };
            if next() % 4 == 0 {
                let cut = next() as usize % (bytes.len() + 1);
                bytes.truncate(cut);
            }
            let mut dec = Decoder::new();
            match round % 3 {
                0 => dec.set_layout(l.clone()),
                1 => dec.set_shape(*l.shape()),
                _ => {}
            }
            let mut r = &bytes[..];
            while dec.read(&mut r).is_ok() {
                decoded += 1;
            }
            assert!(
                dec.allocated() <= 4 + dec.limit(),
                "round {round}: {}",
                dec.allocated()
            );
        }
        // Some mutations leave a valid message; most must not.
        assert!(decoded > 1000 && decoded < 90_000, "decoded {decoded}");
    }

    #[test]
    fn challenge_and_proof_are_a_33_byte_frame_of_32_bytes() {
        let nonce: [u8; NONCE_LEN] = std::array::from_fn(|i| 200 - i as u8);
        for (msg, kind) in [
            (Message::Challenge(nonce), KIND_CHALLENGE),
            (Message::Proof(nonce), KIND_PROOF),
        ] {
            let mut buf = Vec::new();
            encode(&msg, &mut buf);
            assert_eq!(buf[..5], [0, 0, 0, 33, kind], "{}", msg.name());
            assert_eq!(buf[5..], nonce);
            // Known before the manifest, as the handshake needs.
            let mut r = &buf[..];
            assert_eq!(Decoder::new().read(&mut r).unwrap(), msg);
            // One byte short or long is refused from the header alone.
            for len in [1u8, 2, 32, 34, 65] {
                let err = decode_bytes(&[0, 0, 0, len, kind], None);
                assert!(
                    matches!(err, Error::BadLength { len: l, .. } if l == usize::from(len)),
                    "{} with length {len}: {err}",
                    msg.name()
                );
            }
            assert!(matches!(
                decode(&buf[4..buf.len() - 1], None),
                Err(Error::BadLength { len: 32, .. })
            ));
        }
        assert_eq!(
            decode_bytes(&[0, 0, 0, 34, KIND_PROOF], None).to_string(),
            "proof message with a 34-byte length is malformed"
        );
        // Past the handshake limit it is too long before it is malformed.
        assert!(matches!(
            decode_bytes(&[0, 0, 4, 1, KIND_CHALLENGE], None),
            Error::TooLong { len: 1025, .. }
        ));
        // A state that does not take them refuses them from the header.
        let mut dec = Decoder::new();
        dec.set_accepts(Kinds::of(&[Kind::Hello]));
        let mut buf = Vec::new();
        encode(&Message::Challenge(nonce), &mut buf);
        let mut r = &buf[..];
        assert_eq!(
            dec.read(&mut r).unwrap_err().to_string(),
            "unexpected challenge message"
        );
        assert!(Kinds::ALL.contains(KIND_CHALLENGE) && Kinds::ALL.contains(KIND_PROOF));
    }

    #[test]
    fn bad_contents_are_rejected() {
        let l = Some(layout());
        let err = decode_bytes(&[0, 0, 0, 5, KIND_REQUEST, 0, 0, 0, 3], l.clone());
        assert_eq!(
            err.to_string(),
            "request message names chunk 3 but the file has 3 chunks"
        );
        // Chunk 2 is 512 bytes long; 600 is within the limit but wrong.
        let mut frame = vec![0, 0, 2, 93, KIND_CHUNK, 0, 0, 0, 2];
        frame.resize(4 + 605, 0);
        let err = decode_bytes(&frame, l.clone());
        assert_eq!(err.to_string(), "chunk 2 carries 600 bytes instead of 512");
        let mut hello = Vec::new();
        let msg = Message::Hello {
            version: VERSION,
            file_id: [0; 32],
            name: "x",
        };
        encode(&msg, &mut hello);
        let mut wrong = hello.clone();
        wrong[5] = b'X';
        assert!(matches!(decode_bytes(&wrong, None), Error::BadMagic));
        let mut wrong = hello.clone();
        wrong[9..11].copy_from_slice(&(VERSION - 1).to_be_bytes());
        assert_eq!(
            decode_bytes(&wrong, None).to_string(),
            format!(
                "protocol version {} is not supported (this is version {VERSION})",
                VERSION - 1
            )
        );
        let mut wrong = hello;
        *wrong.last_mut().unwrap() = 0xFF;
        assert!(matches!(decode_bytes(&wrong, None), Error::BadText(_)));
        // Spare bits set in a chunk list (3 chunks: only the top 3 bits).
        let err = decode_bytes(&[0, 0, 0, 2, KIND_CHUNK_LIST, 0x10], l.clone());
        assert!(matches!(err, Error::BadChunkList));
        // Digests that run past the last chunk.
        let mut frame = vec![0, 0, 0, 69, KIND_HASHES, 0, 0, 0, 2];
        frame.resize(4 + 69, 0);
        assert!(matches!(
            decode_bytes(&frame, l.clone()),
            Error::ChunkOutOfRange {
                kind: "hashes",
                id: 3,
                count: 3
            }
        ));
    }

    #[test]
    fn content_chunking_frames_follow_the_shape_and_the_table() {
        let l = Some(content_layout());
        // MANIFEST names the scheme with 0 or 1 and nothing else.
        let mut buf = Vec::new();
        encode(&every_message()[2], &mut buf);
        assert_eq!(buf[..5], [0, 0, 0, 1 + 49 + 13, KIND_MANIFEST]);
        assert_eq!(buf[5 + 12], 0, "fixed");
        buf[5 + 12] = 2;
        assert!(matches!(
            decode_bytes(&buf, None),
            Error::BadLength {
                kind: "manifest",
                ..
            }
        ));
        // Between MANIFEST and the last HASHES the shape alone bounds
        // frames: HASHES decode, chunk messages are refused from the header.
        let mut dec = Decoder::new();
        dec.set_shape(*content_layout().shape());
        assert_eq!(dec.limit(), 64 + 4096);
        let msg = content_messages()[0].clone();
        let mut buf = Vec::new();
        encode(&msg, &mut buf);
        assert_eq!(buf.len(), 4 + 1 + 4 + 3 * 36);
        let mut r = &buf[..];
        assert_eq!(dec.read(&mut r).unwrap(), msg);
        let mut r = &[0, 0, 0, 5, KIND_REQUEST, 0, 0, 0, 0][..];
        let err = dec.read(&mut r).unwrap_err();
        assert_eq!(err.to_string(), "request message before the manifest");
        // An entry is 36 bytes: 32-byte ones are refused, from the header
        // when the length is below one entry.
        let err = decode_bytes(&[0, 0, 0, 37, KIND_HASHES], l.clone());
        assert!(matches!(err, Error::BadLength { len: 37, .. }), "{err}");
        let mut frame = vec![0, 0, 0, 73, KIND_HASHES];
        frame.resize(4 + 73, 0);
        let err = decode_bytes(&frame, l.clone());
        assert!(matches!(err, Error::BadLength { len: 73, .. }), "{err}");
        let err = decode_bytes(&[0, 0, 0, 5 + 36 * 3 + 36, KIND_HASHES], l.clone());
        assert!(matches!(err, Error::BadLength { .. }), "{err}");
        // Entries that run past the last chunk.
        let mut frame = vec![0, 0, 0, 77, KIND_HASHES, 0, 0, 0, 2];
        frame.resize(4 + 77, 0);
        assert!(matches!(
            decode_bytes(&frame, l.clone()),
            Error::ChunkOutOfRange {
                kind: "hashes",
                id: 3,
                count: 3
            }
        ));
        // A chunk may be as long as the longest chunk, 4 times the
        // average, and must be exactly as long as the table says.
        let err = decode_bytes(&[0, 0, 16, 6, KIND_CHUNK], l.clone());
        assert!(matches!(err, Error::BadLength { len: 4102, .. }), "{err}");
        let err = decode_bytes(&[0, 0, 0, 7, KIND_CHUNK, 0, 0, 0, 1, 9, 9], l.clone());
        assert_eq!(err.to_string(), "chunk 1 carries 2 bytes instead of 1");
        // The same frame under fixed chunking is a digest list of another
        // length.
        let mut frame = vec![0, 0, 0, 69, KIND_HASHES, 0, 0, 0, 1];
        frame.resize(4 + 69, 0);
        assert!(matches!(
            decode_bytes(&frame, l),
            Error::BadLength { len: 69, .. }
        ));
    }

    #[test]
    fn hashes_lists_are_split_to_fit_the_frame_limit() {
        let lens: Vec<u32> = (0..5000).map(|i| 1 + i % 4096).collect();
        let total = lens.iter().map(|&l| u64::from(l)).sum();
        for (l, per) in [
            (Layout::new(8192 * 1024, 1024).unwrap(), 1024 / 32),
            (Layout::content(total, 1024, &lens).unwrap(), 4096 / 36),
        ] {
            assert_eq!(max_hashes(l.shape()), per);
            let content = l.chunking() == Chunking::Content;
            let mut buf = Vec::new();
            for first in (0..l.count()).step_by(per) {
                let n = per.min((l.count() - first) as usize);
                let hashes = vec![[1; 32]; n];
                let lens = content.then(|| lens[first as usize..][..n].to_vec());
                let msg = Message::Hashes {
                    first,
                    hashes,
                    lens,
                };
                let at = buf.len();
                encode(&msg, &mut buf);
                assert!(buf.len() - at - 4 <= l.frame_limit());
            }
            let mut dec = Decoder::new();
            dec.set_shape(*l.shape());
            let mut r = &buf[..];
            let (mut got, mut got_lens) = (0, Vec::new());
            while !r.is_empty() {
                let Message::Hashes {
                    first,
                    hashes,
                    lens,
                } = dec.read(&mut r).unwrap()
                else {
                    panic!("not a hashes frame")
                };
                assert_eq!(first as usize, got);
                got += hashes.len();
                got_lens.extend(lens.into_iter().flatten());
            }
            assert_eq!(got, l.count() as usize);
            assert_eq!(got_lens, if content { lens.clone() } else { vec![] });
        }
    }
}
