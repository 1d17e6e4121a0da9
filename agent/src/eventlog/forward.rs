//! Copies of the events for journald and syslog, sent from a thread of
//! their own so that a slow or dead receiver never holds up a password
//! reset: `send` only queues. A sink that fails is skipped for a while
//! (its events dropped and counted), with one warning per failure spell
//! and at most one reminder per [`WARN_EVERY`]; the JSON file, written
//! before anything is queued, stays the record.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant, SystemTime};

use super::syslog::{self, Facility, Origin, SyslogTarget};
use super::{Event, journald};

/// Events waiting for the sinks; beyond this they are dropped.
const QUEUE: usize = 1024;
/// How long a failed sink is left alone before the next try.
const RETRY_AFTER: Duration = Duration::from_secs(30);
const WARN_EVERY: Duration = Duration::from_secs(300);
/// Bounds every connect and send, so the thread always comes back.
const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// How long dropping the forwarder waits for queued events to go out
/// (a short-lived admin command's one event, typically).
const DRAIN: Duration = Duration::from_secs(2);

/// What the sinks need to know, resolved from `[events]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sinks {
    pub journald: Option<PathBuf>,
    pub syslog: Option<SyslogTarget>,
    pub facility: Facility,
    pub identifier: String,
}

struct Record {
    event: Event,
    time: SystemTime,
}

pub struct Forwarder {
    queue: Option<SyncSender<Record>>,
    /// In a Mutex only because the log is shared between tasks and a
    /// Receiver is not Sync; only Drop reads it.
    done: Mutex<Receiver<()>>,
    full_warned: Mutex<Option<Instant>>,
}

impl Forwarder {
    /// None when no sink is configured: no thread.
    pub fn start(sinks: Sinks) -> Option<Forwarder> {
        if sinks.journald.is_none() && sinks.syslog.is_none() {
            return None;
        }
        let (queue, records) = sync_channel(QUEUE);
        let (finished, done) = sync_channel(1);
        let spawned = std::thread::Builder::new()
            .name("event-sinks".into())
            .spawn(move || {
                run(sinks, records);
                let _ = finished.send(());
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "events go to the event log file only: no thread for journald or syslog");
            return None;
        }
        Some(Forwarder {
            queue: Some(queue),
            done: Mutex::new(done),
            full_warned: Mutex::new(None),
        })
    }

    pub fn send(&self, event: &Event, time: SystemTime) {
        let Some(queue) = &self.queue else { return };
        let record = Record {
            event: event.clone(),
            time,
        };
        if let Err(TrySendError::Full(_)) = queue.try_send(record) {
            let mut last = self.full_warned.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                *last = Some(Instant::now());
                tracing::warn!(
                    "journald/syslog fall behind: events dropped for them (the event log file has them)"
                );
            }
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has sent what is queued.
        self.queue = None;
        let done = self.done.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = done.recv_timeout(DRAIN);
    }
}

fn run(sinks: Sinks, records: Receiver<Record>) {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let origin = Origin {
        facility: sinks.facility,
        hostname: &hostname,
        app_name: &sinks.identifier,
        pid: std::process::id(),
    };
    let mut journal = sinks
        .journald
        .map(|path| Sink::new(Transport::Journald(path)));
    let mut syslog = sinks
        .syslog
        .map(|target| Sink::new(Transport::Syslog(target, None)));
    while let Ok(record) = records.recv() {
        if let Some(sink) = &mut journal {
            let entry = journald::encode(&record.event, &sinks.identifier, sinks.facility.code());
            sink.deliver(&entry);
        }
        if let Some(sink) = &mut syslog {
            let message = syslog::format(&record.event, record.time, &origin);
            sink.deliver(message.as_bytes());
        }
    }
}

enum Transport {
    Journald(PathBuf),
    /// The target and, for UDP and TCP, the socket while it works.
    Syslog(SyslogTarget, Option<Connection>),
}

enum Connection {
    Udp(UdpSocket),
    Tcp(TcpStream),
}

struct Sink {
    transport: Transport,
    /// Set while failing: when to try again, events dropped meanwhile,
    /// when the last warning went out.
    down: Option<Down>,
}

struct Down {
    retry_at: Instant,
    dropped: u64,
    warned_at: Instant,
}

impl Sink {
    fn new(transport: Transport) -> Sink {
        Sink {
            transport,
            down: None,
        }
    }

    fn name(&self) -> String {
        match &self.transport {
            Transport::Journald(path) => format!("journald {}", path.display()),
            Transport::Syslog(target, _) => format!("syslog {target}"),
        }
    }

    fn deliver(&mut self, data: &[u8]) {
        if let Some(down) = &mut self.down
            && Instant::now() < down.retry_at
        {
            down.dropped += 1;
            return;
        }
        match self.transport.send(data) {
            Ok(()) => {
                if let Some(down) = self.down.take() {
                    tracing::info!(
                        sink = %self.name(),
                        dropped = down.dropped,
                        "event sink works again; the dropped events are in the event log file"
                    );
                }
            }
            Err(e) => self.failed(e),
        }
    }

