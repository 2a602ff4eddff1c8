//! ringpush peer on fastwebsockets: the fastest maintained Rust WebSocket library (Deno's),
//! wired the way its own examples do (`examples/echo_server.rs`, `echo_server_split.rs`):
//! hyper 1 HTTP/1.1 server, `fastwebsockets::upgrade`, `FragmentCollector` for reads,
//! each connection's future run `unconstrained` as those examples do.
//!
//! `peer-fastwebsockets --listen 127.0.0.1:PORT --threads N`
//!
//! - tokio multi-thread runtime with exactly N worker threads (accept loop included).
//! - `GET /echo`: `FragmentCollector` read loop, each text/binary message written back.
//! - `GET /ws/{topic}`: the socket is split (`unstable-split`); the read half
//!   (`FragmentCollectorRead`) publishes, a writer future owns the write half and writes
//!   what the topic's `broadcast` channel delivers plus the pong/close frames the read
//!   half is obliged to send (handed over through a small `mpsc`). Reader and writer are
//!   two futures joined in one task: `read_frame` is not cancel-safe, so it cannot sit in
//!   a `select!` next to the channel.
//! - Pings are answered (auto-pong) and close is echoed (auto-close) by the library.
//!
//! Fan-out shares the payload: a published message is one `Bytes` (the read buffer,
//! frozen without a copy), every subscriber gets a reference-count bump and writes it as
//! a `Payload::Borrowed` frame. fastwebsockets formats the 2-byte header per write (and,
//! below its 1 KiB `writev_threshold`, copies header + payload into a small buffer); it
//! has no API to send one pre-encoded frame to many sockets. The subscriber's write half
//! is a `BufWriter` flushed when the topic has nothing more queued, so a burst leaves in
//! one send(2): unbuffered, every 34-byte frame was its own write_all and 2,000
//! subscribers received 194k msg/s instead of 1.1M (same host, `ringpush load
//! --scenario broadcast --connections 2000`).
//! Topics are a mutex-guarded map of `tokio::sync::broadcast` channels, the idiom of
//! tokio's and axum's chat examples; slow-consumer policy: a subscriber more than
//! `TOPIC_CAPACITY` messages behind skips them (`RecvError::Lagged`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{
    FragmentCollector, FragmentCollectorRead, Frame, OpCode, Payload, WebSocketError,
    WebSocketWrite, upgrade,
};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use peer_common::{BACKLOG, Route, ServerArgs};
use tokio::io::{AsyncWrite, BufWriter};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc};

/// Messages a topic keeps for its slowest subscriber (ringpush's default `--history`).
const TOPIC_CAPACITY: usize = 1024;

/// ringpush's default `--max-message-bytes` (fastwebsockets' own default is 64 MiB).
const MAX_MESSAGE_BYTES: usize = 1 << 20;

#[derive(Clone)]
struct Published {
    from: u64,
    opcode: OpCode,
    payload: Bytes,
}

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
                tokio::spawn(http_connection(stream, id, topics.clone()));
            }
            Err(e) => {
                // EMFILE at the fd limit: back off; pending connections wait in the backlog.
                if !reported {
                    eprintln!("peer-fastwebsockets: accept: {e} (pausing accepts)");
                    reported = true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn http_connection(stream: TcpStream, id: u64, topics: Arc<Topics>) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| handle_request(req, id, topics.clone()));
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
}

fn status(code: StatusCode) -> Response<Empty<Bytes>> {
    let mut resp = Response::new(Empty::new());
    *resp.status_mut() = code;
    resp
}

async fn handle_request(
    mut req: Request<Incoming>,
    id: u64,
    topics: Arc<Topics>,
) -> Result<Response<Empty<Bytes>>, Infallible> {
    let route = match Route::from_path(req.uri().path()) {
        Ok(route) => route,
        Err(e) => {
            return Ok(status(
                StatusCode::from_u16(e.status()).expect("valid status"),
            ));
        }
    };
    if !upgrade::is_upgrade_request(&req) {
        return Ok(status(StatusCode::BAD_REQUEST));
    }
    let (response, fut) = match upgrade::upgrade(&mut req) {
        Ok(ok) => ok,
        Err(WebSocketError::InvalidSecWebsocketVersion) => {
            let mut resp = status(StatusCode::UPGRADE_REQUIRED);
            resp.headers_mut()
                .insert("Sec-WebSocket-Version", "13".parse().unwrap());
            return Ok(resp);
        }
        Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
    };
    // Subscribed before the 101 leaves (see `Subscription`).
    let subscription = match route {
        Route::Echo => None,
        Route::Topic(topic) => Some(Subscription::new(&topics, topic)),
    };
    tokio::spawn(tokio::task::unconstrained(async move {
        let _ = match subscription {
            None => echo(fut).await,
            Some(sub) => subscriber(fut, id, sub).await,
        };
    }));
    Ok(response)
}

