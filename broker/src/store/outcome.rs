//! The outcome store's vocabulary: what is kept of a relayed request's
//! outcome ([`OutcomeRecord`]), who may write one ([`Admission`]), and what
//! the records say of an answer posted late ([`LateCheck`]). Both outcome
//! backends and the outcome service above them speak it.

use crate::answer::AgentAnswer;

/// What the broker knows of a request's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeRecord {
    /// Empty while the agent is not known yet (or was lost with a forward).
    pub agent_id: String,
    /// Whether the agent acknowledged the request: awaited records say
    /// what the portal was told with OUTCOME_UNKNOWN; an answer implies it.
    pub acknowledged: bool,
    pub expires_unix_ms: i64,
    /// `None` while the broker still waits for the agent to post it.
    pub answer: Option<StoredAnswer>,
}

/// `refusal` is the agent's `AgentError.refusal`, unchanged (0: none, and
/// in records written before it was kept: format 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredAnswer {
    Envelope(Vec<u8>),
    /// An agent's error as the agent posted it (a late answer).
    Error {
        code: i32,
        refusal: i32,
        message: String,
    },
    /// The agent's error as the portal was told it: the code is in the text
    /// already (`RelayError::from_agent`).
    Failed {
        refusal: i32,
        message: String,
    },
}

/// Who asks to record an answer, which decides whether it may make a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The routing task of a request the broker relayed.
    Relayed,
    /// An agent posting an answer nobody waits for any more: kept only over
    /// an awaited record naming that agent (or no agent), so that an agent
    /// cannot fill the store with replies to requests it was never given.
    Late,
}

/// What the records say about an answer posted late.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LateCheck {
    /// Awaited from this agent: the answer may be written.
    Awaited,
    /// Answered already: a repeat of an answer that was kept.
    Answered,
    /// Never relayed to this agent, or expired: nobody awaits it.
    NotAwaited,
    /// The records are not known without asking the store (cluster mode).
    Unknown,
}

impl OutcomeRecord {
    /// Whether an answer `agent_id` posted late may replace this record:
    /// only the agent the request was given to, or any of the tenant's when
    /// the broker lost track of which (a forward lost with its node).
    pub fn admits_late(&self, agent_id: &str) -> bool {
        self.answer.is_none() && (self.agent_id.is_empty() || self.agent_id == agent_id)
    }
}

impl From<AgentAnswer> for StoredAnswer {
    fn from(a: AgentAnswer) -> StoredAnswer {
        match a {
            AgentAnswer::Envelope(e) => StoredAnswer::Envelope(e),
            AgentAnswer::Error {
                code,
                refusal,
                message,
            } => StoredAnswer::Error {
                code,
                refusal,
                message,
            },
        }
    }
}
