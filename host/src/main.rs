//! The `vigil` binary: everything lives in the library ([`vigil::cli::main`]).

fn main() -> std::process::ExitCode {
    vigil::cli::main()
}
