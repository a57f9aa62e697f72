use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = server::cli::Cli::parse();
    match server::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // Logging may not be up yet (the configuration itself can be
            // what failed), so the reason goes straight to stderr.
            #[allow(clippy::print_stderr)]
            {
                eprintln!("algoagent: {err:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
