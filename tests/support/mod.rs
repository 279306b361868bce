//! Helpers shared by the test binaries: a scripted token source and echoing services (`common`),
//! the recommended stack on the emulator (`stack`), the emulator wired to an `SpApiTokenSource`
//! (`amazon`), a real Redis (`redis_server`), a port where nothing
//! listens (`dead_port`) and a log capture (`capture`). Each binary uses a part of them.
#![allow(dead_code, unreachable_pub)]

pub mod amazon;
pub mod capture;
pub mod common;
pub mod dead_port;
pub mod redis_server;
pub mod stack;
