//! The `vigil` program under the test crate's own binary name, so end-to-end tests can run the
//! real CLI (`vigil_tests::Cli`, `vigil_tests::ServeProcess`): `main` is the library's, byte
//! for byte the same code.

fn main() -> std::process::ExitCode {
    vigil::cli::main()
}
