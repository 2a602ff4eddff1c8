//! Cluster mode (issue 15; DESIGN.md "Cluster"): three `ringpush` nodes on loopback ports
//! (two shards each, so cross-shard paths run) over a real `redis-server` that each test
//! starts on a free port with no persistence, or over a Redis Cluster of three masters.
//!
//! What is asserted: one order per topic on every node and every transport, the same
//! cluster-wide ids everywhere, exact replay on any node, interest-based subscriptions in
//! Redis, and the faults: a node killed, Redis paused, one node's link cut, Redis
//! restarted empty. Nothing is timed beyond generous liveness bounds; every wait is
//! bounded.
//!
//! Subscriptions reach Redis asynchronously, so a test that needs a subscriber to be live
//! on its node first publishes `warm-K` messages until every subscriber has seen one
//! ([`warm_up`]); messages published after that are owed to it exactly. Event streams
//! that resume from a known id need no warm-up: they are owed everything after the id.

mod cluster_support;
mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use base64::Engine as _;
use cluster_support::*;
use common::redis::{Redis, RedisCluster, Reply};
use ringpush::proto::frame::OpCode;

// --- the guards themselves -----------------------------------------------------------

/// The Redis guards do what the cluster tests rely on: a fresh server answers, keeps no
/// data on disk, a paused one holds connections and answers nothing, a restarted one is
/// empty on the same port, a killed one is gone; a cluster of three masters is formed,
/// covers every slot, and keys land on all three.
#[test]
fn redis_guards() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    assert_eq!(redis.cmd(&["PING"]), "PONG");
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}/0", redis.port));
    assert_eq!(redis.cmd(&["CONFIG", "GET", "save"]), "save\n");
    assert_eq!(
        redis.cmd(&["CONFIG", "GET", "appendonly"]),
        "appendonly\nno"
    );
    assert_eq!(redis.cmd(&["CONFIG", "GET", "bind"]), "bind\n127.0.0.1");
    assert_eq!(redis.cmd(&["SET", "k", "v"]), "OK");
    assert_eq!(redis.cmd(&["GET", "k"]), "v");
    // The ACL user the link-cut test gives a node.
    assert_eq!(
        redis.cmd(&["ACL", "SETUSER", "nodeb", "on", ">pw", "~*", "&*", "+@all"]),
        "OK"
    );
    assert!(redis.cmd(&["ACL", "LIST"]).contains("user nodeb on"));
    // Paused: the connection is accepted by the kernel, nothing answers.
    redis.pause();
    let r = redis.try_cmd(&["PING"], Duration::from_millis(500));
    assert!(r.is_err(), "a paused redis-server answered: {r:?}");
    redis.resume();
    assert_eq!(redis.cmd(&["PING"]), "PONG");
    assert_eq!(redis.cmd(&["GET", "k"]), "v", "a pause loses nothing");
    // Restarted empty on the same port.
    let (port, pid) = (redis.port, redis.pid());
    redis.restart_empty();
    assert_eq!(redis.port, port);
    assert_ne!(redis.pid(), pid);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(redis.cmd(&["GET", "k"]), "");
    assert_eq!(redis.cmd(&["DBSIZE"]), "0");
    assert!(!redis.cmd(&["ACL", "LIST"]).contains("nodeb"));
    // Killed: refused, reaped.
    let pid = redis.pid();
    redis.kill();
    assert!(
        redis
            .try_cmd(&["PING"], Duration::from_millis(500))
            .is_err()
    );
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(redis);
    println!("redis guard: start, PING, pause/resume, restart_empty, kill: ok");

    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    for m in &cluster.masters {
        let info = m.cmd(&["CLUSTER", "INFO"]);
        for want in [
            "cluster_state:ok",
            "cluster_slots_assigned:16384",
            "cluster_known_nodes:3",
            "cluster_size:3",
        ] {
            assert!(info.lines().any(|l| l.trim() == want), "{want} in {info}");
        }
    }
    // Keys land on every master; each is served by its master and redirected elsewhere.
    let mut owners = HashSet::new();
    for i in 0..30 {
        let key = format!("ringpush:{{t{i}}}");
        let m = cluster.master_of_key(&key);
        owners.insert(m);
        assert_eq!(cluster.masters[m].cmd(&["SET", &key, "x"]), "OK");
        let other = &cluster.masters[(m + 1) % 3];
        let r = other.try_cmd(&["GET", &key], Duration::from_secs(5));
        assert!(
            matches!(&r, Ok(Reply::Err(e)) if e.starts_with("MOVED ")),
            "{key} from another master: {r:?}"
        );
    }
    assert_eq!(owners.len(), 3, "30 keys over 3 masters");
    println!(
        "redis cluster guard: 3 masters on ports {:?}, cluster_state:ok: ok",
        cluster.masters.iter().map(|m| m.port).collect::<Vec<_>>()
    );
}

// --- pub/sub across nodes ------------------------------------------------------------

const BINARY: [u8; 5] = [0, 1, 2, 254, 255];

