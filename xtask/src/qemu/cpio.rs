//! A minimal writer for the `newc` cpio format, the format the kernel unpacks
//! as an initramfs (`Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! Only directories, regular files and symlinks are written; every entry gets
//! its own inode number and nlink 1 (no hard links), uid/gid 0 and mtime 0, so
//! archives are reproducible. Two archives concatenated are unpacked one after
//! the other, later entries replacing earlier ones: that is how the per-run
//! payload is layered over the cached base archive.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// Streams entries into a cpio archive. Call [`Writer::finish`] at the end.
#[derive(Debug)]
pub struct Writer<W: Write> {
    out: W,
    ino: u32,
    written: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            ino: 1,
            written: 0,
        }
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn pad4(&mut self) -> io::Result<()> {
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..pad])
    }

    fn header(&mut self, name: &str, mode: u32, size: u64) -> io::Result<()> {
        let name = name.trim_start_matches('/');
        let size = u32::try_from(size)
            .map_err(|_| io::Error::other(format!("{name}: file too big for newc cpio")))?;
        let ino = self.ino;
        self.ino += 1;
        let h = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime
            0, // devmajor
            0, // devminor
            0, // rdevmajor
            0, // rdevminor
            name.len() + 1,
            0, // check
        );
        self.put(h.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad4()
    }

    pub fn dir(&mut self, name: &str) -> io::Result<()> {
        self.header(name, S_IFDIR | 0o755, 0)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        self.header(name, S_IFLNK | 0o777, target.len() as u64)?;
        self.put(target.as_bytes())?;
        self.pad4()
    }

    pub fn file_bytes(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.header(name, S_IFREG | (perm & 0o7777), data.len() as u64)?;
        self.put(data)?;
        self.pad4()
    }

    /// Adds the host file `src` (symlinks followed) as `name`, keeping its permissions.
    pub fn file_from(&mut self, name: &str, src: &Path) -> Result<()> {
        let meta = fs::metadata(src).with_context(|| format!("cannot stat {}", src.display()))?;
        let mut f =
            fs::File::open(src).with_context(|| format!("cannot open {}", src.display()))?;
        self.header(
            name,
            S_IFREG | (meta.permissions().mode() & 0o7777),
            meta.len(),
        )?;
        let n = io::copy(&mut f, &mut self.out)?;
        anyhow::ensure!(n == meta.len(), "{} changed while archiving", src.display());
        self.written += n;
        self.pad4()?;
        Ok(())
    }

    /// Adds the tree under `root` (not `root` itself), sorted, directories
    /// before their contents. Paths in the archive are relative to `root`.
    pub fn tree(&mut self, root: &Path) -> Result<()> {
        self.tree_rec(root, "")
    }

    fn tree_rec(&mut self, dir: &Path, prefix: &str) -> Result<()> {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .collect::<io::Result<_>>()?;
        entries.sort_by_key(fs::DirEntry::file_name);
        for e in entries {
            let name = format!("{prefix}{}", e.file_name().to_string_lossy());
            let path = e.path();
            let ft = e.file_type()?;
            if ft.is_symlink() {
                let t = fs::read_link(&path)?;
                self.symlink(&name, &t.to_string_lossy())?;
            } else if ft.is_dir() {
                self.dir(&name)?;
                self.tree_rec(&path, &format!("{name}/"))?;
            } else if ft.is_file() {
                self.file_from(&name, &path)?;
            }
        }
        Ok(())
    }

    /// Writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.header("TRAILER!!!", 0, 0)?;
        // Pad to 512 bytes like GNU cpio, so concatenation keeps alignment.
        let pad = (512 - (self.written % 512) as usize) % 512;
        self.put(&vec![0u8; pad])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks a newc archive, returning (name, mode, data) per entry.
    fn entries(a: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut v = vec![];
        let mut i = 0;
        let hex = |b: &[u8]| u32::from_str_radix(std::str::from_utf8(b).unwrap(), 16).unwrap();
        loop {
            assert_eq!(&a[i..i + 6], b"070701");
            let f = |k: usize| hex(&a[i + 6 + 8 * k..i + 14 + 8 * k]);
            let (mode, size, namesize) = (f(1), f(6) as usize, f(11) as usize);
            let name = String::from_utf8(a[i + 110..i + 110 + namesize - 1].to_vec()).unwrap();
            i = (i + 110 + namesize).next_multiple_of(4);
            let data = a[i..i + size].to_vec();
            i = (i + size).next_multiple_of(4);
            if name == "TRAILER!!!" {
                assert_eq!(a.len() % 512, 0);
                assert!(a[i..].iter().all(|b| *b == 0));
                return v;
            }
            v.push((name, mode, data));
        }
    }

    #[test]
    fn newc_round_trip() {
        let mut w = Writer::new(Vec::new());
        w.dir("/xtask").unwrap();
        w.file_bytes("xtask/lib.sh", 0o644, b"echo hi\n").unwrap();
        w.symlink("bin", "usr/bin").unwrap();
        let a = w.finish().unwrap();
        let e = entries(&a);
        assert_eq!(e.len(), 3);
        assert_eq!((e[0].0.as_str(), e[0].1), ("xtask", S_IFDIR | 0o755));
        assert_eq!(
            (e[1].0.as_str(), e[1].1, &e[1].2[..]),
            ("xtask/lib.sh", S_IFREG | 0o644, &b"echo hi\n"[..])
        );
        assert_eq!((e[2].0.as_str(), &e[2].2[..]), ("bin", &b"usr/bin"[..]));
    }
}
