//! The open connections, oldest first, and how many each source address
//! holds: what decides whether the next connection is accepted, refused, or
//! makes room by closing the oldest idle one.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub(crate) struct Table {
    max_connections: usize,
    max_per_source: usize,
    unlimited_sources: Vec<IpAddr>,
    inner: Mutex<Inner>,
    /// Signalled whenever a connection ends.
    changed: Notify,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    /// By id, which grows with time: the first entry is the oldest.
    open: BTreeMap<u64, Conn>,
    per_source: HashMap<IpAddr, Source>,
}

struct Conn {
    source: IpAddr,
    /// Requests being answered on it; 0 = idle or still sending headers.
    busy: Arc<AtomicUsize>,
    close: CancellationToken,
    /// Already told to close to make room.
    evicted: bool,
}

struct Source {
    open: usize,
    /// A refusal was logged since the source last held no connection: one
    /// line per burst, not one per refused connection.
    warned: bool,
}

/// One accepted connection's place; dropping it frees the place.
pub(crate) struct Slot {
    table: Arc<Table>,
    id: u64,
    pub busy: Arc<AtomicUsize>,
    /// Cancelled when the connection is evicted to make room.
    pub close: CancellationToken,
}

/// Why [`Table::admit`] refused a connection.
pub(crate) struct SourceFull {
    /// The first refusal since the source last held no connection.
    pub first: bool,
}

/// What [`Table::make_room`] did.
pub(crate) enum Room {
    /// There is room: accept.
    Free,
    /// The oldest idle connection (from this address) was told to close;
    /// wait for it.
    Evicted(IpAddr),
    /// Every connection is serving a request, or closing: wait.
    Wait,
}

impl Table {
    pub fn new(max_connections: usize, max_per_source: usize, unlimited: Vec<IpAddr>) -> Table {
        Table {
            max_connections,
            max_per_source,
            unlimited_sources: unlimited,
            inner: Mutex::default(),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The table holds plain counters; a panic elsewhere leaves them usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().open.len()
    }

    /// Below the cap: free. At it: evicts the oldest idle connection, if
    /// one is not already closing for the same purpose.
    pub fn make_room(&self) -> Room {
        let mut inner = self.lock();
        let closing = inner.open.values().filter(|c| c.evicted).count();
        if inner.open.len() < self.max_connections {
            return Room::Free;
        }
        if inner.open.len() - closing < self.max_connections {
            return Room::Wait;
        }
        let oldest_idle = inner
            .open
            .values_mut()
            .find(|c| !c.evicted && c.busy.load(Ordering::Acquire) == 0);
        match oldest_idle {
            Some(conn) => {
                conn.evicted = true;
                conn.close.cancel();
                Room::Evicted(conn.source)
            }
            None => Room::Wait,
        }
    }

    /// Resolves after the next connection ends. Create it before checking
    /// the table so that no end is missed in between.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Resolves once no connection is open.
    pub async fn emptied(&self) {
        loop {
            let changed = self.changed();
            if self.len() == 0 {
                return;
            }
            changed.await;
        }
    }

    /// Takes a place for a connection from `source`, unless that source
    /// holds its cap already.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Result<Slot, SourceFull> {
        let mut inner = self.lock();
        let limited = !self.unlimited_sources.contains(&source);
        let entry = inner.per_source.entry(source).or_insert(Source {
            open: 0,
            warned: false,
        });
        if limited && entry.open >= self.max_per_source {
            let first = !entry.warned;
            entry.warned = true;
            return Err(SourceFull { first });
        }
        entry.open += 1;
        let id = inner.next_id;
        inner.next_id += 1;
        let busy = Arc::new(AtomicUsize::new(0));
        let close = CancellationToken::new();
        inner.open.insert(
            id,
            Conn {
                source,
                busy: Arc::clone(&busy),
                close: close.clone(),
                evicted: false,
            },
        );
        Ok(Slot {
            table: Arc::clone(self),
            id,
            busy,
            close,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.table.lock();
        if let Some(conn) = inner.open.remove(&self.id)
            && let Some(source) = inner.per_source.get_mut(&conn.source)
        {
            source.open -= 1;
            if source.open == 0 {
                inner.per_source.remove(&conn.source);
            }
        }
        drop(inner);
        self.table.changed.notify_waiters();
    }
}

/// Marks a connection busy while the router works on one of its requests,
/// so that it is not evicted mid-answer. Writing the response out is not
/// busy: a peer too slow to read it can still be evicted when the server
/// is full.
pub(crate) struct Busy(Arc<AtomicUsize>);

impl Busy {
    pub fn enter(count: &Arc<AtomicUsize>) -> Busy {
        count.fetch_add(1, Ordering::AcqRel);
        Busy(Arc::clone(count))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn a_source_at_its_cap_is_refused_and_warned_about_once() {
        let table = Arc::new(Table::new(10, 2, vec![ip(9)]));
        let a = table.admit(ip(2)).ok().unwrap();
        let b = table.admit(ip(2)).ok().unwrap();
        assert!(table.admit(ip(2)).err().unwrap().first);
        assert!(!table.admit(ip(2)).err().unwrap().first);
        // Another address is not affected; an unlimited one has no cap.
        let _c = table.admit(ip(3)).ok().unwrap();
        let _proxy: Vec<_> = (0..5).map(|_| table.admit(ip(9)).ok().unwrap()).collect();
        drop(a);
        let d = table.admit(ip(2)).ok().unwrap();
        assert!(!table.admit(ip(2)).err().unwrap().first, "the same burst");
        drop((b, d));
        let _e = table.admit(ip(2)).ok().unwrap();
        let _f = table.admit(ip(2)).ok().unwrap();
        assert!(table.admit(ip(2)).err().unwrap().first, "a new burst");
    }

    #[test]
    fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let table = Arc::new(Table::new(3, 3, Vec::new()));
        let oldest = table.admit(ip(2)).ok().unwrap();
        let _busy_guard = Busy::enter(&oldest.busy);
        let second = table.admit(ip(3)).ok().unwrap();
        let _third = table.admit(ip(4)).ok().unwrap();
        assert!(matches!(table.make_room(), Room::Evicted(s) if s == ip(3)));
        assert!(second.close.is_cancelled() && !oldest.close.is_cancelled());
        // One eviction under way is enough room for one connection.
        assert!(matches!(table.make_room(), Room::Wait));
        drop(second);
        assert!(matches!(table.make_room(), Room::Free));
    }
}