/// Two WebSockets and two event streams on each of three nodes; publishers on all three
/// at once (HTTP on nodes 0 and 1, a WebSocket on node 2, with one binary message):
/// every subscriber gets every message once, all in one order, each publisher's in its
/// own order; the publishing WebSocket gets all but its own; an event has the same id
/// on every node and in every poll, the id its HTTP publisher got.
#[test]
fn publishes_reach_every_node_in_one_order() {
    const EACH: usize = 40;
    let Some(redis) = Redis::start() else {
        return;
    };
    let Some(nodes) = start_nodes(&redis, &[]) else {
        return;
    };
    let addrs = addrs(&nodes);
    let topic = "news";
    let mut subs: Vec<(String, Sub)> = Vec::new();
    for (i, &addr) in addrs.iter().enumerate() {
        for k in 0..2 {
            subs.push((format!("sse {k} on n{i}"), Sub::sse(addr, topic, None)));
            subs.push((format!("ws {k} on n{i}"), Sub::ws(addr, topic)));
        }
    }
    let mut publisher = Sub::ws(addrs[2], topic);
    let warm = {
        let mut all: Vec<&mut Sub> = subs.iter_mut().map(|(_, s)| s).collect();
        all.push(&mut publisher);
        warm_up(addrs[0], topic, &mut all)
    };
    warm.assert_no_strays();

    let Sub::Ws(mut ws) = publisher else {
        unreachable!()
    };
    let http_publishers: Vec<_> = (0..2)
        .map(|n| {
            let addr = addrs[n];
            std::thread::spawn(move || {
                (0..EACH)
                    .map(|i| publish_pub(addr, topic, &format!("h{n}-{i}")))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let ws_publisher = std::thread::spawn(move || {
        for i in 0..EACH {
            ws.send(true, OpCode::Text, format!("w-{i}").as_bytes());
            if i % 8 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        ws.send(true, OpCode::Binary, &BINARY);
        ws
    });
    let acked: Vec<Vec<Pub>> = http_publishers
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let mut publisher = Sub::Ws(ws_publisher.join().unwrap());
    let binary = base64::engine::general_purpose::STANDARD.encode(BINARY);
    let total = 3 * EACH + 1;

    let got: Vec<(String, Vec<Msg>)> = subs
        .iter_mut()
        .map(|(who, s)| (who.clone(), take(s, total, who)))
        .collect();
    let own = take(&mut publisher, 2 * EACH, "the publishing ws");
    {
        let mut all: Vec<&mut Sub> = subs.iter_mut().map(|(_, s)| s).collect();
        all.push(&mut publisher);
        assert_quiet(&mut all, "subscriber");
    }

    // The first event stream on node 0 is the reference order.
    let reference = &got[0].1;
    let mut every: Vec<(String, String)> = acked
        .iter()
        .flatten()
        .map(|p| ("message".to_owned(), p.data.clone()))
        .chain((0..EACH).map(|i| ("message".to_owned(), format!("w-{i}"))))
        .chain([("binary".to_owned(), binary.clone())])
        .collect();
    every.sort();
    let mut seen: Vec<(String, String)> = reference
        .iter()
        .map(|m| (m.event.clone(), m.data.clone()))
        .collect();
    seen.sort();
    assert_eq!(seen, every, "every message exactly once");
    // Each publisher's messages in the order it sent them.
    let ws_sent: Vec<String> = (0..EACH)
        .map(|i| format!("w-{i}"))
        .chain([binary.clone()])
        .collect();
    let per_publisher = [
        acked[0].iter().map(|p| p.data.clone()).collect::<Vec<_>>(),
        acked[1].iter().map(|p| p.data.clone()).collect(),
        ws_sent.clone(),
    ];
    for (n, sent) in per_publisher.iter().enumerate() {
        let order: Vec<&String> = reference
            .iter()
            .map(|m| &m.data)
            .filter(|d| sent.contains(d))
            .collect();
        assert_eq!(
            order,
            sent.iter().collect::<Vec<_>>(),
            "publisher {n}'s order"
        );
    }
    // One order everywhere.
    for (who, seq) in &got {
        assert_eq!(shown(seq), shown(reference), "{who}: the reference order");
    }
    let not_own: Vec<Msg> = reference
        .iter()
        .filter(|m| !ws_sent.contains(&m.data))
        .cloned()
        .collect();
    assert_eq!(
        shown(&own),
        shown(&not_own),
        "the publishing WebSocket: everything but its own, in order"
    );
    // Ids: cluster-wide, so the same on every node; unique; the publisher's.
    let ids: Vec<&str> = reference
        .iter()
        .map(|m| m.id.as_deref().expect("an id on every event"))
        .collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "unique ids"
    );
    for (who, seq) in got.iter().filter(|(who, _)| who.starts_with("sse")) {
        let theirs: Vec<&str> = seq.iter().map(|m| m.id.as_deref().unwrap()).collect();
        assert_eq!(theirs, ids, "{who}: the same ids as on node 0");
    }
    for p in acked.iter().flatten() {
        let m = reference.iter().find(|m| m.data == p.data).unwrap();
        assert_eq!(m.id.as_deref(), Some(p.id.as_str()), "{}", p.data);
    }
    // Polls on every node: the same events with the same ids.
    for (i, &addr) in addrs.iter().enumerate() {
        let v = poll(addr, topic, &warm.last_id);
        assert_eq!(poll_events(&v), *reference, "poll on n{i}");
        assert_eq!(v["next"].as_str(), ids.last().copied(), "poll on n{i}");
    }
    // Metrics.
    for (i, n) in nodes.iter().enumerate() {
        assert!(n.link_is(true));
        let published = [EACH, EACH, EACH + 1][i] as f64;
        let p = n.counter("ringpush_cluster_publishes_total");
        assert!(p >= published, "n{i} published {p}");
        assert_eq!(n.counter("ringpush_cluster_publishes_refused_total"), 0.0);
        let r = n.counter("ringpush_cluster_events_received_total");
        assert!(
            r >= total as f64 - published,
            "n{i} received {r} events from Redis"
        );
        assert!(n.counter("ringpush_cluster_topics") >= 1.0);
        n.counter("ringpush_cluster_link_reconnects_total");
    }
}

/// A stream leaves node 0 and comes back on node 1 with `Last-Event-ID`, and on node 2
/// with `?lastEventId=`: exactly the events it missed, then live ones; a poll and a long
/// poll on another node than the publisher's agree.
#[test]
fn replay_on_another_node() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let Some(nodes) = start_nodes(&redis, &[]) else {
        return;
    };
    let addrs = addrs(&nodes);
    let topic = "replay";
    let mut first = Sub::sse(addrs[0], topic, None);
    let warm = warm_up(addrs[1], topic, &mut [&mut first]);
    warm.assert_no_strays();
    let mut pubs: Vec<Pub> = (0..5)
        .map(|i| publish_pub(addrs[1], topic, &format!("a{i}")))
        .collect();
    assert_delivery("stream on n0", &take(&mut first, 5, "n0"), &pubs, &[]);
    drop(first);
    pubs.extend((5..10).map(|i| publish_pub(addrs[2], topic, &format!("a{i}"))));

    // On node 1 with the header: the five missed, then a live one from node 0.
    let mut st = Sub::sse(addrs[1], topic, Some(&pubs[4].id));
    let replayed = take(&mut st, 5, "resumed on n1");
    pubs.push(publish_pub(addrs[0], topic, "a10"));
    let live = take(&mut st, 1, "resumed on n1");
    assert_delivery("resumed on n1", &[replayed, live].concat(), &pubs[5..], &[]);
    assert_quiet(&mut [&mut st], "resumed on n1");
    // On node 2 with the query parameter.
    let mut st = Sub::Sse(Stream::open_path(
        addrs[2],
        &format!("/sse/{topic}?lastEventId={}", pct(&pubs[7].id)),
        "",
    ));
    assert_delivery(
        "?lastEventId on n2",
        &take(&mut st, 3, "n2"),
        &pubs[8..],
        &[],
    );
    assert_quiet(&mut [&mut st], "?lastEventId on n2");
    // From the last warm-up: everything.
    let mut st = Sub::sse(addrs[2], topic, Some(&warm.last_id));
    assert_delivery("from the start on n2", &take(&mut st, 11, "n2"), &pubs, &[]);
    // Polls on node 2.
    let v = poll(addrs[2], topic, &pubs[2].id);
    assert_eq!(poll_events(&v), as_msgs(&pubs[3..]));
    assert_eq!(v["next"].as_str(), Some(pubs[10].id.as_str()));
    assert!(v.get("reset").is_none_or(|r| r == false), "{v}");
    // A long poll on node 0, released by a publish on node 1.
    let since = pubs[10].id.clone();
    let addr0 = addrs[0];
    let waiter = std::thread::spawn(move || {
        get(
            addr0,
            &format!("/poll/{topic}?since={}&wait=20s", pct(&since)),
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    let p = publish_pub(addrs[1], topic, "a11");
    let a = waiter.join().unwrap();
    assert_eq!(a.status, 200, "{}", a.head);
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(poll_events(&v), as_msgs(std::slice::from_ref(&p)));
    assert_eq!(v["next"].as_str(), Some(p.id.as_str()));
}

// --- faults --------------------------------------------------------------------------

/// (a) Node 0 is killed (SIGKILL) while its event streams and WebSockets are subscribed
/// and node 1 keeps publishing: the streams resume on nodes 1 and 2 with `Last-Event-ID`
/// and together see every event exactly once, in order, with its publish id; the
/// WebSockets reconnect to another node and get live messages again.
#[test]
fn node_killed_clients_resume_on_another_node() {
    const BEFORE: usize = 40;
    const TOTAL: usize = 120;
    let Some(redis) = Redis::start() else {
        return;
    };
    let Some(mut nodes) = start_nodes(&redis, &[]) else {
        return;
    };
    let addrs = addrs(&nodes);
    let topic = "kill";
    let mut wss: Vec<Sub> = (0..2).map(|_| Sub::ws(addrs[0], topic)).collect();
    warm_up(addrs[1], topic, &mut wss.iter_mut().collect::<Vec<_>>()).assert_no_strays();
    // The streams start from here, so they are owed every event after it whenever
    // their subscription reaches Redis.
    let base = publish(addrs[1], topic, "warm-base");
    let streams: Vec<Stream> = (0..4)
        .map(|_| Stream::open(addrs[0], topic, Some(&base)))
        .collect();

    let (paused_tx, paused_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let publisher = {
        let addr = addrs[1];
        std::thread::spawn(move || {
            let mut pubs = Vec::new();
            for i in 0..TOTAL {
                if i == BEFORE {
                    paused_tx.send(()).unwrap();
                    go_rx.recv_timeout(Duration::from_secs(60)).expect("go");
                }
                pubs.push(publish_pub(addr, topic, &format!("e{i}")));
                std::thread::sleep(Duration::from_millis(5));
            }
            pubs
        })
    };
    let progress: Arc<Vec<AtomicUsize>> = Arc::new((0..4).map(|_| AtomicUsize::new(0)).collect());
    let readers: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(k, mut st)| {
            let (progress, base) = (progress.clone(), base.clone());
            let other = addrs[1 + k % 2];
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(40);
                let mut got: Vec<Msg> = Vec::new();
                let mut reconnects = 0;
                while got.len() < TOTAL {
                    assert!(
                        Instant::now() < deadline,
                        "stream {k}: {} of {TOTAL} events within 40 s",
                        got.len()
                    );
                    match st.poll(Duration::from_secs(1)) {
                        Next::Msg(m) if is_warm(&m) => {}
                        Next::Msg(m) => {
                            got.push(m);
                            progress[k].store(got.len(), Ordering::Release);
                        }
                        Next::Quiet => {}
                        Next::Gone => {
                            reconnects += 1;
                            assert!(reconnects <= 5, "stream {k}: {reconnects} reconnects");
                            // A client's backoff, with jitter.
                            std::thread::sleep(Duration::from_millis(100 + 70 * k as u64));
                            let last = got
                                .last()
                                .map_or(base.clone(), |m| m.id.clone().expect("an id"));
                            st = Stream::open(other, topic, Some(&last));
                        }
                    }
                }
                (got, reconnects)
            })
        })
        .collect();

    paused_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the first events published");
    let deadline = Instant::now() + Duration::from_secs(20);
    while progress.iter().any(|p| p.load(Ordering::Acquire) < BEFORE) {
        assert!(
            Instant::now() < deadline,
            "the streams on node 0 did not get the first {BEFORE} events in 20 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for (k, ws) in wss.iter_mut().enumerate() {
        let got = take(ws, BEFORE, &format!("ws {k} on n0"));
        let want: Vec<String> = (0..BEFORE).map(|i| format!("e{i}")).collect();
        assert_eq!(datas(&got), want, "ws {k} on n0");
    }
    nodes[0].kill();
    go_tx.send(()).unwrap();

    // The WebSockets see their node go and reconnect elsewhere.
    let mut moved: Vec<Sub> = Vec::new();
    for (k, mut ws) in wss.into_iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match ws.poll(Duration::from_millis(200)) {
                Next::Gone => break,
                Next::Msg(m) => panic!("ws {k} on the killed node got {m:?}"),
                Next::Quiet => assert!(
                    Instant::now() < deadline,
                    "ws {k}: no EOF within 10 s of the kill"
                ),
            }
        }
        moved.push(Sub::ws(addrs[1 + k % 2], topic));
    }
    let pubs = publisher.join().unwrap();
    for (k, r) in readers.into_iter().enumerate() {
        let (got, reconnects) = r.join().unwrap();
        assert!(reconnects >= 1, "stream {k} was on the killed node");
        assert_delivery(&format!("stream {k}"), &got, &pubs, &[]);
    }
    // The moved WebSockets: live again. What they got meanwhile is part of the order.
    let warm = warm_up(addrs[2], topic, &mut moved.iter_mut().collect::<Vec<_>>());
    let order: Vec<&str> = pubs.iter().map(|p| p.data.as_str()).collect();
    for (k, strays) in warm.strays.iter().enumerate() {
        let positions: Vec<usize> = strays
            .iter()
            .map(|m| {
                order
                    .iter()
                    .position(|d| *d == m.data)
                    .unwrap_or_else(|| panic!("moved ws {k}: unexpected {m:?}"))
            })
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "moved ws {k}: in order, once each: {positions:?}"
        );
        assert!(
            positions.iter().all(|p| *p >= BEFORE),
            "moved ws {k}: {positions:?}"
        );
    }
    let tail = publish_pub(addrs[1], topic, "tail");
    for (k, ws) in moved.iter_mut().enumerate() {
        assert_delivery(
            &format!("moved ws {k}"),
            &take(ws, 1, "moved ws"),
            std::slice::from_ref(&tail),
            &[],
        );
    }
}

/// (b) Redis paused (SIGSTOP) for 5 s: every node keeps its WebSocket and event stream;
/// HTTP publishes meanwhile get 503 with `Retry-After`; after SIGCONT the nodes are back
/// by themselves, publishes succeed and reach every subscriber, after everything
/// acknowledged before, on the same connections.
#[test]
fn redis_paused_publishes_refused_clients_kept() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let Some(nodes) = start_nodes(&redis, &[]) else {
        return;
    };
    let addrs = addrs(&nodes);
    let topic = "pause";
    let mut subs: Vec<Sub> = Vec::new();
    for &addr in &addrs {
        subs.push(Sub::ws(addr, topic));
        subs.push(Sub::sse(addr, topic, None));
    }
    warm_up(addrs[0], topic, &mut subs.iter_mut().collect::<Vec<_>>()).assert_no_strays();
    let before: Vec<Pub> = (0..6)
        .map(|i| publish_pub(addrs[i % 3], topic, &format!("p{i}")))
        .collect();
    for (k, s) in subs.iter_mut().enumerate() {
        let who = format!("subscriber {k} before the pause");
        assert_delivery(&who, &take(s, before.len(), &who), &before, &[]);
    }
    let mut acked: Vec<Pub> = Vec::new();

    redis.pause();
    let paused_at = Instant::now();
    std::thread::sleep(Duration::from_millis(200));
    let refusals: Vec<_> = addrs
        .iter()
        .enumerate()
        .map(|(i, &addr)| {
            std::thread::spawn(move || {
                let t0 = Instant::now();
                let a = post(addr, topic, &format!("refused-{i}"));
                (a, t0.elapsed())
            })
        })
        .collect();
    let mut maybe: Vec<String> = Vec::new();
    for (i, r) in refusals.into_iter().enumerate() {
        let (a, took) = r.join().unwrap();
        assert_eq!(
            a.status, 503,
            "a publish on n{i} while Redis is paused: {}",
            a.head
        );
        let retry = a
            .header("Retry-After")
            .unwrap_or_else(|| panic!("{}", a.head));
        assert!(retry.parse::<u64>().is_ok(), "Retry-After: {retry}");
        // Liveness: answered while Redis was still paused.
        assert!(
            took < Duration::from_millis(4500),
            "n{i}: 503 after {took:?}"
        );
        maybe.push(format!("refused-{i}"));
    }
    // The clients are still there.
    for (i, s) in subs.iter_mut().enumerate() {
        match s.poll(Duration::from_millis(1)) {
            Next::Gone => panic!("subscriber {i} was cut while Redis was paused"),
            Next::Msg(m) if !maybe.contains(&m.data) => panic!("subscriber {i} got {m:?}"),
            _ => {}
        }
    }
    std::thread::sleep(Duration::from_secs(5).saturating_sub(paused_at.elapsed()));
    redis.resume();

    for n in &nodes {
        n.wait_link(true, Duration::from_secs(15));
    }
    for i in 0..9 {
        let (p, refused) = publish_until_ok(addrs[i % 3], topic, &format!("q{i}"));
        acked.push(p);
        maybe.extend(refused);
    }
    for (k, s) in subs.iter_mut().enumerate() {
        let mut got = take_counting(s, acked.len(), "subscriber", |m| !maybe.contains(&m.data));
        got.extend(leftovers(&mut [&mut *s]).remove(0));
        assert_delivery(&format!("subscriber {k}"), &got, &acked, &maybe);
    }
    for (i, n) in nodes.iter().enumerate() {
        let refused = n.counter("ringpush_cluster_publishes_refused_total");
        assert!(refused >= 1.0, "n{i}: {refused} refused");
        assert!(n.counter("ringpush_cluster_publishes_total") >= 3.0);
    }
}

/// (c) One node's link to Redis is cut (its ACL user disabled and its connections
/// killed) while Redis runs and another node publishes: the node says its link is down
/// and refuses publishes; let back in, it reconnects by itself and its subscribers get
/// exactly what they missed, in order, then live events.
#[test]
fn link_cut_node_catches_up_from_the_stream() {
    let Some(redis) = Redis::start() else {
        return;
    };
    assert_eq!(
        redis.cmd(&["ACL", "SETUSER", "nodeb", "on", ">pw", "~*", "&*", "+@all"]),
        "OK"
    );
    let Some(a) = Node::start("nodea", &redis.url(), &[]) else {
        return;
    };
    let Some(b) = Node::start("nodeb", &redis.url_as("nodeb", "pw"), &[]) else {
        return;
    };
    let Some(c) = Node::start("nodec", &redis.url(), &[]) else {
        return;
    };
    for n in [&a, &b, &c] {
        n.wait_link(true, Duration::from_secs(15));
    }
    let named = |name: &str| -> Vec<String> {
        redis
            .clients()
            .into_iter()
            .filter(|l| l.split(' ').any(|f| f == format!("name=ringpush:{name}")))
            .collect()
    };
    for name in ["nodea", "nodeb", "nodec"] {
        assert!(
            !named(name).is_empty(),
            "no connection named ringpush:{name}"
        );
    }
    assert!(
        named("nodeb")
            .iter()
            .all(|l| l.split(' ').any(|f| f == "user=nodeb")),
        "{:?}",
        named("nodeb")
    );
    let topic = "cut";
    let mut subs: Vec<(String, Sub)> = vec![
        ("ws 0 on b".into(), Sub::ws(b.addr(), topic)),
        ("ws 1 on b".into(), Sub::ws(b.addr(), topic)),
        ("sse 0 on b".into(), Sub::sse(b.addr(), topic, None)),
        ("sse 1 on b".into(), Sub::sse(b.addr(), topic, None)),
        ("ws on c".into(), Sub::ws(c.addr(), topic)),
        ("sse on c".into(), Sub::sse(c.addr(), topic, None)),
    ];
    warm_up(
        a.addr(),
        topic,
        &mut subs.iter_mut().map(|(_, s)| s).collect::<Vec<_>>(),
    )
    .assert_no_strays();
    let mut acked = vec![publish_pub(a.addr(), topic, "m-before")];

    let reconnects = b.counter("ringpush_cluster_link_reconnects_total");
    assert_eq!(redis.cmd(&["ACL", "SETUSER", "nodeb", "off"]), "OK");
    redis.cmd(&["CLIENT", "KILL", "USER", "nodeb"]);
    b.wait_link(false, Duration::from_secs(10));
    assert!(named("nodeb").is_empty(), "node b is kept out");
    assert!(
        !redis
            .clients()
            .iter()
            .any(|l| l.split(' ').any(|f| f == "user=nodeb")),
        "{:?}",
        redis.clients()
    );
    acked.extend((0..30).map(|i| publish_pub(a.addr(), topic, &format!("m{i}"))));
    let refused = post(b.addr(), topic, "refused-on-b");
    assert_eq!(refused.status, 503, "{}", refused.head);
    assert!(refused.header("Retry-After").is_some(), "{}", refused.head);
    assert!(c.link_is(true) && a.link_is(true));

    assert_eq!(redis.cmd(&["ACL", "SETUSER", "nodeb", "on"]), "OK");
    b.wait_link(true, Duration::from_secs(15));
    b.wait_counter(
        "ringpush_cluster_link_reconnects_total",
        Duration::from_secs(5),
        |v| v > reconnects,
    );
    assert!(!named("nodeb").is_empty(), "node b is back under its name");
    acked.extend((30..40).map(|i| publish_pub(a.addr(), topic, &format!("m{i}"))));
    for (who, s) in subs.iter_mut() {
        let got = take(s, acked.len(), who);
        assert_delivery(who, &got, &acked, &[]);
    }
    let mut all: Vec<&mut Sub> = subs.iter_mut().map(|(_, s)| s).collect();
    assert_quiet(&mut all, "subscriber");
    assert!(b.counter("ringpush_cluster_publishes_refused_total") >= 1.0);
}

/// (d) Redis restarted empty (no persistence): the nodes reconnect by themselves; an
/// event stream that comes back with an id from before gets `event: reset` first, on
/// any node, and then what the new Redis holds, never an old event; new publishes reach
/// the subscribers that stayed; ids from after the restart resume exactly.
#[test]
fn redis_restarted_empty_old_ids_get_reset() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let Some(nodes) = start_nodes(&redis, &[]) else {
        return;
    };
    let addrs = addrs(&nodes);
    let topic = "restart";
    let mut stayed: Vec<(String, Sub)> = vec![
        ("sse on n0".into(), Sub::sse(addrs[0], topic, None)),
        ("ws on n1".into(), Sub::ws(addrs[1], topic)),
    ];
    warm_up(
        addrs[2],
        topic,
        &mut stayed.iter_mut().map(|(_, s)| s).collect::<Vec<_>>(),
    )
    .assert_no_strays();
    let old: Vec<Pub> = (0..5)
        .map(|i| publish_pub(addrs[0], topic, &format!("old{i}")))
        .collect();
    for (who, s) in stayed.iter_mut() {
        assert_delivery(who, &take(s, 5, who), &old, &[]);
    }
    let reconnects: Vec<f64> = nodes
        .iter()
        .map(|n| n.counter("ringpush_cluster_link_reconnects_total"))
        .collect();

    redis.restart_empty();
    for (n, before) in nodes.iter().zip(&reconnects) {
        n.wait_counter(
            "ringpush_cluster_link_reconnects_total",
            Duration::from_secs(20),
            |v| v > *before,
        );
        n.wait_link(true, Duration::from_secs(20));
    }
    // The subscribers that stayed are live again (a reset on the way is fine).
    let warm = warm_up(
        addrs[2],
        topic,
        &mut stayed.iter_mut().map(|(_, s)| s).collect::<Vec<_>>(),
    );
    for s in &warm.strays {
        assert!(s.iter().all(|m| m.event == "reset"), "{s:?}");
    }
    let mut new = vec![
        publish_pub(addrs[1], topic, "new0"),
        publish_pub(addrs[2], topic, "new1"),
    ];
    for (i, old_id) in [&old[2].id, &old[4].id].into_iter().enumerate() {
        let addr = addrs[(i + 1) % 3];
        let mut st = Sub::sse(addr, topic, Some(old_id));
        let first = st.next_within(Duration::from_secs(5)).expect("an event");
        assert_eq!(first.event, "reset", "an old id on {addr}: {first:?}");
        let retained = take(&mut st, new.len(), "after the reset");
        assert_delivery("after the reset", &retained, &new, &[]);
        if i == 0 {
            new.push(publish_pub(addrs[0], topic, "new2"));
            assert_delivery(
                "live after the reset",
                &take(&mut st, 1, "live"),
                &new[2..],
                &[],
            );
        }
        assert_quiet(&mut [&mut st], "after the reset");
    }
    let v = poll(addrs[1], topic, &old[3].id);
    assert_eq!(v["reset"], true, "{v}");
    assert_eq!(poll_events(&v), as_msgs(&new));
    // A position from after the restart: exact.
    let mut st = Sub::sse(addrs[0], topic, Some(&new[0].id));
    assert_delivery("a new id", &take(&mut st, 2, "a new id"), &new[1..], &[]);
    // The subscribers that stayed got the new events, and no old one again.
    for (who, s) in stayed.iter_mut() {
        let got: Vec<Msg> = take_counting(s, new.len(), who, |m| m.event != "reset")
            .into_iter()
            .filter(|m| m.event != "reset")
            .collect();
        assert_delivery(who, &got, &new, &[]);
    }
}

