//! A small pool of threads of the outcome store's own for reading records
//! (and purging expired ones), so that GetOutcome never queues behind the
//! runtime's blocking pool and store work never occupies it: a flood of one
//! tenant's replies once held all 512 blocking threads while another
//! tenant's GetOutcome calls missed their deadlines. The queue is bounded;
//! past it a read is refused at once rather than waiting.

use std::sync::{Arc, Mutex, mpsc};

use tokio::sync::oneshot;

use crate::store::{Store, StoreError};

/// Reads at once: a record read is short, and two keep one slow disk read
/// from holding up the rest.
const THREADS: usize = 2;
/// Reads queued before more are refused (`StoreError::Busy`).
const QUEUE: usize = 1024;

type Job = Box<dyn FnOnce(&Store) + Send>;

pub(super) struct Readers {
    jobs: Option<mpsc::SyncSender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Readers {
    pub(super) fn start(store: Store) -> Result<Readers, StoreError> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        let mut threads = Vec::with_capacity(THREADS);
        for i in 0..THREADS {
            let (store, queue) = (store.clone(), Arc::clone(&queue));
            let thread = std::thread::Builder::new()
                .name(format!("outcome-read-{i}"))
                .spawn(move || {
                    loop {
                        let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match job {
                            Ok(job) => job(&store),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|e| StoreError::Io {
                    operation: "start the outcome readers",
                    source: Box::new(redb::Error::Io(e)),
                })?;
            threads.push(thread);
        }
        Ok(Readers {
            jobs: Some(jobs),
            threads,
        })
    }

    /// Runs `read` on a reader thread.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move |store| {
            let _ = done.send(read(store));
        });
        self.jobs
            .as_ref()
            .ok_or(StoreError::Cancelled)?
            .try_send(job)
            .map_err(|e| match e {
                mpsc::TrySendError::Full(_) => StoreError::Busy { queued: QUEUE },
                mpsc::TrySendError::Disconnected(_) => StoreError::Cancelled,
            })?;
        result.await.map_err(|_| StoreError::Cancelled)?
    }
}

impl Drop for Readers {
    /// Lets the threads finish their reads and let go of the store.
    fn drop(&mut self) {
        drop(self.jobs.take());
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
