//! `vigil keygen`: create an agent key pair.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::Args;
use ed25519_dalek::SigningKey;

use crate::ingest::signature::{public_key_of, signing_key_from_base64};

/// Arguments of `vigil keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the private key (base64 of the 32-byte seed, mode 0600).
    #[arg(long, short, default_value = "agent.key")]
    pub out: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
}

/// Writes a new key and prints its public half and fingerprint.
pub fn run(args: KeygenArgs) -> anyhow::Result<()> {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if args.force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&args.out)
        .with_context(|| format!("creating {} (use --force to overwrite)", args.out.display()))?;
    writeln!(file, "{}", STANDARD.encode(key.to_bytes()))?;
    let public = public_key_of(&key);
    println!("private key: {}", args.out.display());
    println!("public key:  {}", public.to_base64());
    println!("fingerprint: {}", public.fingerprint());
    Ok(())
}

/// Reads a key file written by `vigil keygen`.
pub fn read_key(path: &std::path::Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading key file {}", path.display()))?;
    signing_key_from_base64(&text).with_context(|| format!("key file {}", path.display()))
}
