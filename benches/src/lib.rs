//! Bench-only code shared by the bench binaries (`src/bin`) and the criterion benches.

pub mod national;