// --- interest, history, Redis Cluster -------------------------------------------------

/// A node subscribes in Redis only to topics it has subscribers for, and lets go when
/// the last one leaves; a node with no subscriber receives no event from Redis.
#[test]
fn subscriptions_follow_interest() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let Some(nodes) = start_nodes(&redis, &[]) else {
        return;
    };
    let addrs = addrs(&nodes);
    for n in &nodes {
        let name = format!("name=ringpush:{}", n.name);
        assert!(
            redis
                .clients()
                .iter()
                .any(|l| l.split(' ').any(|f| f == name)),
            "a connection named ringpush:{} in {:?}",
            n.name,
            redis.clients()
        );
    }
    let wait_channels = |topic: &str, present: bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = channels_of(&redis, "CHANNELS", topic);
            if found.is_empty() != present {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "channels of {topic}: {found:?} after 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert!(channels_of(&redis, "CHANNELS", "int-a").is_empty());
    let mut ws = Sub::ws(addrs[0], "int-a");
    wait_channels("int-a", true);
    let a: Vec<Pub> = (0..3)
        .map(|i| publish_pub(addrs[1], "int-a", &format!("a{i}")))
        .collect();
    let b: Vec<Pub> = (0..3)
        .map(|i| publish_pub(addrs[1], "int-b", &format!("b{i}")))
        .collect();
    assert_delivery("ws on n0", &take(&mut ws, 3, "ws on n0"), &a, &[]);
    assert!(
        channels_of(&redis, "CHANNELS", "int-b").is_empty(),
        "nobody subscribes to int-b: {:?}",
        redis.cmd(&["PUBSUB", "CHANNELS", "*"])
    );
    // int-b's events are kept all the same: a poll on any node has them.
    let v = poll(addrs[2], "int-b", "0");
    assert_eq!(datas(&poll_events(&v)), datas(&as_msgs(&b)));
    assert_eq!(
        nodes[2].counter("ringpush_cluster_events_received_total"),
        0.0,
        "node 2 has no subscriber"
    );
    assert!(nodes[0].counter("ringpush_cluster_events_received_total") >= 3.0);
    assert!(nodes[0].counter("ringpush_cluster_topics") >= 1.0);
    // The last subscriber leaves: the channel goes.
    drop(ws);
    wait_channels("int-a", false);
    // A stream on node 2 brings int-b in.
    let mut st = Sub::sse(addrs[2], "int-b", Some(&b[2].id));
    wait_channels("int-b", true);
    let p = publish_pub(addrs[0], "int-b", "b3");
    assert_delivery("sse on n2", &take(&mut st, 1, "sse on n2"), &[p], &[]);
    drop(st);
    wait_channels("int-b", false);
}

