//! Copies of the events for journald and syslog, sent from a thread of
//! their own so that a slow or dead receiver never holds up a password
//! reset: `send` only queues. A sink that fails is skipped for a while
//! (its events dropped and counted), with one warning per failure spell
//! and at most one reminder per [`WARN_EVERY`]; the JSON file, written
//! before anything is queued, stays the record.

use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
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
    let mut journal = sinks.journald.map(|path| Sink {
        name: format!("journald {}", path.display()),
        transport: Transport::Datagram(path),
        down: None,
    });
    let mut syslog = sinks.syslog.map(|target| Sink {
        name: format!("syslog {target}"),
        transport: match target {
            SyslogTarget::Unix(path) => Transport::Datagram(path),
            SyslogTarget::Udp(addr) => Transport::Udp(addr, None),
            SyslogTarget::Tcp(addr) => Transport::Tcp(addr, None),
        },
        down: None,
    });
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

/// How a sink's messages travel; UDP and TCP keep their socket while it
/// works and resolve the name afresh after a failure (the collector may
/// have moved).
enum Transport {
    /// journald's socket or a syslog daemon's: one datagram per message.
    Datagram(PathBuf),
    Udp(String, Option<UdpSocket>),
    Tcp(String, Option<TcpStream>),
}

struct Sink {
    name: String,
    transport: Transport,
    /// Set while failing.
    down: Option<Down>,
}

struct Down {
    retry_at: Instant,
    dropped: u64,
    warned_at: Instant,
}

impl Sink {
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
                        sink = %self.name,
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
        let Some(down) = &mut self.down else {
            tracing::warn!(
                sink = %self.name,
                error = %error,
                "cannot send events; retrying every {}s, the event log file keeps them",
                RETRY_AFTER.as_secs()
            );
            self.down = Some(Down {
                retry_at: now + RETRY_AFTER,
                dropped: 1,
                warned_at: now,
            });
            return;
        };
        down.dropped += 1;
        down.retry_at = now + RETRY_AFTER;
        if now.duration_since(down.warned_at) >= WARN_EVERY {
            down.warned_at = now;
            tracing::warn!(
                sink = %self.name,
                error = %error,
                dropped = down.dropped,
                "still cannot send events"
            );
        }
    }
}

impl Transport {
    fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Transport::Datagram(path) => {
                let socket = UnixDatagram::unbound()?;
                socket.set_write_timeout(Some(IO_TIMEOUT))?;
                socket.send_to(data, path).map(drop)
            }
            Transport::Udp(addr, socket) => {
                let s = match socket.take() {
                    Some(s) => s,
                    None => udp(addr)?,
                };
                s.send(data)?;
                *socket = Some(s);
                Ok(())
            }
            Transport::Tcp(addr, stream) => {
                let frame = syslog::octet_counted(data);
                // A write to a connection the collector closed (it
                // restarted, or dropped an idle client) succeeds locally and
                // is lost, so look for its FIN first; a write that fails
                // gets one fresh connection before the sink counts as down.
                if let Some(s) = stream
                    && !closed_by_peer(s)
                    && s.write_all(&frame).is_ok()
                {
                    return Ok(());
                }
                *stream = None;
                let mut fresh = tcp(addr)?;
                fresh.write_all(&frame)?;
                *stream = Some(fresh);
                Ok(())
            }
        }
    }
}

/// Whether the collector has closed its end: it never sends, so anything
/// readable is the end of the stream (or an error).
fn closed_by_peer(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let closed = match stream.peek(&mut [0; 1]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).is_err() || closed
}

/// Every address `addr` resolves to, in turn, until `open` succeeds.
fn first_working<T>(
    addr: &str,
    mut open: impl FnMut(SocketAddr) -> std::io::Result<T>,
) -> std::io::Result<T> {
    let mut last = std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("{addr} resolves to no address"),
    );
    for resolved in addr.to_socket_addrs()? {
        match open(resolved) {
            Ok(t) => return Ok(t),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn udp(addr: &str) -> std::io::Result<UdpSocket> {
    first_working(addr, |resolved| {
        let local = if resolved.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let socket = UdpSocket::bind(local)?;
        socket.connect(resolved)?;
        Ok(socket)
    })
}

fn tcp(addr: &str) -> std::io::Result<TcpStream> {
    first_working(addr, |resolved| {
        let stream = TcpStream::connect_timeout(&resolved, IO_TIMEOUT)?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(stream)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::{EventLog, Level, ids};
    use std::io::{BufRead, BufReader};
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
            let message = read_frame(&mut reader);
            assert!(message.starts_with("<86>1 "), "{message}");
            assert!(
                message.contains(&format!("request_id=\"r-{n}\"")),
                "{message}"
            );
        }
    }

    /// Reads one octet-counted message.
    fn read_frame(reader: &mut impl BufRead) -> String {
        let mut len = Vec::new();
        reader.read_until(b' ', &mut len).unwrap();
        let len: usize = String::from_utf8(len).unwrap().trim().parse().unwrap();
        let mut message = vec![0; len];
        reader.read_exact(&mut message).unwrap();
        String::from_utf8(message).unwrap()
    }

    #[test]
    fn a_restarted_tcp_collector_gets_the_next_event() {
        let dir = tempfile::tempdir().unwrap();
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = first.local_addr().unwrap();
        let log = EventLog::open(dir.path(), 1 << 20, 1)
            .unwrap()
            .with_sinks(sinks(None, Some(SyslogTarget::Tcp(addr.to_string()))));
        log.write(&event(1));
        let (stream, _) = first.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert!(read_frame(&mut BufReader::new(&stream)).contains("r-1"));
        drop((stream, first));

        let second = TcpListener::bind(addr).unwrap();
        // Let the FIN arrive before the next event.
        std::thread::sleep(Duration::from_millis(100));
        log.write(&event(2));
        // Fails, rather than hangs, if the agent writes on the old socket.
        second.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match second.accept() {
                Ok((stream, _)) => break stream,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("no connection to the restarted collector: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert!(read_frame(&mut BufReader::new(&stream)).contains("r-2"));
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
