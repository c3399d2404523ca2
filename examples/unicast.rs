//! The baseline swarm is measured against: one sender streams the whole
//! file to every receiver over its own TCP connection, all at once.
//!
//! ```text
//! unicast send --port PORT --receivers N [--bind ADDR] [--wait SECS] FILE
//! unicast recv --from HOST:PORT --out PATH [--wait SECS]
//! ```
//!
//! `send` waits (at most `--wait` seconds, default 60) for N receivers to
//! connect, then streams to all of them concurrently, one thread each, and
//! exits 0 once every receiver has confirmed the whole file. `recv`
//! connects (retrying until `--wait` runs out), writes the file to PATH,
//! hashes it with SHA-256 as it arrives (swarm verifies what it receives,
//! so the baseline pays for a hash too), syncs it to disk like swarm does,
//! and prints `unicast: received BYTES bytes, sha256 HEX`.
//!
//! The stream is a `u64` big-endian file length, then the bytes. The
//! receiver answers with one byte once it has written everything, so the
//! sender's exit means every copy landed. Errors are one line starting
//! with `unicast:` and a nonzero exit status.
//!
//! Run through cargo: `cargo run --release --example unicast -- send ...`.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// A stalled peer fails the transfer after this long without progress.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// One connection attempt; `recv` retries until its `--wait` runs out.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Read and write granularity; large enough that syscalls are not the cost.
const BUF_LEN: usize = 256 * 1024;

