//! What a node does for its peers: run commands, read and write files (keeping backups of
//! what edits overwrite), and describe its host. The callers' side of file streams lives here
//! too, next to the server side it talks to.

pub mod backups;
mod confine;
pub(crate) mod exec;
pub(crate) mod file_client;
pub(crate) mod fs;
pub(crate) mod os_info;
pub(crate) mod task;
