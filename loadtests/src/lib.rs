//! Tools to exercise Switchboard: the mock OpenAI upstream every test uses,
//! and the `switchboard-load` load generator.

pub mod mock;

pub use mock::{Behaviour, Fault, LineEnding, MockConfig, MockHandle, MockUpstream, Recorded};
pub mod load;
