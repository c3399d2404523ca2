//! Admission by a swarm secret: who may take part in a swarm.
//!
//! This module owns the secret ([`Secret`], loaded from a file and never
//! shown: not in a log, an error or `Debug`), the nonces (fresh from the
//! operating system for every connection), and the two halves of the
//! mutual challenge-response that the wire module's "Admission" section
//! specifies: [`connect`] for the side that dials, [`admit`] for the side
//! that accepts. [`crate::conn`] runs them before the HELLOs, so the
//! owner's sessions and the peer's owner link, upload side and download
//! side all get admission without knowing of it.
//!
//! A proof is HMAC-SHA-256 keyed with the secret over a label and both
//! nonces, checked in constant time. The side that dials checks the other
//! side's proof before it gives its own, so an impostor that does not hold
//! the secret learns nothing it could replay, and a peer takes no file
//! from an owner that cannot prove it. Nothing here knows what a chunk is.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::manifest::Digest;
use crate::net;
use crate::wire::{self, Decoder, Kind, Kinds, Message, NONCE_LEN};

/// The largest secret file accepted, in bytes. A secret needs 32 random
/// bytes at most; a larger file is more likely the wrong file.
pub const MAX_SECRET_LEN: usize = 4096;

/// What an accepting side with a secret answers a connection that opens
/// with HELLO.
pub const NEEDS_SECRET: &str = "this swarm needs its secret: start with --secret-file";
/// What an accepting side without a secret answers a CHALLENGE.
pub const NO_SECRET: &str = "this swarm has no secret; start without --secret-file";
/// What an accepting side answers a PROOF that is wrong.
pub const WRONG_SECRET: &str = "wrong swarm secret";

/// The label of the accepting side's proof.
const ACCEPT_LABEL: &[u8] = b"swarm accept";
/// The label of the connecting side's proof.
const CONNECT_LABEL: &[u8] = b"swarm connect";
/// The label of the accepting side's proof over the file ID of its HELLO.
const HELLO_LABEL: &[u8] = b"swarm hello";

/// Both nonces of an admitted connection: what later proofs on it are
/// bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    na: Nonce,
    nb: Nonce,
}

/// A CHALLENGE's random bytes, or a PROOF's MAC.
pub type Nonce = [u8; NONCE_LEN];

/// The swarm secret: the bytes of the secret file without trailing
/// whitespace. `Debug` shows `Secret(..)`, and nothing else ever shows it.
pub struct Secret {
    key: Vec<u8>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// Reads the secret from `path`. Trailing whitespace (a newline left by
    /// an editor or `echo`) is not part of it. An unreadable, empty or
    /// oversized file is an error that names the path, never the content.
    /// A file that its group or others may read or write logs a warning:
    /// the secret is only as private as its file.
    pub fn load(path: &Path) -> Result<Secret> {
        let cannot = |e| Error::io_path("read secret file", path, e);
        let file = File::open(path).map_err(cannot)?;
        let meta = file.metadata().map_err(cannot)?;
        let mut key = Vec::new();
        // One byte past the limit is enough to know the file is too long;
        // a FIFO (`--secret-file <(...)`) reads the same way.
        file.take(MAX_SECRET_LEN as u64 + 1)
            .read_to_end(&mut key)
            .map_err(cannot)?;
        let bad = |why| Error::Secret {
            path: path.to_path_buf(),
            why,
        };
        if key.len() > MAX_SECRET_LEN {
            return Err(bad("is over 4096 bytes"));
        }
        while key.last().is_some_and(|b| b.is_ascii_whitespace()) {
            key.pop();
        }
        if key.is_empty() {
            return Err(bad("is empty"));
        }
        if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
            log::warn!(
                "secret file {} is readable by others; `chmod 600` it",
                path.display()
            );
        }
        Ok(Secret { key })
    }

    /// The HMAC of `label || na || nb`, keyed with the secret.
    fn mac(&self, label: &[u8], na: &Nonce, nb: &Nonce) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .expect("HMAC takes a key of any length");
        mac.update(label);
        mac.update(na);
        mac.update(nb);
        mac
    }

    /// This side's proof under `label` for the nonces `na` and `nb`.
    fn prove(&self, label: &[u8], na: &Nonce, nb: &Nonce) -> Nonce {
        let mut out = [0u8; NONCE_LEN];
        out.copy_from_slice(&self.mac(label, na, nb).finalize().into_bytes());
        out
    }

    /// Whether `proof` is the proof under `label`, compared in constant
    /// time so that a wrong guess learns nothing from how long it took.
    fn check(&self, label: &[u8], na: &Nonce, nb: &Nonce, proof: &Nonce) -> bool {
        self.mac(label, na, nb).verify_slice(proof).is_ok()
    }

    /// The accepting side's proof that the HELLO it sent on `session`
    /// carries `file_id`: without it, a relay that passed our challenge
    /// to a real member could answer with a file ID of its own.
    pub fn prove_hello(&self, session: &Session, file_id: &Digest) -> Nonce {
        let mut mac = self.mac(HELLO_LABEL, &session.na, &session.nb);
        mac.update(file_id);
        let mut out = [0u8; NONCE_LEN];
        out.copy_from_slice(&mac.finalize().into_bytes());
        out
    }

    /// Whether `proof` is [`Secret::prove_hello`] for `file_id`.
    pub fn check_hello(&self, session: &Session, file_id: &Digest, proof: &Nonce) -> bool {
        let mut mac = self.mac(HELLO_LABEL, &session.na, &session.nb);
        mac.update(file_id);
        mac.verify_slice(proof).is_ok()
    }
}

