//! Tools to exercise Switchboard: the mock OpenAI upstream every test uses.

pub mod mock;

pub use mock::{Behaviour, Fault, MockConfig, MockHandle, MockUpstream, Recorded};
