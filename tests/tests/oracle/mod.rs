//! The forensic oracle's parts: its own policy reader and calendar
//! ([`policy`]), its model of the privacy notice's timeline ([`model`]), the
//! tape check of I2 ([`tape_check`]) and the simulation ([`sim`]).

pub(crate) mod model;
pub(crate) mod policy;
pub(crate) mod sim;
pub(crate) mod tape_check;