/// How admission failed, in the words that follow the other side's name
/// in an [`Error::Admission`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Its proof was wrong, or it gave none where one was due: it holds
    /// another secret, or it is not a member at all.
    Unproven,
    /// It refused our CHALLENGE because it runs without a secret.
    NoSecret,
    /// It refused us for admission, with this reason.
    Refused(String),
    /// It opened with HELLO where this side wants a CHALLENGE.
    NoProof,
    /// It opened with a CHALLENGE, but this side has no secret.
    Unwanted,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Unproven => f.write_str(
                " could not prove the swarm secret (a different secret, or an impostor)",
            ),
            Failure::NoSecret => {
                f.write_str(" could not prove the swarm secret: it runs without one")
            }
            Failure::Refused(why) => write!(f, ": refused: {why}"),
            Failure::NoProof => f.write_str(" offered no proof of the swarm secret"),
            Failure::Unwanted => f.write_str(" offered a swarm secret, but this side has none"),
        }
    }
}

fn failed(who: &str, failure: Failure) -> Error {
    Error::Admission {
        peer: who.to_string(),
        failure,
    }
}

/// The error for a REFUSE from `who` that says `why`. The reasons that
/// admission gives mean that trying again will not help, and become an
/// [`Error::Admission`]; any other is an ordinary refusal.
pub fn refused(who: &str, why: &str) -> Error {
    match why {
        NO_SECRET => failed(who, Failure::NoSecret),
        NEEDS_SECRET | WRONG_SECRET => failed(who, Failure::Refused(why.to_string())),
        _ => Error::wire(who, wire::Error::Refused(why.to_string())),
    }
}

/// 32 fresh random bytes for a CHALLENGE.
pub fn nonce() -> Result<Nonce> {
    let mut out = [0u8; NONCE_LEN];
    fill_random(&mut out).map_err(|e| Error::io("read random bytes for a challenge", e))?;
    Ok(out)
}

/// Fills `buf` from the kernel's random source: `getrandom(2)` where the
/// system has it, else `/dev/urandom`.
fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if getrandom(buf).is_ok() {
        return Ok(());
    }
    File::open("/dev/urandom")?.read_exact(buf)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn getrandom(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: the pointer and length describe `rest`, which is ours to
        // write for the whole call.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        } else {
            filled += n as usize;
        }
    }
    Ok(())
}

