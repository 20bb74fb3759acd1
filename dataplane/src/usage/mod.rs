//! Usage accounting on the data plane: token counts read from relayed bodies
//! ([`scan`]), the record of each request ([`record`]), and the pipeline that
//! takes records off the workers to the database ([`pipeline`]) and the
//! access log ([`access`]).

pub mod access;
pub mod pipeline;
pub mod record;
pub mod scan;
