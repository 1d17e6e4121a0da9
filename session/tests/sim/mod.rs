//! The two ends of a session connected through a simulated network, on a
//! fake clock, with the delivery rules checked as invariants.
//!
//! Shared by `tests/pair.rs` (scripted and seeded runs) and by the fuzz
//! target `fuzz/fuzz_targets/session_pair.rs` (which includes this file by
//! path), so that what the fuzzer explores and what CI replays are the same
//! world. Its drivers do what the real ones do, minus I/O: the broker's
//! accepts every Hello and token, routes each request to the newest open
//! session, re-routes a request only when it was not delivered, and keeps
//! one outcome record per request (answered, awaited after an unknown
//! outcome, filled by a late answer); the agent's applies each request it
//! is handed after a while and reconnects a second after a session ends.
//! The network carries frames in order per connection, with faults chosen
//! by the script: extra delay, duplicated frames, a connection that goes
//! silent in one or both directions, a connection cut.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use proto::pb::{self, AgentFrame, BrokerFrame, GoodbyeReason};
use session::agent::{self, Agent, Event as AgentEvent, NextStep, Ticket};
use session::broker::{self, Answer, BrokerSession, Event as BrokerEvent, LateVerdict, RequestEnd};

pub const HEARTBEAT: Duration = Duration::from_secs(20);
/// How long the portal waits for each request.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// One-way latency of a healthy network.
pub const LATENCY: Duration = Duration::from_millis(5);
/// The agent's pause before reconnecting (its backoff, made fixed).
pub const RECONNECT: Duration = Duration::from_secs(1);

/// Where a run's choices come from: fuzz input bytes, or a seeded generator.
pub trait Source {
    /// The next choice; a source that ran dry answers 0.
    fn byte(&mut self) -> u8;
}

/// A source reading bytes from a fuzz input.
pub struct Bytes<'a>(pub &'a [u8]);

impl Source for Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
}

/// A seeded generator (SplitMix64): the same seed gives the same run.
pub struct Seeded(pub u64);

impl Source for Seeded {
    fn byte(&mut self) -> u8 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as u8
    }
}

enum Msg<F> {
    Frame(F),
    /// The sender's end of the stream.
    Fin,
}

struct Link<F> {
    queue: VecDeque<(Instant, Msg<F>)>,
    /// Frames written from now on are lost (a path that silently died).
    black_hole: bool,
    extra_delay: Duration,
    /// The next frame written is delivered twice.
    duplicate_next: bool,
}

impl<F: Clone> Link<F> {
    fn new() -> Link<F> {
        Link {
            queue: VecDeque::new(),
            black_hole: false,
            extra_delay: Duration::ZERO,
            duplicate_next: false,
        }
    }

    fn push(&mut self, now: Instant, msg: Msg<F>) {
        if self.black_hole {
            return;
        }
        // In order: never before what was written earlier.
        let at = (now + LATENCY + self.extra_delay).max(self.queue.back().map_or(now, |(t, _)| *t));
        if let (true, Msg::Frame(f)) = (self.duplicate_next, &msg) {
            self.duplicate_next = false;
            self.queue.push_back((at, Msg::Frame(f.clone())));
        }
        self.queue.push_back((at, msg));
    }

    fn due(&mut self, now: Instant) -> Option<Msg<F>> {
        if self.queue.front().is_some_and(|(t, _)| *t <= now) {
            self.queue.pop_front().map(|(_, m)| m)
        } else {
            None
        }
    }
}

struct Conn {
    broker: BrokerSession,
    to_agent: Link<BrokerFrame>,
    to_broker: Link<AgentFrame>,
    /// The agent's session generation on this connection.
    generation: u64,
    /// The agent has let go of this connection.
    agent_done: bool,
    /// The broker has let go of it (closed, Fin queued).
    broker_done: bool,
}

/// How a request ended for its portal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The answer came on the session that carried the request.
    Answered,
    /// OUTCOME_UNKNOWN (the session ended, no Ack in time, or the deadline
    /// passed while the agent may have had it).
    Unknown { acknowledged: bool },
    /// It never reached an agent: NO_AGENT_ONLINE at its deadline.
    NoAgent,
}

