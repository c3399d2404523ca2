//! The simulator runs the real tracker, seeder and peer state machine:
//! runs complete, and the owner's bytes are what its plan says.

use swarm::sim::{self, Config};
use swarm::wire::PeerState;

const MIB: u64 = 1024 * 1024;

/// Twenty peers at 25 Mbit/s, the owner seeding among all twenty (as the
/// bench starts it).
fn twenty() -> Config {
    let mut config = Config::new(20, 25.0, 4 * MIB);
    config.owner_peers = 20;
    config
}

#[test]
fn twenty_peers_complete_and_the_owner_sends_what_it_planned() {
    let config = twenty();
    let out = sim::run(&config);
    // Every peer's store holds every chunk, and the owner's tracker
    // counts each complete (or left after completing).
    assert_eq!(out.complete, vec![true; 20]);
    assert!(out.done.iter().all(Option::is_some));
    assert_eq!(out.status.len(), 20);
    for p in &out.status {
        assert!(
            matches!(p.state, PeerState::Complete | PeerState::Left),
            "{} is {:?}",
            p.addr,
            p.state
        );
    }
    // What left the owner's link is exactly the seeds the seeder chose,
    // the tracker's re-seeds and the chunks peers asked for, less what
    // was queued and dropped.
    assert_eq!(out.owner_sent, out.plan.total());
    // Twenty shares of the file for twenty peers: each chunk seeded once.
    assert_eq!(out.plan.seeded, config.size);
    assert_eq!(out.plan.reseeded, 0);
    assert_eq!(out.plan.dropped, 0);
    // The end game asks the owner for at most a fifth of each peer's
    // seeds, and at least two chunks each.
    let chunks = config.size.div_ceil(u64::from(config.chunk));
    let budget = (chunks / 20 / 5).max(2) * 20 * u64::from(config.chunk);
    assert!(out.plan.asked <= budget, "{:?}", out.plan);
    // No peer beats the owner's own link, S/B.
    assert!(out.quantile(0.0) >= 1.0, "{:?}", out.ratios(false));
}

#[test]
fn survivors_of_killed_peers_complete_and_lost_seeds_are_sent_again() {
    let mut config = twenty();
    // Two peers die while they still hold seeds no one else has.
    config.kill = vec![(3, 0.3), (11, 0.4)];
    let out = sim::run(&config);
    for (i, done) in out.complete.iter().enumerate() {
        let killed = i + 1 == 3 || i + 1 == 11;
        assert_eq!(out.killed[i], killed, "peer {}", i + 1);
        assert_eq!(*done, !killed, "peer {}", i + 1);
    }
    let gone = out
        .status
        .iter()
        .filter(|p| p.state == PeerState::Gone)
        .count();
    assert_eq!(gone, 2);
    assert_eq!(out.owner_sent, out.plan.total());
    assert!(out.plan.reseeded > 0, "{:?}", out.plan);
}

#[test]
fn a_run_is_deterministic() {
    let mut config = twenty();
    config.sources = 2;
    config.slow = vec![(4, 5.0)];
    let (a, b) = (sim::run(&config), sim::run(&config));
    assert_eq!(a.done, b.done);
    assert_eq!(a.owner_sent, b.owner_sent);
    assert_eq!(a.events, b.events);
}
