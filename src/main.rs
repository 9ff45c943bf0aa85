//! The `tracesift` binary: parse the command line and hand over to the library.

fn main() -> std::process::ExitCode {
    let cli = <tracesift::cli::Cli as clap::Parser>::parse();
    match tracesift::cli::main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