#[derive(Debug)]
struct Req {
    deadline: Instant,
    /// The attempt in flight: (connection, correlation id).
    in_flight: Option<(usize, u64)>,
    /// Relayed to a stream at least once, so the agent may hold it.
    relayed: bool,
    outcome: Option<Outcome>,
    /// The broker's outcome record: the agent's answer, once it has it.
    answer: Option<Vec<u8>>,
}

/// The world: both ends, the network, the clock and the books.
pub struct Pair {
    t0: Instant,
    pub now: Instant,
    pub agent: Agent,
    conns: Vec<Conn>,
    /// When the agent connects again, if its session is over.
    reconnect_at: Option<Instant>,
    /// The agent's handler: (done at, ticket), in no particular order.
    work: Vec<(Instant, Ticket)>,
    /// How long the handler takes, changed by the script.
    work_time: Duration,
    /// How often each request id was applied.
    applied: BTreeMap<String, u32>,
    /// Request ids whose RelayedRequest the agent read.
    read: HashSet<String>,
    reqs: BTreeMap<String, Req>,
    /// Attempts that ended, to see each end exactly once.
    ended: HashSet<(usize, u64)>,
    next_id: u32,
    pub sessions_opened: u32,
}

/// What each request's answer looks like: the agent's, recognisably.
pub fn answer_of(request_id: &str) -> Vec<u8> {
    format!("done:{request_id}").into_bytes()
}

