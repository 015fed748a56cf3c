//! Vigil's end-to-end tests: one binary, shared harness in `vigil_tests`.

mod adversarial;
mod alerts;
mod backtest;
mod bench_cli;
mod cli;
mod commands;
mod containment;
mod deadlines;
mod determinism;
mod directory;
mod edge_limits;
mod ingest;
mod lifecycle;
mod live;
mod metrics;
mod openapi;
mod policy_cli;
mod policy_vectors;
mod replay_runs;
mod scale_out;
mod storage;
mod trust;
mod vectors;
mod wit_versions;