/// `--history 5` on every node: history in Redis holds at most 5 events of a topic; a
/// position within them resumes exactly on any node, one older gets `event: reset` and
/// then the 5 retained, then live events; a poll says `reset` too.
#[test]
fn history_window_and_reset() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let Some(nodes) = start_nodes(&redis, &["--history", "5"]) else {
        return;
    };
    let addrs = addrs(&nodes);
    let topic = "hist";
    let mut pubs: Vec<Pub> = (0..20)
        .map(|i| publish_pub(addrs[i % 3], topic, &i.to_string()))
        .collect();
    let mut st = Sub::sse(addrs[1], topic, Some(&pubs[16].id));
    assert_delivery("within history", &take(&mut st, 3, "n1"), &pubs[17..], &[]);
    assert_quiet(&mut [&mut st], "within history");

    let mut st = Sub::sse(addrs[2], topic, Some(&pubs[2].id));
    let first = st.next_within(Duration::from_secs(5)).expect("an event");
    assert_eq!(first.event, "reset", "{first:?}");
    assert_delivery("after the reset", &take(&mut st, 5, "n2"), &pubs[15..], &[]);
    pubs.push(publish_pub(addrs[0], topic, "20"));
    assert_delivery("live", &take(&mut st, 1, "n2"), &pubs[20..], &[]);
    assert_quiet(&mut [&mut st], "after the reset");

    let v = poll(addrs[0], topic, &pubs[1].id);
    assert_eq!(v["reset"], true, "{v}");
    assert_eq!(poll_events(&v), as_msgs(&pubs[16..]));
    assert_eq!(v["next"].as_str(), Some(pubs[20].id.as_str()));
    // Redis holds the history, bounded.
    let keys = redis.cmd(&["KEYS", &format!("*{{{topic}}}*")]);
    let streams: Vec<&str> = keys
        .lines()
        .filter(|k| redis.cmd(&["TYPE", k]) == "stream")
        .collect();
    assert!(!streams.is_empty(), "a stream for {topic} in {keys:?}");
    for k in streams {
        let len: u64 = redis.cmd(&["XLEN", k]).parse().unwrap();
        assert!(len <= 5, "{k} holds {len} entries");
    }
}

