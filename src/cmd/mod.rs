//! One subcommand a file.

pub mod check;
pub mod compare;
pub mod convert;
pub mod doctor;
pub mod explain;
pub mod serve;
