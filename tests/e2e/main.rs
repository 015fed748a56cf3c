//! Vigil's end-to-end tests: one binary, shared harness in `vigil_tests`.

mod backtest;
mod cli;
mod containment;
mod deadlines;
mod determinism;
mod directory;
mod ingest;
mod lifecycle;
mod policy_cli;
mod policy_vectors;
mod storage;
mod vectors;