impl Pair {
    pub fn new() -> Pair {
        let now = Instant::now();
        let mut pair = Pair {
            t0: now,
            now,
            agent: Agent::new(agent::Config {
                token_lifetime: Duration::from_secs(600),
                ..agent::Config::default()
            }),
            conns: Vec::new(),
            reconnect_at: None,
            work: Vec::new(),
            work_time: Duration::from_millis(200),
            applied: BTreeMap::new(),
            read: HashSet::new(),
            reqs: BTreeMap::new(),
            ended: HashSet::new(),
            next_id: 0,
            sessions_opened: 0,
        };
        pair.connect();
        // Hello, Welcome: the session is open before the script begins.
        pair.run(Duration::from_millis(100));
        pair
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    fn broker_config() -> broker::Config {
        broker::Config {
            heartbeat_interval: HEARTBEAT,
            hello_timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(10),
            max_envelope_bytes: 64 * 1024,
            unsolicited_replies_per_minute: 10,
        }
    }

    fn connect(&mut self) {
        self.reconnect_at = None;
        self.conns.push(Conn {
            broker: BrokerSession::new(self.now, Self::broker_config()),
            to_agent: Link::new(),
            to_broker: Link::new(),
            generation: 0,
            agent_done: false,
            broker_done: false,
        });
        self.agent.start(
            self.now,
            pb::Hello {
                tenant: "contoso".into(),
                agent_id: "dc01".into(),
                agent_version: "sim".into(),
                token: "token".into(),
            },
        );
        let generation = self.agent.generation();
        self.conns.last_mut().expect("just pushed").generation = generation;
    }

    fn current(&self) -> Option<usize> {
        let i = self.conns.len().checked_sub(1)?;
        (!self.conns[i].agent_done).then_some(i)
    }

    /// A portal submits a request; returns its id.
    pub fn submit(&mut self) -> String {
        self.next_id += 1;
        let id = format!("r{}", self.next_id);
        self.reqs.insert(
            id.clone(),
            Req {
                deadline: self.now + DEADLINE,
                in_flight: None,
                relayed: false,
                outcome: None,
                answer: None,
            },
        );
        self.settle();
        id
    }

    /// The outcome of a request, if it has one.
    pub fn outcome(&self, id: &str) -> Option<Outcome> {
        self.reqs.get(id).and_then(|r| r.outcome.clone())
    }

    /// Every request's outcome, once the world has healed.
    pub fn outcomes(&self) -> Vec<(String, Outcome)> {
        self.reqs
            .iter()
            .filter_map(|(id, r)| Some((id.clone(), r.outcome.clone()?)))
            .collect()
    }

    /// The broker's record of a request's answer.
    pub fn answer(&self, id: &str) -> Option<&[u8]> {
        self.reqs.get(id).and_then(|r| r.answer.as_deref())
    }

    pub fn applied(&self, id: &str) -> u32 {
        self.applied.get(id).copied().unwrap_or(0)
    }

    /// The handler takes this long from now on.
    pub fn set_work_time(&mut self, d: Duration) {
        self.work_time = d;
    }

    /// The current connection stops carrying frames: both ways, or one.
    pub fn black_hole(&mut self, to_agent: bool, to_broker: bool) {
        if let Some(c) = self.conns.last_mut() {
            c.to_agent.black_hole |= to_agent;
            c.to_broker.black_hole |= to_broker;
        }
    }

    /// Frames on the current connection take `d` longer from now on.
    pub fn delay(&mut self, to_agent: Duration, to_broker: Duration) {
        if let Some(c) = self.conns.last_mut() {
            c.to_agent.extra_delay = to_agent;
            c.to_broker.extra_delay = to_broker;
        }
    }

    /// The next frame each way on the current connection arrives twice.
    pub fn duplicate(&mut self, to_agent: bool, to_broker: bool) {
        if let Some(c) = self.conns.last_mut() {
            c.to_agent.duplicate_next |= to_agent;
            c.to_broker.duplicate_next |= to_broker;
        }
    }

    /// The connection breaks and both ends see it at once.
    pub fn cut(&mut self) {
        let now = self.now;
        if let Some(i) = self.current() {
            let c = &mut self.conns[i];
            c.to_agent.queue.clear();
            c.to_broker.queue.clear();
            c.broker.stream_ended(now);
            c.agent_done = true;
            self.agent.connection_lost(now, "cut");
        }
        self.settle();
    }

    /// The broker ends the current session for a reason of its own.
    pub fn broker_close(&mut self, reason: GoodbyeReason) {
        let now = self.now;
        if let Some(c) = self.conns.last_mut() {
            c.broker.close(now, reason, "scripted");
        }
        self.settle();
    }

    /// The broker starts draining the current session.
    pub fn broker_drain(&mut self) {
        let now = self.now;
        if let Some(c) = self.conns.last_mut() {
            c.broker.drain(now);
        }
        self.settle();
    }

    /// Runs the world for `d`, waking each party when it asked to be.
    pub fn run(&mut self, d: Duration) {
        let target = self.now + d;
        loop {
            self.settle();
            match self.next_wakeup() {
                Some(t) if t <= target => {
                    self.now = self.now.max(t);
                    self.fire_timers();
                }
                _ => break,
            }
        }
        self.now = target;
        self.fire_timers();
        self.settle();
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let mut times: Vec<Instant> = Vec::new();
        times.extend(self.agent.poll_timeout());
        times.extend(self.reconnect_at);
        times.extend(self.work.iter().map(|(t, _)| *t));
        for c in &self.conns {
            times.extend(c.broker.poll_timeout());
            times.extend(c.to_agent.queue.front().map(|(t, _)| *t));
            times.extend(c.to_broker.queue.front().map(|(t, _)| *t));
        }
        for r in self.reqs.values() {
            if r.outcome.is_none() && r.in_flight.is_none() {
                times.push(r.deadline);
            }
        }
        times.into_iter().min()
    }

    fn fire_timers(&mut self) {
        let now = self.now;
        if self.agent.poll_timeout().is_some_and(|t| t <= now) {
            self.agent.handle_timeout(now);
        }
        for c in &mut self.conns {
            if c.broker.poll_timeout().is_some_and(|t| t <= now) {
                c.broker.handle_timeout(now);
            }
        }
    }

    /// Moves everything that can move at `now` until nothing does.
    fn settle(&mut self) {
        for _ in 0..100_000 {
            if !self.step() {
                return;
            }
        }
        panic!("the world does not settle");
    }

    fn step(&mut self) -> bool {
        let now = self.now;
        let mut moved = false;
        // The agent writes before it acts: an Apply follows its Ack.
        let current = self.current();
        while let Some(f) = self.agent.poll_transmit() {
            moved = true;
            if let Some(i) = current {
                self.conns[i].to_broker.push(now, Msg::Frame(f));
            }
        }
        while let Some(e) = self.agent.poll_event() {
            moved = true;
            self.agent_event(e);
        }
        for i in 0..self.conns.len() {
            while let Some(f) = self.conns[i].broker.poll_transmit() {
                moved = true;
                self.conns[i].to_agent.push(now, Msg::Frame(f));
            }
            while let Some(e) = self.conns[i].broker.poll_event() {
                moved = true;
                self.broker_event(i, e);
            }
            if let Some(m) = self.conns[i].to_broker.due(now) {
                moved = true;
                match m {
                    Msg::Frame(f) => self.conns[i].broker.handle_frame(now, f),
                    Msg::Fin => self.conns[i].broker.stream_ended(now),
                }
            }
            if let Some(m) = self.conns[i].to_agent.due(now) {
                moved = true;
                // A connection the agent let go of reaches nobody.
                if !self.conns[i].agent_done {
                    match m {
                        Msg::Frame(f) => {
                            if let Some(pb::broker_frame::Frame::Request(r)) = &f.frame {
                                self.read.insert(r.request_id.clone());
                            }
                            self.agent.handle_frame(now, f)
                        }
                        Msg::Fin => {
                            self.conns[i].agent_done = true;
                            self.agent
                                .connection_lost(now, "the broker ended the session");
                        }
                    }
                }
            }
        }
        if let Some(pos) = self.work.iter().position(|(t, _)| *t <= now) {
            moved = true;
            let (_, ticket) = self.work.swap_remove(pos);
            let answer = answer_of(&ticket.request_id);
            self.agent
                .reply(now, ticket, pb::agent_reply::Result::Envelope(answer));
        }
        if self.reconnect_at.is_some_and(|t| t <= now) {
            moved = true;
            self.connect();
        }
        moved |= self.route();
        moved
    }

    fn agent_event(&mut self, e: AgentEvent) {
        let now = self.now;
        match e {
            AgentEvent::Welcomed { .. } => self.sessions_opened += 1,
            AgentEvent::Apply(r) => {
                let n = self.applied.entry(r.request_id.clone()).or_default();
                *n += 1;
                assert_eq!(*n, 1, "{} applied twice", r.request_id);
                self.work.push((now + self.work_time, r.ticket));
            }
            AgentEvent::RenewToken => self.agent.renewed_token(now, "token".into()),
            AgentEvent::SessionOver(end) => {
                if let Some(i) = self.current() {
                    self.conns[i].agent_done = true;
                    // The agent's stream ends: the broker sees it.
                    self.conns[i].to_broker.push(now, Msg::Fin);
                }
                assert_ne!(end.next, NextStep::Stop, "the simulated agent never stops");
                let pause = if end.next == NextStep::ReconnectSoon {
                    RECONNECT / 2
                } else {
                    RECONNECT
                };
                self.reconnect_at = Some(now + pause);
            }
            AgentEvent::RefusedDraining { .. }
            | AgentEvent::Confirmed { .. }
            | AgentEvent::Ignored(_) => {}
        }
    }

    fn broker_event(&mut self, i: usize, e: BrokerEvent) {
        let now = self.now;
        match e {
            BrokerEvent::Hello(_) => {
                // A newer session of the same agent replaces the older ones.
                for (j, c) in self.conns.iter_mut().enumerate() {
                    if j != i && !c.broker.is_closed() {
                        c.broker.close(now, GoodbyeReason::Replaced, "replaced");
                    }
                }
                let welcome = pb::Welcome {
                    session_id: format!("s{i}"),
                    heartbeat_interval_ms: HEARTBEAT.as_millis() as u32,
                    max_envelope_bytes: 64 * 1024,
                    broker_time_unix_ms: 0,
                    token_expires_unix_ms: 0,
                    ack_timeout_ms: 10_000,
                    max_in_flight: 64,
                };
                self.conns[i]
                    .broker
                    .accept(now, welcome, now + Duration::from_secs(600));
            }
            BrokerEvent::RenewToken(_) => self.conns[i]
                .broker
                .renewed(now, now + Duration::from_secs(600)),
            BrokerEvent::AgentDraining | BrokerEvent::Acknowledged(_) => {}
            BrokerEvent::Ended {
                correlation_id,
                request_id,
                end,
            } => self.request_ended(i, correlation_id, &request_id, end),
            BrokerEvent::LateReply {
                correlation_id,
                request_id,
                answer,
            } => {
                let verdict = self.late_reply(&request_id, answer);
                self.conns[i]
                    .broker
                    .late_verdict(now, correlation_id, request_id, verdict);
            }
            BrokerEvent::Closed(_) => {
                let c = &mut self.conns[i];
                if !c.broker_done {
                    c.broker_done = true;
                    c.to_agent.push(now, Msg::Fin);
                }
            }
        }
    }

    fn request_ended(&mut self, conn: usize, cid: u64, id: &str, end: RequestEnd) {
        assert!(
            self.ended.insert((conn, cid)),
            "{id}: a second end for the same attempt ({end:?})"
        );
        let applied = self.applied(id);
        let req = self.reqs.get_mut(id).expect("a request the portal made");
        assert_eq!(
            req.in_flight,
            Some((conn, cid)),
            "{id}: an end for an attempt not in flight"
        );
        assert!(req.outcome.is_none(), "{id}: a second outcome ({end:?})");
        req.in_flight = None;
        let outcome = match end {
            RequestEnd::Answered { answer, .. } => {
                let Answer::Envelope(bytes) = answer else {
                    panic!("{id}: the simulated agent answers with envelopes only");
                };
                assert_eq!(applied, 1, "{id}: answered but not applied");
                assert_eq!(bytes, answer_of(id), "{id}: someone else's answer");
                if let Some(kept) = &req.answer {
                    assert_eq!(kept, &bytes, "{id}: two answers");
                }
                req.answer = Some(bytes);
                Outcome::Answered
            }
            RequestEnd::NotDelivered => {
                // Re-routed: which is safe only if nothing was applied.
                assert_eq!(applied, 0, "{id}: re-routed after being applied");
                return;
            }
            RequestEnd::Lost { acknowledged }
            | RequestEnd::DeadlineExceeded {
                sent: true,
                acknowledged,
            } => {
                if acknowledged {
                    assert_eq!(applied, 1, "{id}: acknowledged but not applied");
                }
                Outcome::Unknown { acknowledged }
            }
            RequestEnd::DeadlineExceeded { sent: false, .. } => {
                if req.relayed {
                    Outcome::Unknown {
                        acknowledged: false,
                    }
                } else {
                    Outcome::NoAgent
                }
            }
        };
        req.outcome = Some(outcome);
    }

    fn late_reply(&mut self, id: &str, answer: Answer) -> LateVerdict {
        let applied = self.applied(id);
        let Some(req) = self.reqs.get_mut(id).filter(|r| r.relayed) else {
            panic!("{id}: a reply for a request never relayed");
        };
        let Answer::Envelope(bytes) = answer else {
            panic!("{id}: the simulated agent answers with envelopes only");
        };
        assert_eq!(applied, 1, "{id}: a late answer for a request not applied");
        assert_eq!(bytes, answer_of(id), "{id}: someone else's answer");
        match &req.answer {
            Some(kept) => {
                assert_eq!(kept, &bytes, "{id}: two answers");
                LateVerdict::Duplicate
            }
            None => {
                req.answer = Some(bytes);
                LateVerdict::Taken
            }
        }
    }

    /// Gives waiting requests to the newest routable session, and ends
    /// those whose deadline passed without one.
    fn route(&mut self) -> bool {
        let now = self.now;
        let mut moved = false;
        let target = self
            .conns
            .iter()
            .rposition(|c| c.broker.is_routable() && !c.broker_done);
        let ids: Vec<String> = self
            .reqs
            .iter()
            .filter(|(_, r)| r.outcome.is_none() && r.in_flight.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            let req = self.reqs.get_mut(&id).expect("listed");
            if now >= req.deadline {
                moved = true;
                req.outcome = Some(if req.relayed {
                    Outcome::Unknown {
                        acknowledged: false,
                    }
                } else {
                    Outcome::NoAgent
                });
                continue;
            }
            let Some(i) = target else { continue };
            let request = pb::RelayedRequest {
                request_id: id.clone(),
                operation: pb::Operation::ResetPassword as i32,
                envelope: id.clone().into_bytes().into(),
                ..Default::default()
            };
            if let Ok(cid) = self.conns[i]
                .broker
                .send_request(now, request, req.deadline)
            {
                moved = true;
                req.in_flight = Some((i, cid));
                req.relayed = true;
            }
        }
        moved
    }

    /// Runs a script of `steps` choices from `source`, then heals the
    /// network and checks that everything settled as the protocol says.
    pub fn script(source: &mut impl Source, steps: usize) -> Pair {
        let mut pair = Pair::new();
        for _ in 0..steps {
            let kind = source.byte();
            let arg = source.byte();
            match kind % 12 {
                0 | 1 => pair.run(Duration::from_millis(u64::from(arg) * 20)),
                2 => pair.run(Duration::from_secs(u64::from(arg % 90))),
                3 | 4 => {
                    pair.submit();
                }
                5 => pair.cut(),
                6 => pair.black_hole(arg & 1 != 0, arg & 2 != 0 || arg & 1 == 0),
                7 => pair.delay(
                    Duration::from_millis(u64::from(arg & 0x0f) * 500),
                    Duration::from_millis(u64::from(arg >> 4) * 500),
                ),
                8 => pair.duplicate(arg & 1 != 0, arg & 2 != 0),
                9 => pair.broker_close(match arg % 5 {
                    0 => GoodbyeReason::ShuttingDown,
                    1 => GoodbyeReason::Replaced,
                    2 => GoodbyeReason::KeyRotated,
                    3 => GoodbyeReason::AgentRevoked,
                    _ => GoodbyeReason::TenantDeleted,
                }),
                10 => pair.broker_drain(),
                _ => pair.set_work_time(Duration::from_millis(u64::from(arg) * 100)),
            }
        }
        pair.heal_and_check();
        pair
    }

    /// Lets the world run on a healthy network long enough for every rule
    /// to have played out, then checks the end state: every request has
    /// one outcome, every request the agent read was applied, every
    /// applied request's answer reached the broker's
    /// record, the agent's outbox holds nothing unconfirmed, and the pair
    /// has a session open again.
    pub fn heal_and_check(&mut self) {
        // Black holes stay on the connections that have them: silence must
        // end those. New connections are healthy.
        self.work_time = Duration::from_millis(200);
        for c in &mut self.conns {
            c.to_agent.duplicate_next = false;
            c.to_broker.duplicate_next = false;
        }
        // Three silent intervals, a reconnect, the longest handler time,
        // the deadline: five minutes is plenty.
        for _ in 0..300 {
            self.run(Duration::from_secs(1));
        }
        for (id, r) in &self.reqs {
            assert!(r.outcome.is_some(), "{id}: no outcome ({r:?})");
            // The broker sends a request it handed to a session nowhere
            // else, so the agent that read it is the only one that can
            // settle its record: it must apply it, whatever became of the
            // session meanwhile.
            if self.read.contains(id) {
                assert_eq!(
                    self.applied(id),
                    1,
                    "{id}: read by the agent but never applied ({r:?})"
                );
            }
            if self.applied(id) == 1 {
                assert!(
                    r.answer.is_some(),
                    "{id}: applied, but its answer never reached the broker ({r:?})"
                );
            }
        }
        assert_eq!(
            self.agent.outbox().unconfirmed(),
            0,
            "the outbox still holds replies the broker has not confirmed"
        );
        assert!(self.agent.is_open(), "no session after healing");
        assert!(self.conns.last().is_some_and(|c| c.broker.is_routable()));
    }
}

impl Default for Pair {
    fn default() -> Pair {
        Pair::new()
    }
}
