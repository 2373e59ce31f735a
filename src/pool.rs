//! Large byte buffers kept for the next large message.
//!
//! Encoding a large message and reassembling one each need a buffer of its
//! size. Allocating a fresh one per message costs more than the copy into
//! it: the allocator hands memory of that size back to the kernel when it
//! is freed, and every page of the next one faults in again. So a buffer
//! given up after a large message (sent and acknowledged, or received and
//! dropped with everything sliced from it) comes back here, and the next
//! large message on any connection and thread takes it. At most
//! [`BUFFERS`] buffers, for messages of more than [`MIN`] and at most
//! [`MAX`] bytes, are kept for the whole process.

use std::sync::Mutex;

use bytes::Bytes;

/// Buffers for messages at most this large and larger than [`MIN`] are
/// kept.
pub(crate) const MAX: usize = 2 * 1024 * 1024;
/// Smaller buffers are not worth a lock: they are allocated per message.
pub(crate) const MIN: usize = 64 * 1024;
/// Most buffers kept.
const BUFFERS: usize = 8;
/// The capacity of the largest buffer kept: one made for `MAX` bytes.
const KEPT_MAX: usize = (MAX + HEAD_SLACK).next_multiple_of(GRAIN);
/// Buffers are made in multiples of this, with room for a head beyond
/// what they are made for, so that a buffer made for one message serves the
/// next of about its size, whichever side made it (an encoding is a few
/// bytes longer than the message it arrives as).
const GRAIN: usize = 64 * 1024;
const HEAD_SLACK: usize = 1024;

/// The capacity to give a buffer for `len` bytes that may come back here.
pub(crate) fn capacity_for(len: usize) -> usize {
    if len > MIN {
        (len + HEAD_SLACK).next_multiple_of(GRAIN)
    } else {
        len
    }
}

/// A pool of large buffers; the process has one, [`LARGE`].
pub(crate) struct Pool {
    buffers: Mutex<Vec<Vec<u8>>>,
}

/// The process's pool.
pub(crate) static LARGE: Pool = Pool::new();

impl Pool {
    const fn new() -> Pool {
        Pool { buffers: Mutex::new(Vec::new()) }
    }

    /// A kept buffer with room for `len` bytes, empty, if there is one.
    pub(crate) fn take(&self, len: usize) -> Option<Vec<u8>> {
        if !(MIN + 1..=MAX).contains(&len) {
            return None;
        }
        let mut buffers = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        let i = buffers.iter().position(|b| b.capacity() >= len)?;
        let mut buf = buffers.swap_remove(i);
        buf.clear();
        Some(buf)
    }

    /// Keeps `buf` for a later `take`, if it is of a size kept and there is
    /// room; frees it otherwise.
    pub(crate) fn give_back(&self, buf: Vec<u8>) {
        if keeps(buf.capacity()) {
            let mut buffers = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
            if buffers.len() < BUFFERS {
                buffers.push(buf);
            }
        }
    }

    /// `buf` as `Bytes` that give it back to this pool once the last of
    /// them (or of their slices) is dropped.
    pub(crate) fn bytes(&'static self, buf: Vec<u8>) -> Bytes {
        if keeps(buf.capacity()) {
            Bytes::from_owner(Lent { buf, pool: self })
        } else {
            Bytes::from(buf)
        }
    }
}

/// Whether a buffer of `capacity` is of a size the pool keeps.
fn keeps(capacity: usize) -> bool {
    (MIN + 1..=KEPT_MAX).contains(&capacity)
}

/// A buffer lent out as `Bytes`; it returns to its pool when dropped.
struct Lent {
    buf: Vec<u8>,
    pool: &'static Pool,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// At most `BUFFERS` buffers are kept, none of them small or above
    /// `KEPT_MAX`, however many come back; a kept one is taken again.
    #[test]
    fn the_pool_is_bounded_and_reused() {
        static POOL: Pool = Pool::new();
        for _ in 0..3 * BUFFERS {
            POOL.give_back(Vec::with_capacity(1 << 20));
        }
        POOL.give_back(Vec::with_capacity(KEPT_MAX + 1));
        POOL.give_back(Vec::with_capacity(1024));
        {
            let buffers = POOL.buffers.lock().unwrap();
            assert_eq!(buffers.len(), BUFFERS);
            assert!(buffers.iter().all(|b| b.capacity() == 1 << 20));
        }
        let taken = POOL.take(1 << 20).expect("a 1 MiB buffer was kept");
        assert!(taken.is_empty() && taken.capacity() >= 1 << 20);
        assert!(POOL.take(MAX + 1).is_none(), "no buffer above MAX is kept");
        assert!(POOL.take(100).is_none(), "small ones are not looked for");
    }

    /// A buffer made for a received message serves the encoding of the
    /// next one of its size, a few bytes longer with its head.
    #[test]
    fn a_buffer_made_for_one_size_serves_the_next_of_about_that_size() {
        static POOL: Pool = Pool::new();
        let received = 1 << 20;
        POOL.give_back(Vec::with_capacity(capacity_for(received)));
        assert!(POOL.take(received + 10).is_some());
        assert_eq!(capacity_for(100), 100, "small ones as asked");
    }

    /// Bytes made of a pooled buffer give it back when the last slice of
    /// them goes, so the next large message is made in the same memory.
    #[test]
    fn bytes_give_their_buffer_back_when_the_last_slice_goes() {
        static POOL: Pool = Pool::new();
        let mut buf = Vec::with_capacity(1 << 20);
        buf.extend_from_slice(&[7; 1000]);
        let at = buf.as_ptr();
        let bytes = POOL.bytes(buf);
        let slice = bytes.slice(10..20);
        drop(bytes);
        assert!(POOL.take(1 << 20).is_none(), "a slice still holds it");
        assert_eq!(&slice[..], &[7; 10]);
        drop(slice);
        let again = POOL.take(1 << 20).expect("given back");
        assert_eq!(again.as_ptr(), at);
        // Too small to keep: plain bytes.
        let small = POOL.bytes(vec![1; 100]);
        drop(small);
        assert!(POOL.buffers.lock().unwrap().is_empty());
    }
}
