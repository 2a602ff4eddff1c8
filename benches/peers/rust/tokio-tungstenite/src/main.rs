//! ringpush peer on tokio-tungstenite: what a user of the most widely used Rust WebSocket
//! stack would deploy instead of ringpush.
//!
//! `peer-tokio-tungstenite --listen 127.0.0.1:PORT --threads N`
//!
//! - tokio multi-thread runtime with exactly N worker threads; the accept loop runs on
//!   them too (spawned, not `block_on`ed on the main thread), so N threads do all work.
//! - One task per connection. `GET /echo` echoes; `GET /ws/{topic}` publishes every
//!   text/binary message to the other subscribers of the topic.
//! - Pings are answered and the close handshake is completed by tungstenite itself
//!   (it queues the pong/close and writes it on the next read or flush).
//!
//! Fan-out: one `tokio::sync::broadcast` channel per topic, in a mutex-guarded map. This
//! is the idiom tokio and axum document for chat rooms (axum `examples/chat`), and it
//! shares the payload: a `Message` holds `Bytes`, so each subscriber's copy is a
//! reference-count bump. tungstenite then frames it into each connection's own write
//! buffer (a 2-byte header plus a payload copy per subscriber): the library has no way to
//! send one pre-encoded frame to many sockets. The alternative idiom, a map of
//! per-connection `mpsc` senders, costs one send (and one allocation-free clone) per
//! subscriber as well, but needs a lock around the subscriber list on every publish;
//! `broadcast` keeps the publisher to one lock-free-for-readers write into a ring.
//! Slow-consumer policy: a subscriber more than `TOPIC_CAPACITY` messages behind skips
//! what it missed (`RecvError::Lagged`), the behaviour of `broadcast` itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use peer_common::{BACKLOG, Route, ServerArgs};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

/// Messages a topic keeps for its slowest subscriber. The load generator keeps 8 in
/// flight; 1024 is ringpush's default `--history`, so both tolerate the same lag.
const TOPIC_CAPACITY: usize = 1024;

/// A published message and the connection that sent it (which must not get it back).
type Published = (u64, Message);

#[derive(Default)]
struct Topics {
    map: Mutex<HashMap<String, broadcast::Sender<Published>>>,
}

/// One connection's membership of a topic. It is taken before the handshake response is
/// sent, so a client that has seen `101 Switching Protocols` is already subscribed: a
/// message published right after every subscriber connected (what the load generator
/// does) reaches all of them. Dropping it leaves the topic, and the last one out removes
/// the topic from the map.
struct Subscription {
    topics: Arc<Topics>,
    topic: String,
    tx: broadcast::Sender<Published>,
    rx: broadcast::Receiver<Published>,
}

impl Subscription {
    fn new(topics: &Arc<Topics>, topic: String) -> Subscription {
        let mut map = topics.map.lock().unwrap();
        let tx = map
            .entry(topic.clone())
            .or_insert_with(|| broadcast::channel(TOPIC_CAPACITY).0)
            .clone();
        let rx = tx.subscribe();
        drop(map);
        Subscription {
            topics: topics.clone(),
            topic,
            tx,
            rx,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Subscribing takes the same lock, so no subscriber can join between the count
        // and the removal; the count still includes this subscription's receiver.
        let mut map = self.topics.map.lock().unwrap();
        if self.tx.receiver_count() == 1 {
            map.remove(&self.topic);
        }
    }
}

fn main() -> std::io::Result<()> {
    let args = ServerArgs::from_cli();
    peer_common::raise_nofile_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads())
        .enable_all()
        .build()?;
    rt.block_on(async move { tokio::spawn(serve(args)).await? })
}

async fn serve(args: ServerArgs) -> std::io::Result<()> {
    let socket = if args.listen.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(args.listen)?;
    let listener = socket.listen(BACKLOG)?;
    let topics = Arc::new(Topics::default());
    let next_id = AtomicU64::new(0);
    let mut reported = false;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(connection(stream, id, topics.clone()));
            }
            Err(e) => {
                // EMFILE/ENFILE at the fd limit: back off instead of spinning; the
                // pending connections wait in the backlog.
                if !reported {
                    eprintln!("peer-tokio-tungstenite: accept: {e} (pausing accepts)");
                    reported = true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(stream: TcpStream, id: u64, topics: Arc<Topics>) {
    // Every message is flushed as soon as it is written; Nagle would hold the second of
    // two small frames for an ACK.
    let _ = stream.set_nodelay(true);
    let mut route = None;
    let mut subscription = None;
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        match Route::from_path(req.uri().path()) {
            Ok(r) => {
                if let Route::Topic(topic) = &r {
                    subscription = Some(Subscription::new(&topics, topic.clone()));
                }
                route = Some(r);
                Ok(resp)
            }
            Err(e) => {
                let mut err = ErrorResponse::new(None);
                *err.status_mut() = StatusCode::from_u16(e.status()).expect("valid status");
                Err(err)
            }
        }
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let _ = match (route, subscription) {
        (Some(Route::Echo), _) => echo(ws).await,
        (Some(Route::Topic(_)), Some(sub)) => subscriber(ws, id, sub).await,
        _ => Ok(()),
    };
}

async fn echo(mut ws: WebSocketStream<TcpStream>) -> tokio_tungstenite::tungstenite::Result<()> {
    // Ends with `None` once tungstenite has answered the client's close frame.
    while let Some(msg) = ws.next().await {
        let msg = msg?;
        if msg.is_text() || msg.is_binary() {
            ws.send(msg).await?;
        }
    }
    Ok(())
}

async fn subscriber(
    mut ws: WebSocketStream<TcpStream>,
    id: u64,
    mut sub: Subscription,
) -> tokio_tungstenite::tungstenite::Result<()> {
    loop {
        // Both branches are cancel-safe (`StreamExt::next`, `Receiver::recv`).
        tokio::select! {
            incoming = ws.next() => match incoming {
                Some(msg) => {
                    let msg = msg?;
                    if msg.is_text() || msg.is_binary() {
                        // Err only when nobody is subscribed, which cannot be while we are.
                        let _ = sub.tx.send((id, msg));
                    }
                }
                None => return Ok(()),
            },
            published = sub.rx.recv() => {
                match published {
                    Ok((from, msg)) if from != id => ws.feed(msg).await?,
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return Ok(()),
                }
                // Write everything already queued, then one flush (one send(2) when it
                // fits the write buffer) rather than one per message.
                loop {
                    match sub.rx.try_recv() {
                        Ok((from, msg)) if from != id => ws.feed(msg).await?,
                        Ok(_) | Err(TryRecvError::Lagged(_)) => {}
                        Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                    }
                }
                ws.flush().await?;
            }
        }
    }
}
