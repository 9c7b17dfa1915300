//! Test support shared by `breakerd-bench` and `breakerd-chaos`: the pieces
//! both need to run a coordinator (or Redis) as a separate process and
//! measure it from outside.
//!
//! - [`process`]: start a program, directly or under `taskset`/`nice`, hold
//!   it in a guard that kills it when dropped, read its stdout without ever
//!   blocking it, and signal it.
//! - [`net`]: a free loopback port.
//! - [`log`]: fields of breakerd's JSON log lines (`listen_addr`, ...).
//! - [`procfs`]: what `/proc` says about a process: CPU time and resident
//!   memory.
//!
//! Linux only in practice (`/proc`, `kill(1)`, `taskset`); everything that
//! reads the system degrades to `None` or an error rather than panicking.

#![forbid(unsafe_code)]

pub mod log;
pub mod net;
pub mod process;
pub mod procfs;
