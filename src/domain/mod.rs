//! Owns the pure rules of billing: the catalogue, the access table, the free-tier window and admit
//! rule, subscription statuses, parsed identifiers, time and money. Nothing here touches a
//! database, the network or a runtime (a test reads the sources to keep it so).

pub mod access;
pub mod catalogue;
pub mod clock;
pub mod ids;
pub mod money;
pub mod subscription;
pub mod usage;
