//! Outcome codes by name, as portals, `relayctl` and the agent's event log
//! print them: the same code must read the same everywhere.

/// The stable name of an outcome code, for events and logs.
pub fn outcome_name(code: u16) -> &'static str {
    envelope::Outcome::from_code(code).map_or("UNKNOWN", envelope::Outcome::name)
}
