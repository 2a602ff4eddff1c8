//! The node's link to Redis: one thread running the `redis` crate's async client on a
//! small tokio runtime, between the shards' bus and Redis.
//!
//! From the shards it takes `Publish` (from any shard), `Interest` and `Fetch` (from
//! topics' mirrors, `crate::pubsub::mirror`); to them it sends `Announced` and
//! `Fetched` (to the topic's mirror), `Ack` and `Refused` (to an HTTP publisher's
//! shard), waking each shard it wrote to with a `MSG_RING` ([`Waker`]).
//!
//! Each turn takes everything waiting, then talks to Redis: subscriptions first (so a
//! topic's events reach us from then on), then one pipeline of reads and appends (per
//! topic in a Redis Cluster, where a pipeline may not cross slots). Work that arrives
//! meanwhile waits for the next turn, so one round trip carries many publishes. The
//! events Redis announced before a read's answer are passed on before the answer
//! (the push and reply streams share one connection), which keeps a mirror's view
//! gap-free.
//!
//! Faults: any error or a reply later than [`RESPONSE_TIMEOUT`] drops the connection.
//! While there is none, publishes are refused at once (HTTP 503 + Retry-After; a
//! WebSocket message is dropped and counted), clients stay connected, and the link
//! reconnects with exponential backoff and full jitter ([`BACKOFF`]). Connected again,
//! it subscribes to every topic of interest and reads each one: the mirrors deliver
//! what was missed, or start a new life if Redis lost the topic.

use std::collections::HashSet;
use std::os::fd::RawFd;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::{ProtocolVersion, PushInfo, PushKind, RedisResult, Value};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::wire;
use crate::load::backoff::Backoff;
use crate::metrics::ClusterMetrics;
use crate::proto::http::Topic;
use crate::proto::rand::Rng;
use crate::pubsub::{BusMsg, Life, Published};
use crate::uring::Waker;

/// A Redis reply later than this drops the connection (and refuses its publishes).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Connecting (TCP and `HELLO`) longer than this is a failed attempt.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Reconnect delays: full jitter from 100 ms, windows up to 2 s.
pub const BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(100),
    cap: Duration::from_secs(2),
    jitter: true,
};
/// A connection that lasted this long was a success: the backoff starts over. One
/// that failed sooner (a Redis that accepts and then errs) keeps widening it.
const STABLE: Duration = Duration::from_secs(5);
/// How long Redis remembers a publish's `Idempotency-Key`, in milliseconds.
const IDEMPOTENCY_MS: u64 = crate::proto::limits::IDEMPOTENCY_WINDOW.as_millis() as u64;
/// Publishes per pipeline at most.
const BATCH: usize = 1024;
/// Channels per `SUBSCRIBE` command at most.
const SUBSCRIBE_CHUNK: usize = 1000;

/// What the link needs to know.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// `--redis`.
    pub url: String,
    /// `--node-id`.
    pub node: String,
    /// `--history`: each stream's `MAXLEN`.
    pub history: usize,
    /// `--history-ttl`: each topic's keys expire this long after its last publish.
    pub ttl: Option<Duration>,
}

/// The shards' side of the link.
#[derive(Debug, Clone)]
pub struct Link {
    tx: UnboundedSender<BusMsg>,
}

impl Link {
    /// Hands a message to the link; false if its thread has gone.
    pub fn send(&self, msg: BusMsg) -> bool {
        self.tx.send(msg).is_ok()
    }
}

/// Where the link's messages for the shards go.
#[derive(Debug)]
pub struct Shards {
    /// Each shard's bus.
    pub peers: Vec<mpsc::Sender<BusMsg>>,
    /// Each shard's ring, once they all run.
    pub ring_fds: Arc<OnceLock<Vec<RawFd>>>,
    /// What a wake-up's completion carries (the shards ignore it).
    pub wake_data: u64,
}

