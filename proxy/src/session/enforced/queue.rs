//! The bounded queue between the two directions of an enforced session. The client direction
//! pushes what the server's next answers belong to, before the message leaves; the server
//! direction takes them in order. Both directions run in one task, so the lock is never
//! contended and the server direction takes whatever is queued in one go. A full queue makes
//! the client direction wait for room (backpressure); nothing is ever dropped.
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

pub struct Queue<T> {
    queue: Mutex<VecDeque<T>>,
    cap: usize,
    room: Notify,
    /// Signalled when a push has to wait: the taker may be able to make room without an answer
    /// from the server (messages the server skips after an error are never answered).
    blocked: Notify,
}

impl<T> Queue<T> {
    pub fn new(cap: usize) -> Self {
        Queue {
            queue: Mutex::new(VecDeque::new()),
            cap: cap.max(1),
            room: Notify::new(),
            blocked: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<T>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue `item` if there is room; gives it back when the queue is full.
    pub fn try_push(&self, item: T) -> Result<(), T> {
        let mut q = self.lock();
        if q.len() >= self.cap {
            return Err(item);
        }
        q.push_back(item);
        Ok(())
    }

    /// Queue `item`, waiting for room.
    pub async fn push(&self, mut item: T) {
        loop {
            // Registered before the check, so a take between the check and the wait wakes it.
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_push(item) {
                Ok(()) => return,
                Err(back) => item = back,
            }
            self.blocked.notify_one();
            room.await;
        }
    }

    /// Resolves once a push is waiting for room (or has waited since the last call).
    pub async fn blocked(&self) {
        self.blocked.notified().await
    }

    /// Move everything queued to the back of `into`, in order; returns how many moved.
    pub fn take_all(&self, into: &mut VecDeque<T>) -> usize {
        let mut q = self.lock();
        let n = q.len();
        into.extend(q.drain(..));
        drop(q);
        if n >= self.cap {
            self.room.notify_waiters();
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn items_come_out_in_order_and_a_full_queue_refuses() {
        let p = Queue::new(3);
        for i in 0..3 {
            assert!(p.try_push(i).is_ok());
        }
        assert_eq!(p.try_push(3), Err(3));
        let mut out = VecDeque::new();
        assert_eq!(p.take_all(&mut out), 3);
        assert!(p.try_push(3).is_ok());
        assert_eq!(p.take_all(&mut out), 1);
        assert_eq!(out, [0, 1, 2, 3]);
        assert_eq!(p.take_all(&mut out), 0);
    }

    #[tokio::test]
    async fn push_waits_for_room_then_completes() {
        let p = Queue::new(2);
        p.push(1).await;
        p.push(2).await;
        let mut out = VecDeque::new();
        let (pushed, _) = tokio::join!(p.push(3), async {
            // The push above cannot complete until room is made.
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(p.take_all(&mut out), 2);
        });
        let () = pushed;
        p.take_all(&mut out);
        assert_eq!(out, [1, 2, 3]);
    }

    #[tokio::test]
    async fn a_full_queue_blocks_the_pusher_and_says_so() {
        let p = Queue::new(1);
        p.push(1).await;
        let waited = tokio::time::timeout(Duration::from_millis(50), p.blocked()).await;
        assert!(waited.is_err(), "signalled blocked before any push waited");
        let pushed = tokio::time::timeout(Duration::from_millis(50), p.push(2)).await;
        assert!(pushed.is_err(), "pushed into a full queue");
        tokio::time::timeout(Duration::from_millis(50), p.blocked())
            .await
            .expect("the waiting push was signalled");
    }
}
