//! Bounded retries of key-value operations. When a NATS node dies, the
//! streams it led elect new leaders within 5-8 s; until then their writes
//! fail or time out, and reads may too. An operation is retried for at
//! most its window, with growing pauses, and then fails with
//! [`KvError::GaveUp`] naming the last error.

use std::future::Future;
use std::time::{Duration, Instant};

use tracing::debug;

use super::KvError;

/// How long tenant writes and the start-up reads are retried: longer than
/// a stream leader election, short enough for an administrator's call.
pub const RETRY_FOR: Duration = Duration::from_secs(15);

const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// An attempt may always take this long, even at the end of the window.
const MIN_ATTEMPT: Duration = Duration::from_secs(1);
/// An attempt takes longer only while NATS fails over (a request to a dead
/// stream leader waits for the client's 5 s timeout): try again sooner, to
/// catch the new leader early.
const MAX_ATTEMPT: Duration = Duration::from_secs(2);

/// Runs `attempt` until it succeeds, fails with an error `is_final`
/// accepts (returned as `Ok(Err(e))`), or `window` runs out (`Err`).
pub(crate) async fn retry<T, E, F, Fut>(
    bucket: &str,
    operation: &'static str,
    window: Duration,
    is_final: impl Fn(&E) -> bool,
    mut attempt: F,
) -> Result<Result<T, E>, KvError>
where
    E: std::error::Error + Send + Sync + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let began = Instant::now();
    let deadline = began + window;
    let mut pause = FIRST_PAUSE;
    loop {
        let limit = deadline
            .saturating_duration_since(Instant::now())
            .clamp(MIN_ATTEMPT, MAX_ATTEMPT);
        let failure: async_nats::Error = match tokio::time::timeout(limit, attempt()).await {
            Ok(Ok(value)) => return Ok(Ok(value)),
            Ok(Err(e)) if is_final(&e) => return Ok(Err(e)),
            Ok(Err(e)) => Box::new(e),
            Err(elapsed) => Box::new(elapsed),
        };
        if Instant::now() + pause >= deadline {
            return Err(KvError::GaveUp {
                bucket: bucket.to_owned(),
                operation,
                waited: began.elapsed(),
                source: failure,
            });
        }
        debug!(%bucket, operation, error = %failure, "key-value operation failed; retrying");
        // Jitter, so that nodes retrying after one failover do not move in step.
        tokio::time::sleep(pause / 2 + pause.mul_f64(fastrand::f64() / 2.0)).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// [`retry`] of an operation with no final error.
pub(crate) async fn retry_all<T, E, F, Fut>(
    bucket: &str,
    operation: &'static str,
    window: Duration,
    attempt: F,
) -> Result<T, KvError>
where
    E: std::error::Error + Send + Sync + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    match retry(bucket, operation, window, |_: &E| false, attempt).await? {
        Ok(value) => Ok(value),
        Err(e) => Err(failed(bucket, operation, e)),
    }
}

/// A final error nobody handles: an unexpected answer from NATS.
pub(crate) fn failed<E>(bucket: &str, operation: &'static str, e: E) -> KvError
where
    E: std::error::Error + Send + Sync + 'static,
{
    KvError::Failed {
        bucket: bucket.to_owned(),
        operation,
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Fails(&'static str);

    #[tokio::test]
    async fn transient_errors_are_retried_until_success() {
        let mut calls = 0;
        let got = retry(
            "b",
            "put",
            RETRY_FOR,
            |_: &Fails| false,
            || {
                calls += 1;
                let ok = calls == 4;
                async move {
                    if ok {
                        Ok(calls)
                    } else {
                        Err(Fails("no leader"))
                    }
                }
            },
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(got, 4);
    }

    #[tokio::test]
    async fn final_errors_return_at_once_and_the_window_bounds_the_rest() {
        let mut calls = 0;
        let got = retry(
            "b",
            "update",
            RETRY_FOR,
            |e: &Fails| e.0 == "conflict",
            || {
                calls += 1;
                async { Err::<(), _>(Fails("conflict")) }
            },
        )
        .await
        .unwrap();
        assert!(got.is_err());
        assert_eq!(calls, 1);

        let window = Duration::from_millis(400);
        let began = Instant::now();
        let err = retry_all("b", "put", window, || async {
            Err::<(), _>(Fails("no leader"))
        })
        .await
        .unwrap_err();
        let waited = began.elapsed();
        assert!(waited <= window + Duration::from_millis(200), "{waited:?}");
        let shown = err.to_string();
        assert!(
            shown.starts_with("put in the key-value bucket b still failed after"),
            "{shown}"
        );
        assert_eq!(
            std::error::Error::source(&err).unwrap().to_string(),
            "no leader"
        );
    }

    #[tokio::test]
    async fn a_hanging_attempt_is_cut() {
        let began = Instant::now();
        let err = retry_all("b", "get", Duration::from_millis(100), || {
            std::future::pending::<Result<(), Fails>>()
        })
        .await
        .unwrap_err();
        assert!(matches!(err, KvError::GaveUp { .. }), "{err}");
        assert!(began.elapsed() < MIN_ATTEMPT * 2, "{:?}", began.elapsed());
    }
}