/// Starts the link's thread. Fails (one line) on a URL the `redis` crate cannot use or
/// when the thread or its runtime cannot start; an unreachable Redis is not an error:
/// the link keeps trying.
pub fn start(
    cfg: LinkConfig,
    shards: Shards,
    metrics: Arc<ClusterMetrics>,
) -> Result<Link, String> {
    let info = connection_info(&cfg.url)?;
    let (tx, requests) = unbounded_channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("redis-link".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let waker = Waker::new();
            let (rt, waker) = match (rt, waker) {
                (Ok(rt), Ok(w)) => (rt, w),
                (Err(e), _) => {
                    let _ = ready_tx.send(Err(format!("tokio runtime: {e}")));
                    return;
                }
                (_, Err(e)) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            let seed = crate::proto::rand::mix(nanos ^ u64::from(std::process::id()));
            let link = Backplane {
                cfg,
                info,
                requests,
                out: Outbox {
                    wake: vec![false; shards.peers.len()],
                    shards,
                    waker,
                    fds: Vec::new(),
                },
                interest: HashSet::new(),
                subscribed: HashSet::new(),
                to_fetch: Vec::new(),
                publishes: Vec::new(),
                cluster: false,
                scripts: Scripts::default(),
                rng: Rng::new(seed),
                metrics,
            };
            rt.block_on(link.run());
        })
        .map_err(|e| format!("cannot start the Redis link's thread: {e}"))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(Link { tx }),
        Ok(Err(e)) => Err(format!("the Redis link cannot start: {e}")),
        Err(_) => Err("the Redis link's thread exited during startup".into()),
    }
}

/// `--redis` as the crate's connection settings, speaking RESP3 (pushes and replies on
/// one connection).
fn connection_info(url: &str) -> Result<redis::ConnectionInfo, String> {
    let info = redis::IntoConnectionInfo::into_connection_info(url)
        .map_err(|e| format!("--redis {url}: {e}"))?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    Ok(info.set_redis_settings(settings))
}

/// Messages for the shards, and the wake-ups they need.
struct Outbox {
    shards: Shards,
    waker: Waker,
    wake: Vec<bool>,
    fds: Vec<RawFd>,
}

impl Outbox {
    fn send(&mut self, shard: usize, msg: BusMsg) {
        if self.shards.peers[shard].send(msg).is_ok() {
            self.wake[shard] = true;
        }
    }

    /// Sends `msg` to the shard that owns (mirrors) `topic`.
    fn send_to_mirror(&mut self, topic: &Topic, msg: BusMsg) {
        let owner = crate::pubsub::owner(topic, self.wake.len());
        self.send(owner, msg);
    }

    /// Wakes every shard written to since the last flush.
    fn flush(&mut self) {
        let Some(ring_fds) = self.shards.ring_fds.get() else {
            return; // not all shards run yet; they drain their bus when they start
        };
        self.fds.clear();
        for (i, w) in self.wake.iter_mut().enumerate() {
            if std::mem::take(w) {
                self.fds.push(ring_fds[i]);
            }
        }
        if !self.fds.is_empty()
            && let Err(e) = self.waker.wake(&self.fds, self.shards.wake_data)
        {
            eprintln!("ringpush: redis link: cannot wake shards: {e}");
        }
    }
}

/// One Redis or a Redis Cluster.
enum Conn {
    One(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Conn {
    /// One `SUBSCRIBE` for all; on a Redis Cluster one `SSUBSCRIBE` per channel (a
    /// command may not cross slots), all at once.
    async fn subscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Conn::One(c) => c.subscribe(channels).await,
            Conn::Cluster(c) => {
                let each = channels.iter().map(|ch| {
                    let mut c = c.clone();
                    async move { c.ssubscribe(ch).await }
                });
                futures_util::future::join_all(each)
                    .await
                    .into_iter()
                    .collect()
            }
        }
    }

