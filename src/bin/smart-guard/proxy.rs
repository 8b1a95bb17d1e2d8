//! `smart-guard proxy`: the guard in front of an upstream FHIR server.

use serde_json::json;
use smart_guard::Config;
use smart_guard::proxy::{Proxy, ProxyConfig};

use crate::BoxError;

/// Reads the `SMART_GUARD_*` environment (the guard's settings and the proxy's), discovers the
/// AS if configured, binds, logs one line of effective settings (secrets redacted), prints
/// `{"listening": …, "public_base": …}` on standard output, and serves until SIGTERM or SIGINT.
pub(crate) async fn proxy() -> Result<(), BoxError> {
    let guard = Config::from_env()?.discover().await?;
    let settings = ProxyConfig::from_env()?;
    let line = settings
        .settings()
        .iter()
        .map(|(var, value)| format!("{var}={value}"))
        .collect::<Vec<_>>()
        .join(" ");
    let guard_line = guard.settings().to_string();
    let proxy = Proxy::bind(settings, guard).await?;
    let addr = proxy.local_addr()?;
    tracing::info!(
        listening = %addr,
        public_base = %proxy.public_base(),
        "smart-guard proxy: {line} {guard_line}"
    );
    println!(
        "{}",
        json!({ "listening": addr.to_string(), "public_base": proxy.public_base().as_str() })
    );
    if !proxy.run_until_signal().await {
        tracing::warn!("stopped with requests still in flight");
    }
    Ok(())
}