/// A Redis Cluster of three masters, each node given a different one: topics spread
/// over all three masters (sharded pub/sub, each topic's channel on its master only);
/// publishers on every node at once; every subscriber of a topic, on every node, gets
/// the same order; a stream resumes exactly on another node.
#[test]
fn redis_cluster_three_masters() {
    const ROUNDS: usize = 4;
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    // Topics until each master holds three.
    let mut topics: Vec<(String, usize)> = Vec::new();
    for i in 0..200 {
        let t = format!("ct-{i}");
        let m = cluster.master_of_key(&format!("ringpush:{{{t}}}"));
        if topics.iter().filter(|(_, o)| *o == m).count() < 3 {
            topics.push((t, m));
        }
        if topics.len() == 9 {
            break;
        }
    }
    assert_eq!(topics.len(), 9, "three topics on each master");
    let urls: Vec<String> = (0..3).map(|i| cluster.url(i)).collect();
    let Some(nodes) = start_nodes_on(&urls, &[]) else {
        return;
    };
    let addrs = addrs(&nodes);
    // Per topic: a WebSocket on every node, a stream on one.
    let mut subs: Vec<Vec<(String, Sub)>> = topics
        .iter()
        .enumerate()
        .map(|(j, (t, _))| {
            let mut v: Vec<(String, Sub)> = (0..3)
                .map(|i| (format!("{t}: ws on n{i}"), Sub::ws(addrs[i], t)))
                .collect();
            v.push((
                format!("{t}: sse on n{}", j % 3),
                Sub::sse(addrs[j % 3], t, None),
            ));
            v
        })
        .collect();
    for (j, (t, _)) in topics.iter().enumerate() {
        let mut refs: Vec<&mut Sub> = subs[j].iter_mut().map(|(_, s)| s).collect();
        warm_up(addrs[(j + 1) % 3], t, &mut refs).assert_no_strays();
    }
    // Each topic's channel on its own master, and only there.
    for (t, owner) in &topics {
        for (m, master) in cluster.masters.iter().enumerate() {
            let found = channels_of(master, "SHARDCHANNELS", t);
            assert_eq!(
                !found.is_empty(),
                m == *owner,
                "{t} (slot on master {owner}) on master {m}: {found:?}"
            );
        }
    }
    publish(addrs[0], "ct-nobody", "x");
    for master in &cluster.masters {
        assert!(channels_of(master, "SHARDCHANNELS", "ct-nobody").is_empty());
    }

    let names: Vec<String> = topics.iter().map(|(t, _)| t.clone()).collect();
    let publishers: Vec<_> = (0..3)
        .map(|n| {
            let (addr, names) = (addrs[n], names.clone());
            std::thread::spawn(move || {
                let mut acked: Vec<(usize, Pub)> = Vec::new();
                for r in 0..ROUNDS {
                    for (j, t) in names.iter().enumerate() {
                        acked.push((j, publish_pub(addr, t, &format!("{t}/n{n}/{r}"))));
                    }
                }
                acked
            })
        })
        .collect();
    let acked: Vec<Vec<(usize, Pub)>> = publishers.into_iter().map(|p| p.join().unwrap()).collect();
    for (j, (t, _)) in topics.iter().enumerate() {
        let got: Vec<(String, Vec<Msg>)> = subs[j]
            .iter_mut()
            .map(|(who, s)| (who.clone(), take(s, 3 * ROUNDS, who)))
            .collect();
        let reference = &got[0].1;
        for (who, seq) in &got {
            assert_eq!(datas(seq), datas(reference), "{who}: one order");
        }
        for (n, by_n) in acked.iter().enumerate() {
            let sent: Vec<&str> = by_n
                .iter()
                .filter(|(k, _)| *k == j)
                .map(|(_, p)| p.data.as_str())
                .collect();
            assert_eq!(sent.len(), ROUNDS);
            let order: Vec<&str> = datas(reference)
                .into_iter()
                .filter(|d| sent.contains(d))
                .collect();
            assert_eq!(order, sent, "{t}: publisher n{n}'s order");
            for (_, p) in by_n.iter().filter(|(k, _)| *k == j) {
                let m = got[3].1.iter().find(|m| m.data == p.data).unwrap();
                assert_eq!(m.id.as_deref(), Some(p.id.as_str()), "{t}: {}", p.data);
            }
        }
        let mut all: Vec<&mut Sub> = subs[j].iter_mut().map(|(_, s)| s).collect();
        assert_quiet(&mut all, t);

        // Replay on another node than the stream's, for one topic per master.
        if j % 3 == 0 {
            let stream = &got[3].1;
            let pubs: Vec<Pub> = stream
                .iter()
                .map(|m| Pub {
                    id: m.id.clone().unwrap(),
                    data: m.data.clone(),
                })
                .collect();
            let mut st = Sub::sse(addrs[(j + 1) % 3], t, Some(&pubs[5].id));
            let mut want = pubs[6..].to_vec();
            let replayed = take(&mut st, want.len(), "replay");
            want.push(publish_pub(addrs[(j + 2) % 3], t, &format!("{t}/live")));
            let live = take(&mut st, 1, "replay");
            assert_delivery(
                &format!("{t}: replay"),
                &[replayed, live].concat(),
                &want,
                &[],
            );
        }
    }
}

