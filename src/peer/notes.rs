//! How the coordinator words the core's notes (lapsed requests, corrupt
//! chunks, stalls, progress) as log lines. Wording only: every decision
//! behind a note was made by the core ([`super::machine::PeerCore`]).

use super::machine::{Failing, MAX_BAD_CHUNKS, Note, Stall};
use super::{Coordinator, MIB, addr_list};

impl Coordinator<'_> {
    /// Words a note of the core's as a log line.
    pub(super) fn log_note(&self, note: Note) {
        let name = self.name();
        let limit = self.args.stall_timeout.as_secs();
        match note {
            Note::Lapsed { src, id } => log::warn!(
                "{name}: {} did not deliver chunk {id} within {limit} s; asking elsewhere",
                self.who(src)
            ),
            Note::Stalled(why) => self.log_stall(Some(why)),
            Note::Delivering => self.log_stall(None),
            Note::CorruptAlone { addr } => log::warn!(
                "{name}: download neighbour {addr} sent {MAX_BAD_CHUNKS} corrupt chunks and no other is connected; fetching missing chunks from the owner"
            ),
            Note::Corrupt { src, id, bad } if bad == MAX_BAD_CHUNKS => log::warn!(
                "{name}: chunk {id} from {} failed its SHA-256 check; \
                 {MAX_BAD_CHUNKS} bad chunks from it; disconnecting",
                self.who(src)
            ),
            Note::Corrupt { src, id, .. } => log::warn!(
                "{name}: chunk {id} from {} failed its SHA-256 check; discarded, asking again",
                self.who(src)
            ),
            Note::Unasked { src, id } => log::warn!(
                "{name}: {} sent chunk {id}, which was not asked of it; disconnecting",
                self.who(src)
            ),
            Note::Shunned { addr, wait } => log::warn!(
                "{name}: not dialing download neighbour {addr} again for {} s",
                wait.as_secs()
            ),
            Note::Seeded { seeded } => log::info!("{name}: the owner seeded {seeded} chunks"),
            Note::Progress { held, total, rate } => log::info!(
                "{name}: {held}/{total} chunks ({:.1}%), {:.1} MiB/s",
                crate::tracker::percent(held, total),
                rate as f64 / MIB,
            ),
        }
    }

    /// The ring stalled (with why) or delivers again (`None`).
    fn log_stall(&self, why: Option<Stall>) {
        let name = self.name();
        let targets = self.core.targets();
        let at = if targets.is_empty() {
            String::new()
        } else {
            format!(" at {}", addr_list(targets))
        };
        let who = if targets.len() > 1 {
            "download neighbours"
        } else {
            "download neighbour"
        };
        let Some(why) = why else {
            let are = if targets.len() > 1 { "are" } else { "is" };
            log::info!("{name}: the {who}{at} {are} delivering again; back to the ring");
            return;
        };
        let limit = self.args.stall_timeout.as_secs();
        let why = match why {
            Stall::Alone => "is none: this peer is alone in the ring".to_string(),
            Stall::Silent => format!("delivered nothing for {limit} s"),
            Stall::Corrupt => format!("sent {MAX_BAD_CHUNKS} corrupt chunks"),
            Stall::Failing(each) => match each.as_slice() {
                [(_, how)] if targets.len() <= 1 => failing_text(how, limit),
                [(src, how)] => format!(
                    "(the one connected): {} {}",
                    self.who(*src),
                    failing_text(how, limit)
                ),
                several => {
                    let each: Vec<String> = several
                        .iter()
                        .map(|(src, how)| {
                            format!("{} {}", self.who(*src), failing_text(how, limit))
                        })
                        .collect();
                    format!("all fail: {}", each.join("; "))
                }
            },
        };
        // Alone is no fault of a neighbour's: not worth a warning.
        if at.is_empty() {
            log::info!("{name}: the {who} {why}; fetching missing chunks from the owner")
        } else {
            log::warn!("{name}: the {who}{at} {why}; fetching missing chunks from the owner")
        }
    }
}

/// How a failing neighbour fails, as logs say it (`limit` is
/// `--stall-timeout` in seconds).
fn failing_text(how: &Failing, limit: u64) -> String {
    match how {
        Failing::Lapsed => format!("did not answer a request within {limit} s"),
        Failing::Hung => format!("has not answered a request for {limit} s"),
        Failing::SlowerThanNeighbour { mine, other } => format!(
            "takes {} ms per chunk where another neighbour takes {} ms",
            mine.as_millis(),
            other.as_millis()
        ),
        Failing::SlowerThanOwner { mine, owner } => format!(
            "takes {} ms per chunk where the owner took {} ms",
            mine.as_millis(),
            owner.as_millis()
        ),
    }
}
