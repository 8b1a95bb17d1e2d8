//! `smart-guard dev-server`: the development authorization server with clients from a file.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use smart_guard::dev_server::{ClientsFile, DevServer};

use crate::BoxError;

#[derive(Debug, Args)]
pub(crate) struct DevServerArgs {
    /// Clients file (JSON; format in the `smart_guard::dev_server::ClientsFile` docs).
    #[arg(long)]
    clients: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9090")]
    addr: String,
    /// Base URL to announce instead of `http://<addr>` (e.g. behind a proxy).
    #[arg(long)]
    public_base_url: Option<String>,
    /// Access token lifetime in seconds (overrides the clients file; default 300).
    #[arg(long)]
    token_lifetime_secs: Option<u64>,
}

pub(crate) async fn dev_server(args: DevServerArgs) -> Result<(), BoxError> {
    let file = ClientsFile::from_path(&args.clients)?;
    let (clients, resource_servers) = (file.clients.len(), file.resource_servers.len());
    let mut builder = DevServer::builder().with_clients_file(file);
    if let Some(url) = args.public_base_url {
        builder = builder.with_public_base_url(url);
    }
    if let Some(secs) = args.token_lifetime_secs {
        builder = builder.with_token_lifetime(Duration::from_secs(secs));
    }
    let server = builder
        .spawn(args.addr.as_str())
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
    println!(
        "smart-guard dev-server listening on {} (development and testing only)",
        server.base_url()
    );
    println!("  token:         {}", server.token_url());
    println!("  introspection: {}", server.introspection_url());
    println!("  revocation:    {}", server.revocation_url());
    println!("  discovery:     {}", server.smart_configuration_url());
    println!("  {clients} client(s), {resource_servers} resource server(s); Ctrl-C stops");
    std::io::stdout().flush()?;
    server.run_forever().await;
    Ok(())
}
