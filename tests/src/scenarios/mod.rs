//! One table of directory scenarios, run through the whole relay (sealed
//! portal, broker, agent) against any directory backend a [`Lab`] builds:
//! the embedded forest here, a real Samba DC in `tests/tests/samba`. The
//! embedded model exists to behave like Active Directory; running the same
//! table against both, and comparing, keeps it from drifting again.
//!
//! Each scenario has a user of its own (so the agent's per-account limit
//! and earlier steps never leak into another scenario), set up in a state,
//! then a sequence of operations with the outcome and details expected.
//! Passwords avoid the account and display names, where Windows and Samba
//! differ (Samba 4.17 does not enforce that part of complexity).

use envelope::body::outcome;
use envelope::{Anchor, Password, ReplyBody, RequestBody};
use proto::pb::Operation;

use crate::deployment::{Deployment, detail};

/// Every scenario user's password when the lab creates it.
pub const INITIAL: &str = "Initial-Passw0rd-2024";

/// The state a lab puts a scenario's user in before its steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// Enabled, delegated, unlocked.
    Ordinary,
    Disabled,
    /// Locked out now (the lockout has not expired).
    Locked,
    /// In an OU below the delegation whose DACL is protected.
    Blocked,
    /// Never created: its name resolves to nothing.
    Missing,
    /// Moved to another delegated OU after the agent imported it.
    Moved,
    /// Deleted after the agent imported it.
    Deleted,
}

/// One operation, by the portal.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    Reset(&'static str),
    /// A reset that also clears the lockout (as the reference portal sends).
    ResetUnlock(&'static str),
    Change {
        current: &'static str,
        new: &'static str,
    },
    Unlock,
    Policy,
}

/// What a step must answer: the outcome and details that must be present.
#[derive(Debug, Clone)]
pub struct Expect {
    pub outcome: u16,
    pub details: Vec<(&'static str, &'static str)>,
}

fn expect(outcome: u16, details: &[(&'static str, &'static str)]) -> Expect {
    Expect {
        outcome,
        details: details.to_vec(),
    }
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub setup: Setup,
    pub steps: Vec<(Step, Expect)>,
}

/// The table. Both labs give their domain the same policy: minimum length
/// 7, complexity, history 24, no minimum age.
pub fn table() -> Vec<Scenario> {
    use Step::*;
    vec![
        Scenario {
            name: "resets",
            setup: Setup::Ordinary,
            steps: vec![
                (
                    Policy,
                    expect(
                        outcome::SUCCESS,
                        &[
                            ("min_length", "7"),
                            ("complexity", "true"),
                            ("history_length", "24"),
                        ],
                    ),
                ),
                (
                    Reset("Ab1!"),
                    expect(outcome::PASSWORD_TOO_SHORT, &[("min_length", "7")]),
                ),
                // A space counts in no category: lower case and a digit only.
                (
                    Reset("correct horse battery 9"),
                    expect(
                        outcome::FAILS_COMPLEXITY,
                        &[("missing", "uppercase letter, symbol")],
                    ),
                ),
                // No history on an administrative reset.
                (Reset(INITIAL), expect(outcome::SUCCESS, &[])),
                (Reset("Reset-Passw0rd-2024"), expect(outcome::SUCCESS, &[])),
            ],
        },
        Scenario {
            name: "changes",
            setup: Setup::Ordinary,
            steps: vec![
                (
                    Change {
                        current: "Not-The-Passw0rd-1",
                        new: "Changed-Passw0rd-2024",
                    },
                    expect(outcome::WRONG_CURRENT_PASSWORD, &[]),
                ),
                (
                    Change {
                        current: INITIAL,
                        new: INITIAL,
                    },
                    expect(outcome::IN_HISTORY, &[("history_length", "24")]),
                ),
                (
                    Change {
                        current: INITIAL,
                        new: "Changed-Passw0rd-2024",
                    },
                    expect(outcome::SUCCESS, &[]),
                ),
                (
                    Change {
                        current: "Changed-Passw0rd-2024",
                        new: INITIAL,
                    },
                    expect(outcome::IN_HISTORY, &[("history_length", "24")]),
                ),
            ],
        },
        Scenario {
            name: "disabled",
            setup: Setup::Disabled,
            steps: vec![
                (
                    Reset("Reset-Passw0rd-2024"),
                    expect(outcome::ACCOUNT_DISABLED, &[]),
                ),
                (
                    Change {
                        current: INITIAL,
                        new: "Changed-Passw0rd-2024",
                    },
                    expect(outcome::ACCOUNT_DISABLED, &[]),
                ),
            ],
        },
        Scenario {
            name: "locked, then a reset that unlocks",
            setup: Setup::Locked,
            steps: vec![
                (
                    Change {
                        current: INITIAL,
                        new: "Changed-Passw0rd-2024",
                    },
                    expect(outcome::ACCOUNT_LOCKED, &[]),
                ),
                (
                    ResetUnlock("Reset-Passw0rd-2024"),
                    expect(outcome::SUCCESS, &[]),
                ),
                (
                    Change {
                        current: "Reset-Passw0rd-2024",
                        new: "Changed-Passw0rd-2024",
                    },
                    expect(outcome::SUCCESS, &[]),
                ),
            ],
        },
        Scenario {
            name: "locked, then unlocked",
            setup: Setup::Locked,
            steps: vec![
                (Unlock, expect(outcome::SUCCESS, &[])),
                (
                    Change {
                        current: INITIAL,
                        new: "Changed-Passw0rd-2024",
                    },
                    expect(outcome::SUCCESS, &[]),
                ),
            ],
        },
        Scenario {
            name: "inheritance blocked",
            setup: Setup::Blocked,
            steps: vec![(
                Reset("Reset-Passw0rd-2024"),
                expect(outcome::PERMISSION_DENIED, &[("right", "Reset Password")]),
            )],
        },
        Scenario {
            name: "moved while the agent runs",
            setup: Setup::Moved,
            steps: vec![
                (Reset("Reset-Passw0rd-2024"), expect(outcome::SUCCESS, &[])),
                (
                    Change {
                        current: "Reset-Passw0rd-2024",
                        new: "Changed-Passw0rd-2024",
                    },
                    expect(outcome::SUCCESS, &[]),
                ),
            ],
        },
        Scenario {
            name: "deleted while the agent runs",
            setup: Setup::Deleted,
            steps: vec![
                (
                    Reset("Reset-Passw0rd-2024"),
                    expect(outcome::USER_NOT_FOUND, &[]),
                ),
                (Policy, expect(outcome::USER_NOT_FOUND, &[])),
            ],
        },
        Scenario {
            name: "no such account",
            setup: Setup::Missing,
            steps: vec![
                (
                    Reset("Reset-Passw0rd-2024"),
                    expect(outcome::USER_NOT_FOUND, &[]),
                ),
                (Policy, expect(outcome::USER_NOT_FOUND, &[])),
            ],
        },
    ]
}

