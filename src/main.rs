use clap::Parser;

fn main() {
    let cli = nexus::cli::Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("start the async runtime");
    let code = runtime.block_on(nexus::cli::run(cli));
    // Indexers have persisted; don't wait for stray blocking tasks.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    std::process::exit(code);
}
