//! Test helpers: a real ESL client over TCP (switchy-protocol's codec) and a
//! minimal HTTP/1.1 client for the control plane.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;
use switchy_protocol::esl::{Command, Decoder, Event, EventFormat, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A mock cluster of `n` nodes on ephemeral ports.
pub async fn cluster(n: usize) -> mock_relay::MockCluster {
    mock_relay::MockCluster::start(mock_relay::MockConfig::ephemeral(n))
        .await
        .expect("mock starts")
}

pub const T: Duration = Duration::from_secs(5);

pub struct Esl {
    pub stream: TcpStream,
    pub dec: Decoder,
    pub events: Vec<Event>,
    pub frames: Vec<Message>,
}

impl Esl {
    pub async fn raw(addr: SocketAddr) -> Esl {
        let stream = TcpStream::connect(addr).await.expect("connect to mock ESL");
        Esl {
            stream,
            dec: Decoder::new(),
            events: Vec::new(),
            frames: Vec::new(),
        }
    }

    /// Connects and authenticates.
    pub async fn connect(addr: SocketAddr) -> Esl {
        let mut c = Esl::raw(addr).await;
        assert_eq!(c.next().await, Some(Message::AuthRequest));
        let r = c.cmd(Command::auth("ClueCon").unwrap()).await;
        assert_eq!(reply_text(&r), "+OK accepted");
        c
    }

    /// Next frame of any kind (None on EOF).
    pub async fn next(&mut self) -> Option<Message> {
        let mut buf = [0u8; 65536];
        loop {
            if let Some(m) = self.dec.next_message().expect("mock sends valid ESL") {
                self.frames.push(m.clone());
                return Some(m);
            }
            let n = match tokio::time::timeout(T, self.stream.read(&mut buf)).await {
                Ok(r) => r.ok()?,
                Err(_) => {
                    let last: Vec<String> = self
                        .events
                        .iter()
                        .rev()
                        .take(12)
                        .map(|e| format!("{} {:?}", name_of(e), e.unique_id()))
                        .collect();
                    panic!("mock did not answer in time; last events (newest first): {last:#?}");
                }
            };
            if n == 0 {
                return None;
            }
            self.dec.feed(&buf[..n]);
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Sends a command and returns its reply; events seen meanwhile are kept.
    pub async fn cmd(&mut self, c: Command) -> Message {
        self.send_raw(&c.to_bytes()).await;
        self.reply().await
    }

    pub async fn reply(&mut self) -> Message {
        loop {
            match self.next().await.expect("connection open") {
                Message::Event(_, e) => self.events.push(e),
                m @ (Message::CommandReply(_) | Message::ApiResponse(_)) => return m,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    pub async fn api(&mut self, cmd: &str, args: &str) -> String {
        match self.cmd(Command::api(cmd, args).unwrap()).await {
            Message::ApiResponse(a) => a.text().into_owned(),
            other => panic!("expected api/response, got {other:?}"),
        }
    }

    pub async fn subscribe(&mut self, fmt: EventFormat, names: &[&str]) {
        let r = self.cmd(Command::event(fmt, names, &[]).unwrap()).await;
        assert!(
            reply_text(&r).starts_with("+OK event listener enabled"),
            "{r:?}"
        );
    }

    /// Waits for an event matching `f` (looking at already-received ones first).
    pub async fn wait_event(&mut self, f: impl Fn(&Event) -> bool) -> Event {
        if let Some(p) = self.events.iter().position(&f) {
            return self.events[p].clone();
        }
        loop {
            match self
                .next()
                .await
                .expect("connection open while waiting for an event")
            {
                Message::Event(_, e) => {
                    self.events.push(e.clone());
                    if f(&e) {
                        return e;
                    }
                }
                other => panic!("unexpected frame while waiting for an event: {other:?}"),
            }
        }
    }

    /// Names of the received events of one channel, in order.
    pub fn names_of(&self, uuid: &str) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e.unique_id() == Some(uuid))
            .map(name_of)
            .collect()
    }
}

pub fn name_of(e: &Event) -> String {
    let n = e.event_name().unwrap_or("?").to_owned();
    if n == "CHANNEL_STATE" {
        format!("{n}:{}", e.get("Channel-State").unwrap_or("?"))
    } else {
        n
    }
}

pub fn reply_text(m: &Message) -> String {
    match m {
        Message::CommandReply(r) => r.reply_text().unwrap_or("").to_owned(),
        Message::ApiResponse(a) => a.text().into_owned(),
        other => panic!("not a reply: {other:?}"),
    }
}

pub fn is(name: &'static str) -> impl Fn(&Event) -> bool {
    move |e: &Event| e.event_name() == Some(name)
}

pub fn is_on(name: &'static str, uuid: String) -> impl Fn(&Event) -> bool {
    move |e: &Event| e.event_name() == Some(name) && e.unique_id() == Some(uuid.as_str())
}

/// A tiny HTTP/1.1 client: returns (status, JSON body).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr)
        .await
        .expect("connect control plane");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: mock\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut resp))
        .await
        .expect("http answered")
        .unwrap();
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let json_text = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        // Undo chunked encoding.
        let mut out = String::new();
        let mut r = rest;
        while let Some((len, tail)) = r.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            r = &tail[n + 2..];
        }
        out
    } else {
        rest.to_owned()
    };
    (
        status,
        serde_json::from_str(&json_text).unwrap_or(serde_json::Value::String(json_text)),
    )
}
