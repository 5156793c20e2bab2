//! A subscription as an async stream (cargo feature `tokio`): [`DeliveryStream`].
//!
//! The depot is synchronous (no async crates in it), so the stream runs the subscription on a
//! thread of its own, which waits for new checkpoints (inotify, `LISTEN`, or polling, as the
//! subscription does) and hands each [`Delivery`] over a bounded channel: a slow reader holds the
//! thread back rather than letting deliveries pile up. Dropping the stream stops the thread
//! within [`WAKE`].

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use depot::{Delivery, Error, Subscription};
use tokio::sync::mpsc;

/// How often the subscription's thread looks whether the stream was dropped while it waits.
pub const WAKE: Duration = Duration::from_millis(250);

/// How many deliveries wait for the reader before the subscription's thread waits too.
const CAPACITY: usize = 64;

/// The deliveries of a [`Subscription`], in order, as a `Stream` (and [`DeliveryStream::next`]).
/// A depot error ends the stream after it is delivered.
pub struct DeliveryStream {
    receiver: mpsc::Receiver<Result<Delivery, Error>>,
}

impl DeliveryStream {
    /// Moves `subscription` onto a thread of its own and streams what it delivers. Fails only
    /// when the thread cannot be started.
    pub fn spawn(mut subscription: Subscription<'static>) -> std::io::Result<DeliveryStream> {
        let (sender, receiver) = mpsc::channel(CAPACITY);
        std::thread::Builder::new()
            .name("retro-subscription".to_owned())
            .spawn(move || {
                while !sender.is_closed() {
                    match subscription.next_timeout(WAKE) {
                        Ok(None) => {}
                        Ok(Some(delivery)) => {
                            if sender.blocking_send(Ok(delivery)).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = sender.blocking_send(Err(e));
                            return;
                        }
                    }
                }
            })?;
        Ok(DeliveryStream { receiver })
    }

    /// The next delivery; `None` once the stream ended (after a depot error).
    pub async fn next(&mut self) -> Option<Result<Delivery, Error>> {
        self.receiver.recv().await
    }
}

impl tokio_stream::Stream for DeliveryStream {
    type Item = Result<Delivery, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx)
    }
}
