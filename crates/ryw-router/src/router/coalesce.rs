//! [`Coalescer`]: one fetch for every caller that asked before it was
//! sent. What `global` reads start from (the fleet-wide mark) and what
//! `cluster` reads start from (the leader's position) must be read *after*
//! the read began, or a write acknowledged just before the read could be
//! missed; one fetch per read would cost a round trip each. A fetch serves
//! every caller that arrived before it was sent, and no caller that
//! arrived while it was already under way: those wait for the next one,
//! which is sent as soon as the current one ends. So at most one fetch is
//! under way at a time, and a burst of reads costs at most two.

use std::future::Future;
use std::sync::Mutex;

use tokio::sync::watch;

/// One coalesced value of type `T` (a position), fetched on demand.
#[derive(Debug)]
pub(crate) struct Coalescer<T> {
    state: Mutex<State>,
    done: watch::Sender<Done<T>>,
}

#[derive(Debug, Default)]
struct State {
    /// Fetches sent so far (the generation of the latest).
    started: u64,
    /// A fetch is under way.
    running: bool,
}

/// The latest fetch that ended: its generation and what it found (`None`:
/// abandoned half way, its waiters start another).
#[derive(Clone, Debug)]
struct Done<T> {
    generation: u64,
    result: Option<Result<T, String>>,
}

/// What a caller got, and whether its own call sent the fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fetched<T> {
    /// The value, or why the fetch failed (shared by every caller it served).
    pub result: Result<T, String>,
    /// This caller sent the fetch (one per fetch: a count of fetches).
    pub sent: bool,
}

impl<T> Default for Coalescer<T> {
    fn default() -> Self {
        Coalescer {
            state: Mutex::new(State::default()),
            done: watch::channel(Done {
                generation: 0,
                result: None,
            })
            .0,
        }
    }
}

/// Publishes the end of a fetch, also when its future is dropped half way.
struct Running<'a, T> {
    coalescer: &'a Coalescer<T>,
    generation: u64,
    result: Option<Result<T, String>>,
}

impl<T> Drop for Running<'_, T> {
    fn drop(&mut self) {
        let mut st = self.coalescer.lock();
        st.running = false;
        self.coalescer.done.send_replace(Done {
            generation: self.generation,
            result: self.result.take(),
        });
    }
}

impl<T> Coalescer<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T: Clone> Coalescer<T> {
    /// A value fetched by a call of `fetch` that was *sent after this call
    /// began*: this caller's own, or another caller's that started later
    /// and answers it too. `fetch` is called at most once, and only when no
    /// fetch is under way. Not bounded in time: the caller times it out
    /// (a dropped call that was fetching lets its waiters start another).
    pub async fn get<F, Fut>(&self, fetch: F) -> Fetched<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let mut rx = self.done.subscribe();
        // A fetch answers this caller only if it is sent after now.
        let need = self.lock().started + 1;
        let mut fetch = Some(fetch);
        loop {
            let (start, generation) = {
                let mut st = self.lock();
                let start = !st.running;
                if start {
                    st.running = true;
                    st.started += 1;
                }
                (start, st.started)
            };
            if start {
                // Its generation was taken after `need`: it answers this
                // caller (who returns with it, so fetches at most once).
                let fetch = fetch.take().expect("a caller fetches at most once");
                let mut run = Running {
                    coalescer: self,
                    generation,
                    result: None,
                };
                let result = fetch().await;
                run.result = Some(result.clone());
                drop(run);
                return Fetched { result, sent: true };
            }
            let done = match rx.wait_for(|d| d.generation >= generation).await {
                Ok(d) => d.clone(),
                Err(_) => {
                    return Fetched {
                        result: Err("stopped".to_owned()),
                        sent: false,
                    };
                }
            };
            if done.generation >= need
                && let Some(result) = done.result
            {
                return Fetched {
                    result,
                    sent: false,
                };
            }
            // It was sent before this caller asked, or abandoned: start or
            // wait for the next one.
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;

    /// A fake source: the value is the number of writes acknowledged when
    /// the fetch is *sent*; the answer comes `rtt` later.
    #[derive(Clone, Default)]
    struct Source {
        acked: Arc<AtomicU64>,
        fetches: Arc<AtomicU64>,
    }

    impl Source {
        async fn fetch(self, rtt: Duration) -> Result<u64, String> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            let seen = self.acked.load(Ordering::SeqCst);
            tokio::time::sleep(rtt).await;
            Ok(seen)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_fetch_sent_before_a_read_began_never_serves_it() {
        let c = Arc::new(Coalescer::<u64>::default());
        let src = Source::default();
        let rtt = Duration::from_millis(10);
        let get =
            |c: Arc<Coalescer<u64>>, src: Source| async move { c.get(|| src.fetch(rtt)).await };
        // t=0: read A sends fetch 1, which sees 0 writes.
        let a = tokio::spawn(get(c.clone(), src.clone()));
        tokio::time::sleep(Duration::from_millis(5)).await;
        // t=5: a write is acknowledged, then reads B, C and D begin while
        // fetch 1 is under way: it cannot have seen that write.
        src.acked.store(1, Ordering::SeqCst);
        let b = tokio::spawn(get(c.clone(), src.clone()));
        let bc = tokio::spawn(get(c.clone(), src.clone()));
        let bd = tokio::spawn(get(c.clone(), src.clone()));
        let a = a.await.unwrap();
        assert_eq!(a.result, Ok(0));
        assert!(a.sent);
        for r in [b, bc, bd] {
            let r = r.await.unwrap();
            assert_eq!(r.result, Ok(1), "served by a fetch sent after it began");
        }
        assert_eq!(
            src.fetches.load(Ordering::SeqCst),
            2,
            "B, C and D share one fetch"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_reads_costs_at_most_two_fetches_and_an_error_is_shared() {
        let c = Arc::new(Coalescer::<u64>::default());
        let fetches = Arc::new(AtomicU64::new(0));
        let mut reads = Vec::new();
        for _ in 0..100 {
            let (c, fetches) = (c.clone(), fetches.clone());
            reads.push(tokio::spawn(async move {
                c.get(|| async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    Err::<u64, _>("leader down".to_owned())
                })
                .await
            }));
        }
        let mut sent = 0;
        for r in reads {
            let r = r.await.unwrap();
            assert_eq!(r.result, Err("leader down".to_owned()));
            sent += u64::from(r.sent);
        }
        assert!(fetches.load(Ordering::SeqCst) <= 2);
        assert_eq!(sent, fetches.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fetch_dropped_half_way_lets_its_waiters_fetch_again() {
        let c = Arc::new(Coalescer::<u64>::default());
        let first = {
            let c = c.clone();
            tokio::spawn(async move {
                c.get(|| async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(1)
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(1)).await;
        let second = {
            let c = c.clone();
            tokio::spawn(async move { c.get(|| async { Ok(2) }).await })
        };
        tokio::time::sleep(Duration::from_millis(1)).await;
        first.abort();
        let second = second.await.unwrap();
        assert_eq!(second.result, Ok(2));
        assert!(second.sent);
    }
}
