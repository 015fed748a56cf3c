//! `vigil keygen`: create an agent key pair.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::Args;
use ed25519_dalek::SigningKey;

use crate::ingest::signature::{public_key_of, signing_key_from_text, signing_key_to_pem};

/// Arguments of `vigil keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the private key (mode 0600).
    #[arg(long, short, default_value = "agent.key")]
    pub out: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
    /// The file's form: `base64` (the 32-byte seed on one line) or `pem` (PKCS#8, as OpenSSL
    /// and other languages' libraries read and write it). Every command reads both.
    #[arg(long, value_enum, default_value_t = KeyFormat::Base64)]
    pub format: KeyFormat,
}

/// How a private key file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyFormat {
    /// Base64 of the 32-byte seed.
    Base64,
    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    Pem,
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
    match args.format {
        KeyFormat::Base64 => writeln!(file, "{}", STANDARD.encode(key.to_bytes()))?,
        KeyFormat::Pem => write!(file, "{}", signing_key_to_pem(&key)?)?,
    }
    let public = public_key_of(&key);
    println!("private key: {}", args.out.display());
    println!("public key:  {}", public.to_base64());
    println!("fingerprint: {}", public.fingerprint());
    Ok(())
}

/// Reads a private key file: `vigil keygen`'s base64 seed or a PKCS#8 PEM key (`vigil keygen
/// --format pem`, `openssl genpkey -algorithm ed25519`).
pub fn read_key(path: &std::path::Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading key file {}", path.display()))?;
    signing_key_from_text(&text).with_context(|| {
        format!(
            "key file {}: expected base64 of a 32-byte ed25519 seed or a PKCS#8 PEM ed25519 key",
            path.display()
        )
    })
}
