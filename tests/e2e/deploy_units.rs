//! The systemd units in `deploy/` are valid: `systemd-analyze verify` accepts each (with its
//! `ExecStart` pointed at the binary under test), and the `vigil` command line each runs
//! parses. Skipped with a notice where systemd's tools are not installed.

use std::process::Command;

use vigil_tests::process::vigil_binary;
use vigil_tests::workspace_root;

const INSTALLED: &str = "/usr/local/bin/vigil";

#[test]
fn the_systemd_units_verify_and_their_command_lines_parse() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("\nNOTICE: the systemd unit check is SKIPPED (no systemd-analyze).\n");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let binary = vigil_binary().to_str().expect("UTF-8 path");
    for unit in ["vigil.service", "vigil-agent.service"] {
        let text =
            std::fs::read_to_string(workspace_root().join("deploy").join(unit)).expect("unit file");
        let exec = text
            .lines()
            .find_map(|line| line.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{unit} has an ExecStart"));
        let args: Vec<&str> = exec
            .strip_prefix(INSTALLED)
            .unwrap_or_else(|| panic!("{unit} runs {INSTALLED}"))
            .split_whitespace()
            .collect();
        let copy = dir.path().join(unit);
        std::fs::write(&copy, text.replace(INSTALLED, binary)).expect("write unit");
        let verify = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&copy)
            .output()
            .expect("systemd-analyze runs");
        let said = String::from_utf8_lossy(&verify.stderr);
        assert!(
            verify.status.success() && said.trim().is_empty(),
            "{unit}: {said}"
        );
        // `--help` after the unit's own arguments: clap parses them all first, so a renamed
        // subcommand or flag fails here.
        let help = Command::new(binary)
            .args(&args)
            .arg("--help")
            .output()
            .expect("vigil runs");
        assert!(
            help.status.success(),
            "{unit}: `vigil {}` does not parse: {}",
            args.join(" "),
            String::from_utf8_lossy(&help.stderr)
        );
    }
}
