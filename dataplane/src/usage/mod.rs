//! Usage on the data plane (the record of each request is made in
//! [`crate::account`]): token counts read from relayed bodies
//! ([`scan`]), and the pipeline that
//! takes records off the workers to the database ([`pipeline`]) and the
//! access log ([`access`]).

pub mod access;
pub mod pipeline;
pub mod scan;
