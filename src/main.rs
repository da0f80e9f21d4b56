//! The `hydra-billing` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    hydra_billing::stripe::install_crypto_provider();
    hydra_billing::cli::main().await
}
