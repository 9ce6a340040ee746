//! The cluster's event fan-out: lossless for the parts that count or act
//! (CDRs, the Originator, call-controlling apps), best-effort for
//! observers.
//!
//! A lossless consumer gets a bounded queue. When it is full the publisher
//! waits for room, so a slow consumer slows the whole pipeline down: the
//! controller acknowledges an agent's batch only after it was published,
//! the agent's outbox fills, and the agent stops reading FreeSWITCH's
//! socket. Nothing is dropped; the waits are counted per consumer.
//! Observers (live views) read a broadcast ring that never blocks the
//! pipeline; what they miss is counted.
//!
//! A consumer that makes things durable (the CDR writer) subscribes with
//! [`Pipeline::subscribe_durable`]: after each published batch it gets a
//! [`ClusterEvent::Mark`] and reports, through its [`Durability`], when
//! everything before that mark is committed. The controller acknowledges
//! an agent's batch only then ([`Pipeline::wait_durable`]), so a controller
//! killed with CDRs still in memory loses none: the agents re-send.

use crate::cluster::ClusterEvent;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::{broadcast, mpsc, watch};

/// What a lossless consumer receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feed {
    /// Only finished sessions ([`ClusterEvent::Finished`]).
    Ends,
    /// Every event and every end.
    Everything,
}

impl Feed {
    fn wants(self, ev: &ClusterEvent) -> bool {
        match self {
            Feed::Everything => true,
            Feed::Ends => matches!(ev, ClusterEvent::Finished(_)),
        }
    }
}

/// Held by a durable consumer: tells the pipeline how far it has committed.
/// Dropping it (the consumer stopped) lets acknowledgements go on.
#[derive(Debug)]
pub struct Durability {
    tx: watch::Sender<u64>,
}

impl Durability {
    /// Everything published up to mark `pos` is durable.
    pub fn advance(&self, pos: u64) {
        self.tx.send_if_modified(|v| {
            let moved = pos > *v;
            *v = (*v).max(pos);
            moved
        });
    }
}

/// A lossless consumer's counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    /// Events handed to it.
    pub delivered: AtomicU64,
    /// Times the publisher found its queue full and waited.
    pub waits: AtomicU64,
    /// Time the publisher spent waiting for it, µs.
    pub waited_us: AtomicU64,
}

struct Consumer {
    name: String,
    feed: Feed,
    /// Gets a [`ClusterEvent::Mark`] after every batch.
    marks: bool,
    capacity: usize,
    tx: mpsc::Sender<ClusterEvent>,
    stats: Arc<ConsumerStats>,
}

/// One consumer as `/metrics` shows it.
#[derive(Clone, Debug)]
pub struct ConsumerView {
    /// Its name (`cdr`, `originator`, `apps`, …).
    pub name: String,
    /// Events queued for it now.
    pub queued: usize,
    /// Its queue's capacity.
    pub capacity: usize,
    /// Its counters.
    pub stats: Arc<ConsumerStats>,
}

/// The fan-out (owned by the cluster; publish only with the cluster's
/// order lock held, so every consumer sees one order).
pub struct Pipeline {
    consumers: Mutex<Vec<Consumer>>,
    observers: broadcast::Sender<ClusterEvent>,
    observer_lagged: Arc<AtomicU64>,
    /// Batches published so far (the last mark handed out).
    position: AtomicU64,
    /// The durable consumer's progress, while there is one.
    durable: Mutex<Option<watch::Receiver<u64>>>,
}

impl Default for Pipeline {
    fn default() -> Self {
        // The observers' ring holds the last events until overwritten, so
        // its size is also memory (~5 KB per event).
        let (observers, _) = broadcast::channel(4096);
        Pipeline {
            consumers: Mutex::new(Vec::new()),
            observers,
            observer_lagged: Arc::default(),
            position: AtomicU64::new(0),
            durable: Mutex::new(None),
        }
    }
}

impl Pipeline {
    /// Adds a lossless consumer with a queue of `capacity` events. Dropping
    /// the receiver unsubscribes it. A consumer must keep reading: while
    /// its queue is full the whole cluster waits (it must never wait for a
    /// command's result in the loop that reads this queue, as that result
    /// comes through the pipeline).
    pub fn subscribe(
        &self,
        name: &str,
        feed: Feed,
        capacity: usize,
    ) -> mpsc::Receiver<ClusterEvent> {
        self.add(name, feed, capacity, false)
    }

