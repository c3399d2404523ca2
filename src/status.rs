//! `swarm status`: asks the owner for its registry and prints it.
//!
//! The client opens an owner session like a peer does (HELLO, then the
//! manifest it is sent), but instead of a chunk-ID list it sends
//! STATUS_REQUEST, once or every second with `--watch`, and prints the
//! STATUS frames it gets back as a table or, with `--json`, as one JSON
//! object per answer. It never registers, so it is not in the table.

use std::io::{IsTerminal, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use crate::auth::Secret;
use crate::cli::StatusArgs;
use crate::config::Timeouts;
use crate::conn;
use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::net;
use crate::tracker;
use crate::wire::{self, Decoder, Kind, Kinds, Message, PeerState, PeerStatus};

/// How often `--watch` asks.
const EVERY: Duration = Duration::from_secs(1);

/// Runs `swarm status`.
pub fn run(args: &StatusArgs) -> Result<()> {
    let owner = format!("owner at {}", args.owner);
    let secret = match &args.secret_file {
        Some(path) => Some(Secret::load(path)?),
        None => None,
    };
    // Each pass is one session; the owner ends it when it shares a new
    // version, and the next pass asks about that one.
    // A few times at most: an owner whose file changes that often has no
    // answer to give.
    for _ in 0..10 {
        match session(args, &owner, secret.as_ref()) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(Error::Wire {
                err: wire::Error::Refused(why),
                ..
            }) if why == crate::peer::NEW_VERSION => {}
            Err(e) => return Err(e),
        }
    }
    Err(Error::Timeout(format!(
        "the {owner} switched to a new version ten times while asked"
    )))
}

/// One session: returns whether the answer was printed (`false`: the
/// owner shares a new version and must be asked again).
fn session(args: &StatusArgs, owner: &str, secret: Option<&Secret>) -> Result<bool> {
    let owner = owner.to_string();
    let timeouts = Timeouts::default();
    let abort = conn::Abort::default();
    let (mut stream, mut dec, _) = conn::dial(
        args.owner, [0; 32], "status", secret, &timeouts, &abort,
    )
    .map_err(|e| match e {
        // Say which owner could not be reached.
        Error::Io { what, path, err } => Error::Io {
            what: format!("{what} to the {owner}"),
            path,
            err,
        },
        other => other,
    })?;
    let manifest =
        crate::peer::receive_manifest(&mut dec, &mut stream, &owner, timeouts.handshake)?;
    dec.set_layout(manifest.layout().clone());
    let tty = std::io::stdout().is_terminal();
    loop {
        let Some((sent, peers)) = ask(&mut stream, &mut dec, &owner)? else {
            return Ok(false);
        };
        let text = if args.json {
            json(&manifest, sent, &peers)
        } else {
            let l = manifest.layout();
            tracker::table(&peers, l.count(), l.file_len(), sent, usize::MAX)
        };
        let mut out = std::io::stdout().lock();
        if args.watch && tty && !args.json {
            // Home and clear: the table is redrawn in place.
            let _ = write!(out, "\x1b[H\x1b[2J");
        }
        writeln!(out, "{text}").map_err(|e| Error::io("write to standard output", e))?;
        let _ = out.flush();
        // Done when no one is still on its way: complete, left, or gone
        // for good.
        let complete = !peers.is_empty()
            && !peers
                .iter()
                .any(|p| matches!(p.state, PeerState::Downloading | PeerState::Away));
        if !args.watch || complete {
            return Ok(true);
        }
        thread::sleep(EVERY);
    }
}

/// One STATUS_REQUEST and the frames that answer it; `None` if the owner
/// announced a new version instead.
fn ask(
    stream: &mut TcpStream,
    dec: &mut Decoder,
    owner: &str,
) -> Result<Option<(u64, Vec<PeerStatus>)>> {
    let fail = |err| Error::wire(owner, err);
    wire::send(stream, &Message::StatusRequest).map_err(|e| fail(e.into()))?;
    dec.set_accepts(Kinds::of(&[
        Kind::Status,
        Kind::KeepAlive,
        Kind::Refuse,
        Kind::Version,
    ]));
    let mut peers = Vec::new();
    loop {
        net::fill_within(dec, stream, Timeouts::default().handshake).map_err(fail)?;
        match dec.message().map_err(fail)? {
            Message::Status(part) => {
                if part.first as usize != peers.len() {
                    return Err(fail(wire::Error::Unexpected("status")));
                }
                peers.extend(part.peers);
                if peers.len() >= part.total as usize {
                    return Ok(Some((part.sent, peers)));
                }
            }
            Message::Version(_) => return Ok(None),
            Message::Refuse(why) => return Err(fail(wire::Error::Refused(why.into()))),
            _ => {}
        }
    }
}

/// The registry as one JSON object.
fn json(manifest: &Manifest, sent: u64, peers: &[PeerStatus]) -> String {
    let count = manifest.layout().count();
    let rows: Vec<String> = peers
        .iter()
        .map(|p| {
            format!(
                "{{\"addr\":{},\"downloads_from\":{},\"sources\":{},\"chunks\":{},\"percent\":{:.1},\
                 \"rate_bytes_per_sec\":{},\"state\":\"{}\",\"wired_by_owner\":{}}}",
                quote(&p.addr),
                quote(&p.neighbour),
                // How many it downloads from: more than one for a peer
                // the owner wired into a large swarm by default.
                if p.neighbour.is_empty() {
                    0
                } else {
                    p.neighbour.split(", ").count()
                },
                p.held,
                tracker::percent(p.held, count),
                p.rate,
                p.state.name(),
                p.wired
            )
        })
        .collect();
    let by = |s: PeerState| peers.iter().filter(|p| p.state == s).count();
    format!(
        "{{\"file\":{},\"file_bytes\":{},\"chunks\":{count},\"owner_sent_bytes\":{sent},\
         \"peers\":[{}],\"total\":{{\"peers\":{},\"downloading\":{},\"complete\":{},\
         \"away\":{},\"gone\":{},\"left\":{}}}}}",
        quote(manifest.name()),
        manifest.layout().file_len(),
        rows.join(","),
        peers.len(),
        by(PeerState::Downloading),
        by(PeerState::Complete),
        by(PeerState::Away),
        by(PeerState::Gone),
        by(PeerState::Left),
    )
}

/// A JSON string literal.
pub(crate) fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
