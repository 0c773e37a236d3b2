//! A byte range of another media seen as a media of its own: one cache of a shared cache
//! device (`docs/format.md`, "Shared cache devices"). Every offset is checked against the
//! window before it is moved to the device, so nothing done through a window reaches a
//! byte outside it: a cache's program never touches another cache's bytes.

use super::{check_range, CacheMedia, MediaError};
use std::io;
use std::sync::Arc;

/// `[start, start + len)` of `inner`.
pub struct Window {
    inner: Arc<dyn CacheMedia>,
    start: u64,
    len: u64,
}

impl std::fmt::Debug for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Window")
            .field("inner", &self.inner.describe())
            .field("start", &self.start)
            .field("len", &self.len)
            .finish()
    }
}

impl Window {
    /// The window `[start, start + len)` of `inner`.
    ///
    /// # Errors
    /// [`MediaError::OutOfRange`] if the window is not inside `inner`.
    pub fn new(inner: Arc<dyn CacheMedia>, start: u64, len: u64) -> Result<Self, MediaError> {
        let size = inner.len();
        match start.checked_add(len) {
            Some(end) if end <= size => Ok(Self { inner, start, len }),
            _ => Err(MediaError::OutOfRange {
                off: start,
                len,
                size,
            }),
        }
    }

    /// Where the window starts on the device.
    #[must_use]
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The device the window is cut from.
    #[must_use]
    pub fn device(&self) -> &Arc<dyn CacheMedia> {
        &self.inner
    }

    /// The device offset of `[off, off + len)` after checking it is inside the window.
    fn at(&self, off: u64, len: usize) -> Result<u64, MediaError> {
        check_range(off, len, self.len)?;
        Ok(self.start + off)
    }
}

impl CacheMedia for Window {
    fn len(&self) -> u64 {
        self.len
    }

    fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), MediaError> {
        let at = self.at(off, buf.len())?;
        self.inner.read(at, buf).map_err(|e| self.relative(e))
    }

    fn write(&self, off: u64, data: &[u8]) -> Result<(), MediaError> {
        let at = self.at(off, data.len())?;
        self.inner.write(at, data).map_err(|e| self.relative(e))
    }

    fn fill(
        &self,
        off: u64,
        len: usize,
        f: &mut dyn FnMut(&mut [u8]) -> io::Result<()>,
    ) -> Result<(), MediaError> {
        let at = self.at(off, len)?;
        self.inner.fill(at, len, f).map_err(|e| self.relative(e))
    }

    fn view(
        &self,
        off: u64,
        len: usize,
        f: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<(), MediaError> {
        let at = self.at(off, len)?;
        self.inner.view(at, len, f).map_err(|e| self.relative(e))
    }

    fn view_many(
        &self,
        ranges: &[(u64, usize)],
        f: &mut dyn FnMut(&[&[u8]]) -> io::Result<()>,
    ) -> Result<(), MediaError> {
        let mut at = Vec::with_capacity(ranges.len());
        for &(off, len) in ranges {
            at.push((self.at(off, len)?, len));
        }
        self.inner.view_many(&at, f).map_err(|e| self.relative(e))
    }

    fn zero(&self, off: u64, len: u64) -> Result<(), MediaError> {
        let n = usize::try_from(len).map_err(|_| MediaError::OutOfRange {
            off,
            len,
            size: self.len,
        })?;
        let at = self.at(off, n)?;
        self.inner.zero(at, len).map_err(|e| self.relative(e))
    }

    fn flush(&self, off: u64, len: u64) {
        // Clamped to the window: a flush never reaches past it.
        if off < self.len {
            self.inner.flush(self.start + off, len.min(self.len - off));
        }
    }

    fn fence(&self) {
        self.inner.fence();
    }

    fn direct(&self) -> Option<super::Direct> {
        self.inner.direct().map(|d| super::Direct {
            base: d.base + self.start,
            ..d
        })
    }

    fn check(&self) -> Result<(), MediaError> {
        self.inner.check()
    }

    fn is_read_only(&self) -> bool {
        self.inner.is_read_only()
    }

    fn describe(&self) -> String {
        format!(
            "bytes {:#x}..{:#x} of {}",
            self.start,
            self.start + self.len,
            self.inner.describe()
        )
    }
}

impl Window {
    /// An error of the device with its offsets made relative to the window again.
    fn relative(&self, e: MediaError) -> MediaError {
        match e {
            MediaError::Poisoned { off, len, at } => MediaError::Poisoned {
                off: off.saturating_sub(self.start),
                len,
                at: at.saturating_sub(self.start),
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::MemMedia;

    #[test]
    fn a_window_reaches_only_its_bytes() {
        let dev: Arc<dyn CacheMedia> = Arc::new(MemMedia::new(1 << 16));
        dev.write(0, &[1; 1 << 16]).unwrap();
        let w = Window::new(dev.clone(), 4096, 8192).unwrap();
        assert_eq!(w.len(), 8192);
        w.write(0, &[7; 8192]).unwrap();
        assert!(w.write(8190, &[0; 4]).is_err());
        assert!(w.zero(8192, 1).is_err());
        assert!(w.read(u64::MAX, &mut [0; 2]).is_err());
        w.flush(4096, u64::MAX);
        let mut all = vec![0; 1 << 16];
        dev.read(0, &mut all).unwrap();
        assert!(all[..4096].iter().all(|&b| b == 1));
        assert!(all[4096..12288].iter().all(|&b| b == 7));
        assert!(all[12288..].iter().all(|&b| b == 1));
        let mut got = [0; 4];
        w.view(100, 4, &mut |b| {
            got.copy_from_slice(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, [7; 4]);
        assert!(Window::new(dev.clone(), 1 << 16, 1).is_err());
        assert!(Window::new(dev, u64::MAX, 2).is_err());
    }
}
