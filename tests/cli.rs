//! The command line as a user meets it: help, version, and one clear
//! `swarm: ` line with the right exit status for every kind of bad input.

use crate::common;

use std::net::TcpListener;
use std::process::{Command, Output};

use common::{SWARM, TestDir, free_port};

fn swarm(args: &[&str], cwd: &std::path::Path) -> Output {
    Command::new(SWARM)
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// Asserts exit status `code` and that stderr is exactly `line`.
fn assert_fails(out: &Output, code: i32, line: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert_eq!(stderr.trim_end(), line);
    assert!(!stderr.contains("panicked"));
}

#[test]
fn help_and_version_print_to_stdout_and_exit_0() {
    let dir = TestDir::new("help");
    for args in [&["--help"][..], &["owner", "--help"], &["peer", "-h"]] {
        let out = swarm(args, &dir.path);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{args:?}"
        );
    }
    let out = swarm(&["--version"], &dir.path);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("swarm {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    let dir = TestDir::new("usage");
    let cases: &[(&[&str], &str)] = &[
        (
            &[],
            "swarm: missing subcommand: use 'owner', 'peer' or 'status' (see 'swarm --help')",
        ),
        (
            &["seed"],
            "swarm: unknown subcommand 'seed': use 'owner', 'peer' or 'status' (see 'swarm --help')",
        ),
        (
            &["owner", "f.bin"],
            "swarm: missing --port (see 'swarm owner --help')",
        ),
        (
            &["owner", "--port", "9000"],
            "swarm: missing FILE (see 'swarm owner --help')",
        ),
        (
            &["owner", "--port", "nine", "f"],
            "swarm: invalid --port 'nine': expected a port number from 1 to 65535",
        ),
        (
            &["owner", "--port", "9000", "--turbo", "f"],
            "swarm: unknown flag '--turbo' for 'swarm owner' (see 'swarm owner --help')",
        ),
        (
            &["owner", "--port", "9000", "--chunking", "rolling", "f"],
            "swarm: invalid --chunking 'rolling': expected 'fixed' or 'content'",
        ),
        (
            &[
                "owner",
                "--port",
                "9000",
                "--chunking",
                "content",
                "--chunk-size",
                "8388608",
                "f",
            ],
            "swarm: invalid --chunk-size '8388608' with --chunking content: expected a \
             whole number from 1024 to 4194304 (chunks may be 4 times as long)",
        ),
        (
            &["peer", "--port", "9001", "--download-neighbor", "9002"],
            "swarm: missing --owner (see 'swarm peer --help')",
        ),
        (
            &[
                "peer",
                "--owner",
                "9000",
                "--port",
                "9001",
                "--advertise",
                "x",
            ],
            "swarm: invalid --advertise 'x': expected HOST:PORT, as other peers should dial it",
        ),
        (
            &["status", "--owner", "9000", "--json", "x"],
            "swarm: unexpected argument 'x'",
        ),
        (
            &[
                "peer",
                "--owner",
                "9000",
                "--port",
                "9001",
                "--download-neighbor",
                "host",
            ],
            "swarm: invalid --download-neighbor: 'host' is not a port or HOST:PORT",
        ),
        (
            &[
                "peer",
                "--owner",
                "9000",
                "--port",
                "9001",
                "--download-neighbor",
                "9002",
                "--linger",
            ],
            "swarm: --linger needs a value",
        ),
        (
            &[
                "peer",
                "--owner",
                "1",
                "--port",
                "2",
                "--download-neighbor",
                "3",
                "--download-neighbor",
                "4",
            ],
            "swarm: --download-neighbor is given 2 times, but --sources 1 takes at most 1",
        ),
    ];
    for (args, line) in cases {
        assert_fails(&swarm(args, &dir.path), 2, line);
    }
}

#[test]
fn a_missing_or_unreadable_file_exits_1() {
    let dir = TestDir::new("missing");
    let port = free_port().to_string();
    let out = swarm(&["owner", "--port", &port, "nope.bin"], &dir.path);
    assert_fails(
        &out,
        1,
        "swarm: cannot open nope.bin: no such file or directory",
    );
    let out = swarm(&["owner", "--port", &port, "."], &dir.path);
    assert_fails(&out, 1, "swarm: cannot read .: not a regular file");
}

#[test]
fn a_port_in_use_exits_1() {
    let dir = TestDir::new("busy");
    std::fs::write(dir.join("f.bin"), b"hello").unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = swarm(
        &["owner", "--bind", "127.0.0.1", "--port", &port, "f.bin"],
        &dir.path,
    );
    assert_fails(
        &out,
        1,
        &format!("swarm: cannot listen on 127.0.0.1:{port}: address already in use"),
    );
    let args = [
        "peer",
        "--bind",
        "127.0.0.1",
        "--owner",
        "1",
        "--port",
        &port,
        "--download-neighbor",
        "2",
    ];
    assert_fails(
        &swarm(&args, &dir.path),
        1,
        &format!("swarm: cannot listen on 127.0.0.1:{port}: address already in use"),
    );
}

#[test]
fn a_peer_gives_up_on_an_absent_owner_after_wait() {
    let dir = TestDir::new("absent");
    let ports = common::free_ports(3);
    let [owner, me, next] = [0, 1, 2].map(|i| ports[i].to_string());
    let args = [
        "peer",
        "--owner",
        &owner,
        "--port",
        &me,
        "--download-neighbor",
        &next,
        "--wait",
        "1",
    ];
    let out = swarm(&args, &dir.path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.lines().last(),
        Some(
            format!("swarm: timed out: cannot reach the owner at 127.0.0.1:{owner} for 1 s")
                .as_str()
        )
    );
}
