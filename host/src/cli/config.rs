//! `vigil config check FILE…` and `vigil config show`.

use std::path::PathBuf;

use clap::Subcommand;

use crate::config::{Config, layers};

/// `vigil config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check configuration files: each error as `FILE:LINE:COLUMN: error: …`; exit 1 if any.
    /// The environment is not applied (it checks the files).
    Check {
        /// The files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the effective configuration (defaults, the file, then `VIGIL_*__*` variables) as
    /// TOML, secrets shown as `<redacted>`.
    Show {
        /// Configuration file.
        #[arg(long, short, env = "VIGIL_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// Runs `vigil config …`; `Ok(false)` when a check found errors.
pub fn run(command: ConfigCommand) -> anyhow::Result<bool> {
    match command {
        ConfigCommand::Check { files } => {
            let mut clean = true;
            for file in &files {
                let lines = layers::check_file(file);
                clean &= lines.is_empty();
                for line in lines {
                    println!("{line}");
                }
            }
            if clean {
                println!("ok: {} file(s) valid", files.len());
            }
            Ok(clean)
        }
        ConfigCommand::Show { config } => {
            let config = match &config {
                Some(path) => Config::load(path)?,
                None => Config::from_toml("")?,
            };
            print!("{}", layers::show(&config)?);
            Ok(true)
        }
    }
}