/// Reads the next frame into `dec` by `deadline` and decodes it.
fn next<'d>(
    dec: &'d mut Decoder,
    stream: &mut TcpStream,
    who: &str,
    deadline: Instant,
) -> Result<Message<'d>> {
    let fail = |err| Error::wire(who, err);
    let left = deadline.saturating_duration_since(Instant::now());
    net::fill_within(dec, stream, left).map_err(fail)?;
    dec.message().map_err(fail)
}

fn send(stream: &mut TcpStream, msg: &Message<'_>, who: &str) -> Result<()> {
    wire::send(stream, msg).map_err(|e| Error::wire(who, e.into()))
}

/// The connecting side's half (steps 1, 3 and 4 of the exchange): sends
/// our CHALLENGE, checks that `who` proves the secret, then proves it in
/// turn. The caller sends its HELLO next. If `who` does not prove the
/// secret, nothing more is sent to it: our proof would tell an impostor
/// nothing, but our HELLO would tell it what we hold.
pub fn connect(
    stream: &mut TcpStream,
    dec: &mut Decoder,
    secret: &Secret,
    who: &str,
    deadline: Instant,
) -> Result<Session> {
    let na = nonce()?;
    send(stream, &Message::Challenge(na), who)?;
    // HELLO is read to report it: an open side, or an impostor that
    // does not speak admission.
    dec.set_accepts(Kinds::of(&[Kind::Challenge, Kind::Hello, Kind::Refuse]));
    let nb = match next(dec, stream, who, deadline)? {
        Message::Challenge(nb) => nb,
        Message::Refuse(why) => return Err(refused(who, why)),
        _ => return Err(failed(who, Failure::Unproven)),
    };
    dec.set_accepts(Kinds::of(&[Kind::Proof]));
    let proven = match next(dec, stream, who, deadline)? {
        Message::Proof(proof) => secret.check(ACCEPT_LABEL, &na, &nb, &proof),
        _ => false,
    };
    if !proven {
        return Err(failed(who, Failure::Unproven));
    }
    dec.set_accepts(Kinds::ALL);
    let ours = secret.prove(CONNECT_LABEL, &na, &nb);
    send(stream, &Message::Proof(ours), who)?;
    Ok(Session { na, nb })
}

/// The accepting side's half (steps 2 and 5 of the exchange), from the
/// connection's first frame on. Returns once the other side has been
/// admitted, with the frame that should be its HELLO read into `dec`:
/// the first frame when this side has no secret and was sent no
/// CHALLENGE, the frame after the other side's PROOF when both hold the
/// secret. A side that does not match gets one REFUSE that says why, and
/// nothing else.
pub fn admit(
    stream: &mut TcpStream,
    dec: &mut Decoder,
    secret: Option<&Secret>,
    who: &str,
    deadline: Instant,
) -> Result<Option<Session>> {
    let Some(secret) = secret else {
        return match next(dec, stream, who, deadline) {
            Ok(Message::Challenge(_)) => Err(refuse(stream, NO_SECRET, who, Failure::Unwanted)),
            // Anything else is the caller's to read as a HELLO.
            Ok(_) => Ok(None),
            Err(e) => Err(e),
        };
    };
    dec.set_accepts(Kinds::of(&[Kind::Challenge, Kind::Hello]));
    let na = match next(dec, stream, who, deadline)? {
        Message::Challenge(na) => na,
        _ => return Err(refuse(stream, NEEDS_SECRET, who, Failure::NoProof)),
    };
    let nb = nonce()?;
    let ours = secret.prove(ACCEPT_LABEL, &na, &nb);
    let mut frames = Vec::with_capacity(2 * (5 + NONCE_LEN));
    wire::encode(&Message::Challenge(nb), &mut frames);
    wire::encode(&Message::Proof(ours), &mut frames);
    io::Write::write_all(stream, &frames).map_err(|e| Error::wire(who, e.into()))?;
    dec.set_accepts(Kinds::of(&[Kind::Proof]));
    let proven = match next(dec, stream, who, deadline) {
        Ok(Message::Proof(proof)) => secret.check(CONNECT_LABEL, &na, &nb, &proof),
        // It left rather than prove the secret: it found ours wrong.
        Err(Error::Wire {
            err: wire::Error::Closed,
            ..
        }) => return Err(failed(who, Failure::Unproven)),
        Ok(_) => false,
        Err(e) => return Err(e),
    };
    if !proven {
        return Err(refuse(stream, WRONG_SECRET, who, Failure::Unproven));
    }
    dec.set_accepts(Kinds::ALL);
    next(dec, stream, who, deadline)?;
    Ok(Some(Session { na, nb }))
}

