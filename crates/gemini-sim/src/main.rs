//! `gemini-sim --config sim.json --bind 127.0.0.1:9000`

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(name = "gemini-sim", about = "A wire-faithful fake of the Gemini API")]
struct Args {
    /// JSON simulator config (keys, limits, faults). Default: one valid key "sim-key".
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1:9000")]
    bind: std::net::SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let args = Args::parse();
    let config = match &args.config {
        Some(path) => serde_json::from_str(&std::fs::read_to_string(path)?)?,
        None => gemini_sim::SimConfig {
            keys: vec![gemini_sim::SimKey {
                key: "sim-key".into(),
                id: "sim".into(),
                project: "sim-project".into(),
                status: gemini_sim::KeyStatus::Valid,
            }],
            ..Default::default()
        },
    };
    let server = gemini_sim::SimServer::start_on(args.bind, config).await?;
    tracing::info!(addr = %server.addr, "gemini-sim listening");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