async fn echo(fut: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = fut.await?;
    ws.set_max_message_size(MAX_MESSAGE_BYTES);
    let mut ws = FragmentCollector::new(ws);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
}

fn into_bytes(payload: Payload<'_>) -> Bytes {
    match payload {
        // An unfragmented message: the read buffer itself, no copy.
        Payload::Bytes(b) => b.freeze(),
        other => Bytes::from(Vec::from(other)),
    }
}

async fn write_published<W: AsyncWrite + Unpin>(
    wr: &mut WebSocketWrite<W>,
    msg: &Published,
) -> Result<(), WebSocketError> {
    wr.write_frame(Frame::new(
        true,
        msg.opcode,
        None,
        Payload::Borrowed(&msg.payload),
    ))
    .await
}

async fn subscriber(
    fut: upgrade::UpgradeFut,
    id: u64,
    mut sub: Subscription,
) -> Result<(), WebSocketError> {
    let mut ws = fut.await?;
    ws.set_max_message_size(MAX_MESSAGE_BYTES);
    // The write half is buffered so that a burst of published messages leaves in one
    // send(2); `WebSocketWrite::flush` exists for exactly this (buffered streams).
    let (rd, mut wr) = ws.split(|io| {
        let (r, w) = tokio::io::split(io);
        (r, BufWriter::new(w))
    });
    let mut rd = FragmentCollectorRead::new(rd);
    let publish = sub.tx.clone();
    let published = &mut sub.rx;
    // Pong and close replies owed by the read half. Two is plenty: the reader waits for
    // each to be queued before it reads on.
    let (control_tx, mut control_rx) = mpsc::channel::<Frame<'static>>(2);

    let reader = async move {
        let mut owe = |frame: Frame<'static>| {
            let control_tx = control_tx.clone();
            async move {
                control_tx
                    .send(frame)
                    .await
                    .map_err(|_| std::io::Error::other("writer gone"))
            }
        };
        loop {
            let frame = rd.read_frame(&mut owe).await?;
            match frame.opcode {
                OpCode::Close => return Ok::<_, WebSocketError>(()),
                OpCode::Text | OpCode::Binary => {
                    let msg = Published {
                        from: id,
                        opcode: frame.opcode,
                        payload: into_bytes(frame.payload),
                    };
                    // Err only when nobody is subscribed, which cannot be while we are.
                    let _ = publish.send(msg);
                }
                _ => {}
            }
        }
        // Dropping `owe` (and with it `control_tx`) here tells the writer to stop.
    };

    let writer = async {
        loop {
            tokio::select! {
                // Close and pong first: they are owed, and a close ends the writer.
                biased;
                control = control_rx.recv() => match control {
                    Some(frame) => {
                        let close = frame.opcode == OpCode::Close;
                        wr.write_frame(frame).await?;
                        wr.flush().await?;
                        if close {
                            return Ok::<_, WebSocketError>(());
                        }
                    }
                    None => return Ok(()),
                },
                msg = published.recv() => {
                    match msg {
                        Ok(msg) if msg.from != id => write_published(&mut wr, &msg).await?,
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => return Ok(()),
                    }
                    // Everything already queued goes into the buffer, then one flush
                    // (one send(2) for the burst instead of one per message).
                    loop {
                        match published.try_recv() {
                            Ok(msg) if msg.from != id => write_published(&mut wr, &msg).await?,
                            Ok(_) | Err(TryRecvError::Lagged(_)) => {}
                            Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                        }
                    }
                    wr.flush().await?;
                }
            }
        }
    };

    let (read_result, write_result) = tokio::join!(reader, writer);
    drop(sub);
    read_result.and(write_result)
}
