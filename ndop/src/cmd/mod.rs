//! One subcommand per file, all of the same shape: an args struct whose doc comments are the
//! help text, and a `run` that returns an exit code. No command imports another; what they
//! share is in `args`, `report`, `pipeline`, `evidence` and `sample`.

pub(crate) mod cache;
pub(crate) mod collect;
pub(crate) mod demo;
pub(crate) mod filter;
pub(crate) mod generate;
pub(crate) mod prepare;
pub(crate) mod reconcile;
pub(crate) mod report;
pub(crate) mod run;
pub(crate) mod send;
pub(crate) mod validate;
