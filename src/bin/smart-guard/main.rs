//! `smart-guard`: key pairs, tokens, introspection, a development authorization server, and a demo
//! of SMART Backend Services with the guard layer.
//!
//! ```text
//! smart-guard keygen --alg ES384 --out keys/
//! smart-guard token --token-url http://127.0.0.1:9090/token --client-id my-client \
//!     --key keys/private-key.pem --scope "system/Patient.rs"
//! SMART_GUARD_CLIENT_SECRET=... smart-guard introspect --url http://127.0.0.1:9090/introspect \
//!     --client-id fhir-server TOKEN
//! SMART_GUARD_INTROSPECTION_URL=... SMART_GUARD_CLIENT_ID=... SMART_GUARD_CLIENT_SECRET=... \
//!     smart-guard check
//! smart-guard dev-server --clients clients.json --addr 127.0.0.1:9090
//! smart-guard demo
//! SMART_GUARD_UPSTREAM_URL=http://127.0.0.1:8081/fhir SMART_GUARD_BASE_PATH=/fhir ... smart-guard proxy
//! ```

mod allocator;
mod check;
mod demo;
mod dev_server;
mod introspect;
mod keygen;
mod proxy;
mod token;

use std::error::Error;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// mimalloc, for the many short-lived allocations of a proxied request (`Cargo.toml`).
#[global_allocator]
static ALLOCATOR: allocator::MiMalloc = allocator::MiMalloc;
use serde_json::Value;

use self::check::CheckArgs;
use self::dev_server::DevServerArgs;
use self::introspect::IntrospectArgs;
use self::keygen::KeygenArgs;
use self::token::TokenArgs;

type BoxError = Box<dyn Error + Send + Sync>;

#[derive(Debug, Parser)]
#[command(
    name = "smart-guard",
    version,
    about = "SMART Backend Services tools: keys, tokens, introspection, a development authorization server, and a demo"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a signing key pair: private key (PKCS#8 PEM, mode 0600) and JWKS.
    Keygen(KeygenArgs),
    /// Sign a client assertion, request an access token, and print the token response JSON.
    Token(TokenArgs),
    /// Ask an RFC 7662 introspection endpoint about a token, as the guard does (same settings,
    /// same client authentication), and print the answer.
    Introspect(IntrospectArgs),
    /// Check the guard's configuration: read the SMART_GUARD_* environment as the layer does, run
    /// discovery if configured, and make one introspection call; exit 0 if all of it worked.
    Check(CheckArgs),
    /// Run the development authorization server (development and testing only).
    DevServer(DevServerArgs),
    /// Walk through the whole flow on loopback: dev AS, guarded FHIR server, token, calls, revocation.
    Demo,
    /// Run the guard as a reverse proxy in front of any FHIR server (SMART_GUARD_UPSTREAM_URL),
    /// configured by the SMART_GUARD_* environment; SIGTERM or SIGINT drains and stops it.
    Proxy,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One core (a container limit, `taskset`): one thread runs everything, with no hand-off
    // between an I/O driver and a worker. More: tokio's work-stealing pool.
    let one_core = std::thread::available_parallelism().map_or(true, |n| n.get() == 1);
    let runtime = if one_core {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    match runtime {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> ExitCode {
    // A server logs its start and stop; the one-shot commands only what went wrong.
    let default_filter = match cli.command {
        Command::Proxy => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Keygen(args) => keygen::keygen(&args),
        Command::Token(args) => token::token(args).await,
        Command::Introspect(args) => introspect::introspect(args).await,
        Command::Check(args) => check::check(&args).await,
        Command::DevServer(args) => dev_server::dev_server(args).await,
        Command::Demo => demo::demo().await,
        Command::Proxy => proxy::proxy().await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut message = format!("error: {e}");
            let mut source = e.source();
            while let Some(cause) = source {
                let _ = write!(message, ": {cause}");
                source = cause.source();
            }
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn http() -> Result<reqwest::Client, BoxError> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?)
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}