/// A publish retried on another node with the same `Idempotency-Key` (its first answer
/// was lost, or was a 503 from a timeout) gets the first id and reaches subscribers
/// once; `--history-ttl` lets Redis forget an idle topic, after which an old id gets
/// `event: reset`.
#[test]
fn idempotent_retries_across_nodes_and_ttl() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let Some(nodes) = start_nodes(&redis, &["--history-ttl", "2s"]) else {
        return;
    };
    let addrs = addrs(&nodes);
    let post_key = |i: usize, body: &str| {
        answer(common::http(
            addrs[i],
            &format!(
                "POST /publish/idem HTTP/1.1\r\nHost: x\r\nIdempotency-Key: k-1\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        ))
    };
    let mut sub = Sub::sse(addrs[2], "idem", None);
    warm_up(addrs[0], "idem", &mut [&mut sub]).assert_no_strays();
    let a = post_key(0, "once");
    let b = post_key(1, "once, retried elsewhere");
    assert_eq!((a.status, b.status), (200, 200), "{}{}", a.head, b.head);
    assert_eq!(a.body, b.body, "the retry gets the first id");
    let after = publish_pub(addrs[1], "idem", "next");
    let got = take(&mut sub, 2, "sse on n2");
    assert_eq!(datas(&got), ["once", "next"]);
    assert!(leftovers(&mut [&mut sub])[0].is_empty(), "delivered once");
    drop(sub);

    // Nobody publishes for longer than the TTL: Redis forgets the topic.
    let deadline = Instant::now() + Duration::from_secs(15);
    while redis.cmd(&["EXISTS", "ringpush:{idem}"]) != "0" {
        assert!(
            Instant::now() < deadline,
            "the stream outlived --history-ttl"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Node 0 never had a subscriber, so it mirrors nothing: it reads the topic from
    // Redis, which holds nothing of it now: an old id is a reset, never a replay.
    let mut st = Sub::sse(addrs[0], "idem", Some(&after.id));
    let first = st.next_within(Duration::from_secs(5)).expect("an event");
    assert_eq!(first.event, "reset", "{first:?}");
}

/// The failover a real client fleet does: `ringpush load` holds 300 event streams over
/// three nodes while a publisher on the first publishes 50 events/s; the second node
/// is killed with SIGKILL; its streams reconnect to the other two, about half each
/// (exponential backoff, full jitter), with `Last-Event-ID`; the load generator's own exactness check finds
/// every stream contiguous to the last event: 0 gaps, 0 duplicates, 0 resets.
#[test]
fn load_streams_fail_over_exactly() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let Some(mut nodes) = start_nodes(&redis, &[]) else {
        return;
    };
    let urls: Vec<String> = nodes
        .iter()
        .map(|n| format!("http://{}/sse/fleet", n.addr()))
        .collect();
    let mut args: Vec<String> = Vec::new();
    for u in &urls {
        args.extend(["--url".to_string(), u.clone()]);
    }
    args.extend(
        [
            "--scenario",
            "storm",
            "--connections",
            "300",
            "--duration",
            "8s",
            "--publish-rate",
            "50",
            "--backoff-base",
            "100ms",
            "--backoff-cap",
            "1s",
            "--threads",
            "1",
            "--json",
        ]
        .map(String::from),
    );
    let load = std::thread::spawn(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_ringpush"))
            .arg("load")
            .args(&args)
            .output()
            .expect("ringpush load runs")
    });
    // Every stream open (connecting 300 takes well under a second), then the kill.
    let deadline = Instant::now() + Duration::from_secs(15);
    while nodes[1].counter("ringpush_connections{shard=\"0\",transport=\"sse\"}")
        + nodes[1].counter("ringpush_connections{shard=\"1\",transport=\"sse\"}")
        < 100.0
    {
        assert!(
            Instant::now() < deadline,
            "node 1 never had its 100 streams"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    nodes[1].kill();
    let out = load.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let r: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&out.stderr)));
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k}: {r}"));
    let sse = &r["sse"];
    assert_eq!(
        (
            n(sse, "gaps"),
            n(sse, "missed"),
            n(sse, "duplicates"),
            n(sse, "resets"),
            n(sse, "epoch_changes"),
        ),
        (0, 0, 0, 0, 0),
        "{r}"
    );
    assert_eq!(n(sse, "clients"), 300, "{r}");
    assert_eq!(
        n(sse, "exact"),
        300,
        "every stream contiguous to the last event: {r}"
    );
    assert_eq!(
        n(&r["storm"], "disconnected"),
        100,
        "the killed node's streams: {r}"
    );
    assert_eq!(n(&r["storm"], "reconnected"), 100, "all came back: {r}");
    // They spread over both surviving nodes.
    let urls = r["urls"].as_array().unwrap();
    let (on0, on2) = (n(&urls[0], "reconnected"), n(&urls[2], "reconnected"));
    assert_eq!(on0 + on2, 100, "{r}");
    assert!(on0 >= 30 && on2 >= 30, "spread: {on0} and {on2}: {r}");
    assert!(n(&r, "published") > 100, "{r}");
}
