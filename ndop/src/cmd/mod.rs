//! One subcommand per file, all of the same shape: an args struct whose doc comments are the
//! help text, and a `run` that returns an exit code. No command imports another; what they
//! share is in `args`, `report`, `pipeline` and `sample`.

pub mod collect;
pub mod demo;
pub mod filter;
pub mod generate;
pub mod prepare;
pub mod reconcile;
pub mod run;
pub mod send;
pub mod validate;