    async fn unsubscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Conn::One(c) => c.unsubscribe(channels).await,
            Conn::Cluster(c) => {
                let each = channels.iter().map(|ch| {
                    let mut c = c.clone();
                    async move { c.sunsubscribe(ch).await }
                });
                futures_util::future::join_all(each)
                    .await
                    .into_iter()
                    .collect()
            }
        }
    }

    async fn query(&mut self, pipe: &redis::Pipeline) -> RedisResult<Vec<Value>> {
        match self {
            Conn::One(c) => pipe.query_async(c).await,
            Conn::Cluster(c) => pipe.query_async(c).await,
        }
    }

    async fn query_cmd<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> RedisResult<T> {
        match self {
            Conn::One(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => cmd.query_async(c).await,
        }
    }
}

/// The scripts' SHA1s on the current connection.
#[derive(Default)]
struct Scripts {
    append: String,
    read: String,
}

/// One command of a turn's pipeline, and what to do with its answer.
enum Pending {
    Read(Topic),
    Append(Arc<Published>),
}

struct Backplane {
    cfg: LinkConfig,
    info: redis::ConnectionInfo,
    requests: UnboundedReceiver<BusMsg>,
    out: Outbox,
    /// Topics some mirror on this node wants.
    interest: HashSet<Topic>,
    /// Topics subscribed on the current connection.
    subscribed: HashSet<Topic>,
    /// Topics to read once subscribed (a mirror's first look, or a second one).
    to_fetch: Vec<Topic>,
    /// Publishes for the next pipeline.
    publishes: Vec<Arc<Published>>,
    /// The connection is to a Redis Cluster (sharded pub/sub).
    cluster: bool,
    scripts: Scripts,
    rng: Rng,
    metrics: Arc<ClusterMetrics>,
}

/// Why a turn stopped.
enum Turn {
    /// The server is shutting down (the shards dropped their senders).
    Exit,
    /// The connection failed.
    Lost(String),
}

