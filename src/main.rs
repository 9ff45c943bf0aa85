//! The `tracesift` binary: parse the command line and hand over to the library.

/// mimalloc instead of glibc's malloc: on the cost bench, glibc's allocator was ~15% of the
/// process's CPU (`_int_malloc`, `_int_free`, consolidation) and its per-thread arenas keep
/// freed record memory apart from the store's; figures in README's "What a span costs".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