/// A directory a scenario table runs against.
#[tonic::async_trait]
pub trait Lab: Send {
    /// Short name for messages ("embedded", "samba").
    fn name(&self) -> &'static str;

    /// Creates one user per scenario (`users[i]` is scenario i's
    /// sAMAccountName, in the state given) and returns the agent's
    /// `[[forests]]` section for the directory.
    async fn prepare(&mut self, users: &[(String, Setup)]) -> String;

    /// Once the agent runs and has imported everyone: moves a
    /// [`Setup::Moved`] user, deletes a [`Setup::Deleted`] one.
    async fn disturb(&mut self, sam: &str, setup: Setup);

    /// The userPrincipalName of a user `prepare` was given.
    fn upn(&self, sam: &str) -> String;
}

/// What one step answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub scenario: &'static str,
    pub step: usize,
    pub reply: ReplyBody,
}

/// Runs the table through a fresh deployment whose agent acts in the lab's
/// directory; `tag` keeps the users' names apart from earlier runs.
pub async fn run(lab: &mut dyn Lab, tag: &str) -> Vec<Answer> {
    let table = table();
    let users: Vec<(String, Setup)> = table
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("sc{i}{tag}"), s.setup))
        .collect();
    let section = lab.prepare(&users).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let d = Deployment::start_with(dir, &section, "").await;
    for (sam, setup) in &users {
        if matches!(setup, Setup::Moved | Setup::Deleted) {
            lab.disturb(sam, *setup).await;
        }
    }
    let mut answers = Vec::new();
    for (scenario, (sam, _)) in table.iter().zip(&users) {
        let anchor = Anchor::UserPrincipalName(lab.upn(sam));
        for (i, (step, _)) in scenario.steps.iter().enumerate() {
            let reply = perform(&d, anchor.clone(), *step).await;
            answers.push(Answer {
                scenario: scenario.name,
                step: i,
                reply,
            });
        }
    }
    d.stop().await;
    answers
}

async fn perform(d: &Deployment, anchor: Anchor, step: Step) -> ReplyBody {
    match step {
        Step::Reset(p) => d.reset(anchor, p).await,
        Step::ResetUnlock(p) => {
            let body = RequestBody {
                unlock: true,
                ..RequestBody::reset(anchor, Password::new(p))
            };
            d.ask(Operation::ResetPassword, body).await
        }
        Step::Change { current, new } => d.change(anchor, current, new).await,
        Step::Unlock => {
            d.ask(
                Operation::UnlockAccount,
                RequestBody::without_passwords(anchor),
            )
            .await
        }
        Step::Policy => {
            d.ask(
                Operation::GetPasswordPolicy,
                RequestBody::without_passwords(anchor),
            )
            .await
        }
    }
}

/// Every way the answers differ from the table, one line each.
pub fn mismatches(lab: &str, answers: &[Answer]) -> Vec<String> {
    let table = table();
    let mut out = Vec::new();
    for a in answers {
        let scenario = table
            .iter()
            .find(|s| s.name == a.scenario)
            .expect("scenario");
        let (step, want) = &scenario.steps[a.step];
        if a.reply.outcome != want.outcome {
            out.push(format!(
                "{lab}: {} step {} ({step:?}): outcome {} (want {}): {:?}",
                a.scenario, a.step, a.reply.outcome, want.outcome, a.reply.message
            ));
            continue;
        }
        for (key, value) in &want.details {
            if detail(&a.reply, key) != Some(value) {
                out.push(format!(
                    "{lab}: {} step {} ({step:?}): detail {key} = {:?} (want {value:?})",
                    a.scenario,
                    a.step,
                    detail(&a.reply, key)
                ));
            }
        }
    }
    out
}

/// Where two labs answered differently (outcome and every detail key the
/// table names), one line each.
pub fn differences(a: &[Answer], b: &[Answer]) -> Vec<String> {
    let table = table();
    a.iter()
        .zip(b)
        .filter_map(|(x, y)| {
            let scenario = table.iter().find(|s| s.name == x.scenario)?;
            let (step, want) = &scenario.steps[x.step];
            let same = x.reply.outcome == y.reply.outcome
                && want
                    .details
                    .iter()
                    .all(|(k, _)| detail(&x.reply, k) == detail(&y.reply, k));
            (!same).then(|| {
                format!(
                    "{} step {} ({step:?}): {} {:?} vs {} {:?}",
                    x.scenario,
                    x.step,
                    x.reply.outcome,
                    x.reply.message,
                    y.reply.outcome,
                    y.reply.message
                )
            })
        })
        .collect()
}

pub mod embedded;