impl Backplane {
    async fn run(mut self) {
        let mut attempt = 0u32;
        let mut ever_connected = false;
        loop {
            match self.connect().await {
                Ok((conn, pushes)) => {
                    if ever_connected {
                        self.metrics.reconnected();
                        eprintln!("ringpush: redis link: connected again");
                    }
                    ever_connected = true;
                    let since = std::time::Instant::now();
                    self.metrics.link_up(true);
                    // Every topic of interest: subscribe again, and read it to catch up;
                    // its mirror holds announcements until the read's answer.
                    self.subscribed.clear();
                    self.to_fetch = self.interest.iter().cloned().collect();
                    for topic in &self.to_fetch {
                        let msg = BusMsg::Reading {
                            topic: topic.clone(),
                        };
                        self.out.send_to_mirror(topic, msg);
                    }
                    self.out.flush();
                    match self.serve(conn, pushes).await {
                        Turn::Exit => return,
                        Turn::Lost(why) => {
                            eprintln!("ringpush: redis link lost ({why}); reconnecting");
                        }
                    }
                    self.metrics.link_up(false);
                    self.metrics.topics(0);
                    self.refuse_all();
                    if since.elapsed() >= STABLE {
                        attempt = 0;
                    }
                }
                Err(e) if attempt == 0 && !ever_connected => {
                    eprintln!("ringpush: redis link: cannot connect ({e}); retrying");
                }
                Err(_) => {}
            }
            // Wait before the next attempt, refusing publishes meanwhile.
            let delay = BACKOFF.delay(attempt, self.rng.next_u64());
            attempt = attempt.saturating_add(1);
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    msg = self.requests.recv() => match msg {
                        Some(msg) => {
                            self.on_request(msg);
                            self.refuse_all();
                            self.out.flush();
                        }
                        None => return,
                    },
                }
            }
        }
    }

    async fn connect(&mut self) -> RedisResult<(Conn, UnboundedReceiver<PushInfo>)> {
        let (push_tx, pushes) = unbounded_channel();
        let client = redis::Client::open(self.info.clone())?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_push_sender(push_tx.clone());
        let mut one = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let info: String = redis::cmd("INFO")
            .arg("cluster")
            .query_async(&mut one)
            .await?;
        self.cluster = info.contains("cluster_enabled:1");
        let mut conn = if self.cluster {
            drop(one);
            let cluster = redis::cluster::ClusterClientBuilder::new(vec![self.info.clone()])
                .use_protocol(ProtocolVersion::RESP3)
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                .retries(1)
                .push_sender(push_tx)
                .build()?;
            Conn::Cluster(cluster.get_async_connection().await?)
        } else {
            let name = format!("ringpush:{}", self.cfg.node);
            redis::cmd("CLIENT")
                .arg("SETNAME")
                .arg(name)
                .exec_async(&mut one)
                .await?;
            Conn::One(one)
        };
        let load = |script: &str| {
            let mut c = redis::cmd("SCRIPT");
            c.arg("LOAD").arg(script);
            c
        };
        self.scripts.append = conn.query_cmd(&load(wire::APPEND)).await?;
        self.scripts.read = conn.query_cmd(&load(wire::READ)).await?;
        Ok((conn, pushes))
    }

    /// Runs turns on a connection until it fails or the server exits.
    async fn serve(&mut self, mut conn: Conn, mut pushes: UnboundedReceiver<PushInfo>) -> Turn {
        loop {
            if let Err(why) = self.exchange(&mut conn, &mut pushes).await {
                return Turn::Lost(why);
            }
            self.out.flush();
            // Wait for work: an announcement or a request.
            tokio::select! {
                biased;
                push = pushes.recv() => match push {
                    Some(p) => {
                        if let Err(why) = self.on_push(p) {
                            return Turn::Lost(why);
                        }
                    }
                    None => return Turn::Lost("connection closed".into()),
                },
                msg = self.requests.recv() => match msg {
                    Some(msg) => self.on_request(msg),
                    None => return Turn::Exit,
                },
            }
            // And everything else already waiting.
            while let Ok(msg) = self.requests.try_recv() {
                self.on_request(msg);
            }
            if let Err(why) = self.drain_pushes(&mut pushes) {
                return Turn::Lost(why);
            }
            self.out.flush();
        }
    }

    fn on_request(&mut self, msg: BusMsg) {
        match msg {
            BusMsg::Publish(msg) => self.publishes.push(msg),
            BusMsg::Interest { topic, on: true } => {
                self.interest.insert(topic.clone());
                self.to_fetch.push(topic);
            }
            BusMsg::Interest { topic, on: false } => {
                self.interest.remove(&topic);
            }
            BusMsg::Fetch { topic } => self.to_fetch.push(topic),
            _ => {}
        }
    }

    fn drain_pushes(&mut self, pushes: &mut UnboundedReceiver<PushInfo>) -> Result<(), String> {
        while let Ok(p) = pushes.try_recv() {
            self.on_push(p)?;
        }
        Ok(())
    }

    /// An announcement goes to its topic's mirror; a disconnection ends the connection.
    fn on_push(&mut self, p: PushInfo) -> Result<(), String> {
        match p.kind {
            PushKind::Message | PushKind::SMessage => {
                let (Some(Value::BulkString(channel)), Some(Value::BulkString(data))) =
                    (p.data.first(), p.data.get(1))
                else {
                    return Ok(());
                };
                let Some(topic) = wire::channel_topic(channel) else {
                    return Ok(());
                };
                match wire::decode_announcement(&topic, data, &self.cfg.node) {
                    Some((seq, msg)) => {
                        self.metrics.announced(1);
                        self.out
                            .send_to_mirror(&topic, BusMsg::Announced { seq, msg });
                    }
                    None => eprintln!("ringpush: redis link: unreadable event on {topic}"),
                }
                Ok(())
            }
            PushKind::Disconnection => Err("disconnected".into()),
            _ => Ok(()),
        }
    }

    /// One turn's talk with Redis: subscriptions, then reads and appends.
    async fn exchange(
        &mut self,
        conn: &mut Conn,
        pushes: &mut UnboundedReceiver<PushInfo>,
    ) -> Result<(), String> {
        // Subscriptions first: a topic read below must already be subscribed.
        let add: Vec<String> = self
            .interest
            .iter()
            .filter(|t| !self.subscribed.contains(*t))
            .map(wire::stream_key)
            .collect();
        for chunk in add.chunks(SUBSCRIBE_CHUNK) {
            conn.subscribe(chunk).await.map_err(|e| e.to_string())?;
        }
        let gone: Vec<Topic> = self
            .subscribed
            .iter()
            .filter(|t| !self.interest.contains(*t))
            .cloned()
            .collect();
        if !gone.is_empty() {
            let names: Vec<String> = gone.iter().map(wire::stream_key).collect();
            conn.unsubscribe(&names).await.map_err(|e| e.to_string())?;
        }
        self.subscribed.retain(|t| self.interest.contains(t));
        self.subscribed.extend(self.interest.iter().cloned());
        self.metrics.topics(self.subscribed.len());

        loop {
            let mut pending = Vec::new();
            let mut fetch = std::mem::take(&mut self.to_fetch);
            fetch.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
            fetch.dedup();
            for topic in fetch {
                if self.interest.contains(&topic) {
                    pending.push(Pending::Read(topic));
                }
            }
            let n = self.publishes.len().min(BATCH);
            pending.extend(self.publishes.drain(..n).map(Pending::Append));
            if pending.is_empty() {
                return Ok(());
            }
            let replies = self.run_pipeline(conn, &pending).await;
            // Announcements that came before the replies go first (see the module docs).
            self.drain_pushes(pushes)?;
            match replies {
                Ok(replies) => self.answer(pending, replies),
                Err(e) => {
                    for p in pending {
                        match p {
                            Pending::Read(t) => self.to_fetch.push(t),
                            Pending::Append(msg) => self.refuse(&msg),
                        }
                    }
                    return Err(e.to_string());
                }
            }
            self.out.flush();
        }
    }

    /// Sends the turn's commands: one pipeline to one Redis; to a Redis Cluster, one per
    /// topic (a pipeline may not cross slots), all at once. Replies in `pending`'s order.
    async fn run_pipeline(&self, conn: &mut Conn, pending: &[Pending]) -> RedisResult<Vec<Value>> {
        let ttl = self.cfg.ttl.map_or(0, |t| t.as_millis().max(1) as u64);
        let publish = if self.cluster { "SPUBLISH" } else { "PUBLISH" };
        let command = |p: &Pending| {
            let mut c = redis::cmd("EVALSHA");
            match p {
                Pending::Read(t) => {
                    c.arg(&self.scripts.read)
                        .arg(2)
                        .arg(wire::stream_key(t))
                        .arg(wire::born_key(t))
                        .arg(self.cfg.history);
                }
                Pending::Append(msg) => {
                    let (key, remember) = match &msg.idempotency_key {
                        Some(k) => (wire::idempotency_key(&msg.topic, k), IDEMPOTENCY_MS),
                        None => (wire::born_key(&msg.topic), 0),
                    };
                    c.arg(&self.scripts.append)
                        .arg(3)
                        .arg(wire::stream_key(&msg.topic))
                        .arg(wire::born_key(&msg.topic))
                        .arg(key)
                        .arg(self.cfg.history)
                        .arg(ttl)
                        .arg(wire::encode(msg, &self.cfg.node))
                        .arg(publish)
                        .arg(remember);
                }
            }
            c
        };
        if !self.cluster {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for p in pending {
                pipe.add_command(command(p));
            }
            return conn.query(&pipe).await;
        }
        // Per topic, in order; the topics' pipelines concurrently.
        let mut groups: Vec<(&Topic, Vec<usize>)> = Vec::new();
        for (i, p) in pending.iter().enumerate() {
            let t = match p {
                Pending::Read(t) => t,
                Pending::Append(m) => &m.topic,
            };
            match groups.iter_mut().find(|(g, _)| *g == t) {
                Some((_, idx)) => idx.push(i),
                None => groups.push((t, vec![i])),
            }
        }
        let Conn::Cluster(cluster) = conn else {
            unreachable!("cluster mode has a cluster connection")
        };
        let runs = groups.iter().map(|(_, idx)| {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for &i in idx {
                pipe.add_command(command(&pending[i]));
            }
            let mut c = cluster.clone();
            async move { pipe.query_async::<Vec<Value>>(&mut c).await }
        });
        let results = futures_util::future::join_all(runs).await;
        let mut replies = vec![Value::Nil; pending.len()];
        for ((_, idx), r) in groups.iter().zip(results) {
            for (&i, v) in idx.iter().zip(r?) {
                replies[i] = v;
            }
        }
        Ok(replies)
    }

    /// Passes the pipeline's answers on: reads to their mirrors, ids to publishers.
    fn answer(&mut self, pending: Vec<Pending>, replies: Vec<Value>) {
        let mut ok = 0;
        for (p, v) in pending.into_iter().zip(replies) {
            match p {
                Pending::Read(topic) => {
                    let (life, events) =
                        parse_read(&topic, v, &self.cfg.node).unwrap_or_else(|e| {
                            // Not ours (another program's key by that name?): the topic
                            // is treated as empty, so clients get resets, never a wrong
                            // replay, and the mirror does not wait forever.
                            eprintln!("ringpush: redis link: cannot read {topic}: {e}");
                            (None, Vec::new())
                        });
                    let msg = BusMsg::Fetched {
                        topic: topic.clone(),
                        life,
                        events,
                    };
                    self.out.send_to_mirror(&topic, msg);
                }
                Pending::Append(msg) => match value_seq(&v) {
                    Some(seq) => {
                        ok += 1;
                        if let Some(w) = msg.ack {
                            self.out.send(w.shard, BusMsg::Ack { waiter: w, seq });
                        }
                    }
                    None => {
                        eprintln!(
                            "ringpush: redis link: publish to {} failed: {v:?}",
                            msg.topic
                        );
                        self.refuse(&msg);
                    }
                },
            }
        }
        self.metrics.publishes(ok, 0);
    }

    fn refuse(&mut self, msg: &Published) {
        self.metrics.publishes(0, 1);
        if let Some(w) = msg.ack {
            self.out.send(w.shard, BusMsg::Refused { waiter: w });
        }
    }

    fn refuse_all(&mut self) {
        for msg in std::mem::take(&mut self.publishes) {
            self.refuse(&msg);
        }
        self.out.flush();
    }
}

