//! The `vigil` program under the test crate's own binary name, so end-to-end tests can run the
//! real CLI (`CARGO_BIN_EXE_vigil-e2e`): `main` is the library's, byte for byte the same code.

fn main() -> std::process::ExitCode {
    vigil::cli::main()
}