const USAGE: &str = "usage: unicast send --port PORT --receivers N [--bind ADDR] [--wait SECS] FILE\n       unicast recv --from HOST:PORT --out PATH [--wait SECS]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("send") => Opts::parse(&args[1..]).and_then(|o| send(&o)),
        Some("recv") => Opts::parse(&args[1..]).and_then(|o| recv(&o)),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => Err(format!("expected 'send' or 'recv'\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("unicast: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Every flag of both subcommands; each subcommand checks the ones it needs.
#[derive(Default)]
struct Opts {
    port: Option<u16>,
    bind: Option<String>,
    receivers: Option<usize>,
    from: Option<String>,
    out: Option<PathBuf>,
    wait: Option<u64>,
    file: Option<PathBuf>,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts, String> {
        let mut o = Opts::default();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            if !arg.starts_with("--") {
                if o.file.replace(PathBuf::from(arg)).is_some() {
                    return Err(format!("unexpected argument '{arg}'"));
                }
                continue;
            }
            let value = it
                .next()
                .ok_or_else(|| format!("{arg} needs a value"))?
                .as_str();
            let bad = |what: &str| format!("{arg} {value}: not {what}");
            match arg.as_str() {
                "--port" => o.port = Some(value.parse().map_err(|_| bad("a port"))?),
                "--bind" => o.bind = Some(value.to_string()),
                "--receivers" => {
                    o.receivers = Some(
                        value
                            .parse()
                            .ok()
                            .filter(|&n| n > 0)
                            .ok_or_else(|| bad("a positive count"))?,
                    );
                }
                "--from" => o.from = Some(value.to_string()),
                "--out" => o.out = Some(PathBuf::from(value)),
                "--wait" => o.wait = Some(value.parse().map_err(|_| bad("whole seconds"))?),
                _ => return Err(format!("unknown flag '{arg}'\n{USAGE}")),
            }
        }
        Ok(o)
    }

    fn wait(&self) -> Duration {
        Duration::from_secs(self.wait.unwrap_or(60))
    }
}

fn send(o: &Opts) -> Result<(), String> {
    let port = o.port.ok_or("send needs --port")?;
    let receivers = o.receivers.ok_or("send needs --receivers")?;
    let path = o.file.clone().ok_or("send needs a FILE")?;
    let len = std::fs::metadata(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    let bind = o.bind.as_deref().unwrap_or("0.0.0.0");
    let listener = TcpListener::bind((bind, port))
        .map_err(|e| format!("cannot listen on {bind}:{port}: {e}"))?;
    // Non-blocking accept so the wait for receivers is bounded.
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot configure the listener: {e}"))?;
    let deadline = Instant::now() + o.wait();
    let mut conns = Vec::with_capacity(receivers);
    while conns.len() < receivers {
        match listener.accept() {
            Ok((stream, addr)) => conns.push((stream, addr)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(format!(
                        "only {} of {receivers} receivers connected within {} s",
                        conns.len(),
                        o.wait().as_secs()
                    ));
                }
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(format!("accept failed: {e}")),
        }
    }
    let started = Instant::now();
    let threads: Vec<_> = conns
        .into_iter()
        .map(|(stream, addr)| {
            let path = path.clone();
            thread::spawn(move || {
                stream_to(stream, &path, len).map_err(|e| format!("receiver {addr}: {e}"))
            })
        })
        .collect();
    let mut first_err = None;
    for t in threads {
        let result = t
            .join()
            .unwrap_or_else(|_| Err("a sender thread panicked".into()));
        if let Err(e) = result {
            first_err.get_or_insert(e);
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    eprintln!(
        "unicast: sent {len} bytes to {receivers} receivers in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Sends the length and the file on one connection, then waits for the
/// receiver's one-byte acknowledgement.
fn stream_to(mut stream: TcpStream, path: &PathBuf, len: u64) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    // Each thread opens the file itself: independent offsets, and the page
    // cache holds it once however many receivers there are.
    let mut file = File::open(path)?;
    stream.write_all(&len.to_be_bytes())?;
    // A plain read/write loop, as a user would write it; io::copy's
    // sendfile path would not honour the write timeout the same way.
    let mut buf = vec![0u8; BUF_LEN];
    let mut sent = 0u64;
    while sent < len {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the file shrank to {sent} bytes while sending"),
            ));
        }
        let n = n.min((len - sent) as usize);
        stream.write_all(&buf[..n])?;
        sent += n as u64;
    }
    let mut ack = [0u8; 1];
    stream
        .read_exact(&mut ack)
        .map_err(|e| io::Error::new(e.kind(), format!("no acknowledgement after the data: {e}")))?;
    Ok(())
}

fn recv(o: &Opts) -> Result<(), String> {
    let from = o.from.as_deref().ok_or("recv needs --from HOST:PORT")?;
    let out = o.out.clone().ok_or("recv needs --out PATH")?;
    if let Some(extra) = &o.file {
        return Err(format!("unexpected argument '{}'", extra.display()));
    }
    let addr: SocketAddr = from
        .to_socket_addrs()
        .map_err(|e| format!("bad address {from}: {e}"))?
        .next()
        .ok_or_else(|| format!("{from} resolves to no address"))?;
    let mut stream = connect(addr, o.wait())?;
    let fail = |e: io::Error| format!("from {addr}: {e}");
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(fail)?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(fail)?;
    let mut head = [0u8; 8];
    stream
        .read_exact(&mut head)
        .map_err(|e| format!("from {addr}: no file length: {e}"))?;
    let len = u64::from_be_bytes(head);
    let file = File::create(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut writer = BufWriter::with_capacity(BUF_LEN, file);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF_LEN];
    let mut got = 0u64;
    while got < len {
        let want = BUF_LEN.min((len - got) as usize);
        let n = match stream.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(format!(
                    "from {addr}: connection closed after {got} of {len} bytes"
                ));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("from {addr}: after {got} of {len} bytes: {e}")),
        };
        hasher.update(&buf[..n]);
        writer
            .write_all(&buf[..n])
            .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
        got += n as u64;
    }
    // Swarm syncs its assembled file; do the same so the times compare.
    let file = writer
        .into_inner()
        .map_err(|e| format!("cannot write {}: {}", out.display(), e.error()))?;
    file.sync_all()
        .map_err(|e| format!("cannot sync {}: {e}", out.display()))?;
    // Best effort: the sender only waits for this to report success.
    let _ = stream.write_all(&[1]);
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("unicast: received {got} bytes, sha256 {hex}");
    Ok(())
}

/// Connects, retrying while the sender is not listening yet.
fn connect(addr: SocketAddr, wait: Duration) -> Result<TcpStream, String> {
    let deadline = Instant::now() + wait;
    loop {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!(
                    "cannot connect to {addr} within {} s: {e}",
                    wait.as_secs()
                ));
            }
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}
