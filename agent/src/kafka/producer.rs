//! The Kafka sender: produces queued batches to a Kafka topic, through the disk spool while the
//! broker is away.
//!
//! Role: the Kafka counterpart of `sender.rs`. [`KafkaSender::run`] takes batches from the
//! batcher's queue and produces each as **one message**: key = the agent id (so one agent's
//! batches stay in one partition, in order), value = the encoded `meshmon.v1.RecordBatch`
//! exactly as the gRPC sender writes it (`WireBatch::encode_message`; `sent_at` = when the
//! message was first built). The producer is idempotent with `acks=all` (`config.rs`). A batch
//! is done only when the broker acknowledged it: the delivery reports are settled **in produce
//! order**, at most `max_in_flight` messages are outstanding.
//!
//! **Outage.** When a delivery fails (other than a permanent refusal such as a too large
//! message, counted as rejected), when the oldest outstanding message is not acknowledged
//! within `kafka.delivery_timeout`, or when the producer's own queue is full, the broker counts
//! as unreachable: the producer is dropped and re-created (dropping it purges every message it
//! still holds, so nothing it held can reach the broker later, out of order), every batch not
//! acknowledged goes to the **disk spool** (`crate::spool`) in order, and new batches are
//! spooled too. After a backoff (100 ms doubling to 10 s) one batch — the oldest — is sent as a
//! probe; once it is acknowledged the output is back and the spool **drains in order before any
//! new batch** (new batches are appended behind it), with the full in-flight window. Spooled
//! batches keep their sequence numbers; a batch sent twice (its acknowledgement lost in the
//! outage) is dropped by the aggregator's (agent, sequence) deduplication, so counting stays
//! exact.
//!
//! **Shutdown.** When the batcher releases the queue, the sender keeps delivering until every
//! batch (in memory and in the spool) is acknowledged, until the broker turns out unreachable,
//! or until the shutdown deadline it was given; then whatever is not acknowledged is spooled
//! and fsynced, to be delivered after the next start. Touches the network connections of the
//! Kafka client and the spool directory.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer, PurgeConfig};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::metrics::{DropReason, Metrics};
use crate::record::now_timestamp;
use crate::spool::{FramePos, Spool};
use crate::wire::WireBatch;

/// How long an outage waits for the delivery reports of a purged producer.
const SETTLE_WAIT: Duration = Duration::from_secs(2);
/// The same at the shutdown deadline, when time is short.
const SETTLE_WAIT_AT_DEADLINE: Duration = Duration::from_millis(250);
/// How long the start-up check waits for the brokers' metadata.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// Kafka sender settings.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// The message key: the agent id.
    pub agent_id: String,
    /// The topic.
    pub topic: String,
    /// `kafka://brokers/topic`, for logs.
    pub describe: String,
    /// The librdkafka producer configuration (`KafkaConfig::client_config`).
    pub client: ClientConfig,
    /// An unacknowledged message older than this means the broker is unreachable.
    pub delivery_timeout: Duration,
    /// Messages produced and not yet acknowledged, at most.
    pub max_in_flight: usize,
    /// Delays between attempts while the broker is unreachable.
    pub backoff: Backoff,
    /// How often the spool's periodic fsync is considered.
    pub tick: Duration,
}

/// Why the Kafka sender could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// librdkafka refused the configuration.
    #[error("cannot create the Kafka producer (check kafka.* settings and kafka.properties): {0}")]
    Client(#[from] KafkaError),
}

/// Forwards librdkafka's log lines and errors to `tracing`, rate limited (a broker that is
/// down makes librdkafka repeat itself many times a second).
struct LogContext {
    metrics: Arc<Metrics>,
}

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                self.metrics.warn_limited("librdkafka_log_error", &format!("Kafka client: {fac}: {message}"));
            }
            RDKafkaLogLevel::Warning => {
                self.metrics.warn_limited("librdkafka_log_warning", &format!("Kafka client: {fac}: {message}"));
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => info!(target: "librdkafka", "{fac}: {message}"),
            RDKafkaLogLevel::Debug => debug!(target: "librdkafka", "{fac}: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.metrics.warn_limited("librdkafka_error", &format!("Kafka client: {error}: {reason}"));
    }
}

