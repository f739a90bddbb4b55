//! Tests that cross crates live in tests/tests/ (the binary-driving end-to-end tests are in cli/tests/,
//! where Cargo exposes the built `spark` binary).
