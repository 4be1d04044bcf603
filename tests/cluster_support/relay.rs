//! A TCP relay on 127.0.0.1 in front of an etcd server, which a test can cut and restore:
//! what a dispatcher or a worker sees when its network to etcd fails while etcd itself
//! runs on (its leases expire meanwhile). Cut, every relayed connection is dropped and new
//! ones are closed as soon as they are accepted; restored, connections are relayed again.
//! It runs on a thread of its own, so that a test blocked waiting for a log line does not
//! stall it.
//! The etcd behind it must advertise the relay's URL as its client URL
//! ([`super::Etcd::start_behind_relay`]), or its member list would lead clients around it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A running relay; its thread ends when it drops.
pub struct Relay {
    /// `http://127.0.0.1:PORT` of the relay.
    pub url: String,
    cut: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    listener: Option<std::net::TcpListener>,
    /// Stops the relay's thread.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Relay {
    /// Binds the relay's port (127.0.0.1:0); it relays nothing until [`Relay::forward_to`].
    pub fn bind() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("relay port");
        let port = listener.local_addr().expect("relay address").port();
        Self {
            url: format!("http://127.0.0.1:{port}"),
            cut: Arc::default(),
            connections: Arc::default(),
            listener: Some(listener),
            stop: None,
        }
    }

    /// Relays every connection to `127.0.0.1:port` from now on, on a thread of its own (the
    /// tests block theirs while they wait for a process's log).
    pub fn forward_to(&mut self, port: u16) {
        let listener = self.listener.take().expect("relay started once");
        listener.set_nonblocking(true).expect("non-blocking relay");
        let (cut, connections) = (self.cut.clone(), self.connections.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        self.stop = Some(stop);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("relay runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("relay listener");
                let accept = async {
                    while let Ok((mut inbound, _)) = listener.accept().await {
                        if cut.load(Ordering::SeqCst) {
                            continue; // dropped: closed at once
                        }
                        let relayed = tokio::spawn(async move {
                            let target = ("127.0.0.1", port);
                            if let Ok(mut outbound) = TcpStream::connect(target).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound)
                                    .await;
                            }
                        });
                        let mut connections = connections.lock().unwrap();
                        connections.retain(|c| !c.is_finished());
                        connections.push(relayed);
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
    }

    /// Drops every relayed connection and closes new ones until [`Relay::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    /// Relays new connections again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
