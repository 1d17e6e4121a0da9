//! What an agent answered a request: carried by its session to the routing
//! task that waits for it, and kept in an outcome record when it comes late.
//! Below both `sessions` and `outcomes`, so neither needs the other.

/// What an agent answered.
#[derive(Debug, Clone)]
pub enum AgentAnswer {
    Envelope(Vec<u8>),
    /// `refusal`: the agent's `AgentError.refusal`, unchanged.
    Error {
        code: i32,
        refusal: i32,
        message: String,
    },
}
