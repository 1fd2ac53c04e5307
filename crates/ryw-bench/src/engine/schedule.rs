//! When iterations start: the closed loop (each user starts its next
//! iteration when the last one ended) and the open loop (iterations arrive
//! at a fixed rate, each taken by an idle user).

use super::{RunState, VirtualUser, stopped};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// Closed loop: the next iteration starts when the last one ended.
pub(super) async fn closed_loop(
    mut user: VirtualUser,
    sh: Arc<RunState>,
    stop: watch::Receiver<bool>,
) {
    tokio::select! {
        _ = async { loop { user.iteration(&sh).await } } => {}
        _ = stopped(stop) => {}
    }
}

/// How one open-loop group's arrivals went.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Arrivals {
    /// Arrivals due over the run: rate × elapsed, rounded down (so the tick
    /// due at the very moment the run stops is not held against it).
    offered: u64,
    /// Arrivals that started an iteration.
    started: u64,
    /// Arrivals whose tick came but found every user busy.
    no_idle_user: u64,
}

impl Arrivals {
    /// Offered arrivals that never started, whatever the cause: no idle
    /// user, or the arrival clock's own task running late (a busy machine),
    /// whose skipped ticks never come at all.
    fn missed(&self) -> u64 {
        self.offered.saturating_sub(self.started)
    }
}

/// The open-loop clock: arrivals at `rate` per second until stopped, each
/// handing an idle user to `work` (which gives it back when done); an
/// arrival with no idle user is not queued. A late tick is not made up for
/// with a burst (that would bend the load), so the count of what was offered
/// comes from the elapsed time, not from the ticks that fired.
async fn arrivals<U, F, Fut>(
    users: Vec<U>,
    rate: f64,
    stop: watch::Receiver<bool>,
    work: F,
) -> Arrivals
where
    U: Send + 'static,
    F: Fn(U) -> Fut,
    Fut: Future<Output = U> + Send + 'static,
{
    let (idle_tx, mut idle_rx) = mpsc::unbounded_channel();
    for u in users {
        let _ = idle_tx.send(u);
    }
    let began = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut running = JoinSet::new();
    let (mut started, mut no_idle_user) = (0, 0);
    let arriving = async {
        loop {
            tick.tick().await;
            while running.try_join_next().is_some() {}
            match idle_rx.try_recv() {
                Ok(user) => {
                    started += 1;
                    let (job, idle_tx) = (work(user), idle_tx.clone());
                    running.spawn(async move {
                        let _ = idle_tx.send(job.await);
                    });
                }
                Err(_) => no_idle_user += 1,
            }
        }
    };
    tokio::select! {
        // Ticks already due start before the stop is noticed.
        biased;
        _ = arriving => {}
        _ = stopped(stop) => {}
    }
    let offered = (began.elapsed().as_secs_f64() * rate).floor() as u64;
    running.shutdown().await;
    Arrivals {
        offered,
        started,
        no_idle_user,
    }
}

/// Open loop for one strategy group: iterations arrive at `rate` per second,
/// each taken by an idle user; adds the group's missed arrivals (all, and
/// those that found no idle user) to the run's counts.
pub(super) async fn open_loop(
    users: Vec<VirtualUser>,
    rate: f64,
    sh: Arc<RunState>,
    stop: watch::Receiver<bool>,
    missed: Arc<[AtomicU64; 2]>,
) {
    let a = arrivals(users, rate, stop, |mut user| {
        let sh = sh.clone();
        async move {
            user.iteration(&sh).await;
            user
        }
    })
    .await;
    missed[0].fetch_add(a.missed(), Relaxed);
    missed[1].fetch_add(a.no_idle_user, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the arrival clock at 100/s with `users` users whose iterations
    /// take `work`; after `on_time`, the clock's task is held up for `late`
    /// (time jumps past its ticks, as on a busy machine), then runs on for
    /// `after` before the stop.
    async fn arrivals_with(
        users: usize,
        work: Duration,
        on_time: Duration,
        late: Duration,
        after: Duration,
    ) -> Arrivals {
        let (stop_tx, stop_rx) = watch::channel(false);
        let clock = tokio::spawn(arrivals(
            vec![(); users],
            100.0,
            stop_rx,
            move |u| async move {
                tokio::time::sleep(work).await;
                u
            },
        ));
        tokio::time::sleep(on_time).await;
        tokio::time::advance(late).await;
        tokio::time::sleep(after).await;
        stop_tx.send(true).unwrap();
        clock.await.unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_loop_on_time_with_idle_users_misses_nothing() {
        let ms = Duration::from_millis;
        let a = arrivals_with(5, ms(15), ms(1995), ms(0), ms(0)).await;
        // Ticks at 0, 10, …, 1990 ms: 200; rate × elapsed = 199.5, rounded down.
        assert_eq!(
            a,
            Arrivals {
                offered: 199,
                started: 200,
                no_idle_user: 0
            }
        );
        assert_eq!(a.missed(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_skipped_while_the_clock_ran_late_are_missed_arrivals() {
        let ms = Duration::from_millis;
        // On time for 1 s (ticks 0..=990: 100 started), then 500 ms late: the
        // ticks due at 1000..=1490 ms come as one late tick; then on time to
        // 1995 ms (ticks 1500..=1990: 50 started). 49 ticks never came.
        let a = arrivals_with(5, ms(1), ms(995), ms(500), ms(500)).await;
        assert_eq!(
            a,
            Arrivals {
                offered: 199,
                started: 151,
                no_idle_user: 0
            }
        );
        assert_eq!(
            a.missed(),
            48,
            "49 skipped, less the tick the stop races with"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn arrivals_that_find_every_user_busy_are_missed_too() {
        let ms = Duration::from_millis;
        // One user busy for 25 ms per iteration: every third tick finds it idle.
        let a = arrivals_with(1, ms(25), ms(995), ms(0), ms(0)).await;
        assert_eq!((a.offered, a.started + a.no_idle_user), (99, 100));
        assert_eq!((a.started, a.missed()), (34, 65));
    }
}
