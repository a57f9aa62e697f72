//! What the sandbox costs, and how many backtests this machine runs.
//!
//! `ALGOAGENT_SANDBOX_ENV=… cargo bench -p sandbox --bench overhead`
//!
//! 1. The same 1-year daily backtest (SMA crossover on GOOG, 2012-03 to
//!    2013-03) run 10 times straight with the environment's Python, and 10
//!    times through the sandbox, alternating: the difference is the
//!    sandbox's start-up; the runner's own timings split Python's import
//!    time from the backtest.
//! 2. Throughput: as many of those as complete in 60 s with one run per
//!    core in flight.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark: a failure should stop it loudly"
)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sandbox::{DataFile, Limits, RunInput, Sandbox, SandboxSettings, Verdict, DEFAULT_USER};

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let Ok(env_dir) = std::env::var("ALGOAGENT_SANDBOX_ENV") else {
        println!("set ALGOAGENT_SANDBOX_ENV to the environment `algoagent sandbox setup` made");
        return;
    };
    let sandbox = Sandbox::new(SandboxSettings::new(PathBuf::from(&env_dir), DEFAULT_USER.into(), Limits::default()));
    assert!(sandbox.readiness().is_ready(), "{:?}", sandbox.readiness());
    let input = RunInput {
        code: sandbox::setup::CHECK_STRATEGY.to_string(),
        data: vec![DataFile { symbol: "GOOG".into(), path: sandbox.sample_data("GOOG").unwrap() }],
        cash: 10_000.0,
        commission: 0.002,
        start_date: Some("2012-03-01".into()),
        end_date: Some("2013-03-01".into()),
        period: None,
    };
    let python = sandbox.settings().python();

    let (mut direct, mut sandboxed, mut direct_import, mut sandboxed_import) = (vec![], vec![], vec![], vec![]);
    for _ in 0..10 {
        let dir = sandbox::prepare_input(&input).unwrap();
        let started = Instant::now();
        let output = tokio::process::Command::new(&python)
            .arg("-I")
            .arg(dir.path().join("runner.py"))
            .arg(dir.path())
            .env("OPENBLAS_NUM_THREADS", "1")
            .output()
            .await
            .unwrap();
        direct.push(started.elapsed().as_secs_f64());
        let document: serde_json::Value = serde_json::from_slice(&output.stdout).expect("the runner's document");
        direct_import.push(document["timings"]["import_seconds"].as_f64().unwrap());

        let output = sandbox.run(&input).await.unwrap();
        let Verdict::Completed { result } = &output.verdict else { panic!("{:?}", output.verdict) };
        sandboxed.push(output.elapsed.as_secs_f64());
        sandboxed_import.push(result["timings"]["import_seconds"].as_f64().unwrap());
    }
    let bars = {
        let output = sandbox.run(&input).await.unwrap();
        let Verdict::Completed { result } = output.verdict else { panic!() };
        result["results"][0]["bars"].clone()
    };
    println!("one {bars}-bar daily backtest, median of 10:");
    println!(
        "  direct:    {:.3} s ({:.3} s importing pandas/numpy/backtesting)",
        median(direct.clone()),
        median(direct_import)
    );
    println!("  sandboxed: {:.3} s ({:.3} s importing)", median(sandboxed.clone()), median(sandboxed_import));
    println!("  sandbox overhead: {:.3} s", median(sandboxed) - median(direct));

    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    let until = Instant::now() + Duration::from_secs(60);
    let mut lanes = tokio::task::JoinSet::new();
    for _ in 0..cores {
        let (sandbox, input) = (sandbox.clone(), input.clone());
        lanes.spawn(async move {
            let mut done = 0u32;
            while Instant::now() < until {
                let output = sandbox.run(&input).await.unwrap();
                assert!(matches!(output.verdict, Verdict::Completed { .. }));
                done += 1;
            }
            done
        });
    }
    let mut completed = 0;
    while let Some(lane) = lanes.join_next().await {
        completed += lane.unwrap();
    }
    println!("throughput: {completed} runs in 60 s with {cores} in flight ({completed} runs/min)");
}
