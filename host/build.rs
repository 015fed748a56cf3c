//! Builds the bundled policies for `wasm32-wasip2` from source and hands their paths to
//! `include_bytes!`: the default policy (`policies/default`) through
//! `VIGIL_DEFAULT_POLICY_WASM`, the reputation policy (`policies/reputation`) through
//! `VIGIL_REPUTATION_POLICY_WASM`.
//!
//! Each is its own `cargo build` in its own target dir: built together, cargo would unify the
//! default crate's features and the reputation policy (which uses it as a library without its
//! exports) would export the default's functions too; built in one dir, the default crate
//! rebuilt as the reputation's dependency would overwrite the bundled default component. The
//! guests build under their own target dir (`target/policies`) so they never wait on the outer
//! build's lock. If the wasm target is missing, it is installed with rustup (the project's own
//! files install what a fresh machine lacks); if that is impossible the build fails with one line
//! saying how to install it.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("host/ sits in the workspace root")
        .to_path_buf();
    for watched in [
        "policies/default",
        "policies/reputation",
        "policies/sdk",
        "wit",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    ensure_target_installed();

    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| if d.is_absolute() { d } else { root.join(d) })
        .unwrap_or_else(|| root.join("target"))
        .join("policies")
        .join(checkout_key(&root));
    let wasm = build_guest(
        &root,
        &target_dir,
        "vigil-policy-default",
        "vigil_policy_default",
    );
    println!(
        "cargo:rustc-env=VIGIL_DEFAULT_POLICY_WASM={}",
        wasm.display()
    );
    // Its own target dir too: as a dependency the default crate is built again without its
    // exports, and that cdylib would overwrite the bundled default's in a shared dir.
    let reputation = build_guest(
        &root,
        &target_dir.join("reputation"),
        "vigil-policy-reputation",
        "vigil_policy_reputation",
    );
    println!(
        "cargo:rustc-env=VIGIL_REPUTATION_POLICY_WASM={}",
        reputation.display()
    );
}

/// One guest target dir per checkout: several worktrees sharing one `CARGO_TARGET_DIR` would
/// otherwise overwrite each other's component between this script and `include_bytes!`.
fn checkout_key(root: &Path) -> String {
    // FNV-1a over the path: stable across runs and toolchains (std's hasher is not).
    let hash = root
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{hash:016x}")
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name}"))
}

/// Fails with one clear line when the wasm target can't be had.
fn ensure_target_installed() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = |s: &Option<PathBuf>| {
        s.as_ref()
            .is_some_and(|s| s.join("lib/rustlib").join(TARGET).is_dir())
    };
    if installed(&sysroot) {
        return;
    }
    let added = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .is_ok_and(|s| s.success());
    if !added || !installed(&sysroot) {
        panic!("the {TARGET} target is missing: run `rustup target add {TARGET}`");
    }
}

fn build_guest(root: &Path, target_dir: &Path, package: &str, artifact: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            TARGET,
            "-p",
            package,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        // Guests ship small: no debug info (the workspace's release profile keeps line tables
        // for the host's profiles).
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true");
    // The outer build's wrappers and flags (clippy, coverage, ...) are for native code.
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_PRIMARY_PACKAGE",
        // Test-only version override of the default policy (see policies/default).
        "VIGIL_POLICY_VERSION",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("cargo runs");
    if !status.success() {
        panic!("building the {package} policy for {TARGET} failed (see the output above)");
    }
    target_dir
        .join(TARGET)
        .join("release")
        .join(format!("{artifact}.wasm"))
}