/// A stream id in a reply, as an event number.
fn value_seq(v: &Value) -> Option<u64> {
    match v {
        Value::BulkString(id) => wire::event_seq(id),
        Value::SimpleString(id) => wire::event_seq(id.as_bytes()),
        _ => None,
    }
}

/// A topic as Redis holds it: its life and its retained events, oldest first.
type Read = (Option<Life>, Vec<(u64, Arc<Published>)>);

/// The READ script's answer.
fn parse_read(topic: &Topic, v: Value, node: &str) -> Result<Read, String> {
    let Value::Array(parts) = v else {
        return Err(format!("unexpected reply {v:?}"));
    };
    if parts.is_empty() {
        return Ok((None, Vec::new()));
    }
    let id = value_seq;
    let [born, Value::BulkString(cut), Value::Array(entries)] = &parts[..] else {
        return Err(format!("unexpected reply {parts:?}"));
    };
    let born = id(born).ok_or("bad born id")?;
    let floor = wire::floor(born, cut).ok_or("bad trimmed id")?;
    let life = Life { born, floor };
    let mut events = Vec::with_capacity(entries.len());
    // Newest first from XREVRANGE: [id, [field, value, ...]].
    for e in entries.iter().rev() {
        let Value::Array(pair) = e else { continue };
        let (Some(eid), Some(Value::Array(fields))) = (pair.first().and_then(id), pair.get(1))
        else {
            continue;
        };
        let bytes = fields.chunks(2).find_map(|kv| match kv {
            [Value::BulkString(k), Value::BulkString(v)] if k == b"m" => Some(v),
            _ => None,
        });
        if let Some(msg) = bytes.and_then(|b| wire::decode(topic, b, node)) {
            events.push((eid, Arc::new(msg)));
        }
    }
    Ok((Some(life), events))
}
