//! The `swarm` executable: parse the command line, run, and turn the one
//! `Result` into an exit status and at most one `swarm: ...` line.

use std::process::ExitCode;

use swarm::cli::{self, Command};

fn main() -> ExitCode {
    swarm::init_logging();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("swarm: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn run() -> swarm::Result<()> {
    match cli::parse(std::env::args_os().skip(1))? {
        Command::Help(text) => print!("{text}"),
        Command::Version => println!("swarm {}", env!("CARGO_PKG_VERSION")),
        Command::Owner(args) => swarm::owner::Owner::bind(&args)?.run()?,
        Command::Peer(args) => {
            let report = swarm::peer::run(&args)?;
            if let Some(path) = &args.record {
                report.write_record(path)?;
            }
        }
        Command::Status(args) => swarm::status::run(&args)?,
    }
    Ok(())
}
