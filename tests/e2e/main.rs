//! Vigil's end-to-end tests: one binary, shared harness in `vigil_tests`.

mod cli;
mod containment;
mod deadlines;
mod determinism;
mod directory;
mod ingest;
mod scale_out;
mod storage;
mod vectors;
