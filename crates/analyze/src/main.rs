//! profanalyze: offline analysis of profcap captures.

mod cli;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    cli.init_logging();
    match cli.run() {
        Ok(code) => code,
        Err(e) => {
            // A closed pipe (`profanalyze folded x.cap | head`) is not an error.
            let broken_pipe = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            let _ = writeln!(std::io::stderr(), "profanalyze: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
