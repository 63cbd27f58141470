//! One subcommand a file.

pub mod check;
pub mod explain;
pub mod serve;
