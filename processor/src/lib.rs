//! NHS-number extract engine.
