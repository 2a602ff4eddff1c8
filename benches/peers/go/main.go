// gorilla-peer: the ringpush peer contract on gorilla/websocket (Debian's
// golang-github-gorilla-websocket-dev), written the way gorilla's chat example
// (examples/chat: hub.go, client.go) structures a server.
//
//	gorilla-peer --listen 127.0.0.1:9002 --threads 2
//
//	GET /echo      + Upgrade: every message back to the sender, same opcode.
//	GET /ws/{topic} + Upgrade: every message to every OTHER subscriber of the topic,
//	                 same opcode. One hub goroutine per topic (the chat example's Hub),
//	                 one read pump and one write pump goroutine per client.
//
// GOMAXPROCS is --threads. SIGTERM/SIGINT close the listener and exit 0. Go raises the
// soft RLIMIT_NOFILE to the hard limit by itself (since Go 1.19).
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

const (
	// As in the chat example: time allowed to write a message, to read the next pong,
	// and the ping period (must be less than pongWait).
	writeWait  = 10 * time.Second
	pongWait   = 60 * time.Second
	pingPeriod = (pongWait * 9) / 10
	// ringpush's default --max-message-bytes (the chat example's 512 is for its chat lines).
	maxMessageSize = 1 << 20
	// Messages queued per client before the hub drops it as a slow consumer (the chat
	// example's 256).
	sendQueue = 256
)

var upgrader = websocket.Upgrader{
	ReadBufferSize:  1024,
	WriteBufferSize: 1024,
	// Share write buffers between connections that are not writing: an idle connection
	// then holds no write buffer (gorilla's documented setting for many idle connections).
	WriteBufferPool: &sync.Pool{},
	// A benchmark peer accepts any Origin, like ringpush without --allowed-origin.
	CheckOrigin: func(r *http.Request) bool { return true },
}

var topicName = regexp.MustCompile(`^[A-Za-z0-9._:\-]{1,128}$`)

// message is one broadcast: the frame, prepared (encoded) once for all subscribers,
// and the client that sent it, which does not get it back.
type message struct {
	from     *client
	prepared *websocket.PreparedMessage
}

// hub is the chat example's Hub, one per topic: it owns the set of clients and
// forwards each broadcast to every client's send queue.
type hub struct {
	clients    map[*client]bool
	broadcast  chan message
	register   chan *client
	unregister chan *client
}

type client struct {
	hub  *hub
	conn *websocket.Conn
	send chan *websocket.PreparedMessage
}

var (
	hubsMu sync.Mutex
	hubs   = map[string]*hub{}
)

// hubFor returns the topic's hub, starting it on first use. Hubs live as long as the
// process, like the chat example's one hub: fine for a benchmark with a few topics.
func hubFor(topic string) *hub {
	hubsMu.Lock()
	defer hubsMu.Unlock()
	h, ok := hubs[topic]
	if !ok {
		h = &hub{
			clients:    map[*client]bool{},
			broadcast:  make(chan message, 256),
			register:   make(chan *client),
			unregister: make(chan *client),
		}
		hubs[topic] = h
		go h.run()
	}
	return h
}

func (h *hub) run() {
	for {
		select {
		case c := <-h.register:
			h.clients[c] = true
		case c := <-h.unregister:
			if _, ok := h.clients[c]; ok {
				delete(h.clients, c)
				close(c.send)
			}
		case m := <-h.broadcast:
			for c := range h.clients {
				if c == m.from {
					continue
				}
				select {
				case c.send <- m.prepared:
				default:
					// Slow consumer: the chat example's policy, drop the client.
					close(c.send)
					delete(h.clients, c)
				}
			}
		}
	}
}

// readPump reads messages and hands them to the hub (the chat example's readPump).
func (c *client) readPump() {
	defer func() {
		c.hub.unregister <- c
		c.conn.Close()
	}()
	c.conn.SetReadLimit(maxMessageSize)
	c.conn.SetReadDeadline(time.Now().Add(pongWait))
	c.conn.SetPongHandler(func(string) error { c.conn.SetReadDeadline(time.Now().Add(pongWait)); return nil })
	for {
		op, data, err := c.conn.ReadMessage()
		if err != nil {
			return
		}
		// Any frame proves the peer alive (ringpush's rule), not only a pong.
		c.conn.SetReadDeadline(time.Now().Add(pongWait))
		pm, err := websocket.NewPreparedMessage(op, data)
		if err != nil {
			return
		}
		c.hub.broadcast <- message{from: c, prepared: pm}
	}
}

// writePump writes queued messages and pings (the chat example's writePump; the
// example joins queued chat lines into one frame, here each message stays a frame).
func (c *client) writePump() {
	ticker := time.NewTicker(pingPeriod)
	defer func() {
		ticker.Stop()
		c.conn.Close()
	}()
	for {
		select {
		case pm, ok := <-c.send:
			c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if !ok {
				c.conn.WriteMessage(websocket.CloseMessage, []byte{})
				return
			}
			if err := c.conn.WritePreparedMessage(pm); err != nil {
				return
			}
		case <-ticker.C:
			c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if err := c.conn.WriteMessage(websocket.PingMessage, nil); err != nil {
				return
			}
		}
	}
}

func serveTopic(w http.ResponseWriter, r *http.Request) {
	topic := r.URL.Path[len("/ws/"):]
	if !topicName.MatchString(topic) {
		http.Error(w, "bad topic", http.StatusBadRequest)
		return
	}
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade has answered with an HTTP error
	}
	c := &client{hub: hubFor(topic), conn: conn, send: make(chan *websocket.PreparedMessage, sendQueue)}
	c.hub.register <- c
	go c.writePump()
	go c.readPump()
}

// serveEcho: one goroutine per connection, read a message, write it back.
func serveEcho(w http.ResponseWriter, r *http.Request) {
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer conn.Close()
	conn.SetReadLimit(maxMessageSize)
	for {
		op, data, err := conn.ReadMessage()
		if err != nil {
			return
		}
		if err := conn.WriteMessage(op, data); err != nil {
			return
		}
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:9002", "address to bind")
	threads := flag.Int("threads", runtime.NumCPU(), "GOMAXPROCS")
	flag.Parse()
	runtime.GOMAXPROCS(*threads)

	mux := http.NewServeMux()
	mux.HandleFunc("/echo", serveEcho)
	mux.HandleFunc("/ws/", serveTopic)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("gorilla-peer: %v", err)
	}
	var rl syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	fmt.Printf("gorilla-peer: listening on %s (GOMAXPROCS %d, RLIMIT_NOFILE %d)\n",
		ln.Addr(), runtime.GOMAXPROCS(0), rl.Cur)

	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		os.Exit(0)
	}()
	log.Fatal(srv.Serve(ln))
}
