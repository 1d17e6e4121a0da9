//! The load generator of the integration tests: `n` calls, `concurrency`
//! at a time, each result handed over as soon as it ends. (The benchmark's
//! driver, `bench/src/load.rs`, measures; this one only keeps calls going
//! while a test breaks something.)

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

/// One call of a load.
#[derive(Debug)]
pub struct Ended<T> {
    /// Which call, from 0.
    pub index: usize,
    pub result: T,
    pub took: Duration,
    /// When it ended.
    pub at: Instant,
}

/// Runs `call(i)` for every `i` in `0..n`, `concurrency` at a time, in
/// order of `i`; stops early when the receiver is dropped.
pub fn load<T, F, Fut>(n: usize, concurrency: usize, call: F) -> mpsc::UnboundedReceiver<Ended<T>>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let next = Arc::new(AtomicUsize::new(0));
    let call = Arc::new(call);
    for _ in 0..concurrency {
        let (tx, next, call) = (tx.clone(), Arc::clone(&next), Arc::clone(&call));
        tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= n {
                    break;
                }
                let started = Instant::now();
                let result = call(index).await;
                let ended = Ended {
                    index,
                    result,
                    took: started.elapsed(),
                    at: Instant::now(),
                };
                if tx.send(ended).is_err() {
                    break;
                }
            }
        });
    }
    rx
}
