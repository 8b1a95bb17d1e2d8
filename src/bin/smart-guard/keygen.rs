//! `smart-guard keygen`: a signing key pair, private key (PKCS#8 PEM, mode 0600) and JWKS.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use smart_guard::client::{KeyPair, SigningAlg};

use crate::{BoxError, pretty};

/// File name of the private key `keygen` writes.
const PRIVATE_KEY_FILE: &str = "private-key.pem";
/// File name of the JWKS `keygen` writes.
const JWKS_FILE: &str = "jwks.json";

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum AlgArg {
    #[value(name = "RS384")]
    Rs384,
    #[value(name = "ES384")]
    Es384,
}

impl From<AlgArg> for SigningAlg {
    fn from(alg: AlgArg) -> Self {
        match alg {
            AlgArg::Rs384 => SigningAlg::Rs384,
            AlgArg::Es384 => SigningAlg::Es384,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct KeygenArgs {
    /// Signature algorithm: RS384 (RSA 2048) or ES384 (P-384).
    #[arg(long, value_enum)]
    pub(crate) alg: AlgArg,
    /// Directory to write `private-key.pem` and `jwks.json` into (created if missing).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Overwrite an existing private key.
    #[arg(long)]
    pub(crate) force: bool,
}

pub(crate) fn keygen(args: &KeygenArgs) -> Result<(), BoxError> {
    let key = KeyPair::generate(args.alg.into())?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let key_path = args.out.join(PRIVATE_KEY_FILE);
    write_private(&key_path, key.private_key_pem().as_bytes(), args.force)?;
    let jwks = pretty(&serde_json::to_value(key.jwks())?);
    let jwks_path = args.out.join(JWKS_FILE);
    std::fs::write(&jwks_path, format!("{jwks}\n"))
        .map_err(|e| format!("cannot write {}: {e}", jwks_path.display()))?;
    println!("{jwks}");
    eprintln!(
        "wrote {} (mode 0600) and {}; kid {}",
        key_path.display(),
        jwks_path.display(),
        key.kid()
    );
    Ok(())
}

/// Writes a file readable by its owner only; refuses to replace an existing file unless `force`.
fn write_private(path: &Path, contents: &[u8], force: bool) -> Result<(), BoxError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    if force && path.exists() {
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            format!("{} exists; use --force to replace it", path.display())
        } else {
            format!("cannot create {}: {e}", path.display())
        }
    })?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}
