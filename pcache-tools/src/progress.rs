//! Progress for long jobs, shown on stderr only when it is a terminal.

use crate::device::{Image, ImageMut};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{self, IsTerminal};
use std::time::Duration;

/// A spinner counting bytes, or a hidden bar when stderr is not a terminal (or `quiet`).
#[must_use]
pub fn byte_spinner(what: &str, quiet: bool) -> ProgressBar {
    if quiet || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new_spinner();
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {msg}: {bytes} read ({bytes_per_sec})")
    {
        b.set_style(style);
    }
    b.set_message(what.to_owned());
    b.enable_steady_tick(Duration::from_millis(120));
    b
}

/// A device whose reads advance a progress bar: the scan reads the metadata, the log and,
/// for the data-CRC check, every key's data, so bytes read is how far it got.
#[derive(Debug)]
pub struct Metered<'a, M: ?Sized> {
    inner: &'a mut M,
    bar: ProgressBar,
}

impl<'a, M: ?Sized> Metered<'a, M> {
    /// Wraps `inner`; reads advance `bar`.
    pub fn new(inner: &'a mut M, bar: ProgressBar) -> Self {
        Self { inner, bar }
    }
}

impl<M: Image + ?Sized> Image for Metered<'_, M> {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_at(off, buf)?;
        self.bar.inc(buf.len() as u64);
        Ok(())
    }
}

impl<M: ImageMut + ?Sized> ImageMut for Metered<'_, M> {
    fn write_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
        self.inner.write_at(off, buf)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.inner.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_counted_and_passed_through() {
        let mut v = vec![7_u8; 8192];
        let bar = ProgressBar::hidden();
        let mut m = Metered::new(&mut v, bar.clone());
        let mut buf = [0_u8; 100];
        m.read_at(10, &mut buf).unwrap();
        assert_eq!(buf, [7; 100]);
        m.write_at(0, &[1, 2]).unwrap();
        m.sync().unwrap();
        assert_eq!(bar.position(), 100);
        assert_eq!(m.size(), 8192);
        drop(m);
        assert_eq!(&v[..3], &[1, 2, 7]);
    }
}
