//! The integration tests, built as one crate (as ripgrep does): each file
//! beside this one is a module, so the shared fixtures in `common` are
//! compiled once, not once per file, and one binary runs every test.
//! Run one group with `cargo test --test integration ring::`.

// Shared fixtures: temporary directories, ports, swarm processes, fakes.
mod common;

// The owner's admission of peers: secrets, proofs and refusals.
mod admission;
// The command line: flags, help and one-line errors, without a network.
mod cli;
// Fault injection: crashes, corruption, dead peers, a dead owner, hostile bytes.
mod faults;
// Programs that speak the protocol correctly but lie, stall or squat.
mod hostile;
// Limits: a full disk, a file changing under the owner, edge-case file names.
mod limits;
// End-to-end runs of an owner and a ring of peers on loopback.
mod ring;
// The simulator with the real tracker, seeder and peer state machine.
mod sim;
// Several sources per peer (--sources K).
mod sources;
// The owner as tracker: wiring in order of registration, routing around the gone.
mod tracker;
// New versions of the shared file while peers download it.
mod versions;
