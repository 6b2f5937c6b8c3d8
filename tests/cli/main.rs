//! The integration tests, one binary (linked once): each module an area,
//! each test the real `msgext` binary (or the library's export) against
//! the simulator on port 0, the lake read back through the Delta kernel.
//! The crash tests are their own binary (`tests/crash.rs`).

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/s3server.rs"]
mod s3server;

mod changed;
mod delta;
mod discover;
mod e2e;
mod faults;
mod groups;
mod guards;
mod incremental;
mod layers;
mod listen;
mod s3;
mod vacuum;
mod verify;
mod writers;