type Client = FutureProducer<LogContext>;

fn new_client(config: &ClientConfig, metrics: &Arc<Metrics>) -> Result<Client, KafkaError> {
    config.create_with_context(LogContext { metrics: metrics.clone() })
}

/// Errors that no retry can fix: the batch itself is unacceptable.
fn is_permanent(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidRecord
        )
    )
}

/// A message handed to the producer and not settled yet.
struct InFlight {
    sequence: u64,
    records: usize,
    payload: Bytes,
    /// Where it is in the spool; `None` when it came straight from the queue.
    origin: Option<FramePos>,
    produced_at: Instant,
    /// `None` once resolved, or if it never reached the producer.
    delivery: Option<DeliveryFuture>,
}

/// Reachability of the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Produce with the full window.
    Online,
    /// Unreachable: spool everything until `until`, then probe.
    Down { until: Instant },
    /// One message in flight to find out whether the broker is back.
    Probing,
}

enum Event {
    /// The head's delivery report; `None` if the producer dropped it.
    Delivered(Option<OwnedDeliveryResult>),
    HeadTimedOut,
    Batch(Option<WireBatch>),
    Retry,
    Wake,
    Tick,
}

/// Produces batches from the queue to Kafka. Create with [`KafkaSender::new`], then spawn
/// [`KafkaSender::run`].
pub struct KafkaSender {
    settings: KafkaSettings,
    client: Client,
    rx: mpsc::Receiver<WireBatch>,
    input_done: bool,
    spool: Spool,
    in_flight: VecDeque<InFlight>,
    state: State,
    backoff: Backoff,
    stop_by: watch::Receiver<Option<Instant>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for KafkaSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSender")
            .field("output", &self.settings.describe)
            .field("state", &self.state)
            .field("in_flight", &self.in_flight.len())
            .field("spool", &self.spool)
            .finish_non_exhaustive()
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(365 * 24 * 3600)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl KafkaSender {
    /// A sender draining `rx` into Kafka through `spool`. `stop_by` is set by the shutdown to
    /// the time by which the sender must have finished (it spools what is left then).
    ///
    /// # Errors
    /// [`ProducerError`] if librdkafka refuses the configuration.
    pub fn new(
        settings: KafkaSettings,
        rx: mpsc::Receiver<WireBatch>,
        spool: Spool,
        stop_by: watch::Receiver<Option<Instant>>,
        metrics: Arc<Metrics>,
    ) -> Result<KafkaSender, ProducerError> {
        let client = new_client(&settings.client, &metrics)?;
        let backoff = settings.backoff.clone();
        Ok(KafkaSender {
            settings,
            client,
            rx,
            input_done: false,
            spool,
            in_flight: VecDeque::new(),
            state: State::Online,
            backoff,
            stop_by,
            metrics,
        })
    }

    fn window(&self) -> usize {
        match self.state {
            State::Online => self.settings.max_in_flight.max(1),
            State::Probing => 1,
            State::Down { .. } => 0,
        }
    }

    /// Whether a batch from the queue may be produced at once (nothing waits in the spool).
    fn direct_allowed(&self) -> bool {
        self.spool.unread() == 0 && self.in_flight.len() < self.window()
    }

    /// Whether to take a batch from the queue now: to produce it, or to spool it (broker not
    /// known to be up, or a spool backlog to queue behind).
    fn can_take(&self) -> bool {
        !self.input_done && (self.direct_allowed() || self.state != State::Online || self.spool.unread() > 0)
    }

    fn deadline_passed(&self) -> bool {
        self.stop_by.borrow().is_some_and(|at| Instant::now() >= at)
    }

    /// Runs until the queue is released and every batch is acknowledged or spooled.
    pub async fn run(mut self) {
        self.check_topic();
        let (batches, records) = self.spool.unacked();
        if batches > 0 {
            info!(
                batches,
                records,
                spool = %self.spool.dir().display(),
                "spooled batches from an earlier run: delivering them first, in order"
            );
        }
        let mut tick = tokio::time::interval(self.settings.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.deadline_passed() {
                if !matches!(self.state, State::Down { .. }) {
                    self.park_in_flight().await;
                }
            } else {
                self.fill_from_spool().await;
            }
            if self.input_done
                && (matches!(self.state, State::Down { .. }) || (self.in_flight.is_empty() && self.spool.is_empty()))
            {
                // Done, or the broker is away: what is left stays in the spool.
                break;
            }
            match self.next_event(&mut tick).await {
                Event::Delivered(result) => self.on_delivery(result).await,
                Event::HeadTimedOut => {
                    let t = self.settings.delivery_timeout;
                    self.outage(format!("no acknowledgement within kafka.delivery_timeout ({t:?})")).await;
                }
                Event::Batch(Some(batch)) => {
                    self.metrics.queue(batch.records.len(), false);
                    if self.direct_allowed() && !self.deadline_passed() {
                        let payload = batch.encode_message(&now_timestamp());
                        self.produce(batch.sequence, batch.records.len(), payload, None).await;
                    } else {
                        self.spool_batch(&batch);
                    }
                }
                Event::Batch(None) => self.input_done = true,
                Event::Retry if self.deadline_passed() => self.state = State::Down { until: far_future() },
                Event::Retry => {
                    debug!(output = %self.settings.describe, "probing the Kafka broker with the oldest batch");
                    self.state = State::Probing;
                }
                Event::Wake => {}
                Event::Tick => self.spool.tick(),
            }
        }
        self.finish().await;
    }

    async fn next_event(&mut self, tick: &mut tokio::time::Interval) -> Event {
        let head_deadline = self.in_flight.front().map(|e| e.produced_at + self.settings.delivery_timeout);
        let retry_at = match self.state {
            State::Down { until } => Some(until),
            _ => None,
        };
        let finish_at = (*self.stop_by.borrow()).filter(|at| Instant::now() < *at);
        let take = self.can_take();
        let head = self.in_flight.front_mut().and_then(|e| e.delivery.as_mut());
        let rx = &mut self.rx;
        tokio::select! {
            r = async move {
                match head {
                    Some(f) => f.await,
                    None => std::future::pending().await,
                }
            } => Event::Delivered(r.ok()),
            () = sleep_until(head_deadline) => Event::HeadTimedOut,
            b = rx.recv(), if take => Event::Batch(b),
            () = sleep_until(retry_at) => Event::Retry,
            () = sleep_until(finish_at) => Event::Wake,
            _ = tick.tick() => Event::Tick,
        }
    }

    /// Produces spooled batches while the window has room.
    async fn fill_from_spool(&mut self) {
        while self.in_flight.len() < self.window() {
            let Some(b) = self.spool.next_unread() else { return };
            let records = b.pos.records as usize;
            self.produce(b.sequence, records, b.payload, Some(b.pos)).await;
        }
    }

    /// Hands one message to the producer.
    async fn produce(&mut self, sequence: u64, records: usize, payload: Bytes, origin: Option<FramePos>) {
        let record = FutureRecord::<str, [u8]>::to(&self.settings.topic).key(&self.settings.agent_id).payload(&payload);
        let sent = self.client.send_result(record).map_err(|(e, _)| e);
        self.metrics.in_flight(records, true);
        let mut entry = InFlight { sequence, records, payload, origin, produced_at: Instant::now(), delivery: None };
        match sent {
            Ok(delivery) => {
                entry.delivery = Some(delivery);
                self.in_flight.push_back(entry);
            }
            Err(e) if is_permanent(&e) => self.settle_rejected(entry, &e),
            Err(e) => {
                self.in_flight.push_back(entry);
                self.outage(format!("the producer refused a batch: {e}")).await;
            }
        }
    }

    async fn on_delivery(&mut self, result: Option<OwnedDeliveryResult>) {
        let Some(mut entry) = self.in_flight.pop_front() else { return };
        entry.delivery = None;
        match result {
            Some(Ok(_)) => self.settle_ok(entry),
            Some(Err((e, _))) if is_permanent(&e) => self.settle_rejected(entry, &e),
            Some(Err((e, _))) => {
                self.in_flight.push_front(entry);
                self.outage(format!("delivery failed: {e}")).await;
            }
            None => {
                self.in_flight.push_front(entry);
                self.outage("the producer lost a delivery report".into()).await;
            }
        }
    }

    fn settle_ok(&mut self, entry: InFlight) {
        // The spool first: whoever sees the batch counted as produced sees it gone from the spool.
        if let Some(pos) = entry.origin {
            self.spool.ack(pos);
        }
        self.metrics.in_flight(entry.records, false);
        self.metrics.delivered(entry.records, 0, false);
        self.metrics.kafka_produced(entry.records, entry.produced_at.elapsed());
        self.backoff.reset();
        if self.state == State::Probing {
            self.state = State::Online;
            info!(
                output = %self.settings.describe,
                spooled_batches = self.spool.unacked().0,
                "Kafka broker reachable again: delivering the spooled batches first, in order"
            );
        }
    }

    fn settle_rejected(&mut self, entry: InFlight, e: &KafkaError) {
        self.metrics.in_flight(entry.records, false);
        self.metrics.rejected(entry.records);
        if let Some(pos) = entry.origin {
            self.spool.ack(pos);
        }
        if self.metrics.log_allowed("kafka_rejected") {
            error!(
                sequence = entry.sequence,
                records = entry.records,
                bytes = entry.payload.len(),
                "Kafka refused a batch for good, not retrying it: {e} (if it is too large: lower batch_max_records, \
                 or raise kafka.message_max_bytes and the topic's max.message.bytes)"
            );
        }
    }

    fn spool_batch(&mut self, batch: &WireBatch) {
        let payload = batch.encode_message(&now_timestamp());
        self.spool_payload(batch.sequence, batch.records.len(), &payload);
    }

    fn spool_payload(&mut self, sequence: u64, records: usize, payload: &[u8]) {
        if let Err(e) = self.spool.append(sequence, records, payload) {
            self.metrics.drop_records(
                DropReason::SpoolError,
                records,
                &format!("cannot write batch {sequence} to the disk spool, it is lost: {e}"),
            );
        }
    }

    /// The broker counts as unreachable: take every unacknowledged batch back into the spool
    /// and wait before probing.
    async fn outage(&mut self, why: String) {
        let was_online = self.state == State::Online;
        let failures = self.take_back(SETTLE_WAIT).await;
        self.metrics.kafka_delivery_failures(failures);
        if was_online {
            self.metrics.kafka_outage();
        }
        let delay = self.backoff.next_delay();
        self.state = State::Down { until: Instant::now() + delay };
        let (spooled, records) = self.spool.unacked();
        self.metrics.warn_limited(
            "kafka_outage",
            &format!(
                "Kafka {} unreachable: {why}; {failures} unacknowledged batches moved to the disk spool, which now \
                 holds {spooled} batches ({records} records); next attempt in {} ms",
                self.settings.describe,
                delay.as_millis()
            ),
        );
    }

    /// The shutdown deadline came: keep what the broker has not acknowledged in the spool and
    /// produce nothing more.
    async fn park_in_flight(&mut self) {
        let parked = self.take_back(SETTLE_WAIT_AT_DEADLINE).await;
        self.state = State::Down { until: far_future() };
        info!(
            parked,
            "shutdown deadline reached before the broker acknowledged every batch: keeping the rest in the disk spool"
        );
    }

    /// Replaces the producer by a fresh one after purging everything the old one still holds
    /// (so nothing of it can reach the broker later, out of order; a fresh producer also starts
    /// a fresh idempotence session), settles what was acknowledged meanwhile (waiting at most
    /// `settle` for the reports), and puts every other in-flight batch back into the spool, in
    /// order. Returns how many.
    async fn take_back(&mut self, settle: Duration) -> usize {
        let entries: Vec<InFlight> = self.in_flight.drain(..).collect();
        let old = match new_client(&self.settings.client, &self.metrics) {
            Ok(fresh) => Some(std::mem::replace(&mut self.client, fresh)),
            Err(e) => {
                error!("cannot re-create the Kafka producer, purging and keeping the current one: {e}");
                None
            }
        };
        let purged = old.unwrap_or_else(|| self.client.clone());
        // Purging may block briefly, and so may dropping the producer (its threads end).
        let dropped = tokio::task::spawn_blocking(move || {
            purged.purge(PurgeConfig::default().queue().inflight());
            drop(purged);
        });
        if let Err(e) = dropped.await {
            error!("purging the Kafka producer failed: {e}");
        }
        let settle_by = Instant::now() + settle;
        let mut failed = false;
        let mut rewind = Vec::new();
        let mut respool = Vec::new();
        for mut entry in entries {
            if !failed {
                let ok = match entry.delivery.take() {
                    Some(f) => matches!(tokio::time::timeout_at(settle_by, f).await, Ok(Ok(Ok(_)))),
                    None => false,
                };
                if ok {
                    self.settle_ok(entry);
                    continue;
                }
            }
            // From the first failure on, everything is sent again, to keep the order.
            failed = true;
            self.metrics.in_flight(entry.records, false);
            match entry.origin {
                Some(pos) => rewind.push(pos),
                None => respool.push(entry),
            }
        }
        let taken = rewind.len() + respool.len();
        self.spool.rewind(&rewind);
        for e in respool {
            self.spool_payload(e.sequence, e.records, &e.payload);
        }
        taken
    }

    /// Logs (without waiting for it) whether the brokers answer and know the topic. On its own
    /// thread, not the runtime's blocking pool, so that it never delays the process's exit.
    fn check_topic(&self) {
        let client = self.client.clone();
        let topic = self.settings.topic.clone();
        let describe = self.settings.describe.clone();
        let check = move || match client.client().fetch_metadata(Some(&topic), METADATA_TIMEOUT) {
            Ok(m) => match m.topics().iter().find(|t| t.name() == topic) {
                Some(t) if t.error().is_none() => {
                    info!(output = %describe, partitions = t.partitions().len(), "Kafka topic found");
                }
                _ => warn!(
                    output = %describe,
                    "the Kafka topic does not exist (or is not visible): create it, the agent does not create \
                     topics. Batches are kept in the disk spool until it can be written"
                ),
            },
            Err(e) => warn!(
                output = %describe,
                "Kafka brokers not reachable at start ({e}); batches are kept in the disk spool until they are"
            ),
        };
        if let Err(e) = std::thread::Builder::new().name("kafka-check".into()).spawn(check) {
            debug!("cannot start the Kafka topic check: {e}");
        }
    }

    async fn finish(mut self) {
        self.spool.sync();
        let (batches, records) = self.spool.unacked();
        if batches > 0 {
            warn!(
                batches,
                records,
                spool = %self.spool.dir().display(),
                "Kafka output stopped with batches in the disk spool: they are delivered after the next start, \
                 before new data"
            );
        } else {
            info!(output = %self.settings.describe, "Kafka output finished: every batch acknowledged by the broker");
        }
        let client = self.client;
        if let Err(e) = tokio::task::spawn_blocking(move || drop(client)).await {
            error!("dropping the Kafka producer failed: {e}");
        }
    }
}
