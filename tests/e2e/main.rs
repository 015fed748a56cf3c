//! Vigil's end-to-end tests: one binary, shared harness in `vigil_tests`.

mod alerts;
mod cli;
mod commands;
mod containment;
mod deadlines;
mod determinism;
mod directory;
mod ingest;
mod live;
mod metrics;
mod openapi;
mod storage;
mod trust;
mod vectors;