    fn failed(&mut self, error: std::io::Error) {
        let now = Instant::now();
        let name = self.name();
        match &mut self.down {
            None => {
                tracing::warn!(
                    sink = %name,
                    error = %error,
                    "cannot send events; retrying every {}s, the event log file keeps them",
                    RETRY_AFTER.as_secs()
                );
                self.down = Some(Down {
                    retry_at: now + RETRY_AFTER,
                    dropped: 1,
                    warned_at: now,
                });
            }
            Some(down) => {
                down.dropped += 1;
                down.retry_at = now + RETRY_AFTER;
                if now.duration_since(down.warned_at) >= WARN_EVERY {
                    down.warned_at = now;
                    tracing::warn!(sink = %name, error = %error, dropped = down.dropped, "still cannot send events");
                }
            }
        }
    }
}

impl Transport {
    fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Transport::Journald(path) => unix_datagram(path, data),
            Transport::Syslog(SyslogTarget::Unix(path), _) => unix_datagram(path, data),
            Transport::Syslog(target, connection) => {
                if connection.is_none() {
                    *connection = Some(connect(target)?);
                }
                let sent = match connection.as_mut() {
                    Some(Connection::Udp(socket)) => socket.send(data).map(drop),
                    Some(Connection::Tcp(stream)) => stream.write_all(&syslog::octet_counted(data)),
                    None => unreachable!("connected above"),
                };
                if sent.is_err() {
                    // Resolve and connect afresh next time: the collector
                    // may have moved or restarted.
                    *connection = None;
                }
                sent
            }
        }
    }
}

fn unix_datagram(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    socket.set_write_timeout(Some(IO_TIMEOUT))?;
    socket.send_to(data, path).map(drop)
}

fn connect(target: &SyslogTarget) -> std::io::Result<Connection> {
    let (addr, tcp) = match target {
        SyslogTarget::Udp(addr) => (addr, false),
        SyslogTarget::Tcp(addr) => (addr, true),
        SyslogTarget::Unix(_) => unreachable!("unix targets need no connection"),
    };
    let mut last = std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("{addr} resolves to no address"),
    );
    for resolved in addr.to_socket_addrs()? {
        let attempt = if tcp {
            TcpStream::connect_timeout(&resolved, IO_TIMEOUT).and_then(|s| {
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                Ok(Connection::Tcp(s))
            })
        } else {
            let local = if resolved.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            UdpSocket::bind(local).and_then(|s| {
                s.connect(resolved)?;
                Ok(Connection::Udp(s))
            })
        };
        match attempt {
            Ok(c) => return Ok(c),
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::{EventLog, Level, ids};
    use std::io::{BufRead, BufReader, Read};
    use std::net::TcpListener;

    fn event(n: u32) -> Event {
        let mut e = Event::new(ids::RESET_SUCCEEDED, Level::Information, "password reset");
        e.request_id = Some(format!("r-{n}"));
        e
    }

    fn sinks(journald: Option<PathBuf>, syslog: Option<SyslogTarget>) -> Sinks {
        Sinks {
            journald,
            syslog,
            facility: Facility::Authpriv,
            identifier: "writeback-agent".into(),
        }
    }

    #[test]
    fn events_reach_journald_and_syslog_over_tcp() {
        let dir = tempfile::tempdir().unwrap();
        let journal_path = dir.path().join("journal.socket");
        let journal = UnixDatagram::bind(&journal_path).unwrap();
        journal
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let collector = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = SyslogTarget::Tcp(collector.local_addr().unwrap().to_string());
        let log = EventLog::open(dir.path(), 1 << 20, 1)
            .unwrap()
            .with_sinks(sinks(Some(journal_path), Some(target)));
        log.write(&event(1));
        log.write(&event(2));

        let mut buf = vec![0; 4096];
        let n = journal.recv(&mut buf).unwrap();
        let entry = String::from_utf8_lossy(&buf[..n]);
        assert!(entry.contains("\nEVENT_ID=31002\n"), "{entry}");
        assert!(entry.contains("\nREQUEST_ID=r-1\n"), "{entry}");

        let (stream, _) = collector.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(stream);
        for n in 1..=2 {
            // RFC 6587 octet counting: "LEN SP MSG", back to back.
            let mut len = Vec::new();
            reader.read_until(b' ', &mut len).unwrap();
            let len: usize = String::from_utf8(len).unwrap().trim().parse().unwrap();
            let mut message = vec![0; len];
            reader.read_exact(&mut message).unwrap();
            let message = String::from_utf8(message).unwrap();
            assert!(message.starts_with("<86>1 "), "{message}");
            assert!(
                message.contains(&format!("request_id=\"r-{n}\"")),
                "{message}"
            );
        }
    }

    #[test]
    fn dead_sinks_neither_block_nor_lose_the_file() {
        let dir = tempfile::tempdir().unwrap();
        // Nothing listens at either.
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let log = EventLog::open(dir.path(), 1 << 20, 1)
            .unwrap()
            .with_sinks(sinks(
                Some(dir.path().join("no-journal")),
                Some(SyslogTarget::Tcp(closed.to_string())),
            ));
        let started = Instant::now();
        for n in 0..2000 {
            log.write(&event(n));
        }
        drop(log);
        assert!(
            started.elapsed() < DRAIN + Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let text = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 2000);
    }
}