/// Sends REFUSE with `reason`, closes without losing it, and returns the
/// error that says how admission failed.
fn refuse(stream: &mut TcpStream, reason: &str, who: &str, failure: Failure) -> Error {
    let _ = wire::send(stream, &Message::Refuse(reason));
    net::close_gracefully(stream, net::READ_TICK);
    failed(who, failure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdir::TestDir;
    use std::net::TcpListener;
    use std::thread;
    use std::time::Duration;

    fn secret(key: &[u8]) -> Secret {
        Secret { key: key.to_vec() }
    }

    /// Two ends of a loopback connection, configured as swarm's are.
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        net::configure(&a).unwrap();
        net::configure(&b).unwrap();
        (a, b)
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    fn hello(name: &str) -> Message<'_> {
        Message::Hello {
            version: wire::VERSION,
            file_id: [3; 32],
            name,
        }
    }

    /// Runs the accepting side on `b` with `key` on a thread; returns what
    /// `admit` returned and, when it admitted, the HELLO's name.
    fn accept_on(
        mut b: TcpStream,
        key: Option<&'static [u8]>,
    ) -> thread::JoinHandle<Result<String>> {
        thread::spawn(move || {
            let key = key.map(secret);
            let mut dec = Decoder::new();
            admit(&mut b, &mut dec, key.as_ref(), "a", soon())?;
            match dec.message().unwrap() {
                Message::Hello { name, .. } => Ok(name.to_string()),
                other => panic!("admitted, then {other:?}"),
            }
        })
    }

    /// Everything `s` receives until the other side closes.
    fn rest(s: &mut TcpStream) -> Vec<String> {
        let mut dec = Decoder::new();
        let mut got = Vec::new();
        loop {
            match net::fill_within(&mut dec, s, Duration::from_secs(5)) {
                Ok(()) => got.push(format!("{:?}", dec.message().unwrap())),
                Err(wire::Error::Closed) => return got,
                Err(e) => panic!("{e} after {got:?}"),
            }
        }
    }

    fn failure(result: Result<impl fmt::Debug>) -> Failure {
        match result {
            Err(Error::Admission { failure, .. }) => failure,
            other => panic!("expected an admission failure, got {other:?}"),
        }
    }

    #[test]
    fn the_same_secret_admits_both_sides() {
        let (mut a, b) = pair();
        let accepted = accept_on(b, Some(b"same"));
        let mut dec = Decoder::new();
        connect(&mut a, &mut dec, &secret(b"same"), "b", soon()).unwrap();
        wire::send(&mut a, &hello("peer 1")).unwrap();
        assert_eq!(accepted.join().unwrap().unwrap(), "peer 1");
        assert_eq!(dec.buffered(), 0, "nothing left over for the HELLO");
    }

    #[test]
    fn neither_side_with_a_secret_goes_straight_to_hello() {
        let (mut a, b) = pair();
        let accepted = accept_on(b, None);
        wire::send(&mut a, &hello("open")).unwrap();
        assert_eq!(accepted.join().unwrap().unwrap(), "open");
    }

    /// The connecting side checks first: with different secrets it sends
    /// no proof and no HELLO, and the accepting side sees it leave.
    #[test]
    fn a_different_secret_is_caught_by_the_connecting_side_before_it_proves() {
        let (mut a, b) = pair();
        let accepted = accept_on(b, Some(b"theirs"));
        let mut dec = Decoder::new();
        let err = connect(&mut a, &mut dec, &secret(b"ours"), "b", soon());
        assert_eq!(failure(err), Failure::Unproven);
        drop(a);
        assert_eq!(failure(accepted.join().unwrap()), Failure::Unproven);
    }

    /// An impostor that sends a CHALLENGE and a made-up PROOF gets
    /// nothing more: no proof, no HELLO.
    #[test]
    fn an_impostor_s_proof_is_refused_by_the_connecting_side() {
        let (mut a, mut b) = pair();
        let connecting = thread::spawn(move || {
            let mut dec = Decoder::new();
            let result = connect(&mut a, &mut dec, &secret(b"real"), "b", soon());
            drop(a);
            result
        });
        let mut dec = Decoder::new();
        assert!(matches!(dec.read(&mut b).unwrap(), Message::Challenge(_)));
        wire::send(&mut b, &Message::Challenge([1; 32])).unwrap();
        wire::send(&mut b, &Message::Proof([2; 32])).unwrap();
        assert_eq!(failure(connecting.join().unwrap()), Failure::Unproven);
        assert_eq!(rest(&mut b), Vec::<String>::new());
    }

    /// A connecting side whose proof is wrong (it skipped the check of
    /// ours) is refused and sent nothing else.
    #[test]
    fn a_wrong_proof_is_refused_by_the_accepting_side() {
        let (mut a, b) = pair();
        let accepted = accept_on(b, Some(b"real"));
        let mut dec = Decoder::new();
        wire::send(&mut a, &Message::Challenge([9; 32])).unwrap();
        assert!(matches!(dec.read(&mut a).unwrap(), Message::Challenge(_)));
        assert!(matches!(dec.read(&mut a).unwrap(), Message::Proof(_)));
        wire::send(&mut a, &Message::Proof([0; 32])).unwrap();
        wire::send(&mut a, &hello("guess")).unwrap();
        assert_eq!(failure(accepted.join().unwrap()), Failure::Unproven);
        assert_eq!(rest(&mut a), vec![format!("Refuse({WRONG_SECRET:?})")]);
    }

    #[test]
    fn a_hello_where_a_challenge_is_due_is_refused_with_nothing_else() {
        let (mut a, b) = pair();
        let accepted = accept_on(b, Some(b"real"));
        wire::send(&mut a, &hello("open")).unwrap();
        assert_eq!(failure(accepted.join().unwrap()), Failure::NoProof);
        assert_eq!(rest(&mut a), vec![format!("Refuse({NEEDS_SECRET:?})")]);
        // And that refusal, read where a HELLO was due, is final.
        assert_eq!(
            refused("owner at x", NEEDS_SECRET).to_string(),
            "owner at x: refused: this swarm needs its secret: start with --secret-file"
        );
    }

    #[test]
    fn a_challenge_to_a_side_without_a_secret_is_refused() {
        let (mut a, b) = pair();
        let accepted = accept_on(b, None);
        let mut dec = Decoder::new();
        let err = connect(&mut a, &mut dec, &secret(b"real"), "owner at x", soon());
        let err = err.unwrap_err();
        assert_eq!(
            err.to_string(),
            "owner at x could not prove the swarm secret: it runs without one"
        );
        assert_eq!(failure(accepted.join().unwrap()), Failure::Unwanted);
    }

    #[test]
    fn other_refusals_stay_ordinary() {
        let err = refused("x", "too many connections; try again later");
        assert!(matches!(err, Error::Wire { .. }), "{err:?}");
    }

    /// RFC 4231, test case 2: the MAC is HMAC-SHA-256 as specified.
    #[test]
    fn the_mac_is_hmac_sha256() {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            crate::manifest::to_hex(&mac.finalize().into_bytes().into()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// A proof covers its label and both nonces in order, as the
    /// specification writes it.
    #[test]
    fn a_proof_is_the_mac_of_label_then_both_nonces() {
        let s = secret(b"k");
        let (na, nb) = ([1; 32], [2; 32]);
        let mut whole = <Hmac<Sha256> as KeyInit>::new_from_slice(b"k").unwrap();
        whole.update(&[&b"swarm accept"[..], &na, &nb].concat());
        let want: Nonce = whole.finalize().into_bytes().into();
        assert_eq!(s.prove(ACCEPT_LABEL, &na, &nb), want);
        assert!(s.check(ACCEPT_LABEL, &na, &nb, &want));
        assert!(!s.check(CONNECT_LABEL, &na, &nb, &want));
        assert!(!s.check(ACCEPT_LABEL, &nb, &na, &want));
        assert!(!secret(b"K").check(ACCEPT_LABEL, &na, &nb, &want));
    }

    #[test]
    fn nonces_are_fresh() {
        let (x, y) = (nonce().unwrap(), nonce().unwrap());
        assert_ne!(x, y);
        assert_ne!(x, [0; 32]);
        // The system call itself works here, not only the fallback.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        getrandom(&mut [0u8; 64]).unwrap();
    }

    /// A file of `content` with mode 0600 in a directory of its own.
    /// The directory goes when the returned [`TestDir`] is dropped.
    fn scratch(name: &str, content: &[u8]) -> (TestDir, std::path::PathBuf) {
        let dir = TestDir::new(&format!("auth-{name}"));
        let path = dir.join("secret");
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        (dir, path)
    }

    #[test]
    fn a_secret_file_loses_trailing_whitespace_only() {
        let (_dir, path) = scratch("crlf", b" two words\t\r\n\n");
        let s = Secret::load(&path).unwrap();
        assert_eq!(s.key, b" two words");
        assert_eq!(format!("{s:?}"), "Secret(..)");
        let (_dir, path) = scratch("max", &[b'x'; MAX_SECRET_LEN]);
        assert_eq!(Secret::load(&path).unwrap().key.len(), MAX_SECRET_LEN);
    }

    /// The spec (Admission) names the bytes stripped: ASCII whitespace as
    /// `u8::is_ascii_whitespace` has it, which leaves out the vertical tab.
    #[test]
    fn a_vertical_tab_stays_in_a_secret_but_a_form_feed_is_stripped() {
        let (_dir, path) = scratch("vt", b"key\x0b \x0c\t\r\n");
        assert_eq!(Secret::load(&path).unwrap().key, b"key\x0b");
    }

    #[test]
    fn bad_secret_files_name_the_path_and_never_the_content() {
        let cases = [
            ("empty", b" \r\n".to_vec(), "is empty"),
            ("long", vec![b's'; MAX_SECRET_LEN + 1], "is over 4096 bytes"),
        ];
        for (name, content, why) in cases {
            let (_dir, path) = scratch(name, &content);
            let err = Secret::load(&path).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("secret file {} {why}", path.display())
            );
            assert_eq!(err.exit_code(), 1);
        }
        let (_dir, there) = scratch("missing", b"hunter2");
        let missing = there.with_file_name("missing");
        let err = Secret::load(&missing).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot read secret file {}: no such file or directory",
                missing.display()
            )
        );
        let err = Secret::load(missing.parent().unwrap()).unwrap_err();
        assert!(err.to_string().ends_with(": is a directory"), "{err}");
    }

    #[test]
    fn the_hello_proof_binds_the_file_id_to_the_connection() {
        let key = secret(b"k");
        let one = Session {
            na: [1; NONCE_LEN],
            nb: [2; NONCE_LEN],
        };
        let two = Session {
            na: [1; NONCE_LEN],
            nb: [3; NONCE_LEN],
        };
        let proof = key.prove_hello(&one, &[7; 32]);
        assert!(key.check_hello(&one, &[7; 32], &proof));
        assert!(!key.check_hello(&one, &[8; 32], &proof), "another file ID");
        assert!(
            !key.check_hello(&two, &[7; 32], &proof),
            "another connection"
        );
        assert!(!secret(b"j").check_hello(&one, &[7; 32], &proof));
        assert_ne!(proof, key.prove(ACCEPT_LABEL, &one.na, &one.nb));
    }
}
