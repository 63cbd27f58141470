//! Entry point: parse the command line and hand over to the subcommand.

use clap::Parser;
use kube_metrics_bridge::cli::{Cli, Command};
use kube_metrics_bridge::{cmd, telemetry};

/// mimalloc, not glibc's malloc: a cached answer is mostly small allocations freed at once
/// (items, strings, the encoded body), and glibc's allocator was a third of its CPU
/// (`hack/bench.sh`, README "Benchmarks").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    // One rustls crypto provider (ring) for the server and the Prometheus client alike.
    kube_metrics_bridge::tls::install_crypto_provider();
    let code = match cli.command {
        Command::Check { file } => cmd::check::run(&file),
        Command::Explain {
            config,
            prometheus_url,
            path,
        } => block_on(cmd::explain::run(&config, prometheus_url, &path)),
        Command::Convert {
            file,
            helm_values: Some(values),
            output,
            prometheus_url,
        } => cmd::convert::run_helm_values(
            &values,
            file.as_deref(),
            output.as_deref(),
            prometheus_url.as_deref(),
        ),
        Command::Convert {
            file: Some(file),
            helm_values: None,
            output,
            prometheus_url,
        } => cmd::convert::run(&file, output.as_deref(), prometheus_url.as_deref()),
        // clap requires FILE without --helm-values.
        Command::Convert { .. } => 2,
        Command::Serve(args) => block_on(cmd::serve::run(*args)),
        Command::Doctor(args) => block_on_code(cmd::doctor::run(args)),
        Command::Compare(args) => block_on_code(cmd::compare::run(*args)),
    };
    std::process::exit(code);
}

fn block_on_code(fut: impl std::future::Future<Output = anyhow::Result<i32>>) -> i32 {
    let mut code = 0;
    let result = block_on(async {
        code = fut.await?;
        Ok(())
    });
    if result != 0 {
        result
    } else {
        code
    }
}

fn block_on(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(fut) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}