    fn add(
        &self,
        name: &str,
        feed: Feed,
        capacity: usize,
        marks: bool,
    ) -> mpsc::Receiver<ClusterEvent> {
        let capacity = capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        self.consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Consumer {
                name: name.to_owned(),
                feed,
                marks,
                capacity,
                tx,
                stats: Arc::default(),
            });
        rx
    }

    /// Adds the durable consumer (one per cluster; a second replaces the
    /// first's gate): it gets `feed` plus a [`ClusterEvent::Mark`] after
    /// each batch, and the batch is acknowledged to its agent only once the
    /// consumer [`Durability::advance`]s past that mark.
    pub fn subscribe_durable(
        &self,
        name: &str,
        feed: Feed,
        capacity: usize,
    ) -> (mpsc::Receiver<ClusterEvent>, Durability) {
        let start = self.position.load(Ordering::SeqCst);
        let (tx, wrx) = watch::channel(start);
        *self.durable.lock().unwrap_or_else(|p| p.into_inner()) = Some(wrx);
        (self.add(name, feed, capacity, true), Durability { tx })
    }

    /// Waits until everything published up to mark `pos` is durable (at
    /// once when no durable consumer is subscribed, or it stopped).
    pub async fn wait_durable(&self, pos: u64) {
        let rx = self
            .durable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(mut rx) = rx {
            // An error: the consumer stopped (its Durability dropped).
            let _ = rx.wait_for(|v| *v >= pos).await;
        }
    }

    /// Batches published and not yet durable (0 without a durable
    /// consumer).
    pub fn undurable(&self) -> u64 {
        let g = self.durable.lock().unwrap_or_else(|p| p.into_inner());
        match g.as_ref() {
            Some(rx) if rx.has_changed().is_ok() => self.position().saturating_sub(*rx.borrow()),
            _ => 0,
        }
    }

    /// The last mark handed out.
    pub fn position(&self) -> u64 {
        self.position.load(Ordering::SeqCst)
    }

    /// A best-effort observer: never slows the pipeline; what it misses is
    /// counted (`switchy_observer_lagged_events_total`).
    pub fn observe(&self) -> Observer {
        Observer {
            rx: self.observers.subscribe(),
            lagged: self.observer_lagged.clone(),
        }
    }

    /// Events observers missed.
    pub fn observer_lagged(&self) -> u64 {
        self.observer_lagged.load(Ordering::Relaxed)
    }

    /// The lossless consumers now.
    pub fn consumers(&self) -> Vec<ConsumerView> {
        self.consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|c| ConsumerView {
                name: c.name.clone(),
                queued: c.capacity - c.tx.capacity(),
                capacity: c.capacity,
                stats: c.stats.clone(),
            })
            .collect()
    }

    /// Hands `events`, in order, to every consumer that wants them,
    /// waiting while a consumer's queue is full; then a mark to the durable
    /// consumer. Returns the batch's mark (for [`Pipeline::wait_durable`]):
    /// for an empty batch, the last one handed out.
    pub async fn publish(&self, events: Vec<ClusterEvent>) -> u64 {
        if events.is_empty() {
            return self.position();
        }
        let pos = self.position.fetch_add(1, Ordering::SeqCst) + 1;
        for ev in &events {
            let _ = self.observers.send(ev.clone());
        }
        let targets: Vec<(Feed, bool, mpsc::Sender<ClusterEvent>, Arc<ConsumerStats>)> = {
            let mut g = self.consumers.lock().unwrap_or_else(|p| p.into_inner());
            g.retain(|c| !c.tx.is_closed());
            g.iter()
                .map(|c| (c.feed, c.marks, c.tx.clone(), c.stats.clone()))
                .collect()
        };
        for ev in events {
            for (feed, _, tx, stats) in &targets {
                if feed.wants(&ev) && deliver(tx, stats, ev.clone()).await {
                    stats.delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        for (_, marks, tx, stats) in &targets {
            if *marks {
                deliver(tx, stats, ClusterEvent::Mark(pos)).await;
            }
        }
        pos
    }
}

/// Queues `ev`, waiting (and counting the wait) while the queue is full;
/// false when the consumer is gone.
async fn deliver(tx: &mpsc::Sender<ClusterEvent>, stats: &ConsumerStats, ev: ClusterEvent) -> bool {
    match tx.try_send(ev) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(ev)) => {
            stats.waits.fetch_add(1, Ordering::Relaxed);
            let t0 = Instant::now();
            let sent = tx.send(ev).await.is_ok();
            stats
                .waited_us
                .fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
            sent
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// A best-effort view of the cluster's events.
pub struct Observer {
    rx: broadcast::Receiver<ClusterEvent>,
    lagged: Arc<AtomicU64>,
}

impl Observer {
    /// The next event (skipping, and counting, what was missed); None when
    /// the cluster is gone.
    pub async fn recv(&mut self) -> Option<ClusterEvent> {
        loop {
            match self.rx.recv().await {
                Ok(ev) => return Some(ev),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.lagged.fetch_add(n, Ordering::Relaxed);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::{Finished, Session};

    fn end(call: &str) -> ClusterEvent {
        ClusterEvent::Finished(Arc::new(Finished {
            session: Session {
                uuid: call.into(),
                call: call.into(),
                ..Default::default()
            },
            cause: "NORMAL_CLEARING".into(),
            call_ended: true,
        }))
    }

    fn call_of(ev: &ClusterEvent) -> String {
        match ev {
            ClusterEvent::Finished(f) => f.session.call.clone(),
            ClusterEvent::Event(..) | ClusterEvent::Mark(_) => String::new(),
        }
    }

    #[tokio::test]
    async fn a_slow_consumer_slows_the_publisher_and_loses_nothing() {
        let p = Arc::new(Pipeline::default());
        let mut rx = p.subscribe("slow", Feed::Ends, 4);
        let mut obs = p.observe();
        let p2 = p.clone();
        let publisher = tokio::spawn(async move {
            for chunk in 0..10 {
                let evs = (0..10)
                    .map(|i| end(&format!("c{}", chunk * 10 + i)))
                    .collect();
                p2.publish(evs).await;
            }
        });
        // Nothing is read yet: the publisher must be stuck on the full queue.
        tokio::task::yield_now().await;
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(!publisher.is_finished(), "the publisher did not wait");
        let mut got = Vec::new();
        while got.len() < 100 {
            let ev = rx.recv().await.expect("the pipeline closed early");
            got.push(call_of(&ev));
        }
        publisher.await.expect("publisher panicked");
        let want: Vec<String> = (0..100).map(|i| format!("c{i}")).collect();
        assert_eq!(got, want, "every end, in order");
        let v = &p.consumers()[0];
        assert_eq!(v.stats.delivered.load(Ordering::Relaxed), 100);
        assert!(v.stats.waits.load(Ordering::Relaxed) > 0);
        // The observer's ring (4096) held everything here; it still reads.
        assert!(obs.recv().await.is_some());
        assert_eq!(p.observer_lagged(), 0);
    }

    #[tokio::test]
    async fn a_dropped_consumer_does_not_block_the_others() {
        let p = Pipeline::default();
        let rx = p.subscribe("gone", Feed::Ends, 1);
        let mut kept = p.subscribe("kept", Feed::Ends, 100);
        drop(rx);
        p.publish((0..50).map(|i| end(&format!("c{i}"))).collect())
            .await;
        let mut n = 0;
        while let Ok(ev) = kept.try_recv() {
            assert_eq!(call_of(&ev), format!("c{n}"));
            n += 1;
        }
        assert_eq!(n, 50);
        assert_eq!(p.consumers().len(), 1, "the dropped consumer is gone");
    }

    #[tokio::test]
    async fn a_lagging_observer_is_counted() {
        let p = Pipeline::default();
        let mut obs = p.observe();
        p.publish((0..5000).map(|i| end(&format!("c{i}"))).collect())
            .await;
        assert!(obs.recv().await.is_some());
        assert_eq!(p.observer_lagged(), 5000 - 4096);
    }

    #[tokio::test]
    async fn a_batch_is_acknowledged_only_once_the_durable_consumer_committed_it() {
        let p = Arc::new(Pipeline::default());
        let pos = p.publish(vec![end("a")]).await;
        tokio::time::timeout(std::time::Duration::from_secs(5), p.wait_durable(pos))
            .await
            .expect("nothing to wait for without a durable consumer");
        let (mut rx, durability) = p.subscribe_durable("cdr", Feed::Ends, 16);
        let pos = p.publish(vec![end("b"), end("c")]).await;
        assert_eq!(call_of(&rx.recv().await.unwrap()), "b");
        assert_eq!(call_of(&rx.recv().await.unwrap()), "c");
        match rx.recv().await {
            Some(ClusterEvent::Mark(m)) => assert_eq!(m, pos, "the mark follows its batch"),
            other => panic!("expected the batch's mark, got {other:?}"),
        }
        let p2 = p.clone();
        let waiter = tokio::spawn(async move { p2.wait_durable(pos).await });
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished(), "acknowledged before it was durable");
        durability.advance(pos - 1);
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(
            !waiter.is_finished(),
            "an older mark let a newer batch through"
        );
        durability.advance(pos);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("still waiting after the commit")
            .unwrap();
        // An empty batch gets the last mark; a stopped consumer holds
        // nothing back.
        assert_eq!(p.publish(Vec::new()).await, pos);
        drop(durability);
        let later = p.publish(vec![end("d")]).await;
        tokio::time::timeout(std::time::Duration::from_secs(5), p.wait_durable(later))
            .await
            .expect("a stopped durable consumer blocked acknowledgements");
    }
}
